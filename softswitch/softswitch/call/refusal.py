"""Why a call ends: the documented end reasons and the ``Refusal`` value every stage returns.

A stage that turns a call away returns a ``Refusal`` instead of raising, so the engine
handles every refusal in one place: answer the caller with ``status`` and a ``Reason``
header, and write a CDR with ``end_reason``, ``status`` and ``q850``.

``END_REASONS`` is the single table of end reasons; ``docs/cdr.md`` prints it for operators
(a test keeps the two in step). SIP codes and Q.850 causes follow RFC 3398 (ISUP/SIP mapping)
where it has an answer.

The Reason header's text is always the Q.850 text of the cause it carries (``Q850_TEXT``),
so a caller never reads "no circuit available" beside cause 41: a refusal whose cause follows
a gateway's answer (``with_cause``) carries that cause's text. The text is generic by
construction and never reveals which accounts, gateways or rates exist; ``detail`` says what
actually happened, for logs and the CDR only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALIASES",
    "END_REASONS",
    "PUBLIC_TEXT",
    "Q850_TEXT",
    "Refusal",
    "cause_text",
    "q850_for_status",
    "refuse",
]

#: end reason -> (SIP code answered to the caller / shown in the CDR, Q.850 cause).
END_REASONS: Final[dict[str, tuple[int, int]]] = {
    # Answered calls.
    "normal_clearing": (200, 16),  # either side sent BYE (hangup_side says which)
    "max_duration": (200, 102),  # the switch hung up: recovery on timer expiry
    "no_ack": (200, 102),  # the caller never ACKed the 2xx: the switch hung up (13.3.1.4)
    "system_failure": (200, 41),  # the switch died with the call up: closed at its restart
    # Unanswered: the caller gave up.
    "caller_cancelled": (487, 16),  # CANCEL from the caller before an answer
    # Refused by the switch before any gateway was tried.
    "auth_failed": (403, 21),  # unknown source, wrong credentials, blocked IP
    "account_disabled": (403, 21),
    "forbidden_destination": (403, 21),  # the account's allow/deny prefix lists
    "limit_exceeded": (503, 34),  # the account's max_calls or max_cps
    "invalid_number": (484, 28),  # not a number after normalising
    "no_rate": (404, 3),  # the account's sell deck has no rate for the number
    "no_route": (404, 3),  # no route matches, or lcr excluded every gateway
    "no_gateway": (503, 34),  # routes exist but every gateway is down/full/over CPS
    "loop_detected": (482, 25),
    "too_many_hops": (483, 25),
    "invalid_request": (400, 127),
    "message_too_large": (513, 127),  # the INVITE as forwarded would exceed 64 KiB
    "system_shutdown": (503, 41),  # SIGTERM drain: no new calls
    "internal_error": (500, 41),
    # The gateways' answers.
    "busy": (486, 17),  # 486 or 600 from the callee's side: never failed over
    "declined": (603, 21),
    "no_answer": (480, 19),  # ringing, no answer (480/408 after a 18x)
    "gateway_timeout": (408, 102),  # the last gateway tried sent nothing within setup_timeout
    "gateway_rejected": (404, 1),  # a final failure not in the failover set, relayed
    "all_gateways_failed": (503, 34),  # every attempt failed over, or the cap/budget was hit
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
PUBLIC_TEXT: Final[dict[str, str]] = {
    reason: cause_text(cause) for reason, (_, cause) in END_REASONS.items()
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A stage's "no": what to answer the caller and what the CDR will say.

    ``reason`` (the public Reason text) follows from ``q850``, so the two cannot disagree;
    ``detail`` is internal (logs, CDR, ``softswitch route``), e.g. which limit was hit.
    """

    status: int
    end_reason: str
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
ALIASES: Final[dict[str, str]] = {
    "shutting_down": "system_shutdown",
    "bad_request": "invalid_request",
}


def refuse(end_reason: str, detail: str = "", *, status: int | None = None) -> Refusal:
    """The ``Refusal`` for a documented end reason; ``status`` overrides the table's code.

    An unknown end reason is a programming error (KeyError): every reason the switch can
    write must be in the documented table.
    """
    end_reason = ALIASES.get(end_reason, end_reason)
    code, q850 = END_REASONS[end_reason]
    return Refusal(
        status=code if status is None else status,
        end_reason=end_reason,
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
