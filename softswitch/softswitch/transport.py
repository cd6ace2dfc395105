"""The asyncio edge of the SIP stack: the only module that touches sockets.

Everything above this module (``softswitch.sip``) works on bytes and parsed messages with no
I/O, so the policies that only make sense next to a socket live here: how a byte stream is cut
into messages (RFC 3261 18.3), where a response travels (RFC 3261 18.2.2 with RFC 3581),
which connection is reused for a peer, and how much memory one peer may make us hold.

A peer's garbage is never an exception that leaves this module: a request we can still
answer gets a stateless error response, anything else is dropped with a log record, and the
listener keeps serving.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, cast

from softswitch.machine_address import note_own
from softswitch.sip import (
    Request,
    Response,
    SipParseError,
    parse_message,
    validate_request,
    validate_response,
)
from softswitch.sip.grammar import CSEQ_RE, TOKEN_RE
from softswitch.sip.parser import stream_content_length

__all__ = [
    "Address",
    "Flow",
    "FramingError",
    "Limits",
    "Malformed",
    "MalformedHandler",
    "MessageHandler",
    "StreamFramer",
    "Transport",
    "TransportLayer",
    "loop_factory",
    "response_destination",
]

logger = logging.getLogger("softswitch.transport")

Address = tuple[str, int]
"""A socket address as ``(host, port)``; IPv6 hosts are bare (``"::1"``), never bracketed."""

DEFAULT_SIP_PORT: Final = 5060
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024


class Transport(enum.StrEnum):
    """The transport names as they appear in a Via header, so they can be written verbatim.

    :class:`TransportLayer` carries UDP and TCP; ``WS`` (SIP over WebSocket, RFC 7118) is
    carried by ``softswitch.aiosip.websocket`` for the aiosip API and named here so that
    its flows and Via headers use the same type.
    """

    UDP = "UDP"
    TCP = "TCP"
    WS = "WS"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep one peer (or a crowd of them) from exhausting the process.

    ``max_message_size`` caps a single SIP message on any transport; ``max_connection_buffer``
    caps the unparsed inbound bytes held for one stream connection, and ``max_write_buffer``
    the outbound bytes queued for a peer that stopped reading. Connections beyond
    ``max_connections`` (all peers) or ``max_connections_per_ip`` (one source IP) are refused
    at accept time. ``idle_timeout`` closes stream connections that carried no complete
    message (nor an RFC 5626 CRLFCRLF ping) in either direction for that many seconds, so
    half-dead peers do not hold slots forever; bytes that complete nothing do not count, or a
    peer trickling one byte at a time would hold its slot for ever. ``header_timeout`` closes
    a stream connection whose message header section (from its first byte to its CRLFCRLF;
    CRLFs between messages do not start the clock) takes longer than that many seconds: the
    slowloris defence, without which a few dozen connections sending a byte a second hold an
    IP's whole quota. Both timeouts must be positive. ``udp_receive_buffer`` is the
    kernel receive buffer asked for UDP listeners (None: the system default): a switch wants
    megabytes, so that a burst or a pause of the process is queued rather than dropped.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_connection_buffer: int = 64 * 1024
    max_write_buffer: int = 1024 * 1024
    max_connections: int = 1024
    max_connections_per_ip: int = 64
    idle_timeout: float = 600.0
    header_timeout: float = 5.0
    udp_receive_buffer: int | None = None


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from or goes to; answering on the same flow keeps NATs happy."""

    transport: Transport
    local: Address
    remote: Address
    #: The client a trusted proxy forwarded the request for (``[server] trusted_proxies``,
    #: named by the proxy in ``X-AUTH-IP``, see ``security.proxies``); None when the
    #: remote is the client.
    #: Answers still go to ``remote``: only who is asking changes, not where.
    client: Address | None = None

    @property
    def origin(self) -> Address:
        """Who sent the request: whose ``ips``, blocks and pike count apply, and the CDR's
        source. The remote, unless a trusted proxy forwarded it."""
        client = self.client
        return self.remote if client is None else client


Message = Request | Response


