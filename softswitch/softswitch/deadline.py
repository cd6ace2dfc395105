"""One asyncio timer standing for a sans-I/O core's next deadline.

The transaction layer never reads a clock: it reports its earliest deadline and wants
``handle_timers(now)`` then (the aioquic pattern). ``softswitch.transaction_driver``, the one
loop both the user agent (``aiosip``) and the proxy engine run on, keeps its timer here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

__all__ = ["DeadlineTimer", "round_up"]


def round_up(deadline: float, resolution: float) -> float:
    """The first multiple of ``resolution`` at or after ``deadline``.

    Never before it: float division can land a hair short, and a timer armed before its
    deadline would find nothing due and re-arm for the same instant, forever.
    """
    rounded = math.ceil(deadline / resolution) * resolution
    return rounded if rounded >= deadline else rounded + resolution


class DeadlineTimer:
    """Keeps exactly one ``loop.call_at`` armed at the latest deadline asked for.

    ``fire(deadline)`` is called with the deadline it was armed for, so a callback that runs
    a clock-resolution early can still hand the core a time that is not before it.

    With a ``resolution``, deadlines are rounded up to its multiples, so the deadlines of
    many transactions share one wake-up: a proxy at a thousand calls a second has thousands
    of timers starting, stopping and firing each second, and re-arming the loop's timer for
    each was a measurable share of its CPU. SIP's timers start at 500 ms (T1); firing a few
    milliseconds late changes nothing a peer can see.
    """

    def __init__(self, fire: Callable[[float], None], *, resolution: float = 0.0) -> None:
        if resolution < 0:
            raise ValueError("resolution must be >= 0")
        self._fire = fire
        self._resolution = resolution
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        # The deadline last asked for while armed (before rounding): asked again after
        # every message, it has mostly not moved, and then not even rounding is needed.
        self._asked: float | None = None

    def schedule(self, deadline: float | None) -> None:
        """Arm for ``deadline`` (``None``: nothing pending); a no-op when it has not moved."""
        if deadline == self._asked:
            return
        at = deadline
        if at is not None and self._resolution:
            at = round_up(at, self._resolution)
        if at != self._at:
            self.cancel()
            if at is not None:
                self._handle = asyncio.get_running_loop().call_at(at, self._run, at)
                self._at = at
        self._asked = deadline

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = self._asked = None

    def _run(self, deadline: float) -> None:
        self._handle = self._at = self._asked = None
        self._fire(deadline)
