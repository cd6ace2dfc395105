"""Admission rates across nodes: at most ``limit`` admissions in any ``window`` seconds.

The same rule as ``LiveState``'s ``max_cps`` (a sliding window of admitted calls; refused
calls do not use it up), counted by every node together in one sorted set per key: each
admission is a member scored with Redis's ``TIME`` in microseconds, and the script drops the
members at least ``window`` old before it counts. Members are made unique by the node's
field and a per-node sequence number, so two admissions in the same microsecond are two.
The set expires a moment after its newest member leaves the window.
"""

from __future__ import annotations

import itertools

from .connection import Link
from .counters import check_count
from .errors import SharedStateConfigError
from .keys import Keys
from .scripts import RATE

__all__ = ["RateWindows", "window_us"]


def window_us(name: str, seconds: float) -> int:
    """``seconds`` as whole microseconds, at least 1 ms and at most a day."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise SharedStateConfigError(f"{name} must be a number of seconds, got {seconds!r}")
    if not 0.001 <= seconds <= 86400:
        raise SharedStateConfigError(f"{name} {seconds} s is outside 0.001..86400")
    return round(seconds * 1_000_000)


class RateWindows:
    def __init__(self, link: Link, keys: Keys, member: str) -> None:
        self._link = link
        self._keys = keys
        self._member = member
        self._sequence = itertools.count()

    async def admit(self, key: str, limit: int, window: float = 1.0) -> bool:
        """Count one admission on ``key`` unless ``limit`` were already counted in the last
        ``window`` seconds (then False, and nothing counted)."""
        check_count("limit", limit, minimum=0)
        args: list[str | int] = [
            limit,
            window_us("window", window),
            f"{self._member}:{next(self._sequence)}",
        ]
        return bool(await self._link.run(RATE, [self._keys.rate(key)], args))