class Malformed(NamedTuple):
    """A message the transport refused before any layer above saw it, with what is known.

    ``status`` and ``reason`` are the refusal's (``400 Bad Max-Forwards header``, ``416``,
    ``505`` ...); ``answered`` says whether a stateless reply carrying them was sent (not
    for a response, an ACK, or a request without a Via to copy). ``message`` is the parsed
    message when only ``validate_request``/``validate_response`` refused it; for a parse
    error it is None, and ``partial`` holds the Via, From, To, Call-ID and CSeq lines read
    before the error (``SipParseError.partial``). ``data`` is the message as received.

    One is built for every malformed message, a stranger's flood included, so it is cheap:
    a named tuple (immutable, and a third of a frozen dataclass's construction cost), and
    the start line and the method are read from ``data`` only when asked, so a handler
    that asks nothing about a stranger's garbage parses nothing more of it.
    """

    flow: Flow
    status: int
    reason: str
    answered: bool
    is_request: bool
    message: Message | None = None
    partial: tuple[tuple[str, str], ...] = ()
    data: bytes = b""

    @property
    def start_line(self) -> str | None:
        """The first line as received (CRLFs before it skipped, its line end removed), or
        None when there is none or it is not UTF-8."""
        data = self.data
        start, n = 0, len(data)
        while start < n and data[start] in (10, 13):
            start += 1
        end = data.find(b"\n", start)
        line = data[start:] if end < 0 else data[start:end]
        try:
            text = line.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text or None

    @property
    def method(self) -> str | None:
        """The request's method: the parsed message's; for a parse error the Request-Line's
        first word, else the CSeq's method; None for a response or when neither is readable."""
        message = self.message
        if message is not None:
            return message.method if isinstance(message, Request) else None
        if not self.is_request:
            return None
        line = self.start_line
        words = line.split(None, 1) if line is not None else []
        if words and TOKEN_RE.fullmatch(words[0]) is not None:
            return words[0]
        for name, value in self.partial:
            if name == "CSeq":
                cseq = CSEQ_RE.fullmatch(value)
                return None if cseq is None else cseq.group(2)
        return None


MessageHandler = Callable[[Message, Flow], None]
SourceFilter = Callable[[Address], bool]
MalformedHandler = Callable[[Malformed], None]


#: Environment variable choosing the event loop: ``auto`` (default), ``uvloop`` or ``asyncio``.
EVENT_LOOP_ENV: Final = "SOFTSWITCH_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """Return uvloop's loop constructor when the ``speed`` extra is installed.

    uvloop cuts the event loop's share of every packet (about a tenth of the switch's CPU
    per call, measured with ``benches/sipp_load.py``), but it is optional so the pure-Python
    install keeps working everywhere; callers pass this to
    ``asyncio.Runner(loop_factory=...)``. ``SOFTSWITCH_EVENT_LOOP=asyncio`` forces the
    standard loop (to rule uvloop out, or to test both); ``=uvloop`` insists on uvloop.
    """
    choice = os.environ.get(EVENT_LOOP_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"{EVENT_LOOP_ENV}={choice!r}: expected auto, uvloop or asyncio")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(
                f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed "
                "(pip install 'softswitch[speed]')"
            ) from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _normalise(addr: Any) -> Address:
    """Reduce asyncio's 2- or 4-tuples (IPv6 adds flowinfo and scope) to ``(host, port)``."""
    return (str(addr[0]), int(addr[1]))


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _peer(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=1024)
def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, None when it is not one (cached: a few peers, many packets)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_ip(host: str) -> bool:
    return _ip(host) is not None


def _same_ip(a: str, b: str) -> bool:
    ip_a = _ip(_unbracket(a))
    return ip_a is not None and ip_a == _ip(_unbracket(b))


# --------------------------------------------------------------------------- stream framing


