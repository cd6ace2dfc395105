"""What the engine asks the pipeline, and the refusal it carries out.

The engine knows SIP; the pipeline (``proxy.pipeline``) knows accounts, routes and gateways.
They meet here: :class:`CallPolicy` is the handful of questions the engine asks at fixed
points of a call, and :class:`Reply` is the final response the switch itself sends when the
answer is no. Both are re-exported by ``proxy.engine``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from softswitch.call.refusal import EndReason, Refusal
from softswitch.security import Screen
from softswitch.sip import Request
from softswitch.transport import Address, Flow, Malformed

from .calls import Admission, Call, Target

if TYPE_CHECKING:
    from .accounting import RefusedInvite

__all__ = ["CallPolicy", "Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A final response the switch itself sends to the caller, with the CDR's end reason.

    ``cdr`` False for answers that are steps of a handshake rather than the end of a call
    attempt (the 407 digest challenge): those produce no CDR.
    """

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: None only for a reply that ends no attempt (``cdr`` False: the 407 challenge).
    end_reason: EndReason | None = EndReason.INTERNAL_ERROR
    account_id: str | None = None
    detail: str = ""
    cdr: bool = True

    @classmethod
    def of(cls, refusal: Refusal, *, account_id: str | None = None) -> Reply:
        """A stage's refusal as a final response: its status, Reason header and end reason."""
        return cls(
            status=refusal.status,
            headers=tuple(refusal.headers()),
            end_reason=refusal.end_reason,
            account_id=account_id,
            detail=refusal.detail,
        )


class CallPolicy(Protocol):
    """What the engine asks the pipeline; ``proxy.pipeline.Pipeline`` implements it.

    ``origin`` names who sent a request from outside any call (the client behind a trusted
    proxy) and ``screen`` judges it, before the switch keeps state for it;
    ``admit`` a new INVITE (the authorise, normalise and limits stages); ``next_target`` for
    each branch (route and select); ``release_target`` when a branch ends; ``exhausted`` when
    no gateway is left; ``answered`` when a gateway's 2xx connects the call (its durable
    call-start mark, so a crash of the switch still ends in a CDR); ``dialog_peer`` when a
    gateway's answer sends the dialog to another address (``proxy.dialog_target``);
    ``account`` when a call ends and ``account_refusal`` when one never started (the account
    stage). ``malformed`` gets what the transport refused before any of that (True when it
    wrote a CDR).
    """

    def origin(self, request: Request, flow: Flow) -> Flow: ...

    def screen(self, request: Request, flow: Flow) -> Screen | None: ...

    def admit(self, request: Request, flow: Flow, now: float) -> Admission | Reply: ...

    def next_target(self, call: Call, now: float) -> Target | Reply | None: ...

    def release_target(self, call: Call, target: Target) -> None: ...

    def exhausted(self, call: Call, status: int) -> Reply: ...

    def answered(self, call: Call) -> None: ...

    def dialog_peer(self, address: Address) -> None: ...

    def account(self, call: Call) -> None: ...

    def account_refusal(
        self, request: Request | RefusedInvite, flow: Flow, reply: Reply, now: float
    ) -> None: ...

    def malformed(self, malformed: Malformed) -> bool: ...
