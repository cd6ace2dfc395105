"""A dialog as an object you can talk to: send in-dialog requests, receive them, hang up.

The dialog *state* (route set, CSeq, remote target) is ``softswitch.sip.dialog``'s; this
class adds what needs a loop: the ACK a UAC owes every 2xx to its INVITE, the 2xx a UAS
retransmits until that ACK arrives (RFC 3261 13.3.1.4, not a transaction's job since the
INVITE server transaction ends with the 2xx), and a queue of incoming requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from softswitch.sip import Request, Response
from softswitch.sip.dialog import Dialog as DialogState
from softswitch.sip.dialog import DialogId
from softswitch.sip.dialog import DialogState as State
from softswitch.transport import Flow, Transport

from .outgoing import PendingRequest
from .router import Router

if TYPE_CHECKING:
    from .application import Application

__all__ = ["Dialog"]

logger = logging.getLogger("softswitch.aiosip")


class Dialog:
    """One dialog of the application, UAC or UAS side.

    ``dialog.request(method)`` sends within the dialog; ``async for message in dialog``
    yields requests the peer sends in it that no handler in :attr:`router` took (reply
    with :meth:`reply`). A BYE is answered ``200`` by the stack and ends the dialog (and
    the iteration). Without a route or an iterating consumer, other in-dialog requests
    are answered ``501``.
    """

    def __init__(self, app: Application, state: DialogState, transport: Transport) -> None:
        loop = asyncio.get_running_loop()
        self.app = app
        self.state = state
        self.transport = transport
        self.router = Router()
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._consumers = 0
        self._confirmed: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._ack: tuple[Request, Flow] | None = None
        self._retransmit: asyncio.TimerHandle | None = None
        self._unacked: int | None = None  # CSeq of our 2xx still waiting for its ACK

    def __repr__(self) -> str:
        return f"<aiosip.Dialog {self.state.role.value} {self.state.state.value} {self.id}>"

    @property
    def id(self) -> DialogId:
        return self.state.id

    @property
    def call_id(self) -> str:
        return self.state.id.call_id

    @property
    def terminated(self) -> bool:
        return self.state.state is State.TERMINATED

    # -- talking ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> PendingRequest:
        """Send a request within the dialog (route set, CSeq and target from its state)."""
        return self.app._send_in_dialog(
            self, method, headers=headers, body=body, content_type=content_type
        )

    async def bye(self, *, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """Hang up. The dialog ends with the BYE's final response, whatever it is (15.1.1)."""
        return await self.request("BYE", headers=headers)

    async def close(self) -> None:
        """End the dialog if it is still up (aiosip's name)."""
        if not self.terminated:
            await self.bye()

    async def reply(
        self,
        message: Request,
        status_code: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Answer an in-dialog request obtained by iterating the dialog (aiosip's signature)."""
        incoming = self.app._incoming_for(message)
        return await incoming.reply(
            status_code, reason, headers=headers, body=body, content_type=content_type
        )

    async def wait_confirmed(self) -> None:
        """Until the dialog is confirmed: a UAS waits for the ACK of its 2xx."""
        await asyncio.shield(self._confirmed)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def __aiter__(self) -> AsyncIterator[Request]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Request]:
        self._consumers += 1
        try:
            while True:
                message = await self._queue.get()
                if message is None:
                    return
                yield message
        finally:
            self._consumers -= 1

    # -- fed by the application ---------------------------------------------------------

    def _wants_queue(self) -> bool:
        return self._consumers > 0

    def _enqueue(self, message: Request) -> None:
        self._queue.put_nowait(message)

    def _confirm(self) -> None:
        if not self._confirmed.done():
            self._confirmed.set_result(None)

    def _on_ack(self, ack: Request) -> None:
        """The peer's ACK for our 2xx: stop retransmitting the 2xx it acknowledges."""
        cseq = ack.cseq
        if cseq is not None and cseq.seq == self._unacked:
            self._unacked = None
            if self._retransmit is not None:
                self._retransmit.cancel()
                self._retransmit = None
        self._confirm()

    def _terminate(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        self.state.terminate()
        if not self._closed.done():
            self._closed.set_result(None)
            self._queue.put_nowait(None)
        if not self._confirmed.done():
            self._confirmed.set_exception(
                ConnectionAbortedError("the dialog ended before it was confirmed")
            )
            self._confirmed.exception()  # waiting for it is optional: never log it as lost
        self.app._forget_dialog(self)

    def _remember_ack(self, ack: Request, flow: Flow) -> None:
        self._ack = (ack, flow)
        self._confirm()

    def _resend_ack(self) -> None:
        """A retransmitted 2xx means our ACK was lost (RFC 3261 13.2.2.4)."""
        if self._ack is not None:
            self.app.transport.send(self._ack[1], self._ack[0])

    def _retransmit_2xx(self, response: Response, flow: Flow) -> None:
        """Resend our 2xx at T1, 2T1 ... capped at T2 until ACK or 64*T1 (13.3.1.4)."""
        cseq = response.cseq
        if cseq is None:
            return
        self._unacked = cseq.seq
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        if flow.transport is not Transport.UDP:
            return
        timers = self.app.transactions.config
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 64 * timers.t1

        def fire(interval: float) -> None:
            if self._unacked != cseq.seq or self.terminated:
                return
            if loop.time() >= give_up:
                logger.info("no ACK for our 2xx", extra={"call_id": self.call_id})
                self._terminate()
                return
            self.app.transport.send_response(response, flow)
            nxt = min(2 * interval, timers.t2)
            self._retransmit = loop.call_later(nxt, fire, nxt)

        self._retransmit = loop.call_later(timers.t1, fire, timers.t1)
