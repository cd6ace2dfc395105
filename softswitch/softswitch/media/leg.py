"""One gateway attempt's session on a media relay, named the way the relay knows it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NgLeg"]


@dataclass(frozen=True, slots=True)
class NgLeg:
    """One gateway attempt's session on a relay: its NG ``call-id``.

    A SIP Call-ID with the attempt's number: the attempts of one call never share relay
    state, so deleting a failed one cannot touch the next, and the relay's own logs still
    find the call by its Call-ID.
    """

    call_id: str

    @classmethod
    def for_attempt(cls, call_id: str, attempt: int) -> NgLeg:
        return cls(f"{call_id}-{attempt}")
