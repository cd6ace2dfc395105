"""Why a call ends: the documented end reasons and the ``Refusal`` value every stage returns.

A stage that turns a call away returns a ``Refusal`` instead of raising, so the engine
handles every refusal in one place: answer the caller with ``status`` and a ``Reason``
header, and write a CDR with ``end_reason``, ``status`` and ``q850``.

``END_REASONS`` is the single table of end reasons; ``docs/cdr.md`` prints it for operators
(a test keeps the two in step). SIP codes and Q.850 causes follow RFC 3398 (ISUP/SIP mapping)
where it has an answer.

``reason`` is the public text sent in the Reason header and must never reveal which accounts,
gateways or rates exist; ``detail`` is for logs and the CDR only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALIASES",
    "END_REASONS",
    "PUBLIC_TEXT",
    "Refusal",
    "q850_for_status",
    "refuse",
]

#: end reason -> (SIP code answered to the caller / shown in the CDR, Q.850 cause).
END_REASONS: Final[dict[str, tuple[int, int]]] = {
    # Answered calls.
    "normal_clearing": (200, 16),  # either side sent BYE (hangup_side says which)
    "max_duration": (200, 102),  # the switch hung up: recovery on timer expiry
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

#: The text of the Reason header per end reason: short, generic, safe to show a caller.
PUBLIC_TEXT: Final[dict[str, str]] = {
    "normal_clearing": "normal call clearing",
    "max_duration": "maximum call duration reached",
    "caller_cancelled": "call cancelled",
    "auth_failed": "forbidden",
    "account_disabled": "forbidden",
    "forbidden_destination": "destination not allowed",
    "limit_exceeded": "call limit reached",
    "invalid_number": "invalid number format",
    "no_rate": "no route to destination",
    "no_route": "no route to destination",
    "no_gateway": "no circuit available",
    "loop_detected": "loop detected",
    "too_many_hops": "too many hops",
    "invalid_request": "bad request",
    "message_too_large": "message too large",
    "system_shutdown": "service shutting down",
    "internal_error": "temporary failure",
    "busy": "user busy",
    "declined": "call rejected",
    "no_answer": "no answer",
    "gateway_timeout": "no response from carrier",
    "gateway_rejected": "call rejected by carrier",
    "all_gateways_failed": "no circuit available",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A stage's "no": what to answer the caller and what the CDR will say.

    ``reason`` is the public Reason text; ``detail`` is internal (logs, CDR, ``softswitch
    route``), e.g. which limit was hit.
    """

    status: int
    reason: str
    end_reason: str
    q850: int
    detail: str = ""

    def reason_header(self) -> str:
        """The ``Reason`` header value (RFC 3326), e.g. ``Q.850;cause=34;text="no circuit"``."""
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
        reason=PUBLIC_TEXT[end_reason],
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
