"""Stopping a background task for certain, where one ``task.cancel()`` may be lost.

On Python 3.11 ``asyncio.wait_for`` returns the inner result, and drops the cancel, when a
cancel arrives in the instant the awaited thing finished (fixed in 3.12). redis-py sends
every command through ``wait_for`` (its socket timeout), so a task cancelled inside a Redis
call can carry on as if nothing happened. A task looping on ``PING`` against a local Redis
lost 9-14% of the cancels sent at random moments by the task that started it (three runs of
300-1,000, 2026-12-06), and most of those sent by a task started to stop it. The switch met
it as a node's lease renewal that never stopped and a ``close()`` that waited for it for ever
(a CI run hung in a lease test). :func:`cancel_and_wait` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ["AGAIN_AFTER", "cancel_and_wait"]

#: Seconds a cancelled task gets to end before it is cancelled again: a lost cancel costs a
#: stop this much. A task's own clean-up after a cancel must not await longer (none of the
#: switch's does: its background loops stop at once).
AGAIN_AFTER: Final = 0.05


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended, re-raising what it raised other than
    its cancellation. The caller's own cancellation is not swallowed (a bare
    ``with suppress(CancelledError): await task`` would take it for the task's); the task is
    then still cancelled every ``AGAIN_AFTER`` seconds until it ends."""
    try:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=AGAIN_AFTER)
    except asyncio.CancelledError:
        # The caller gives up waiting, not stopping: the task is still cancelled again
        # until it ends, or a lost cancel would leave it running for good.
        _cancel_until_done(task)
        raise
    if not task.cancelled():
        task.result()


def _cancel_until_done(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
        task.get_loop().call_later(AGAIN_AFTER, _cancel_until_done, task)
