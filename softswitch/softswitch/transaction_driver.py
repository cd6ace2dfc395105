"""The one loop that runs the sans-I/O transaction layer on asyncio, for every transaction user.

``sip.transaction.TransactionLayer`` reads no clock and touches no socket: it takes messages
and the time, and answers with actions (send this, pass that up, this one timed out, that one
is over) and its next deadline. Something has to feed it and carry the actions out: messages
from the transport in, the loop's clock, one timer at the next deadline, sends out through
the transport (a send that fails goes back in as a transport error). The user agent
(``aiosip.Application``) and the proxy (``proxy.Engine``) need exactly that loop; when each
had its own copy the copies drifted apart. This module is the one copy.

What a transaction user (TU) decides stays with it, as callbacks: what a message no
transaction matched means, what a response to one of its requests means, what to do when a
transaction gives up or ends. The driver calls them as it meets the actions, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from softswitch.deadline import DeadlineTimer
from softswitch.sip import Request, Response, SipParseError
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    ClientTransaction,
    Matched,
    PassUp,
    Send,
    ServerTransaction,
    StartTimer,
    StopTimer,
    Terminated,
    Timeout,
    Transaction,
    TransactionLayer,
    TransactionOutput,
    TransportFailure,
)
from softswitch.transport import (
    Flow,
    Limits,
    Malformed,
    MalformedHandler,
    SourceFilter,
    Transport,
    TransportLayer,
)

__all__ = ["Outputs", "TransactionDriver"]

#: What the transaction layer answers to one input, in the order it wants them carried out.
Outputs = tuple[TransactionOutput, ...]

UnmatchedHandler = Callable[[Request | Response, Flow, float], None]
ResponseHandler = Callable[[ClientTransaction, Response], None]
RequestHandler = Callable[[ServerTransaction, Request], None]
GaveUpHandler = Callable[[Transaction, int, str], None]
TerminatedHandler = Callable[[Transaction], None]


def _ignore_request(tx: ServerTransaction, request: Request) -> None:
    """The default for a TU that handles a new request where it opens its transaction."""


class TransactionDriver:
    """Feeds a :class:`TransactionLayer` from a :class:`TransportLayer` and the loop's clock,
    and carries out its actions.

    The driver makes the transport (its message handler is the driver) and the layer;
    ``transport`` and ``transactions`` are the TU's to use as well. Callbacks:

    ``on_unmatched(message, flow, now)``
        a message no transaction took: a new request, an ACK for a 2xx, a stray response.
    ``on_response(tx, response)``
        a response passed up by one of the TU's client transactions.
    ``on_request(tx, request)``
        a request passed up by a server transaction (its first, when it opens).
    ``on_gave_up(tx, status, why)``
        a transaction gave up: 408 when a timer ran out (RFC 3261 17.1.1.2, 17.2.1), 503 when
        the transport failed (8.1.3.1). Client and server transactions alike: the TU decides
        what a server transaction's failure (Timer H: no ACK came) means to it.
    ``on_terminated(tx)``
        the layer forgot the transaction: so may the TU.
    ``on_malformed(malformed)``
        optional: a message the transport refused as malformed, before any transaction saw
        it (answered with a stateless 400/416/505, or dropped), as a
        :class:`~softswitch.transport.Malformed`. Without it the transport logs each one.

    A peer's malformed message (a header that fails to parse only when a handler reads it)
    is logged at INFO on ``logger`` and dropped; any other exception out of a handler, a
    timer or a task of :meth:`spawn` is logged with its traceback there, and the loop goes
    on. With a ``resolution``, transaction deadlines share wake-ups on that grid (see
    :class:`DeadlineTimer`).
    """

    def __init__(
        self,
        *,
        on_unmatched: UnmatchedHandler,
        on_response: ResponseHandler,
        on_gave_up: GaveUpHandler,
        on_terminated: TerminatedHandler,
        on_request: RequestHandler = _ignore_request,
        logger: logging.Logger,
        timers: TimerConfig | None = None,
        limits: Limits | None = None,
        source_filter: SourceFilter | None = None,
        on_malformed: MalformedHandler | None = None,
        resolution: float = 0.0,
    ) -> None:
        self._on_unmatched = on_unmatched
        self._on_response = on_response
        self._on_request = on_request
        self._on_gave_up = on_gave_up
        self._on_terminated = on_terminated
        self._logger = logger
        self._on_malformed_tu = on_malformed
        self.transport = TransportLayer(
            self._on_message,
            limits=limits,
            source_filter=source_filter,
            on_malformed=None if on_malformed is None else self._on_malformed,
        )
        self.transactions = TransactionLayer(timers)
        self.closed = False
        self._timer = DeadlineTimer(self._on_timer, resolution=resolution)
        self._clock: Callable[[], float] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        """The clock every transaction runs on: the event loop's.

        The running loop's ``time`` is bound at the first call (it is read several times
        per message, and looking the running loop up each time was most of its cost): a
        driver lives and dies on one loop.
        """
        clock = self._clock
        if clock is None:
            clock = self._clock = asyncio.get_running_loop().time
        return clock()

    # -- opening transactions --------------------------------------------------------------

    def open_client(
        self, request: Request, flow: Flow, now: float
    ) -> tuple[ClientTransaction, Outputs]:
        """A client transaction sending ``request`` over ``flow`` (reliable over TCP).

        Its outputs are not carried out yet: file the transaction first, then :meth:`process`
        them, since its first send may fail and report back about it at once.
        """
        return self.transactions.send_request(
            request, now, reliable=flow.transport is Transport.TCP, peer=flow
        )

    def open_server(
        self, request: Request, flow: Flow, now: float
    ) -> tuple[ServerTransaction, Outputs]:
        """A server transaction for a request no transaction matched, answering over ``flow``.

        As with :meth:`open_client`, :meth:`process` the outputs once it is filed (they pass
        the request up, and may send 100 Trying).
        """
        return self.transactions.create_server(
            request, now, reliable=flow.transport is Transport.TCP, peer=flow
        )

    # -- the loop --------------------------------------------------------------------------

    def process(self, outputs: Iterable[TransactionOutput]) -> None:
        """Carry out the layer's actions in order, then re-arm the timer at its next deadline."""
        for output in outputs:
            action = output.action
            kind = type(action)
            if kind is StartTimer or kind is StopTimer:
                continue  # the layer keeps its timers; nearly half the actions
            tx = output.transaction
            if isinstance(action, Send):
                self._transmit(tx, action.message)
            elif isinstance(action, PassUp):
                message = action.message
                if isinstance(message, Response):
                    if isinstance(tx, ClientTransaction):
                        self._on_response(tx, message)
                elif isinstance(tx, ServerTransaction):
                    self._on_request(tx, message)
            elif isinstance(action, Timeout):
                self._on_gave_up(tx, 408, f"timer {action.timer.value} fired")
            elif isinstance(action, TransportFailure):
                self._on_gave_up(tx, 503, action.reason or "transport failure")
            elif isinstance(action, Terminated):
                self._on_terminated(tx)
        self._reschedule()

    def _transmit(self, tx: Transaction, message: Request | Response) -> None:
        flow = tx.peer
        if not isinstance(flow, Flow):
            # Only a transaction opened around the driver can get here: our bug, said loudly.
            raise TypeError(f"{tx!r} has no Flow to send on (peer {flow!r})")
        if isinstance(message, Response):
            self.transport.send_response(message, flow)
        elif not self.transport.send(flow, message):
            self.process(self.transactions.transport_error(tx, self.now(), "not sent"))

    def _on_message(self, message: Request | Response, flow: Flow) -> None:
        """The transport's handler: to the matching transaction, else to the TU."""
        if self.closed:
            return
        try:
            now = self.now()
            result = self.transactions.receive(message, now)
            if isinstance(result, Matched):
                self.process(result.outputs)
            else:
                self._on_unmatched(message, flow, now)
        except SipParseError as exc:
            call_id = message.call_id
            self._logger.info(
                "call_id=%s dropped malformed message: %s",
                call_id,
                exc.reason,
                extra={"call_id": call_id},
            )
        except Exception:
            call_id = message.call_id
            self._logger.exception(
                "call_id=%s failed on a message", call_id, extra={"call_id": call_id}
            )

    def _on_malformed(self, malformed: Malformed) -> None:
        """The transport's report of a malformed message: to the TU, unless stopped."""
        handler = self._on_malformed_tu
        if self.closed or handler is None:
            return
        try:
            handler(malformed)
        except Exception:
            self._logger.exception(
                "handling a malformed message from %s failed", malformed.flow.remote
            )

    def _reschedule(self) -> None:
        if not self.closed:
            self._timer.schedule(self.transactions.next_deadline())

    def _on_timer(self, deadline: float) -> None:
        try:
            # call_at may fire a clock-resolution early; never hand the layer a time before it.
            self.process(self.transactions.handle_timers(max(self.now(), deadline)))
        except Exception:
            self._logger.exception("transaction timers failed")

    # -- the TU's tasks, and stopping ------------------------------------------------------

    def spawn(self, coro: Awaitable[None], call_id: str | None = None) -> asyncio.Task[None]:
        """Run ``coro`` (a connect, a handler) as a task that :meth:`close` cancels if it
        still runs; an exception out of it is logged with ``call_id``, never lost."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self._logger.exception("task failed", extra={"call_id": call_id})

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stop(self) -> None:
        """Take no more messages and run no more timers (tasks and sockets stay)."""
        self.closed = True
        self._timer.cancel()

    async def close(self) -> None:
        """:meth:`stop`, cancel the tasks still running, then close the transport."""
        self.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await self.transport.close()
