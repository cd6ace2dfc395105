"""A request we sent, seen from the caller: awaitable for the final response, iterable for all.

Sending needs I/O first (a TCP or WebSocket connection, the sent-by address for the Via),
so the object is returned at once and does that work in a task; the caller awaits whatever
it cares about. When the request carries a password and is challenged (401/407), the same
object sends it again with credentials (a new transaction, CSeq one higher) and the caller
sees only the outcome of the last attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING

from softswitch.sip import Request, Response
from softswitch.transport import Flow

from .auth import MAX_AUTH_ATTEMPTS

if TYPE_CHECKING:
    from .dialog import Dialog

__all__ = ["Build", "PendingRequest", "RequestFailedError"]

Build = Callable[[list[tuple[str, str]]], Awaitable[tuple[Request, Flow]]]
"""Makes and starts one attempt of the request: extra headers (credentials) in, the request
sent and its flow out."""


class RequestFailedError(Exception):
    """A request ended with a non-2xx final response where the caller needed success."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status} {response.reason}")
        self.response = response


class PendingRequest:
    """One request's outcome (one client transaction, or one per digest attempt).

    ``await pending`` gives the final response; ``async for response in pending`` gives every
    response, provisional ones first, ending with the final one. A timeout or transport
    failure is reported the way RFC 3261 8.1.3.1 asks a UAC to treat it: as a locally made
    ``408`` or ``503`` final response. Failing before anything was sent (no route to the
    peer, TCP connection refused) raises that ``OSError`` from the await instead: there is
    no request to answer. For an INVITE answered 2xx, :attr:`dialog` is set
    before the final response is delivered and the ACK is sent by the stack.

    With a :attr:`password`, a ``401``/``407`` is answered with credentials up to
    ``MAX_AUTH_ATTEMPTS`` times; the challenge is then not delivered, and
    :attr:`auth_failed` tells a challenge that was still refused at the end.
    """

    def __init__(
        self,
        build: Build,
        spawn: Callable[[Awaitable[None]], object],
        *,
        dialog: Dialog | None = None,
        canceller: Callable[[PendingRequest], PendingRequest] | None = None,
        password: str | None = None,
        username: str | None = None,
        timeout: float | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._build = build
        self._spawn = spawn
        self._canceller = canceller
        self.password = password
        self.username = username
        self.timeout = timeout
        self.auth_attempts = 0
        self.auth_failed = False
        self.request: Request | None = None
        self.flow: Flow | None = None
        self.responses: list[Response] = []
        self.dialog = dialog
        self._final: asyncio.Future[Response] = loop.create_future()
        self._wake: asyncio.Future[None] = loop.create_future()
        spawn(self._start([]))

    async def _start(self, extra: list[tuple[str, str]]) -> None:
        try:
            self.request, self.flow = await self._build(extra)
        except Exception as exc:  # connection refused, bad URI: the caller's await raises it
            self._fail(exc)

    # -- fed by the application ---------------------------------------------------------

    def _may_retry(self) -> bool:
        return self.password is not None and self.auth_attempts < MAX_AUTH_ATTEMPTS

    def _retry(self, credentials: tuple[str, str]) -> None:
        """Send the request again with ``credentials`` (a challenge was answered)."""
        self.auth_attempts += 1
        self._spawn(self._start([credentials]))

    def _deliver(self, response: Response) -> None:
        if self._final.done():
            return
        self.responses.append(response)
        if response.status >= 200:
            self.auth_failed = response.status in (401, 407) and self.auth_attempts > 0
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

    @property
    def final(self) -> Response | None:
        """The final response once there is one (None before, or after a failure)."""
        if not self._final.done() or self._final.exception() is not None:
            return None
        return self._final.result()

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

    async def wait_provisional(self) -> Response | None:
        """Until the first response of any kind (None if the request failed to go out)."""
        while not self.responses and not self._final.done():
            await asyncio.shield(self._wake)
        return self.responses[0] if self.responses else None

    def __await__(self) -> Generator[object, None, Response]:
        if self.timeout is None:
            return asyncio.shield(self._final).__await__()
        return asyncio.wait_for(asyncio.shield(self._final), self.timeout).__await__()

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
            await asyncio.shield(self._wake)
