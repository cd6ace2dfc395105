"""Settling a dead run's calls while this switch runs, not only when one starts.

A switch closes the calls dead runs left up when it starts (``recover``). That is enough for
one process: a dead switch is restarted, and the restart settles its calls. On a database
that several nodes share it is not: a node that dies for good (a host lost, a node taken out
of a balancer's pool) would leave its calls' CDRs and debits unwritten until some node happens
to restart, and the account's balance would read as if those calls had been free. So the
primary process of every running switch asks the store every heartbeat interval whether some
other run is dead with something to settle (a read that takes no lock) and, only then,
recovers it as a start would. Recovery is one transaction under the store's recovery lock,
so several nodes sweeping at once settle each run once.

A failed check (the database down) is logged once per outage, not every interval; the next
interval tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from ..cancelling import cancel_and_wait
from .records import Rater, RecoveredRun

__all__ = ["Recoverable", "RecoverySweep"]

logger = logging.getLogger("softswitch.cdr")


class Recoverable(Protocol):
    """What the sweep needs of a store: ``CdrStore`` and ``PostgresCdrStore`` are ones."""

    def pending_recovery(self) -> bool: ...

    def recover(self, rate: Rater | None = None) -> Sequence[RecoveredRun]: ...


class RecoverySweep:
    """Every ``interval`` seconds, the dead runs' calls of ``store`` settled with ``rate``;
    ``recovered`` is awaited after a sweep that settled some (the meter reads the debits)."""

    def __init__(
        self,
        store: Recoverable,
        rate: Rater | None,
        interval: float,
        recovered: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.store = store
        self.rate = rate
        self.interval = interval
        self.recovered = recovered
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._forever())

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def sweep(self) -> list[RecoveredRun]:
        """One check, and the recovery when it finds a dead run (off the event loop)."""
        if not await asyncio.to_thread(self.store.pending_recovery):
            return []
        runs = list(await asyncio.to_thread(self.store.recover, self.rate))
        if runs and self.recovered is not None:
            await self.recovered()
        return runs

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as e:  # the task outlives any one failure: next interval
                if not self._failing:
                    logger.warning(
                        "settling dead runs' calls failed (retried every %g s): %s",
                        self.interval,
                        e,
                        exc_info=logger.isEnabledFor(logging.DEBUG),
                    )
                self._failing = True
            else:
                if self._failing:
                    logger.warning("settling dead runs' calls works again")
                self._failing = False
