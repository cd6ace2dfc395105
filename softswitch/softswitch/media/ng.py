"""rtpengine's NG control protocol: the message codec and an asyncio client for one relay.

On the wire each request is one UDP datagram ``<cookie> <bencoded dict>`` and each reply
``<the same cookie> <bencoded dict>`` (rtpengine's ``docs/ng_control_protocol.md``). The
dictionary of a request names its ``command``; the reply's ``result`` is ``ok``, ``pong``
(to ``ping``), ``error`` (with ``error-reason``) or ``load limit`` (with ``message``, only
when the request said ``supports: ["load limit"]``). ``ok`` may carry a ``warning``.

rtpengine remembers every cookie it answered (all clients together, for 30 to 60 s) and
answers a repeated cookie from that cache without running the command again: that is what
makes retransmitting a request safe, and also why cookies must be unique across clients
and restarts, not only within one client. A cookie here is a random 48-bit prefix per
client plus a counter.

The sans-I/O part (``encode_request``, ``split_datagram``, ``check_reply`` and the readers
of a ``query`` reply) does no I/O; ``NgClient`` is the only thing holding a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from softswitch.media.bencode import BencodeError, Encodable, Value, decode, encode, text

__all__ = [
    "MAX_DATAGRAM",
    "RECEIVE_BUFFER",
    "NgClient",
    "NgError",
    "NgLoadLimit",
    "NgTimeout",
    "Reply",
    "check_reply",
    "encode_request",
    "last_media_activity",
    "packet_totals",
    "packets_received",
    "split_datagram",
]

logger = logging.getLogger("softswitch.media")

MAX_DATAGRAM: Final = 65507
"""The largest UDP payload over IPv4; a bigger request cannot be sent in one datagram."""

RECEIVE_BUFFER: Final = 1 << 20
"""The client socket's receive buffer. With Linux's default (208 KiB, some 160 small
datagrams) a burst of a few hundred requests in flight lost replies in the socket and waited
for retransmissions; with 1 MiB a thousand concurrent pings took 45 ms, none resent."""

Reply = dict[str, Value]
"""A decoded reply dictionary; its strings are ``bytes`` (see ``softswitch.media.bencode``)."""


class NgError(Exception):
    """The relay refused or garbled a request (``reason`` says how), or gave no reply."""

    def __init__(self, reason: str, *, command: str = "", relay: str = "") -> None:
        where = " ".join(part for part in (relay, command) if part)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.command = command
        self.relay = relay


class NgTimeout(NgError):  # noqa: N818 (the name the switch uses)
    """No reply after the first send and every retransmission."""


class NgLoadLimit(NgError):  # noqa: N818
    """The relay is at a session or load limit (``result: load limit``): try another one."""


# --- codec ----------------------------------------------------------------------------------


def encode_request(cookie: str, command: Mapping[str, Encodable]) -> bytes:
    """The datagram for ``command`` (which must name its ``command``) under ``cookie``."""
    if not cookie or any(c in cookie for c in " \r\n\t") or not cookie.isascii():
        raise ValueError(f"a cookie is printable ASCII without spaces: {cookie!r}")
    if "command" not in command:
        raise ValueError("an NG request names its 'command'")
    return cookie.encode() + b" " + encode(command)


def split_datagram(datagram: bytes) -> tuple[str, bytes] | None:
    """``(cookie, body)`` of a reply datagram, or ``None`` when it has no cookie."""
    cookie, space, body = datagram.partition(b" ")
    if not space or not cookie:
        return None
    try:
        return cookie.decode("ascii"), body
    except UnicodeDecodeError:
        return None


def check_reply(body: bytes, *, command: str = "", relay: str = "") -> Reply:
    """The reply dictionary in ``body`` if it reports success (``ok`` or ``pong``).

    Raises ``NgError`` for ``result: error`` (with the relay's ``error-reason``), for a body
    that is not bencode or not a dictionary or has no ``result``, and ``NgLoadLimit`` for
    ``result: load limit``.
    """
    try:
        reply = decode(body)
    except BencodeError as exc:
        raise NgError(f"malformed reply: {exc}", command=command, relay=relay) from None
    if not isinstance(reply, dict):
        raise NgError("reply is not a dictionary", command=command, relay=relay)
    result = reply.get("result")
    if not isinstance(result, bytes):
        raise NgError("reply without a result", command=command, relay=relay)
    if result in (b"ok", b"pong"):
        return reply
    if result == b"error":
        reason = text(reply, "error-reason") or "error without a reason"
        raise NgError(reason, command=command, relay=relay)
    if result == b"load limit":
        reason = text(reply, "message") or "load limit"
        raise NgLoadLimit(reason, command=command, relay=relay)
    raise NgError(f"unknown result {result!r}", command=command, relay=relay)


# --- reading a query reply ------------------------------------------------------------------


def _dicts(value: Value | None) -> list[dict[str, Value]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _streams(reply: Mapping[str, Value]) -> Iterable[tuple[str, dict[str, Value]]]:
    """``(tag, stream)`` for every packet stream of every media of every tag (monologue)."""
    tags = reply.get("tags")
    if not isinstance(tags, dict):
        return
    for tag, monologue in tags.items():
        if not isinstance(monologue, dict):
            continue
        for media in _dicts(monologue.get("medias")):
            for stream in _dicts(media.get("streams")):
                yield tag, stream


def _packets(stream: Mapping[str, Value]) -> int:
    stats = stream.get("stats")
    packets = stats.get("packets") if isinstance(stats, dict) else None
    return packets if isinstance(packets, int) else 0


def _is_rtcp(stream: Mapping[str, Value]) -> bool:
    flags = stream.get("flags")
    return isinstance(flags, list) and b"RTCP" in flags


def packet_totals(reply: Mapping[str, Value]) -> dict[str, int]:
    """RTP packets rtpengine *received from* each party, keyed by SIP tag.

    A query reply's ``tags`` hold one entry per call party (its From- or To-tag, or
    ``<untagged N>`` for a leg that has not answered); each stream's ``stats`` count the
    packets that arrived on rtpengine's port facing that party, so ``{caller: 50, callee: 48}``
    means media flowed both ways. RTCP streams are left out.
    """
    totals: dict[str, int] = {}
    for tag, stream in _streams(reply):
        totals.setdefault(tag, 0)
        if not _is_rtcp(stream):
            totals[tag] += _packets(stream)
    return totals


def packets_received(reply: Mapping[str, Value]) -> int:
    """Every packet rtpengine received for the call, RTP and RTCP, from all parties: the
    media timeout's sign of life (it grows while anyone sends anything)."""
    return sum(_packets(stream) for _tag, stream in _streams(reply))


