"""One asyncio timer standing for a sans-I/O core's next deadline.

The transaction layer never reads a clock: it reports its earliest deadline and wants
``handle_timers(now)`` then (the aioquic pattern). Both the user agent (``aiosip``) and the
proxy engine drive it the same way, so the re-arming lives here once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    """Keeps exactly one ``loop.call_at`` armed at the latest deadline asked for.

    ``fire(deadline)`` is called with the deadline it was armed for, so a callback that runs
    a clock-resolution early can still hand the core a time that is not before it.
    """

    def __init__(self, fire: Callable[[float], None]) -> None:
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def schedule(self, deadline: float | None) -> None:
        """Arm for ``deadline`` (``None``: nothing pending); a no-op when it has not moved."""
        if deadline == self._at:
            return
        self.cancel()
        if deadline is not None:
            self._handle = asyncio.get_running_loop().call_at(deadline, self._run, deadline)
            self._at = deadline

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None

    def _run(self, deadline: float) -> None:
        self._handle = self._at = None
        self._fire(deadline)
