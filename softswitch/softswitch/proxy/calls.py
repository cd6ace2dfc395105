"""Per-call state: what the switch remembers about one call from INVITE to CDR.

A :class:`Call` is created for each admitted INVITE and lives until its CDR is written. It
holds the caller's side (the server transaction, the flow, the original INVITE), the branch
being tried, every attempt with its outcome and timing, and once answered the dialog facts
the switch needs to relay in-dialog requests and to send its own BYEs.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from softswitch.call.refusal import EndReason
from softswitch.config import DEFAULT_NO_ANSWER_TIMEOUT
from softswitch.media.leg import NgLeg
from softswitch.media.policy import DIRECT, MediaPolicy
from softswitch.sip import Request, Response
from softswitch.sip.transaction import ClientTransaction, ServerTransaction
from softswitch.transport import Address, Flow, Transport

if TYPE_CHECKING:
    from softswitch.media.relays import Relay

__all__ = [
    "NO_ANSWER_TIMEOUT",
    "Admission",
    "Attempt",
    "Branch",
    "Call",
    "MediaSession",
    "Phase",
    "Target",
]

#: How long a gateway rings when the target does not say: the configuration's own default
#: for ``no_answer_timeout`` (Timer C, RFC 3261 16.6 step 11), one number for both.
NO_ANSWER_TIMEOUT = DEFAULT_NO_ANSWER_TIMEOUT


@dataclass(frozen=True, slots=True)
class Target:
    """One gateway a call may be sent to, resolved from the configuration snapshot."""

    gateway_id: str
    transport: Transport
    address: Address
    request_uri: str
    number_sent: str
    setup_timeout: float
    failover_codes: frozenset[int] | None = None
    #: Seconds this gateway may ring (after its first 18x) before it is cancelled.
    no_answer_timeout: float = NO_ANSWER_TIMEOUT
    #: When it rings out: try the next gateway (True) or answer the caller 480 (False).
    failover_on_no_answer: bool = False
    #: Relayed or direct media, the codec policy, the media timeout (``media.policy``).
    media: MediaPolicy = DIRECT
    #: Header fields that replace the caller's in this branch's INVITE (From and
    #: P-Asserted-Identity with the caller-ID the ``cli`` rules gave, ``call.cli``).
    replace_headers: tuple[tuple[str, str], ...] = ()
    #: A Route set the branch's INVITE starts with (a registered contact's Path, RFC 3327:
    #: ``address`` is then its first hop), "" for none.
    route: str = ""
    #: The dialog's later requests follow the callee's Record-Route or Contact where safe
    #: (``dialog_target``); False: they go to ``address`` (a registered contact's, always).
    follow_contact: bool = False


@dataclass(slots=True)
class Admission:
    """What admission decided about a call: the authorise, normalise and limits stages, and
    the route the select stage will walk (see ``pipeline.admit``).

    ``policy`` is the pipeline's own per-call context (snapshot, account, route plan); the
    engine carries it without looking inside.
    """

    account_id: str
    number_dialed: str
    number: str
    max_duration: float
    attempt_cap: int
    time_budget: float
    policy: object = None
    #: Seconds an answered call waits for the caller's ACK before the switch hangs up
    #: (RFC 3261 13.3.1.4: 64*T1).
    ack_timeout: float = 32.0
    #: Our digest realm: credentials for it are ours and never forwarded (RFC 3261 22.3).
    realm: str | None = None


@dataclass(slots=True)
class Attempt:
    """One gateway tried, with its outcome (final status or why we gave up on it)."""

    gateway_id: str
    request_uri: str
    number_sent: str
    started_at: float
    ring_at: float | None = None
    answer_at: float | None = None
    ended_at: float | None = None
    status: int | None = None
    #: ``answered``, ``failed``, ``timeout``, ``cancelled``, ``transport_error``,
    #: ``media_unavailable`` (as in
    #: ``cdr.AttemptRecord``), ``pending`` while the branch runs.
    outcome: str = "pending"


class Phase(enum.Enum):
    HUNTING = "hunting"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(eq=False, slots=True)
class Branch:
    """One INVITE client transaction to one gateway."""

    call: Call
    target: Target
    attempt: Attempt
    flow: Flow | None = None
    transaction: ClientTransaction | None = None
    request: Request | None = None
    got_provisional: bool = False
    got_ringing: bool = False
    dead: bool = False
    setup_timer: asyncio.TimerHandle | None = None
    #: This attempt's session on the call's media relay (relayed calls only).
    media_leg: NgLeg | None = None
    #: Its offer is still with the relay: the offer's end deletes it if the branch died.
    media_pending: bool = False


@dataclass(eq=False, slots=True)
class MediaSession:
    """A relayed call's media state: the relay it stays on for its whole life, the
    messages waiting for the relay (in arrival order), and whose SDP offer is unanswered."""

    relay: Relay
    #: Messages of the call held back until the SDP before them went through the relay.
    queue: deque[Callable[[], Awaitable[None]]] = field(default_factory=deque)
    busy: bool = False
    #: The last SDP offer (RFC 3264): the tag of the side that made it, the CSeq (number,
    #: method) of the message that carried it, and whether it has been answered. None
    #: when no offer is outstanding.
    offer_from: str | None = None
    offer_cseq: tuple[int, str] | None = None
    offer_answered: bool = False
    #: Whether the relay has seen an offer of this call (from then on the call stays on it).
    offered: bool = False
    #: The answering attempt's session (set at the answer; None: that attempt was direct).
    leg: NgLeg | None = None
    #: The relayed SDP of each INVITE's 2xx by CSeq number, and of the last ACK that carried
    #: an answer: a retransmission carries it again, never the far side's own.
    answer_bodies: dict[int, bytes] = field(default_factory=dict)
    ack_body: bytes | None = None


@dataclass(eq=False, slots=True)
class Call:
    """One call attempt from a customer, from its INVITE to its single CDR."""

    call_id: str
    invite: Request
    caller_flow: Flow
    server_tx: ServerTransaction
    admission: Admission
    invite_at: float
    started_mono: float
    phase: Phase = Phase.HUNTING
    attempts: list[Attempt] = field(default_factory=list)
    branch: Branch | None = None
    responses: list[int] = field(default_factory=list)
    last_response: Response | None = None
    ring_at: float | None = None
    answer_at: float | None = None
    end_at: float | None = None
    pdd: float | None = None
    end_reason: EndReason | None = None
    final_status: int | None = None
    hangup_side: str | None = None
    number_sent: str | None = None
    # dialog facts: from the current branch's first 1xx with a To tag (an early dialog,
    # RFC 3261 12.1), then from its 2xx
    caller_tag: str | None = None
    callee_tag: str | None = None
    callee_contact: str | None = None
    callee_routes: tuple[str, ...] = ()
    callee_flow: Flow | None = None
    answered_gateway: str | None = None
    caller_cseq: int = 0
    callee_cseq: int = 0
    duration_timer: asyncio.TimerHandle | None = None
    #: Seconds of call its account's credit covers (billed accounts; None: not metered). The
    #: CDR never bills more (``billed_duration``): the switch cuts the call there.
    billed_cap: float | None = None
    budget_timer: asyncio.TimerHandle | None = None
    ack_timer: asyncio.TimerHandle | None = None
    finished: bool = False
    #: Why the switch ended the call when the routing trace does not say (a media relay's
    #: failure): the CDR's detail follows the trace with it.
    end_detail: str | None = None
    #: The call's media relay and the SDP it has in flight (relayed calls only; see
    #: ``proxy.media``).
    media: MediaSession | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The dialog's key on our side: Call-ID and the caller's From tag."""
        return (self.call_id, self.caller_tag or "")
