"""A request we sent, seen from the caller: awaitable for the final response, iterable for all.

Sending needs I/O first (a TCP connection, the sent-by address for the Via), so the object
is returned at once and does that work in a task; the caller awaits whatever it cares about.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING

from softswitch.sip import Request, Response
from softswitch.transport import Flow

if TYPE_CHECKING:
    from .dialog import Dialog

__all__ = ["PendingRequest", "RequestFailedError"]


class RequestFailedError(Exception):
    """A request ended with a non-2xx final response where the caller needed success."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status} {response.reason}")
        self.response = response


class PendingRequest:
    """One client transaction's outcome.

    ``await pending`` gives the final response; ``async for response in pending`` gives every
    response, provisional ones first, ending with the final one. A timeout or transport
    failure is reported the way RFC 3261 8.1.3.1 asks a UAC to treat it: as a locally made
    ``408`` or ``503`` final response. Failing before anything was sent (no route to the
    peer, TCP connection refused) raises that ``OSError`` from the await instead: there is
    no request to answer. For an INVITE answered 2xx, :attr:`dialog` is set
    before the final response is delivered and the ACK is sent by the stack.
    """

    def __init__(
        self,
        start: Callable[[PendingRequest], Awaitable[tuple[Request, Flow]]],
        spawn: Callable[[Awaitable[None]], object],
        *,
        dialog: Dialog | None = None,
        canceller: Callable[[PendingRequest], PendingRequest] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._canceller = canceller
        self.request: Request | None = None
        self.flow: Flow | None = None
        self.responses: list[Response] = []
        self.dialog = dialog
        self._final: asyncio.Future[Response] = loop.create_future()
        self._wake: asyncio.Future[None] = loop.create_future()
        spawn(self._start(start))

    async def _start(
        self, start: Callable[[PendingRequest], Awaitable[tuple[Request, Flow]]]
    ) -> None:
        try:
            self.request, self.flow = await start(self)
        except Exception as exc:  # connection refused, bad URI: the caller's await raises it
            self._fail(exc)

    # -- fed by the application ---------------------------------------------------------

    def _deliver(self, response: Response) -> None:
        if self._final.done():
            return
        self.responses.append(response)
        if response.status >= 200:
            self._final.set_result(response)
        self._notify()

    def _fail(self, exc: BaseException) -> None:
        if not self._final.done():
            self._final.set_exception(exc)
            self._final.exception()  # raised to whoever awaits; not logged if nobody does
            self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.get_running_loop().create_future()
        wake.set_result(None)

    # -- for the caller -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._final.done()

    def cancel(self) -> PendingRequest:
        """Send CANCEL for this INVITE (RFC 3261 9.1); returns the CANCEL's own request.

        The INVITE then normally ends with ``487``. RFC 3261 forbids a CANCEL before any
        provisional response (the peer may not have the INVITE yet), so that is an error.
        """
        if self._canceller is None or self.request is None or self.request.method != "INVITE":
            raise RuntimeError("only a sent INVITE can be cancelled")
        if self._final.done() or not self.responses:
            raise RuntimeError("CANCEL needs a provisional response and no final one yet")
        return self._canceller(self)

    def __await__(self) -> Generator[object, None, Response]:
        return asyncio.shield(self._final).__await__()

    def __aiter__(self) -> AsyncIterator[Response]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Response]:
        index = 0
        while True:
            while index < len(self.responses):
                response = self.responses[index]
                index += 1
                yield response
                if response.status >= 200:
                    return
            if self._final.done():
                self._final.result()  # raises the failure, if that is how it ended
                return
            await self._wake
