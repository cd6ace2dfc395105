"""Why a call ends: the documented end reasons and the ``Refusal`` value every stage returns.

A stage that turns a call away returns a ``Refusal`` instead of raising, so the engine
handles every refusal in one place: answer the caller with ``status`` and a ``Reason``
header, and write a CDR with ``end_reason``, ``status`` and ``q850``.

``EndReason`` is the single list of end reasons and ``END_REASONS`` their SIP codes and
Q.850 causes; ``docs/cdr.md`` prints the table for operators (a test keeps the two in
step). SIP codes and Q.850 causes follow RFC 3398 (ISUP/SIP mapping) where it has an answer.

The Reason header's text is always the Q.850 text of the cause it carries (``Q850_TEXT``),
so a caller never reads "no circuit available" beside cause 41: a refusal whose cause follows
a gateway's answer (``with_cause``) carries that cause's text. The text is generic by
construction and never reveals which accounts, gateways or rates exist; ``detail`` says what
actually happened, for logs and the CDR only.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALIASES",
    "END_REASONS",
    "PUBLIC_TEXT",
    "Q850_TEXT",
    "EndReason",
    "Refusal",
    "cause_text",
    "q850_for_status",
    "refuse",
]


class EndReason(enum.StrEnum):
    """Why a call attempt ended: the CDR's ``end_reason``, the one list of them.

    A ``StrEnum``: each member is its value as a string (``EndReason.BUSY == "busy"``), so
    the CDR stores exactly the text ``docs/cdr.md`` documents, and a value read back from
    the database compares equal to its member.
    """

    # Answered calls.
    NORMAL_CLEARING = "normal_clearing"  #: either side sent BYE (hangup_side says which)
    MAX_DURATION = "max_duration"  #: the switch hung up at max_duration
    NO_ACK = "no_ack"  #: the caller never ACKed the 2xx: the switch hung up (13.3.1.4)
    SYSTEM_FAILURE = "system_failure"  #: the switch died with the call up: closed at restart
    CREDIT_EXHAUSTED = "credit_exhausted"  #: the account's credit ran out: the switch hung up
    OPERATOR_HANGUP = "operator_hangup"  #: an operator hung the call up
    MEDIA_TIMEOUT = "media_timeout"  #: a relayed call's RTP stopped both ways: the switch hung up
    # Unanswered: the caller gave up.
    CALLER_CANCELLED = "caller_cancelled"  #: CANCEL from the caller before an answer
    # Refused by the switch before any gateway was tried.
    AUTH_FAILED = "auth_failed"  #: unknown source, wrong credentials, blocked IP
    ACCOUNT_DISABLED = "account_disabled"
    FORBIDDEN_DESTINATION = "forbidden_destination"  #: the account's allow/deny prefix lists
    LIMIT_EXCEEDED = "limit_exceeded"  #: the account's max_calls or max_cps
    INSUFFICIENT_BALANCE = "insufficient_balance"  #: credit short of the first increment
    INVALID_NUMBER = "invalid_number"  #: not a number after normalising
    NO_RATE = "no_rate"  #: the account's sell deck has no rate for the number
    NO_ROUTE = "no_route"  #: no route matches, or lcr excluded every gateway
    NO_GATEWAY = "no_gateway"  #: routes exist but every gateway is down/full/over CPS
    LOOP_DETECTED = "loop_detected"
    TOO_MANY_HOPS = "too_many_hops"
    INVALID_REQUEST = "invalid_request"  #: malformed, incomplete (or 416/420/505)
    MESSAGE_TOO_LARGE = "message_too_large"  #: the INVITE as forwarded would exceed 64 KiB
    SYSTEM_SHUTDOWN = "system_shutdown"  #: SIGTERM drain: no new calls
    INTERNAL_ERROR = "internal_error"
    MEDIA_UNAVAILABLE = "media_unavailable"  #: the call needs a media relay and none answered
    CODEC_MISMATCH = "codec_mismatch"  #: no codec of the offer is allowed (codec policy): 488
    # The gateways' answers.
    BUSY = "busy"  #: 486 or 600 from the callee's side: never failed over
    DECLINED = "declined"
    NO_ANSWER = "no_answer"  #: ringing, no answer (480/408 after a 18x)
    GATEWAY_TIMEOUT = "gateway_timeout"  #: the last gateway sent nothing within setup_timeout
    GATEWAY_REJECTED = "gateway_rejected"  #: a final failure not in the failover set, relayed
    ALL_GATEWAYS_FAILED = "all_gateways_failed"  #: every attempt failed over, or cap/budget hit


#: end reason -> (SIP code answered to the caller / shown in the CDR, Q.850 cause).
END_REASONS: Final[dict[EndReason, tuple[int, int]]] = {
    EndReason.NORMAL_CLEARING: (200, 16),
    EndReason.MAX_DURATION: (200, 102),
    EndReason.NO_ACK: (200, 102),
    EndReason.SYSTEM_FAILURE: (200, 41),
    EndReason.CREDIT_EXHAUSTED: (200, 16),
    EndReason.OPERATOR_HANGUP: (200, 16),
    EndReason.MEDIA_TIMEOUT: (200, 102),
    EndReason.CALLER_CANCELLED: (487, 16),
    EndReason.AUTH_FAILED: (403, 21),
    EndReason.ACCOUNT_DISABLED: (403, 21),
    EndReason.FORBIDDEN_DESTINATION: (403, 21),
    EndReason.LIMIT_EXCEEDED: (503, 34),
    EndReason.INSUFFICIENT_BALANCE: (402, 21),
    EndReason.INVALID_NUMBER: (484, 28),
    EndReason.NO_RATE: (404, 3),
    EndReason.NO_ROUTE: (404, 3),
    EndReason.NO_GATEWAY: (503, 34),
    EndReason.LOOP_DETECTED: (482, 25),
    EndReason.TOO_MANY_HOPS: (483, 25),
    EndReason.INVALID_REQUEST: (400, 127),
    EndReason.MESSAGE_TOO_LARGE: (513, 127),
    EndReason.SYSTEM_SHUTDOWN: (503, 41),
    EndReason.INTERNAL_ERROR: (500, 41),
    EndReason.MEDIA_UNAVAILABLE: (503, 47),
    EndReason.CODEC_MISMATCH: (488, 65),
    EndReason.BUSY: (486, 17),
    EndReason.DECLINED: (603, 21),
    EndReason.NO_ANSWER: (480, 19),
    EndReason.GATEWAY_TIMEOUT: (408, 102),
    EndReason.GATEWAY_REJECTED: (404, 1),
    EndReason.ALL_GATEWAYS_FAILED: (503, 34),
}

#: ITU-T Q.850 cause texts (lower case, as sent in ``Reason: Q.850;cause=N;text="..."``) for
#: every cause the switch can send: those of ``END_REASONS`` and of the RFC 3398 mapping below
#: (a test checks both). Any other cause gets its class's "unspecified" text (``cause_text``).
Q850_TEXT: Final[dict[int, str]] = {
    1: "unallocated (unassigned) number",
    3: "no route to destination",
    16: "normal call clearing",
    17: "user busy",
    18: "no user responding",
    19: "no answer from user (user alerted)",
    21: "call rejected",
    22: "number changed",
    25: "exchange routing error",
    28: "invalid number format (address incomplete)",
    31: "normal, unspecified",
    34: "no circuit/channel available",
    38: "network out of order",
    41: "temporary failure",
    47: "resource unavailable, unspecified",
    58: "bearer capability not presently available",
    63: "service or option not available, unspecified",
    65: "bearer capability not implemented",
    79: "service or option not implemented, unspecified",
    95: "invalid message, unspecified",
    102: "recovery on timer expiry",
    111: "protocol error, unspecified",
    127: "interworking, unspecified",
}

# Q.850 2.2.5: a cause a receiver does not know is treated as the "unspecified" cause of its
# class (the class is the cause's top three bits).
_CLASS_UNSPECIFIED: Final = (31, 31, 47, 63, 79, 95, 111, 127)


def cause_text(cause: int) -> str:
    """The Q.850 text for ``cause`` (1-127); an unlisted one gets its class's text."""
    text = Q850_TEXT.get(cause)
    if text is not None:
        return text
    return Q850_TEXT[_CLASS_UNSPECIFIED[(cause >> 4) & 7]]


