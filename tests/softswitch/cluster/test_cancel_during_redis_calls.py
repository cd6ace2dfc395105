"""A task cancelled inside a Redis call stops: redis-py's ``wait_for`` on Python 3.11 drops
a cancel that lands as a command's send finishes (``softswitch.cancelling``), which left a
node's lease renewal running and its ``close()`` waiting for ever."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from cluster_support import raw

from forced_stop import ends_within
from softswitch.cancelling import cancel_and_wait
from softswitch.cluster import SharedState, leases
from softswitch.cluster.connection import Link


def test_a_task_looping_on_redis_calls_stops_at_every_cancel(url: str) -> None:
    """100 cancels at random moments of a loop of PINGs (most were lost with a single
    ``cancel()`` when this was written): each stop ends within 2 s."""
    rng = random.Random(14)

    async def main() -> None:
        link = Link(url, timeout=1.0)

        async def pinging() -> None:
            while True:
                await asyncio.sleep(0.001)
                await link.command("PING")

        try:
            for _ in range(100):
                task = asyncio.create_task(pinging())
                await asyncio.sleep(rng.uniform(0, 0.01))
                stopping = asyncio.create_task(cancel_and_wait(task))
                assert await ends_within(stopping, 2.0, task), "the loop went on after its cancel"
        finally:
            await link.close()

    asyncio.run(main())


def test_a_node_closes_when_its_renewal_lost_the_cancel(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renewal drops the close's cancel, as redis-py's ``wait_for`` does when the cancel
    lands as a command's send finishes (rare per close, so made certain here): ``close()``
    still ends, and the node's lease is given back."""
    entered = asyncio.Event()

    async def renewal_that_loses_the_cancel(self: leases.NodeLease) -> None:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)

    monkeypatch.setattr(leases.NodeLease, "renew", renewal_that_loses_the_cancel)

    async def main() -> None:
        # A lease long enough that its key outlives the test unless close() gives it back.
        state = await SharedState.connect(url, "a", lease=3.0, prefix=prefix)
        await asyncio.wait_for(entered.wait(), 5)
        closing = asyncio.create_task(state.close())
        keeper = state._keeper
        assert await ends_within(closing, 5.0, keeper), "close() waited for the renewal for 5 s"
        async with raw(url) as client:
            assert await client.exists(f"{prefix}:node:a") == 0

    asyncio.run(main())