def last_media_activity(reply: Mapping[str, Value]) -> float | None:
    """The newest ``last packet`` (UNIX seconds) over the streams that received any packet
    (RTP or RTCP), or ``None`` when no stream has received one.

    rtpengine sets a stream's ``last packet`` to the time of the offer or answer that set
    the stream up, before any packet arrives; streams with no packets are therefore skipped.
    A later re-offer resets it again, so the value can only err towards "active" (it never
    makes a live call look dead). Its resolution is one second.
    """
    newest: float | None = None
    for _tag, stream in _streams(reply):
        last = stream.get("last packet")
        if _packets(stream) > 0 and isinstance(last, int):
            newest = float(last) if newest is None else max(newest, float(last))
    return newest


# --- the asyncio client ---------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    client: NgClient | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.client is not None:
            self.client._received(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the pending requests find out by timing out.
        relay = self.client.relay if self.client is not None else "?"
        logger.debug("NG socket error from %s: %s", relay, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client._lost()


class NgClient:
    """An NG client for one relay, over one connected UDP socket.

    Many requests may be in flight at once; each waits ``timeout`` seconds for its reply,
    then sends the same datagram again (same cookie), up to ``retries`` times, then raises
    ``NgTimeout``. Replies are matched by cookie; a reply to a request no longer waiting
    (a late duplicate) or with a cookie never sent is dropped.
    """

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        relay: str,
        *,
        timeout: float,
        retries: int,
    ) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries not negative")
        self._transport = transport
        self.relay = relay
        self.timeout = timeout
        self.retries = retries
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._closed = False

    @classmethod
    async def open(
        cls, host: str, port: int, *, timeout: float = 0.5, retries: int = 2
    ) -> NgClient:
        """A client with a UDP socket connected to ``host:port`` (IPv4 or IPv6)."""
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries not negative")
        protocol = _Protocol()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: protocol, remote_addr=(host, port)
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # best effort: the kernel caps it at rmem_max
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        relay = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        client = cls(transport, relay, timeout=timeout, retries=retries)
        protocol.client = client
        return client

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """How many requests are waiting for their reply."""
        return len(self._pending)

    def close(self) -> None:
        """Close the socket; requests still waiting fail with ``NgError``."""
        if not self._closed:
            self._closed = True
            self._transport.close()
            self._fail_pending()

    def _lost(self) -> None:
        self._closed = True
        self._fail_pending()

    def _fail_pending(self) -> None:
        for cookie, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(NgError("client closed", relay=self.relay))
            self._pending.pop(cookie, None)

    def _received(self, datagram: bytes) -> None:
        parts = split_datagram(datagram)
        if parts is None:
            logger.debug("dropped NG datagram without a cookie from %s", self.relay)
            return
        cookie, body = parts
        future = self._pending.get(cookie)
        if future is None or future.done():
            logger.debug(
                "dropped NG reply for no waiting request (late or unknown)",
                extra={"relay": self.relay, "cookie": cookie},
            )
            return
        future.set_result(body)

    async def request(self, command: Mapping[str, Encodable]) -> Reply:
        """Send ``command`` and return the relay's reply dictionary (``result`` ok/pong).

        Raises ``NgTimeout`` when no reply came, ``NgLoadLimit`` on ``load limit`` and
        ``NgError`` for an error reply or one that is not a dictionary with a ``result``.
        """
        if self._closed:
            raise NgError("client closed", relay=self.relay)
        name = command.get("command")
        name = name if isinstance(name, str) else repr(name)
        call_id = command.get("call-id")
        log_extra = {
            "relay": self.relay,
            "command": name,
            "call_id": call_id if isinstance(call_id, str) else None,
        }
        cookie = f"{self._prefix}_{next(self._counter)}"
        datagram = encode_request(cookie, command)
        if len(datagram) > MAX_DATAGRAM:
            raise NgError(
                f"request of {len(datagram)} bytes does not fit a datagram",
                command=name,
                relay=self.relay,
            )
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = future
        started = time.monotonic()
        try:
            for attempt in range(self.retries + 1):
                if attempt:
                    logger.debug(
                        "NG retransmission %d", attempt, extra={**log_extra, "cookie": cookie}
                    )
                self._transport.sendto(datagram)
                done, _ = await asyncio.wait((future,), timeout=self.timeout)
                if done:
                    break
            else:
                logger.info(
                    "NG %s: no reply from %s after %d sends",
                    name,
                    self.relay,
                    self.retries + 1,
                    extra=log_extra,
                )
                raise NgTimeout(
                    f"no reply after {self.retries + 1} sends {self.timeout:g} s apart",
                    command=name,
                    relay=self.relay,
                )
            body = future.result()
        finally:
            self._pending.pop(cookie, None)
            if not future.done():
                future.cancel()
        reply = check_reply(body, command=name, relay=self.relay)
        warning = text(reply, "warning")
        if warning is not None:
            logger.info("NG %s warning from %s: %s", name, self.relay, warning, extra=log_extra)
        logger.debug(
            "NG %s answered in %.1f ms",
            name,
            (time.monotonic() - started) * 1000,
            extra=log_extra,
        )
        return reply

    # --- typed commands ---------------------------------------------------------------------

    async def ping(self) -> None:
        """Raises ``NgError`` unless the relay answers ``pong``."""
        reply = await self.request({"command": "ping"})
        if reply.get("result") != b"pong":
            raise NgError("ping not answered with pong", command="ping", relay=self.relay)

    async def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: bytes,
        *,
        via_branch: str | None = None,
        flags: Iterable[str] = (),
        replace: Iterable[str] = (),
        codec: Mapping[str, Sequence[str]] | None = None,
        extra: Mapping[str, Encodable] | None = None,
    ) -> bytes:
        """The SDP ``sdp`` rewritten by the relay, to send on towards the callee."""
        command = _sdp_command(
            "offer", call_id, from_tag, None, sdp, via_branch, flags, replace, codec, extra
        )
        return self._sdp(await self.request(command), "offer")

    async def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        *,
        via_branch: str | None = None,
        flags: Iterable[str] = (),
        replace: Iterable[str] = (),
        codec: Mapping[str, Sequence[str]] | None = None,
        extra: Mapping[str, Encodable] | None = None,
    ) -> bytes:
        """The answer SDP ``sdp`` rewritten by the relay, to send back towards the caller."""
        command = _sdp_command(
            "answer", call_id, from_tag, to_tag, sdp, via_branch, flags, replace, codec, extra
        )
        return self._sdp(await self.request(command), "answer")

    async def delete(
        self,
        call_id: str,
        *,
        from_tag: str | None = None,
        to_tag: str | None = None,
        via_branch: str | None = None,
    ) -> Reply:
        """Delete the call (or, with tags or a branch, one leg of it).

        An unknown call is not an error: rtpengine answers ``ok`` with a ``warning``
        ("Call-ID not found or tags didn't match"), which is logged.
        """
        command: dict[str, Encodable] = {"command": "delete", "call-id": call_id}
        _optional(command, from_tag=from_tag, to_tag=to_tag, via_branch=via_branch)
        return await self.request(command)

    async def query(self, call_id: str, *, from_tag: str | None = None) -> Reply:
        """The relay's view of the call (``packet_totals``; ``packets_received``, which the
        media timeout reads); ``NgError`` "Unknown call-id" when it has none."""
        command: dict[str, Encodable] = {"command": "query", "call-id": call_id}
        _optional(command, from_tag=from_tag)
        return await self.request(command)

    def _sdp(self, reply: Reply, name: str) -> bytes:
        sdp = reply.get("sdp")
        if not isinstance(sdp, bytes):
            raise NgError("reply without an SDP", command=name, relay=self.relay)
        return sdp

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pending)} in flight"
        return f"<NgClient {self.relay} {state}>"


def _optional(command: dict[str, Encodable], **keys: str | None) -> None:
    """Add the keys given (``via_branch`` becomes ``via-branch``), leaving out ``None``."""
    for key, value in keys.items():
        if value is not None:
            command[key.replace("_", "-")] = value


def _sdp_command(
    name: str,
    call_id: str,
    from_tag: str,
    to_tag: str | None,
    sdp: bytes,
    via_branch: str | None,
    flags: Iterable[str],
    replace: Iterable[str],
    codec: Mapping[str, Sequence[str]] | None,
    extra: Mapping[str, Encodable] | None,
) -> dict[str, Encodable]:
    command: dict[str, Encodable] = {"command": name, "call-id": call_id, "from-tag": from_tag}
    _optional(command, to_tag=to_tag, via_branch=via_branch)
    command["sdp"] = sdp
    if flags := list(flags):
        command["flags"] = flags
    if replace := list(replace):
        command["replace"] = replace
    if codec:
        command["codec"] = {key: list(values) for key, values in codec.items()}
    for key, value in (extra or {}).items():
        if key in command:
            raise ValueError(f"extra key {key!r} would override the {name} request's own")
        command[key] = value
    return command
