"""``cancel_and_wait``: a task that loses a cancel is cancelled again; the caller's own
cancellation and the task's own error still come out."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from forced_stop import ends_within
from softswitch.cancelling import cancel_and_wait


async def _loses_one_cancel(ended: list[str]) -> None:
    """Drops the first cancel, as Python 3.11's ``wait_for`` does when the cancel lands
    the moment the awaited thing finished; then runs on like a renewal loop."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    try:
        while True:
            await asyncio.sleep(0.01)
    finally:
        ended.append("ended")


def test_a_task_that_lost_the_cancel_is_cancelled_again() -> None:
    async def main() -> None:
        ended: list[str] = []
        task = asyncio.create_task(_loses_one_cancel(ended))
        await asyncio.sleep(0)
        stopping = asyncio.create_task(cancel_and_wait(task))
        assert await ends_within(stopping, 5.0, task)
        assert task.cancelled()
        assert ended == ["ended"]

    asyncio.run(main())


def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    """The closer is cancelled while it waits (a stop's deadline): it ends cancelled, where
    ``with suppress(CancelledError): await task`` took the caller's cancel for the task's
    and went on."""

    async def main() -> None:
        release = asyncio.Event()

        async def slow_to_stop() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                await release.wait()  # a clean-up that takes its time

        task = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        went_on: list[str] = []

        async def closer() -> None:
            await cancel_and_wait(task)
            went_on.append("went on")

        closing = asyncio.create_task(closer())
        await asyncio.sleep(0.05)
        closing.cancel()
        await asyncio.wait([closing], timeout=1)
        assert closing.cancelled()
        assert went_on == []
        release.set()
        await asyncio.wait([task], timeout=5)
        assert task.done()

    asyncio.run(main())


def test_a_task_that_lost_the_cancel_still_ends_when_the_closer_is_cancelled() -> None:
    """The closer gives up waiting (cancelled) while the task has dropped its cancel: the
    task is still cancelled again until it ends, instead of running on for good."""

    async def main() -> None:
        ended: list[str] = []
        task = asyncio.create_task(_loses_one_cancel(ended))
        await asyncio.sleep(0)
        closing = asyncio.create_task(cancel_and_wait(task))
        await asyncio.sleep(0)  # the first cancel sent, and lost
        closing.cancel()
        await asyncio.wait([closing], timeout=1)
        assert closing.cancelled()
        assert await ends_within(task, 2.0)
        assert ended == ["ended"]

    asyncio.run(main())


def test_the_tasks_own_error_is_raised() -> None:
    async def main() -> None:
        async def fails_on_cancel() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise RuntimeError("broke while stopping") from None

        task = asyncio.create_task(fails_on_cancel())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="broke while stopping"):
            await cancel_and_wait(task)

    asyncio.run(main())


def test_an_ended_task_is_left_as_it_is() -> None:
    async def main() -> None:
        async def returns() -> int:
            return 1

        task = asyncio.create_task(returns())
        await task
        await cancel_and_wait(task)
        assert task.result() == 1

    asyncio.run(main())
