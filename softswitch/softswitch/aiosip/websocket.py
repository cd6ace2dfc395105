"""SIP over WebSocket (RFC 7118): aiosip's ``aiosip.WS``, on the ``websockets`` library.

What RFC 7118 asks, and where it is done:

* The ``sip`` subprotocol is offered by clients and required by the server: a connection
  that did not negotiate it is closed (section 4.1).
* One WebSocket message carries one SIP message, as a text frame when it is UTF-8 and a
  binary frame otherwise (section 4.2); Content-Length is optional (the stack parses a WS
  message as it parses a datagram).
* A client cannot be reached at an address of its own: its Via sent-by and Contact use a
  random ``.invalid`` host (section 5.2), and everything for it, responses and in-dialog
  requests, goes back over the connection it opened (section 5). That is why a flow here
  is the connection: its remote address names it, and nothing is ever "connected to" a
  client.

Sends are synchronous for the layers above (the transaction layer retransmits from timer
callbacks) and ordered per connection: each connection has a queue and one writer task.
A peer that stops reading cannot make us hold more than ``Limits.max_write_buffer`` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from softswitch.transport import Address, Flow, Limits, Transport

__all__ = ["WebSocketLayer"]

logger = logging.getLogger("softswitch.aiosip.websocket")

SUBPROTOCOL: Final = Subprotocol("sip")

Connection = ServerConnection | ClientConnection
DataHandler = Callable[[bytes, Flow], None]


def _address(addr: object) -> Address:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return ("", 0)


@dataclass(eq=False)
class _Link:
    """One WebSocket connection and the queue of what is still to be written on it."""

    connection: Connection
    flow: Flow
    inbound: bool
    #: The ``.invalid`` host we use in Via and Contact when we are the client.
    token: str
    outbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    queued: int = 0
    writer: asyncio.Task[None] | None = None
    closed: bool = False


class WebSocketLayer:
    """WebSocket listeners and connections; bytes in through ``on_data``, out via :meth:`send`."""

    def __init__(self, on_data: DataHandler, limits: Limits) -> None:
        self._on_data = on_data
        self.limits = limits
        self._servers: dict[Address, Server] = {}
        self._links: dict[Address, _Link] = {}
        self._by_url: dict[str, _Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- listening and connecting -----------------------------------------------------

    async def listen(self, local_addr: Address) -> Address:
        """Serve SIP over WebSocket on ``local_addr`` (port 0: any); returns the bound one."""
        server = await serve(
            self._serve,
            local_addr[0],
            local_addr[1],
            subprotocols=[SUBPROTOCOL],
            max_size=self.limits.max_message_size,
            compression=None,
        )
        bound = _address(next(iter(server.sockets)).getsockname())
        self._servers[bound] = server
        logger.info("listening on WS %s:%d", *bound, extra={"transport": "WS"})
        return bound

    @property
    def listeners(self) -> list[Address]:
        return list(self._servers)

    async def connect(self, url: str) -> Flow:
        """A connection to the WebSocket server at ``url`` (``ws://host:port``), reused
        while it is open."""
        link = self._by_url.get(url)
        if link is not None and not link.closed:
            return link.flow
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise ValueError(f"not a WebSocket URL: {url!r}")
        if len(self._links) >= self.limits.max_connections:
            raise OSError("connection limit reached")
        try:
            connection = await connect(
                url,
                subprotocols=[SUBPROTOCOL],
                max_size=self.limits.max_message_size,
                compression=None,
                proxy=None,
            )
        except WebSocketException as exc:
            raise OSError(f"WebSocket connection to {url} failed: {exc}") from exc
        if connection.subprotocol != SUBPROTOCOL:
            await connection.close(1002, "the sip subprotocol is required")
            raise OSError(f"{url} did not accept the sip subprotocol")
        link = self._adopt(connection, inbound=False)
        self._by_url[url] = link
        task = asyncio.get_running_loop().create_task(self._read(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return link.flow

    def _adopt(self, connection: Connection, *, inbound: bool) -> _Link:
        local = _address(connection.local_address)
        remote = _address(connection.remote_address)
        flow = Flow(Transport.WS, local, remote)
        token = f"{secrets.token_hex(6)}.invalid"
        link = _Link(connection, flow, inbound, token)
        link.writer = asyncio.get_running_loop().create_task(self._write(link))
        self._links[remote] = link
        direction = "from" if inbound else "to"
        logger.debug("WS connection %s %s:%d", direction, *remote, extra={"transport": "WS"})
        return link

    async def _serve(self, connection: ServerConnection) -> None:
        if connection.subprotocol != SUBPROTOCOL:
            await connection.close(1002, "the sip subprotocol is required")
            return
        if len(self._links) >= self.limits.max_connections:
            await connection.close(1013, "connection limit reached")
            return
        await self._read(self._adopt(connection, inbound=True))

    # -- the two directions -----------------------------------------------------------

    async def _read(self, link: _Link) -> None:
        try:
            async for data in link.connection:
                raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
                if not raw.strip(b"\r\n\t "):
                    continue  # a keep-alive
                try:
                    self._on_data(raw, link.flow)
                except Exception:
                    logger.exception("WS message handler failed", extra={"transport": "WS"})
        except ConnectionClosed:
            pass
        finally:
            self._forget(link)

    async def _write(self, link: _Link) -> None:
        try:
            while True:
                data = await link.outbox.get()
                if data is None:
                    return
                link.queued -= len(data)
                try:
                    frame: str | bytes = data.decode("utf-8")
                except UnicodeDecodeError:
                    frame = data
                await link.connection.send(frame)
        except ConnectionClosed:
            pass
        finally:
            self._forget(link)

    def send(self, flow: Flow, data: bytes) -> bool:
        """Queue one SIP message on the flow's connection; False when it is gone."""
        link = self._links.get(flow.remote)
        if link is None or link.closed:
            return False
        if link.queued + len(data) > self.limits.max_write_buffer:
            logger.info(
                "closing WS connection %s:%d: peer is not reading",
                *flow.remote,
                extra={"transport": "WS"},
            )
            self._close_link(link)
            return False
        link.queued += len(data)
        link.outbox.put_nowait(data)
        return True

    def is_open(self, flow: Flow) -> bool:
        link = self._links.get(flow.remote)
        return link is not None and not link.closed

    def flow_to(self, remote: Address) -> Flow | None:
        """The open connection's flow to (or from) ``remote``, if there is one."""
        link = self._links.get(remote)
        return None if link is None or link.closed else link.flow

    def sent_by(self, flow: Flow) -> tuple[str, int | None]:
        """What to write as our Via sent-by (and Contact host) on this flow."""
        link = self._links.get(flow.remote)
        if link is not None and not link.inbound:
            return (link.token, None)
        return flow.local

    # -- closing ----------------------------------------------------------------------

    def _forget(self, link: _Link) -> None:
        if link.closed:
            return
        link.closed = True
        link.outbox.put_nowait(None)
        if self._links.get(link.flow.remote) is link:
            del self._links[link.flow.remote]
        for url, known in list(self._by_url.items()):
            if known is link:
                del self._by_url[url]

    def _close_link(self, link: _Link) -> None:
        self._forget(link)
        task = asyncio.get_running_loop().create_task(link.connection.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_flow(self, flow: Flow) -> None:
        link = self._links.get(flow.remote)
        if link is not None:
            self._close_link(link)

    async def close(self) -> None:
        """Close every connection and listener, within about a second."""
        links = list(self._links.values())
        for link in links:
            self._forget(link)
        waits: list[asyncio.Future[Any]] = []
        for link in links:
            link.connection.transport.abort()
            if link.writer is not None:
                link.writer.cancel()
                waits.append(link.writer)
        for server in self._servers.values():
            server.close(close_connections=False)
            waits.append(asyncio.ensure_future(server.wait_closed()))
        for task in self._tasks:
            task.cancel()
            waits.append(task)
        if waits:
            with contextlib.suppress(Exception):
                await asyncio.wait(waits, timeout=1.0)
        self._servers.clear()
        self._by_url.clear()
