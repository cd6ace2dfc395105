"""Live-socket helpers shared by the transport tests: a bounded runner on the production
loop and an inbox for what a transport layer delivers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from softswitch.sip import Request, Response
from softswitch.transport import Flow, loop_factory


def run(coro: Awaitable[None], timeout: float = 10.0) -> None:
    """Run one test body on a fresh loop, bounded so a lost datagram fails instead of hanging.

    The loop is the one production gets (uvloop when the ``speed`` extra is installed).
    """

    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(bounded())


class Inbox:
    """What the layer under test delivered, awaitable one message at a time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Request | Response, Flow]] = asyncio.Queue()

    def __call__(self, message: Request | Response, flow: Flow) -> None:
        self.queue.put_nowait((message, flow))

    async def get(self, timeout: float = 2.0) -> tuple[Request | Response, Flow]:
        return await asyncio.wait_for(self.queue.get(), timeout)
