"""The proxy engine: a dialog-stateful, record-routing SIP proxy on the transport and
transaction layers.

The engine is the SIP machinery only. *What* happens to a call (who the caller is, which
gateways to try, what the CDR says) is decided by the pipeline (``proxy.pipeline``), which
the engine asks at fixed points (``proxy.policy.CallPolicy``): ``admit`` for a new INVITE,
``next_target`` for each branch, ``release_target`` when a branch ends, ``account`` when
the call ends. Everything the engine does between those points is RFC 3261 proxy
behaviour, in one module per job, read in the order of a call:

``dispatch``  each message to its handler; strangers screened; the receive stage (100
              Trying, sanity checks, admission); what the transport refused as malformed
``hunting``   one branch per gateway: forward, fail over, CANCEL, late answers, connect
``relay``     the dialog's requests between the sides: ACK, BYE, re-INVITE, the caller's CANCEL
``ending``    every way out of a call (failed, hung up, torn down by the switch) and its CDR
``express``   the usual ACK of an answered call relayed from its bytes, as ``relay`` would
``core``      the state and primitives the parts share

This module puts them together (:class:`Engine`) with the lifecycle (listen, drain, close)
and the OPTIONS probe, and is where the engine's public names are imported from.

Time: timers are ``loop.call_later`` handles owned by the call they belong to; the
transaction layer runs on ``softswitch.transaction_driver`` (one ``loop.call_at`` at its
next deadline), as aiosip does. A peer's malformed or unexpected message is logged and
dropped, never raised.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from softswitch.call.refusal import EndReason, refuse
from softswitch.sip import Request, Response, Via, make_tag
from softswitch.sip.headers import Headers
from softswitch.sip.timers import TimerConfig
from softswitch.transaction_driver import TransactionDriver
from softswitch.transport import Address, Limits, SourceFilter, Transport

from .calls import NO_ANSWER_TIMEOUT, Call, Phase
from .core import logger, uri_host
from .dispatch import ALLOW, Dispatch
from .ending import LINGER
from .policy import CallPolicy, Reply

if TYPE_CHECKING:
    from softswitch.media.control import MediaControl

__all__ = [
    "ALLOW",
    "LINGER",
    "NO_ANSWER_TIMEOUT",
    "TIMER_RESOLUTION",
    "UDP_RECEIVE_BUFFER",
    "CallPolicy",
    "Engine",
    "Reply",
]

#: Bytes of UDP receive buffer asked for (Linux caps it at net.core.rmem_max).
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024
#: Transaction deadlines share wake-ups on this grid (seconds); see ``DeadlineTimer``.
TIMER_RESOLUTION = 0.01


class Engine(Dispatch):
    """The switch's SIP core. ``await engine.listen(...)``, then it runs until ``close``."""

    def __init__(
        self,
        policy: CallPolicy,
        *,
        timers: TimerConfig | None = None,
        limits: Limits | None = None,
        user_agent: str = "softswitch",
        source_filter: SourceFilter | None = None,
        media: MediaControl | None = None,
        express: bool = True,
    ) -> None:
        driver = TransactionDriver(
            on_unmatched=self._dispatch,
            on_response=self._client_response,
            on_gave_up=self._client_gave_up,
            on_terminated=self._terminated,
            logger=logger,
            timers=timers,
            limits=limits if limits is not None else Limits(udp_receive_buffer=UDP_RECEIVE_BUFFER),
            source_filter=source_filter,
            on_malformed=self._malformed,
            resolution=TIMER_RESOLUTION,
        )
        super().__init__(policy, driver, user_agent, media)
        if express:  # the usual ACK relayed from its bytes (``proxy.express``)
            self.transport.shortcut = self._express

    async def listen(self, transport: Transport, addr: Address) -> Address:
        bound = await self.transport.listen(transport, addr)
        self._ours.add(bound)
        return bound

    async def adopt(self, transport: Transport, sock: socket.socket, *, own: bool) -> Address:
        """Listen on a socket bound already (a worker's; see ``TransportLayer.adopt``)."""
        bound = await self.transport.adopt(transport, sock, own=own)
        self._ours.add(bound)
        return bound

    def add_ours(self, address: Address) -> None:
        """An address of ours this engine does not listen on: the other workers' own ports,
        so a request that loops through a sibling is still a loop (482) and their Route
        entries are still ours to strip."""
        self._ours.add(address)

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def calls(self) -> list[Call]:
        """The calls in progress, hunting or answered (the management API's live view; a
        copy, so the caller may hang calls up while it walks it)."""
        return list(self._calls)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for calls in progress to end (SIGTERM)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._calls and loop.time() < deadline:
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """End every call (BYE to answered ones, CDRs written), then stop the sockets."""
        for call in list(self._calls):
            if call.phase is Phase.ANSWERED:
                self._teardown(call, EndReason.SYSTEM_SHUTDOWN, "switch")
            else:
                self._fail_call(call, Reply.of(refuse(EndReason.SYSTEM_SHUTDOWN)))
        if self._calls:
            await asyncio.sleep(0.2)  # let the BYEs leave
        await self.driver.close()

    async def options(self, transport: Transport, address: Address, timeout: float) -> int | None:
        """Send OPTIONS to a gateway; its final status, or None when nothing came in time.

        The prober's question. Our own deadline, not Timer F (32 s): a probe must tell a
        dead gateway quickly, and a UDP peer that is gone gives no transport error.
        """
        try:
            flow = await self.transport.connect(transport, address)
        except OSError:
            return None
        host, port = self.transport.sent_by(flow)
        target = f"sip:{uri_host(address[0])}:{address[1]}"
        if transport is Transport.TCP:
            target += ";transport=tcp"
        h = Headers()
        h.add("Via", str(Via.new(str(flow.transport), uri_host(host), port)))
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:probe@{uri_host(host)}:{port}>;tag={make_tag()}")
        h.add("To", f"<{target}>")
        h.add("Call-ID", f"probe-{make_tag()}@{uri_host(host)}")
        h.add("CSeq", "1 OPTIONS")
        h.add("User-Agent", self.user_agent)
        tx = self._send_ours(Request("OPTIONS", target, h), flow)
        if tx is None:
            return None
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        self._own[tx] = future
        try:
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._own.pop(tx, None)
        return None if response is None else response.status
