"""OPTIONS probing of gateways: the health check behind "marked down, skipped".

One task per probed gateway (``probe`` seconds apart; 0 = never probed, always up). A
gateway that does not answer, or answers 5xx/408, is marked down in ``LiveState`` and the
selection stage skips it; the first answer again (any other status: a 404 or 405 still
proves a live SIP stack) marks it up. The task list follows the configuration: a reload
restarts it with the new gateways and intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from softswitch.transport import Address, Transport

__all__ = ["ProbeTarget", "Prober"]

logger = logging.getLogger("softswitch.proxy.probe")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    gateway_id: str
    transport: Transport
    address: Address
    interval: float


Ask = Callable[[Transport, Address, float], Awaitable[int | None]]


class Prober:
    """Runs the probes; ``ask`` sends one OPTIONS and returns its status (None: no answer)."""

    def __init__(
        self,
        ask: Ask,
        mark: Callable[[str, bool], None],
    ) -> None:
        self._ask = ask
        self._mark = mark
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, targets: Iterable[ProbeTarget]) -> None:
        """(Re)start probing exactly ``targets``; gateways no longer probed count as up."""
        wanted = {t.gateway_id: t for t in targets if t.interval > 0}
        for gateway_id in list(self._tasks):
            self._tasks.pop(gateway_id).cancel()
            if gateway_id not in wanted:
                self._mark(gateway_id, True)
        loop = asyncio.get_running_loop()
        for target in wanted.values():
            self._tasks[target.gateway_id] = loop.create_task(self._run(target))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _run(self, target: ProbeTarget) -> None:
        # A reload's cancel can be lost (``softswitch.cancelling``: Python 3.11's wait_for,
        # under ``ask``, drops one landing as the answer came): a probe that is no longer
        # its gateway's ends here rather than probing the old address for ever.
        me = asyncio.current_task()
        up: bool | None = None
        while self._tasks.get(target.gateway_id) is me:
            try:
                timeout = min(target.interval, 2.0)
                status = await self._ask(target.transport, target.address, timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("probe of %s failed", target.gateway_id)
                status = None
            if self._tasks.get(target.gateway_id) is not me:
                return  # replaced while it asked: its answer may be the old address's
            now_up = isinstance(status, int) and not (status == 408 or 500 <= status < 600)
            if now_up != up:
                logger.warning(
                    "gateway %s is %s (OPTIONS: %s)",
                    target.gateway_id,
                    "up" if now_up else "down",
                    status if status is not None else "no answer",
                )
                self._mark(target.gateway_id, now_up)
                up = now_up
            await asyncio.sleep(target.interval)