#: The Reason header's text per end reason: the Q.850 text of its cause (short, generic,
#: safe to show a caller). ``docs/cdr.md`` prints it; a test keeps the two in step.
PUBLIC_TEXT: Final[dict[EndReason, str]] = {
    reason: cause_text(cause) for reason, (_, cause) in END_REASONS.items()
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A stage's "no": what to answer the caller and what the CDR will say.

    ``reason`` (the public Reason text) follows from ``q850``, so the two cannot disagree;
    ``detail`` is internal (logs, CDR, ``softswitch route``), e.g. which limit was hit.
    """

    status: int
    end_reason: EndReason
    q850: int
    detail: str = ""

    @property
    def reason(self) -> str:
        """The Reason header's text: the Q.850 text of the cause sent."""
        return cause_text(self.q850)

    def with_cause(self, q850: int) -> Refusal:
        """The same refusal with another Q.850 cause (and so that cause's text)."""
        return dataclasses.replace(self, q850=q850)

    def reason_header(self) -> str:
        """The ``Reason`` header value (RFC 3326), e.g.
        ``Q.850;cause=34;text="no circuit/channel available"``."""
        text = self.reason.replace("\\", "\\\\").replace('"', '\\"')
        return f'Q.850;cause={self.q850};text="{text}"'

    def headers(self) -> list[tuple[str, str]]:
        """Extra header fields for the response that carries this refusal."""
        return [("Reason", self.reason_header())]

    def __str__(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.status} {self.end_reason}{tail}"


#: Earlier spellings still accepted by ``refuse`` (the CDR always shows the canonical one).
ALIASES: Final[dict[str, EndReason]] = {
    "shutting_down": EndReason.SYSTEM_SHUTDOWN,
    "bad_request": EndReason.INVALID_REQUEST,
}


def _member(name: EndReason | str) -> EndReason:
    """The member for ``name``: a member, its value, or an earlier spelling (``ALIASES``).

    An unknown name is a programming error (KeyError): every reason the switch can write
    must be in the documented table.
    """
    if isinstance(name, EndReason):
        return name
    alias = ALIASES.get(name)
    if alias is not None:
        return alias
    try:
        return EndReason(name)
    except ValueError:
        raise KeyError(name) from None


def refuse(reason: EndReason | str, detail: str = "", *, status: int | None = None) -> Refusal:
    """The ``Refusal`` for a documented end reason; ``status`` overrides the table's code.

    ``reason`` is an :class:`EndReason`; a string is taken as its value (or an earlier
    spelling, ``ALIASES``), and an unknown one is a KeyError.
    """
    member = _member(reason)
    code, q850 = END_REASONS[member]
    return Refusal(
        status=code if status is None else status,
        end_reason=member,
        q850=q850,
        detail=detail,
    )


# RFC 3398 section 8.2.6.1 (SIP -> ISUP cause), for failures relayed from a gateway.
_Q850_BY_STATUS: Final[dict[int, int]] = {
    400: 41,
    401: 21,
    402: 21,
    403: 21,
    404: 1,
    405: 63,
    406: 79,
    407: 21,
    408: 102,
    410: 22,
    413: 127,
    414: 127,
    415: 79,
    416: 127,
    420: 127,
    421: 127,
    423: 127,
    480: 18,
    481: 41,
    482: 25,
    483: 25,
    484: 28,
    485: 1,
    486: 17,
    487: 127,
    488: 127,
    500: 41,
    501: 79,
    502: 38,
    503: 41,
    504: 102,
    505: 127,
    513: 127,
    600: 17,
    603: 21,
    604: 1,
    606: 58,
}


def q850_for_status(status: int) -> int:
    """The Q.850 cause for a SIP code (RFC 3398): 2xx is normal clearing (16), a code the
    RFC does not list is "normal, unspecified" (31)."""
    if 200 <= status < 300:
        return 16
    return _Q850_BY_STATUS.get(status, 31)