class FramingError(Exception):
    """A byte stream we cannot cut into messages; the only safe reaction is to close it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PING: Final = b"\r\n\r\n"
_PONG: Final = b"\r\n"
_CRLF_BYTES: Final = frozenset(b"\r\n")


class StreamFramer:
    """Buffers a TCP byte stream and hands out whole SIP messages (RFC 3261 18.3).

    A message is a header section up to CRLFCRLF, then exactly Content-Length octets (the
    rules of ``softswitch.sip.frame_length``, applied incrementally; the Content-Length rule
    is ``softswitch.sip.parser.stream_content_length``, shared with it).
    The buffer is bounded: it never holds more than ``max_message_size`` bytes of an
    unfinished message, which is what stops a slow or hostile sender from growing our memory.
    CRLFs between messages vanish here; each double-CRLF "ping" (RFC 5626 3.5.1) is counted
    in :attr:`pings` so the connection can answer it with a CRLF "pong".

    The cost of a stream is linear in its length however it is cut, down to one byte per
    segment: the CRLFCRLF search resumes where the previous one stopped (three bytes back, in
    case the delimiter straddles two segments), Content-Length is parsed once, when the header
    section is complete, and bytes are copied out only when a whole message is there.
    Re-scanning the buffer on every segment would make a trickle of n single bytes cost
    O(n²) CPU, which is a cheap way for a peer to burn ours.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_message_size
        #: Bytes at the front of the buffer already searched for the end of the header.
        self._scanned = 0
        #: Length of the message at the front of the buffer, once its header is complete.
        self._length: int | None = None
        self.pings = 0
        #: Header sections completed so far: lets the caller tell one message from the next.
        self.headers_completed = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def header_pending(self) -> bool:
        """True while a message has begun and its header section is not complete yet.

        CRLFs between messages (keep-alives, or half a ping) do not begin a message.
        """
        buffer = self._buffer
        return self._length is None and bool(buffer) and buffer[0] not in _CRLF_BYTES

    def feed(self, data: bytes) -> list[bytes]:
        """Return the messages completed by ``data``; FramingError when the stream is lost."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        while True:
            length = self._length
            if length is None:
                if not self._skip_keepalives():
                    return frames
                end = buffer.find(_PING, max(0, self._scanned - 3))
                if end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > self._max:
                        raise FramingError("Header section too large")
                    return frames
                length = end + len(_PING) + _content_length(bytes(buffer[:end]))
                self._length = length
                self._scanned = 0
                self.headers_completed += 1
            if len(buffer) < length:
                if len(buffer) > self._max:
                    raise FramingError(f"message exceeds {self._max} bytes")
                return frames
            if length > self._max:
                raise FramingError(f"message of {length} bytes exceeds {self._max} bytes")
            frames.append(bytes(buffer[:length]))
            del buffer[:length]
            self._length = None

    def _skip_keepalives(self) -> bool:
        """Drop CRLFs before a message; False when nothing (or half a ping) is left."""
        buffer = self._buffer
        while buffer and buffer[0] in _CRLF_BYTES:
            if buffer.startswith(_PING):
                del buffer[: len(_PING)]
                self.pings += 1
            elif len(buffer) < len(_PING) and _PING.startswith(buffer):
                return False
            else:
                del buffer[:1]
        return bool(buffer)


def _content_length(header: bytes) -> int:
    try:
        return stream_content_length(header)
    except SipParseError as exc:
        raise FramingError(exc.reason) from exc


# ------------------------------------------------------------------------ response routing


def response_destination(response: Response) -> tuple[str, int] | None:
    """Where an unreliable-transport response goes, per RFC 3261 18.2.2 and RFC 3581 4.

    With ``rport`` filled in (we did that on receipt) the response goes back to the exact
    source address and port of the request, which is what gets it through a NAT. Otherwise
    to ``received`` (or the sent-by host) at the sent-by port. The host may still be a name,
    which the caller resolves.
    """
    via = response.top_via
    if via is None:
        return None
    received = via.received
    host = _unbracket(received or via.host)
    rport = via.rport
    if isinstance(rport, int) and not isinstance(rport, bool) and received:
        return (host, rport)
    return (host, via.port or DEFAULT_SIP_PORT)


def _stamp_received(request: Request, source: Address) -> None:
    """Record the request's real source in its top Via (RFC 3261 18.2.1, RFC 3581 4).

    ``received`` is added when the sent-by host is not the source IP, and always when the
    client asked for ``rport``, whose value becomes the source port.
    """
    via = request.top_via
    if via is None:
        return
    wants_rport = via.rport is True
    if not wants_rport:
        host = via.host
        # The usual case first: the sent-by is the source address, written the same way.
        if host == source[0] and _ip(host) is not None:
            return
        if _same_ip(host, source[0]):
            return
    params: dict[str, str | None] = {"received": source[0]}
    if wants_rport:
        params["rport"] = str(source[1])
    request.headers.pop_first("Via")
    request.headers.prepend("Via", str(via.with_params(**params)))


# ----------------------------------------------------------------------------- the sockets


#: Peers whose UDP flow an endpoint keeps (``_DatagramEndpoint.flow``).
_FLOW_CACHE_SIZE: Final = 4096


class _DatagramEndpoint(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self._layer = layer
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        #: A worker's listen socket, one of a reuse-port group (``TransportLayer.divert``).
        self.shared = False
        # The flows of recent peers: a call's datagrams come from a few addresses, and a
        # flow was made for each datagram.
        self._flows: dict[Address, Flow] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = _normalise(transport.get_extra_info("sockname"))
        self._flows.clear()

    def flow(self, remote: Address) -> Flow:
        """The UDP flow between this socket and ``remote``."""
        flow = self._flows.get(remote)
        if flow is None or flow.local != self.local:
            if len(self._flows) >= _FLOW_CACHE_SIZE:
                self._flows.clear()  # bounded: a crowd of sources cannot grow it
            flow = self._flows[remote] = Flow(Transport.UDP, self.local, remote)
        return flow

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # An IPv4 (host, port) is kept as it is; IPv6's 4-tuples and anything else reduced.
        if not (
            type(addr) is tuple and len(addr) == 2 and type(addr[0]) is str and type(addr[1]) is int
        ):
            addr = _normalise(addr)
        self._layer._on_datagram(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction layer times out on its own.
        logger.debug("udp error on %s: %s", _peer(self.local), exc, extra={"transport": "UDP"})

    def send(self, data: bytes, dest: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, dest)


class _StreamConnection(asyncio.Protocol):
    """One TCP connection: framing, keep-alive pongs, and the two timeouts that bound it.

    ``last_activity`` moves only when a whole message or a ping arrives (or we send
    something), never on a bare segment, so the layer's idle sweep also catches a peer that
    trickles bytes. The header timeout is one ``call_later`` per connection, armed when a
    segment leaves a header section unfinished and cancelled when the section completes,
    rather than a finer periodic sweep over every connection: messages that arrive with their
    header whole in one segment (nearly all of them) cost no timer at all, an idle switch
    wakes no more often than the idle sweep already makes it, the deadline is exact instead of
    up to a sweep interval late, and a trickling peer still costs one timer per connection
    (never one per byte). Once armed, the timer is not moved by later segments of the same
    header.
    """

    def __init__(self, layer: TransportLayer, *, inbound: bool) -> None:
        self._layer = layer
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.local: Address = ("", 0)
        self.remote: Address = ("", 0)
        self.framer = StreamFramer(layer.limits.max_message_size)
        self.last_activity = time.monotonic()
        self.closed = asyncio.get_running_loop().create_future()
        self.registered = False
        self._header_timer: asyncio.TimerHandle | None = None

    @property
    def flow(self) -> Flow:
        return Flow(Transport.TCP, self.local, self.remote)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream protocol is only ever handed a stream transport; uvloop's is not an
        # `asyncio.Transport` subclass, so no isinstance check here.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.local = _normalise(transport.get_extra_info("sockname"))
        self.remote = _normalise(transport.get_extra_info("peername"))
        transport.set_write_buffer_limits(high=self._layer.limits.max_write_buffer)
        self._layer._on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        framer = self.framer
        headers_before = framer.headers_completed
        try:
            frames = framer.feed(data)
        except FramingError as exc:
            self._layer._log_drop(self.flow, exc.reason, None)
            self.abort()
            return
        if framer.headers_completed != headers_before:
            self._cancel_header_timer()  # that header made it; a new one starts a new clock
        if framer.header_pending and self._header_timer is None:
            self._header_timer = asyncio.get_running_loop().call_later(
                self._layer.limits.header_timeout, self._header_timed_out
            )
        if frames or framer.pings:
            self.last_activity = time.monotonic()
        if framer.pings:
            self.send(_PONG * framer.pings)
            framer.pings = 0
        for frame in frames:
            self._layer._on_message_bytes(frame, self.flow, stream=True)
            if self.transport is None or self.transport.is_closing():
                return
        if self.framer.buffered > self._layer.limits.max_connection_buffer:
            self._layer._log_drop(self.flow, "connection buffer limit exceeded", None)
            self.abort()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        timeout = self._layer.limits.header_timeout
        reason = f"message header not complete within {timeout:g} s; closing"
        self._layer._log_drop(self.flow, reason, None)
        self.abort()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def pause_writing(self) -> None:
        # The peer stopped reading while we queued more than max_write_buffer for it.
        self._layer._log_drop(self.flow, "peer is not reading; write buffer full", None)
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._layer._on_connection_lost(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.last_activity = time.monotonic()
        self.transport.write(data)
        return True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class TransportLayer:
    """UDP and TCP listeners and clients, sharing one message handler and one set of limits.

    Inbound requests get ``received``/``rport`` stamped before the handler sees them, so the
    layers above can treat the top Via as the truth about where to answer. Outbound stream
    messages reuse any open connection to the same peer address, whichever side opened it.
    """

    def __init__(
        self,
        on_message: MessageHandler,
        *,
        limits: Limits | None = None,
        source_filter: SourceFilter | None = None,
        on_malformed: MalformedHandler | None = None,
    ) -> None:
        """``source_filter(source)`` False drops a message unparsed (a blocked source, say),
        and refuses an inbound connection. ``on_malformed(malformed)`` takes the place of a
        log line per malformed message, so a flood of garbage cannot flood the log: it gets
        a :class:`Malformed` (who sent it, the refusal, what could be read of it) before the
        stateless reply, if any, is sent."""
        self._on_message = on_message
        self._source_filter = source_filter
        self._on_malformed = on_malformed
        #: A datagram's way round the parser: called with each UDP datagram that passed the
        #: source filter, it returns True when it handled the datagram whole (the proxy's
        #: express lane, ``proxy.express``), False to let the full path take it.
        self.shortcut: Callable[[bytes, Flow], bool] | None = None
        self.limits = limits or Limits()
        self._udp: dict[Address, _DatagramEndpoint] = {}
        self._servers: dict[Address, asyncio.Server] = {}
        self._connections: dict[Address, _StreamConnection] = {}
        self._per_ip: dict[str, int] = {}
        self._live: set[_StreamConnection] = set()
        self._connecting: dict[Address, asyncio.Task[_StreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: A worker's own addresses (``softswitch.workers``) by transport and listen host:
        #: one per interface, named in the Via of a flow on that interface and carrying the
        #: new flows from it, so answers come back to this process through the same
        #: interface (one per family would name the last adopted host on every interface).
        self._own: dict[tuple[Transport, str], Address] = {}
        #: A worker's hand-off (``softswitch.workers.handoff``): called with each datagram
        #: of an adopted listen socket, its listen address and source; True when it took the
        #: datagram (handed to the worker that owns it, or dropped when that cannot be
        #: done), False to handle it here.
        self.divert: Callable[[bytes, Address, Address], bool] | None = None
        #: With ``divert``: True for a source whose datagrams the screening would drop for
        #: its block (``softswitch.workers.handoff.blocked_sources``), dropped before they
        #: are handed, without the pike counting that the worker parsing them does.
        self.blocked: Callable[[Address], bool] | None = None

    # -- listening -----------------------------------------------------------------------

    @staticmethod
    def _set_receive_buffer(endpoint: _DatagramEndpoint, size: int) -> None:
        sock = None if endpoint.transport is None else endpoint.transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as exc:
            logger.warning("cannot set the UDP receive buffer to %d bytes: %s", size, exc)

    async def listen(self, transport: Transport, local_addr: Address) -> Address:
        """Start a listener and return its bound address (port 0 picks a free port)."""
        return await self._serve(transport, local_addr, None, own=False)

    async def adopt(self, transport: Transport, sock: socket.socket, *, own: bool) -> Address:
        """Listen on ``sock``, bound already (a worker's, bound by its supervisor before the
        fork); its address. ``own``: the worker's own address (``softswitch.workers``):
        :meth:`sent_by` names it in our Via, and requests over UDP leave from it, whatever
        socket the peer's first message came in on, so the answers come back to this process.
        """
        name = sock.getsockname()
        return await self._serve(transport, (str(name[0]), int(name[1])), sock, own=own)

    async def _serve(
        self, transport: Transport, local_addr: Address, sock: socket.socket | None, *, own: bool
    ) -> Address:
        loop = asyncio.get_running_loop()
        host, port = _unbracket(local_addr[0]), local_addr[1]
        if transport is Transport.UDP:
            if sock is not None:
                _, endpoint = await loop.create_datagram_endpoint(
                    lambda: _DatagramEndpoint(self), sock=sock
                )
            else:
                _, endpoint = await loop.create_datagram_endpoint(
                    lambda: _DatagramEndpoint(self), local_addr=(host, port)
                )
            self._udp[endpoint.local] = endpoint
            endpoint.shared = sock is not None and not own
            bound = endpoint.local
            if self.limits.udp_receive_buffer is not None:
                self._set_receive_buffer(endpoint, self.limits.udp_receive_buffer)
        else:
            if sock is not None:
                server = await loop.create_server(
                    lambda: _StreamConnection(self, inbound=True), sock=sock
                )
            else:
                server = await loop.create_server(
                    lambda: _StreamConnection(self, inbound=True), host, port, reuse_address=True
                )
            bound = _normalise(server.sockets[0].getsockname())
            self._servers[bound] = server
            self._schedule_sweep()
        if own:
            self._own[(transport, bound[0])] = bound
        logger.info(
            "listening on %s %s", transport, _peer(bound), extra={"transport": str(transport)}
        )
        return bound

    @property
    def listeners(self) -> list[tuple[Transport, Address]]:
        return [(Transport.UDP, a) for a in self._udp] + [(Transport.TCP, a) for a in self._servers]

    # -- outbound ------------------------------------------------------------------------

    async def connect(
        self, transport: Transport, remote: Address, *, local_host: str | None = None
    ) -> Flow:
        """Return a flow to ``remote``, reusing a listener socket or an open connection."""
        remote = (_unbracket(remote[0]), remote[1])
        if not _is_ip(remote[0]):
            remote = await self._resolve(remote, transport)
        if transport is Transport.UDP:
            endpoint = await self._udp_endpoint_for(remote, local_host)
            return Flow(Transport.UDP, endpoint.local, remote)
        connection = await self._stream_connection(remote, local_host)
        return connection.flow

    def send(self, flow: Flow, message: Message) -> bool:
        """Send on an existing flow without waiting; False when the flow no longer exists.

        Synchronous on purpose: the transaction layer retransmits from timer callbacks.
        """
        data = bytes(message)
        if len(data) > self.limits.max_message_size:
            self._log_drop(flow, f"outbound message of {len(data)} bytes too large", message)
            return False
        sent = self.send_bytes(flow, data)
        if sent and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "sent %s to %s",
                _describe(message),
                _peer(flow.remote),
                extra={"transport": str(flow.transport), "call_id": _call_id(message)},
            )
        return sent

    def send_bytes(self, flow: Flow, data: bytes) -> bool:
        """:meth:`send` of a message already printed (and within the size limit)."""
        if flow.transport is Transport.UDP:
            # From the flow's own socket, a worker's requests towards a caller included: the
            # caller's NAT or firewall lets in only the address it sent to (the listen port).
            # Their Via still names the worker's own port, so the answers come back here.
            endpoint = self._udp.get(flow.local)
            if endpoint is None:
                return False
            endpoint.send(data, flow.remote)
            return True
        connection = self._connections.get(flow.remote)
        return connection is not None and connection.send(data)

    def send_response(self, response: Response, request_flow: Flow) -> None:
        """Send a response to the request that arrived on ``request_flow`` (RFC 3261 18.2.2).

        On a stream, the request's connection is used while it is open and a new one is
        opened to the Via address otherwise; on UDP, the RFC 3581 destination is used, from
        the same socket the request arrived on. Synchronous like :meth:`send` (transaction
        timers call it); only the rare case that needs DNS or a new connection runs in the
        background, in order per call.
        """
        if request_flow.transport is Transport.TCP and self.send(request_flow, response):
            return
        try:
            dest = response_destination(response)
        except SipParseError:
            dest = None
        if dest is None:
            self._log_drop(request_flow, "response without a usable Via", response)
            return
        if request_flow.transport is Transport.UDP and _is_ip(dest[0]):
            endpoint = self._udp.get(request_flow.local)
            if endpoint is not None and endpoint.local == request_flow.local:
                self.send(endpoint.flow(dest), response)
            else:
                self.send(Flow(Transport.UDP, request_flow.local, dest), response)
            return
        task = asyncio.get_running_loop().create_task(
            self._send_response_later(response, request_flow, dest)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_response_later(
        self, response: Response, request_flow: Flow, dest: Address
    ) -> None:
        try:
            if not _is_ip(dest[0]):
                dest = await self._resolve(dest, request_flow.transport)
            if request_flow.transport is Transport.UDP:
                flow = Flow(Transport.UDP, request_flow.local, dest)
            else:
                flow = await self.connect(Transport.TCP, dest)
        except OSError as exc:
            self._log_drop(request_flow, f"cannot reach {_peer(dest)}: {exc}", response)
            return
        self.send(flow, response)

    def sent_by(self, flow: Flow) -> Address:
        """The host and port to write in our Via so that responses find their way back.

        On TCP this is a listener's port when we have one, because the peer may have to
        open a fresh connection to answer. In a worker of several, its own address for the
        flow's transport and interface (``adopt(..., own=True)``), whatever socket the flow
        uses.
        """
        host, port = flow.local
        own = self._own_for(flow.transport, host) if self._own else None
        if own is not None:  # a worker: its own port, so the answer reaches this process
            host = own[0] if not _is_unspecified(own[0]) else host
            port = own[1]
        elif flow.transport is Transport.TCP:
            family_v6 = ":" in host
            for listen_host, listen_port in self._servers:
                if (":" in listen_host) == family_v6 and (
                    _is_unspecified(listen_host) or listen_host == host
                ):
                    port = listen_port
                    break
        if _is_unspecified(host):
            host = _route_source(flow.remote)
        note_own(host)  # what we write is ours (``machine_address``), TCP's local address too
        return (host, port)

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every listener and connection; pending sends are discarded."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in [*self._connecting.values(), *self._tasks]:
            task.cancel()
        for server in self._servers.values():
            server.close()
        for endpoint in self._udp.values():
            if endpoint.transport is not None:
                endpoint.transport.close()
        live = list(self._live)
        for connection in live:
            connection.abort()
        # Bounded: a close that runs while its caller is being cancelled must still end.
        waits: list[asyncio.Future[Any]] = [c.closed for c in live]
        waits += [asyncio.ensure_future(server.wait_closed()) for server in self._servers.values()]
        if waits:
            _, stuck = await asyncio.wait(waits, timeout=1.0)
            for future in stuck:
                future.cancel()
        self._servers.clear()
        self._udp.clear()
        self._own.clear()
        self._connections.clear()

    # -- internals -----------------------------------------------------------------------

    async def _resolve(self, addr: Address, transport: Transport) -> Address:
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_DGRAM if transport is Transport.UDP else socket.SOCK_STREAM
        infos = await loop.getaddrinfo(addr[0], addr[1], type=kind)
        if not infos:
            raise OSError(f"cannot resolve {addr[0]}")
        return _normalise(infos[0][4])

    async def _udp_endpoint_for(self, remote: Address, local_host: str | None) -> _DatagramEndpoint:
        v6 = ":" in remote[0]
        if self._own:
            own = self._own_for(Transport.UDP, local_host, remote=remote)
            if own is not None:
                return self._udp[own]
        for (host, _), endpoint in self._udp.items():
            if (":" in host) == v6 and (local_host is None or local_host == host):
                return endpoint
        # The address the kernel would route from, rather than a wildcard: a client socket
        # then never listens on interfaces it does not need, and its Via is exact.
        bind_host = local_host or _route_source(remote)
        bound = await self.listen(Transport.UDP, (bind_host, 0))
        return self._udp[bound]

    def _own_for(
        self, transport: Transport, local_host: str | None, *, remote: Address | None = None
    ) -> Address | None:
        """The worker's own address for a flow on ``local_host`` (None: a new flow to
        ``remote``, from the interface the kernel routes it through).

        The own socket bound to that very host, else the family's wildcard one (a TCP
        connection accepted on a wildcard listener has a concrete local address), else the
        family's first. A new flow with several candidates takes the one on the interface
        towards ``remote``; one candidate needs no routing question.
        """
        if local_host is not None:
            exact = self._own.get((transport, local_host))
            if exact is not None:
                return exact
        v6 = ":" in (local_host if local_host is not None else remote[0] if remote else "")
        family = [a for (t, h), a in self._own.items() if t is transport and (":" in h) == v6]
        if not family:
            return None
        if local_host is None and len(family) > 1 and remote is not None:
            source = _route_source(remote)
            for address in family:
                if address[0] == source:
                    return address
        for address in family:
            if _is_unspecified(address[0]):
                return address
        return family[0]

    async def _stream_connection(
        self, remote: Address, local_host: str | None
    ) -> _StreamConnection:
        existing = self._connections.get(remote)
        if existing is not None and existing.transport and not existing.transport.is_closing():
            return existing
        pending = self._connecting.get(remote)
        if pending is None:
            pending = asyncio.ensure_future(self._open_connection(remote, local_host))
            self._connecting[remote] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(remote, None))
        return await asyncio.shield(pending)

    async def _open_connection(self, remote: Address, local_host: str | None) -> _StreamConnection:
        if len(self._live) >= self.limits.max_connections:
            raise OSError("connection limit reached")
        loop = asyncio.get_running_loop()
        local_addr = (local_host, 0) if local_host else None
        _, connection = await loop.create_connection(
            lambda: _StreamConnection(self, inbound=False),
            remote[0],
            remote[1],
            local_addr=local_addr,
        )
        if not connection.registered:
            raise OSError(f"connection to {_peer(remote)} was refused by local limits")
        return connection

    def _on_connection_made(self, connection: _StreamConnection) -> None:
        ip = connection.remote[0]
        if (
            connection.inbound
            and self._source_filter is not None
            and not self._source_filter(connection.remote)
        ):
            connection.abort()
            return
        if connection.inbound and (
            len(self._live) >= self.limits.max_connections
            or self._per_ip.get(ip, 0) >= self.limits.max_connections_per_ip
        ):
            self._log_drop(connection.flow, "connection limit reached; refusing", None)
            connection.abort()
            return
        connection.registered = True
        self._schedule_sweep()
        self._live.add(connection)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._connections[connection.remote] = connection
        logger.debug(
            "connection %s %s",
            "from" if connection.inbound else "to",
            _peer(connection.remote),
            extra={"transport": "TCP"},
        )

    def _on_connection_lost(self, connection: _StreamConnection) -> None:
        if not connection.registered:
            return
        connection.registered = False
        self._live.discard(connection)
        ip = connection.remote[0]
        remaining = self._per_ip.get(ip, 1) - 1
        if remaining > 0:
            self._per_ip[ip] = remaining
        else:
            self._per_ip.pop(ip, None)
        if self._connections.get(connection.remote) is connection:
            del self._connections[connection.remote]

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            # A quarter of the timeout: idle connections live at most 25 % longer than asked.
            interval = self.limits.idle_timeout / 4
            self._sweeper = loop.call_later(interval, self._sweep_idle)

    def _sweep_idle(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self.limits.idle_timeout
        for connection in [c for c in self._live if c.last_activity < cutoff]:
            logger.info("closing idle connection %s", _peer(connection.remote))
            connection.abort()
        self._schedule_sweep()

    def _on_datagram(self, endpoint: _DatagramEndpoint, data: bytes, source: Address) -> None:
        # Only a datagram starting with white space can be a keep-alive (strip copies).
        if data[:1] in b"\r\n\t " and not data.strip(b"\r\n\t "):
            return  # keep-alive (or empty)
        flow = endpoint.flow(source)
        if len(data) > self.limits.max_message_size:
            self._log_drop(flow, f"datagram of {len(data)} bytes too large", None)
            return
        if endpoint.shared and self.divert is not None:
            if self.blocked is not None and self.blocked(source):
                return
            if self.divert(data, flow.local, source):
                return
        self._on_message_bytes(data, flow, stream=False)

    def inject(self, data: bytes, local: Address, source: Address) -> None:
        """A datagram another worker received on the listen address ``local`` and handed
        here (``softswitch.workers.handoff``), taken as if this worker's socket of the same
        reuse-port group had received it: its answers leave from ``local``. It is never
        handed on again."""
        endpoint = self._udp.get(local)
        flow = Flow(Transport.UDP, local, source)
        if endpoint is None:
            self._log_drop(flow, "handed datagram for an address not listened on", None)
            return
        if len(data) > self.limits.max_message_size:
            self._log_drop(flow, f"datagram of {len(data)} bytes too large", None)
            return
        self._on_message_bytes(data, flow, stream=False)

    def _on_message_bytes(self, data: bytes, flow: Flow, *, stream: bool) -> None:
        if self._source_filter is not None and not self._source_filter(flow.remote):
            return
        shortcut = self.shortcut
        if shortcut is not None and not stream:
            try:
                if shortcut(data, flow):
                    return
            except Exception:  # its bug: logged, the message dropped as a handler's would be
                logger.exception(
                    "shortcut failed on %d bytes from %s", len(data), _peer(flow.remote)
                )
                return
        try:
            message = parse_message(data, stream=stream)
            refusal = (
                validate_request(message)
                if isinstance(message, Request)
                else validate_response(message)
            )
        except SipParseError as exc:
            start = data.lstrip(b"\r\n")
            is_request = not start.startswith(b"SIP/")
            # Never an answer to an ACK (RFC 3261 17.1.1.3: it has no response), as below.
            reply = (
                Response.for_parse_error(exc)
                if is_request and not start.startswith(b"ACK ")
                else None
            )
            refused = Malformed(
                flow, exc.status, exc.reason, reply is not None, is_request, None, exc.partial, data
            )
            self._refuse(refused, reply)
            return
        except Exception:  # a parser bug must not take the listener down
            logger.exception("parser failed on %d bytes from %s", len(data), _peer(flow.remote))
            return
        if refusal is not None:
            status, reason = refusal
            reply = None
            is_request = isinstance(message, Request)
            if isinstance(message, Request) and message.method != "ACK":
                reply = Response.for_request(message, status, reason)
            refused = Malformed(
                flow, status, reason, reply is not None, is_request, message, (), data
            )
            self._refuse(refused, reply)
            return
        if isinstance(message, Request):
            _stamp_received(message, flow.remote)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "received %s from %s",
                _describe(message),
                _peer(flow.remote),
                extra={"transport": str(flow.transport), "call_id": _call_id(message)},
            )
        try:
            self._on_message(message, flow)
        except Exception:
            logger.exception(
                "message handler failed",
                extra={"transport": str(flow.transport), "call_id": _call_id(message)},
            )

    def _refuse(self, refused: Malformed, reply: Response | None) -> None:
        """Answer a malformed request statelessly, to the address it came from.

        The source address rather than the Via: the Via may be the malformed part, and the
        source is where RFC 3581 would send it anyway.
        """
        flow = refused.flow
        if self._on_malformed is not None:
            try:
                self._on_malformed(refused)
            except Exception:  # the policy's bug must not take the listener down
                logger.exception("malformed-message handler failed")
        else:
            self._log_drop(
                flow,
                f"malformed message: {refused.reason}",
                refused.message,
                answered=refused.answered,
            )
        if reply is None:
            return
        data = bytes(reply)
        if flow.transport is Transport.UDP:
            endpoint = self._udp.get(flow.local)
            if endpoint is not None:
                endpoint.send(data, flow.remote)
        else:
            connection = self._connections.get(flow.remote)
            if connection is not None:
                connection.send(data)

    def _log_drop(
        self, flow: Flow, reason: str, message: Message | None, *, answered: bool = False
    ) -> None:
        logger.info(
            "%s %s from %s: %s",
            "answered" if answered else "dropped",
            flow.transport,
            _peer(flow.remote),
            reason,
            extra={
                "transport": str(flow.transport),
                "peer": _peer(flow.remote),
                "call_id": _call_id(message) if message is not None else None,
                "drop_reason": reason,
            },
        )


def _is_unspecified(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def _route_source(remote: Address) -> str:
    """The local IP the kernel would use to reach ``remote``; no packet is sent."""
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(remote)
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"
        return str(probe.getsockname()[0])


def _call_id(message: Message | None) -> str | None:
    try:
        return None if message is None else message.call_id
    except Exception:
        return None


def _describe(message: Message) -> str:
    if isinstance(message, Request):
        return f"{message.method} request"
    return f"{message.status} response"
