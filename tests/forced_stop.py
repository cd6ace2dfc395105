"""A bounded wait for a task that may not stop, for tests of tasks that drop cancels.

``asyncio.run`` cancels the tasks left at its end once and waits for them: a task that drops
that cancel (what the tests of ``softswitch.cancelling`` are about) would hang the test run
instead of failing the test.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ends_within"]


async def ends_within(
    task: asyncio.Task[Any], seconds: float, *also: asyncio.Task[Any] | None
) -> bool:
    """Whether ``task`` ends within ``seconds``. Either way ``task`` and ``also`` are then
    cancelled until they have ended, so a failing test fails rather than hangs."""
    done, _ = await asyncio.wait([task], timeout=seconds)
    for left in (task, *also):
        while left is not None and not left.done():
            left.cancel()
            await asyncio.sleep(0.01)
    return bool(done)
