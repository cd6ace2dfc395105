"""The alarms' periodic task on the switch's event loop: the one place they read a clock.

Each round evaluates the rules that are due (every rule has its ``interval``, 5 s by
default) and sleeps until the next one is; a reload wakes it, so a new rule is evaluated at
once. A round is a few statistics queries per rule and key, short enough to run on the loop
between calls. A bug in a round is logged and the next round runs: alarms must never stop
the switch, nor stop being evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..cancelling import cancel_and_wait
from .state import Alarms

__all__ = ["AlarmRunner"]

logger = logging.getLogger("softswitch.alarms")

#: Shortest sleep between rounds, so a burst of due rules never spins the loop.
MIN_SLEEP = 0.05
#: Longest sleep with no rule configured (a reload wakes the task anyway).
IDLE_SLEEP = 60.0


class AlarmRunner:
    """Starts and stops the evaluation task of one ``Alarms``."""

    def __init__(self, alarms: Alarms) -> None:
        self.alarms = alarms
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alarms")

    def wake(self) -> None:
        """Evaluate now (the rules changed)."""
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            try:
                self.alarms.evaluate(now, time.time())
            except Exception:
                logger.exception("alarms: an evaluation round failed; the next one runs")
            delay = self.alarms.due_in(time.monotonic())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                timeout = IDLE_SLEEP if delay is None else max(MIN_SLEEP, delay)
                await asyncio.wait_for(self._wake.wait(), timeout)
