"""Fail-over decisions, as pure functions of the responses a hunt collected.

Kept apart from the engine so the rules an operator argues about (which codes move on to
the next carrier, what the caller hears when every carrier failed) can be read in one place
and tested without a socket.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

__all__ = [
    "DEFAULT_FAILOVER_CODES",
    "NEVER_FAIL_OVER",
    "best_final_status",
    "should_fail_over",
]

#: 408 and every 5xx (issue 4: "default: 408, 5xx").
DEFAULT_FAILOVER_CODES: Final = frozenset({408, *range(500, 600)})

#: Answers that describe the called party, not the carrier: trying another carrier would
#: only ring a busy line twice (486, 600) or resurrect a call the caller gave up (487).
NEVER_FAIL_OVER: Final = frozenset({486, 487, 600})


def should_fail_over(status: int, codes: Collection[int] | None) -> bool:
    """Whether a final ``status`` from one gateway sends the call to the next candidate."""
    if status < 300 or status in NEVER_FAIL_OVER:
        return False
    allowed = DEFAULT_FAILOVER_CODES if codes is None else codes
    return status in allowed


def _rank(status: int) -> tuple[int, int]:
    """Lower is better, after RFC 3261 16.7 step 6.

    6xx wins (a global answer); otherwise the lowest class, preferring within a class the
    codes that say something about the callee (486, 480, 404, 484) over the generic ones,
    then 4xx over 5xx; 408 (we timed out) is the weakest 4xx.
    """
    if 600 <= status < 700:
        return (0, status)
    if 300 <= status < 500:
        if status == 408:
            return (2, status)
        return (1, status)
    return (3, status)


def best_final_status(statuses: Sequence[int]) -> int:
    """The status the caller gets when every branch failed (RFC 3261 16.7 step 6).

    A 503 chosen this way becomes 500: a 503 to the caller would tell its side to stop
    sending to *us*, while only one carrier is unavailable. With no response at all (every
    branch timed out) the answer is 408.
    """
    finals = [s for s in statuses if s >= 300]
    if not finals:
        return 408
    best = min(finals, key=_rank)
    return 500 if best == 503 else best
