"""A public TCP port under abuse: slowloris, byte trickles, byte-at-a-time CPU, connection caps.

Everything runs on loopback with ephemeral ports and is bounded in time; the timeouts are
shrunk (``Limits``) so that what takes minutes in production takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transport_support import Inbox, run

from softswitch.sip import SipParseError, frame_length
from softswitch.transport import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FramingError,
    Limits,
    StreamFramer,
    Transport,
    TransportLayer,
)

LOCAL = "127.0.0.1"


def options(*, call_id: str = "abc@test", body: bytes = b"", filler: int = 0) -> bytes:
    """A valid OPTIONS over TCP; ``filler`` adds that many bytes (roughly) of extra headers."""
    extra = "".join(f"X-Filler-{i}: {'y' * 60}\r\n" for i in range(max(0, filler) // 75))
    branch = "z9hG4bK-" + call_id.replace("@", ".")
    head = (
        f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:tester@127.0.0.1>;tag=t1\r\n"
        f"To: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def sized_message(size: int) -> bytes:
    """A valid message of exactly ``size`` bytes: about half header fields, half body."""
    head = options(filler=size // 2)
    body_size = size - len(head)
    message = options(filler=size // 2, body=b"b" * body_size)
    # The Content-Length digits may have grown the header: trim the body to fit.
    message = options(filler=size // 2, body=b"b" * (body_size - (len(message) - size)))
    assert len(message) == size
    return message


# ------------------------------------------------------------------ byte-at-a-time framing


def feed_bytewise(message: bytes) -> tuple[float, list[bytes]]:
    framer = StreamFramer()
    frames: list[bytes] = []
    started = time.perf_counter()
    for i in range(len(message)):
        frames += framer.feed(message[i : i + 1])
    return time.perf_counter() - started, frames


def test_byte_at_a_time_framing_is_linear() -> None:
    """One-byte segments must not cost O(n²): 4x the bytes may not cost 8x the time.

    The old framer re-copied and re-scanned its whole buffer on every segment: about 6 s for
    60 KiB fed a byte at a time, 19x its 15 KiB time. Now both are a few tens of ms.
    """
    small, large = sized_message(15 * 1024), sized_message(60 * 1024)
    assert len(large) <= DEFAULT_MAX_MESSAGE_SIZE
    small_times, large_times = [], []
    for _ in range(3):
        elapsed, frames = feed_bytewise(large)
        assert frames == [large]
        assert elapsed < 2.0, f"60 KiB fed a byte at a time took {elapsed:.2f} s"
        large_times.append(elapsed)
        elapsed, frames = feed_bytewise(small)
        assert frames == [small]
        small_times.append(elapsed)
    ratio = min(large_times) / min(small_times)
    assert ratio < 8, f"4x the bytes cost {ratio:.1f}x the time: framing is not linear"


def test_framer_tracks_whether_a_header_is_in_progress() -> None:
    framer = StreamFramer()
    message = options(body=b"0123")
    assert not framer.header_pending
    assert framer.feed(b"\r\n\r") == []  # half a ping is between messages
    assert not framer.header_pending
    assert framer.feed(b"\n") == []
    assert (framer.pings, framer.header_pending) == (1, False)
    assert framer.feed(message[:1]) == []
    assert framer.header_pending
    header_end = message.index(b"\r\n\r\n") + 4
    assert framer.feed(message[1 : header_end - 1]) == []
    assert (framer.header_pending, framer.headers_completed) == (True, 0)
    assert framer.feed(message[header_end - 1 : header_end]) == []
    assert (framer.header_pending, framer.headers_completed) == (False, 1)  # body pending
    assert framer.feed(message[header_end:] + message[:5]) == [message]
    assert (framer.header_pending, framer.headers_completed) == (True, 1)  # the next one


def test_framer_finds_a_header_end_split_anywhere_across_segments() -> None:
    message = options(body=b"xyz")
    end = message.index(b"\r\n\r\n")
    for cut in range(end - 2, end + 5):
        for second_cut in range(cut, end + 5):
            framer = StreamFramer()
            parts = [message[:cut], message[cut:second_cut], message[second_cut:]]
            assert [f for part in parts for f in framer.feed(part)] == [message]


class ReferenceFramer:
    """The framer as it was, built on ``softswitch.sip.frame_length``: the rules to match."""

    def __init__(self, max_message_size: int) -> None:
        self.buffer = bytearray()
        self.max = max_message_size
        self.pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames: list[bytes] = []
        while True:
            while self.buffer and self.buffer[0] in b"\r\n":
                if self.buffer.startswith(b"\r\n\r\n"):
                    del self.buffer[:4]
                    self.pings += 1
                elif len(self.buffer) < 4 and b"\r\n\r\n".startswith(self.buffer):
                    return frames
                else:
                    del self.buffer[:1]
            if not self.buffer:
                return frames
            try:
                length = frame_length(bytes(self.buffer), max_header=self.max)
            except SipParseError as exc:
                raise FramingError(exc.reason) from exc
            if length is None:
                if len(self.buffer) > self.max:
                    raise FramingError(f"message exceeds {self.max} bytes")
                return frames
            if length > self.max:
                raise FramingError(f"message of {length} bytes exceeds {self.max} bytes")
            frames.append(bytes(self.buffer[:length]))
            del self.buffer[:length]


PIECES = [
    options(call_id="a"),
    options(call_id="b", body=b"v=0\r\n\r\n"),
    b"INFO sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc",
    b"INFO sip:a@b SIP/2.0\r\n l : 2\r\nX: y\r\n\r\nhi",
    b"INFO sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 2\r\n\r\nhi",
    b"INFO sip:a@b SIP/2.0\r\nContent-Length: +2\r\n\r\nhi",
    b"INFO sip:a@b SIP/2.0\r\nContent-Length:\r\n\r\n",
    b"INFO sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n",
    b"INFO sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
    b"INFO sip:a@b SIP/2.0\r\nContent-Length: 400\r\n\r\n" + b"z" * 400,
    b"INFO sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * 300 + b"\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\r",
    b"\n",
    b"garbage",
]


@given(
    st.lists(st.sampled_from(PIECES), max_size=6),
    st.lists(st.integers(min_value=0, max_value=1200), max_size=10),
    st.sampled_from([200, 500, DEFAULT_MAX_MESSAGE_SIZE]),
)
def test_framer_follows_the_frame_length_rules(
    pieces: list[bytes], cuts: list[int], max_size: int
) -> None:
    """Same frames, same pings and same errors as the ``frame_length``-based framer."""
    stream = b"".join(pieces)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})

    def outcome(framer: StreamFramer | ReferenceFramer) -> tuple[list[bytes], int, str | None]:
        frames: list[bytes] = []
        try:
            for start, end in itertools.pairwise(points):
                frames += framer.feed(stream[start:end])
        except FramingError as exc:
            return frames, framer.pings, exc.reason
        return frames, framer.pings, None

    assert outcome(StreamFramer(max_size)) == outcome(ReferenceFramer(max_size))


# ------------------------------------------------------------------------- live sockets


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


class Client:
    """One TCP client: its stream, and a watcher that notes when the server hangs up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.opened = asyncio.get_running_loop().time()
        self.received = bytearray()
        self.closed_at: asyncio.Task[float] = asyncio.ensure_future(self._watch())

    @classmethod
    async def open(cls, addr: tuple[str, int], source: str | None = None) -> Client:
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection(addr[0], addr[1], local_addr=local)
        return cls(reader, writer)

    async def _watch(self) -> float:
        try:
            while chunk := await self.reader.read(65536):
                self.received += chunk
        except ConnectionError:
            pass
        return asyncio.get_running_loop().time()

    @property
    def is_open(self) -> bool:
        return not self.closed_at.done()

    async def lifetime(self, timeout: float) -> float:
        """Seconds from connecting until the server closed the connection."""
        return await asyncio.wait_for(asyncio.shield(self.closed_at), timeout) - self.opened

    async def trickle(self, data: bytes, interval: float) -> None:
        """Send ``data`` one byte per ``interval`` until done or the server hangs up."""
        for i in range(len(data)):
            if not self.is_open:
                return
            self.writer.write(data[i : i + 1])
            await asyncio.sleep(interval)

    def close(self) -> None:
        self.closed_at.cancel()
        self.writer.close()


def trickler(client: Client, data: bytes, interval: float) -> asyncio.Task[None]:
    return asyncio.ensure_future(client.trickle(data, interval))


def test_slowloris_connections_are_cut_at_the_header_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole per-IP quota of one-byte-every-0.1 s connections; the IP gets its slots back."""
    timeout = 0.5
    count = 8

    async def body() -> None:
        inbox = Inbox()
        limits = Limits(max_connections_per_ip=count, header_timeout=timeout, idle_timeout=60)
        layer = TransportLayer(inbox, limits=limits)
        addr = await layer.listen(Transport.TCP, (LOCAL, 0))
        clients = [await Client.open(addr) for _ in range(count)]
        tasks: list[asyncio.Task[None]] = []
        try:
            await until(lambda: len(layer._live) == count)
            tasks = [trickler(c, options(), 0.1) for c in clients]
            refused = await Client.open(addr)  # the quota is full while they trickle
            clients.append(refused)
            assert await refused.lifetime(2.0) < 1.0
            lifetimes = [await c.lifetime(timeout + 2.0) for c in clients[:count]]
            # The clock starts at the first byte, sent right after connecting; a byte every
            # 0.1 s does not move it, so all of them go at about the header timeout.
            assert all(timeout - 0.05 < t < timeout + 0.5 for t in lifetimes), lifetimes
            assert inbox.queue.empty()
            await until(lambda: not layer._live)
            late = await Client.open(addr)
            clients.append(late)
            late.writer.write(options(call_id="after"))
            message, _ = await inbox.get()
            assert message.call_id == "after"
            assert late.is_open
        finally:
            for task in tasks:
                task.cancel()
            for client in clients:
                client.close()
            await layer.close()

    with caplog.at_level(logging.INFO, logger="softswitch.transport"):
        run(body(), timeout=20.0)
    timeouts = [r for r in caplog.records if "header not complete" in r.getMessage()]
    assert len(timeouts) == count  # once per connection, however many bytes it trickled
    assert all(r.levelno == logging.INFO for r in timeouts)
    assert len({r.__dict__["peer"] for r in timeouts}) == count
    assert all(r.__dict__["peer"].startswith(f"{LOCAL}:") for r in timeouts)


def test_header_timeout_starts_at_the_first_byte_of_each_message() -> None:
    """Keep-alive CRLFs do not start the clock; a header's end stops it; the next restarts it."""
    timeout = 0.3

    async def body() -> None:
        inbox = Inbox()
        layer = TransportLayer(inbox, limits=Limits(header_timeout=timeout, idle_timeout=60))
        addr = await layer.listen(Transport.TCP, (LOCAL, 0))
        client = await Client.open(addr)
        try:
            # A lone CRLF, then half a ping, each left alone for twice the header timeout.
            client.writer.write(b"\r\n")
            await asyncio.sleep(2 * timeout)
            client.writer.write(b"\r\n\r")
            await asyncio.sleep(2 * timeout)
            assert client.is_open
            assert client.received == b"\r\n"  # the pong for the first ping
            # A header on time, then a body slower than the header timeout: not a slowloris.
            slow = options(call_id="slow-body", body=b"0123456789")
            header_end = slow.index(b"\r\n\r\n") + 4
            client.writer.write(b"\n" + slow[:20])  # arms the header clock
            await asyncio.sleep(timeout / 3)
            client.writer.write(slow[20:header_end])  # and stops it
            await client.trickle(slow[header_end:], 0.06)
            message, _ = await inbox.get()
            assert message.call_id == "slow-body"
            # One whole message and the start of the next: the next one's clock runs out.
            started = asyncio.get_running_loop().time()
            client.writer.write(options(call_id="whole") + options(call_id="cut")[:10])
            message, _ = await inbox.get()
            assert message.call_id == "whole"
            closed = await asyncio.wait_for(asyncio.shield(client.closed_at), 2.0)
            assert timeout - 0.05 < closed - started < timeout + 0.5
        finally:
            client.close()
            await layer.close()

    run(body(), timeout=20.0)


@pytest.mark.parametrize(
    ("prefix", "trickled"),
    [
        (b"", options()),
        (options(body=b"x" * 200)[:-200], b"x" * 200),
        (b"", b"\r" * 200),
    ],
    ids=["header-bytes", "body-bytes", "lone-CRs"],
)
def test_trickled_bytes_do_not_reset_the_idle_timeout(prefix: bytes, trickled: bytes) -> None:
    """Bytes that complete no message and no ping are not activity (header timeout out of play)."""
    idle = 0.4

    async def body() -> None:
        layer = TransportLayer(Inbox(), limits=Limits(idle_timeout=idle, header_timeout=60))
        addr = await layer.listen(Transport.TCP, (LOCAL, 0))
        client = await Client.open(addr)
        client.writer.write(prefix)
        task = trickler(client, trickled, 0.05)
        try:
            # The sweep runs every idle/4, so an idle connection lives idle to 1.25 x idle.
            lifetime = await client.lifetime(3.0)
            assert idle - 0.05 < lifetime < 1.25 * idle + 0.5
        finally:
            task.cancel()
            client.close()
            await layer.close()

    run(body(), timeout=20.0)


def test_pings_and_messages_keep_a_connection_past_the_idle_timeout() -> None:
    idle = 0.3

    async def body() -> None:
        inbox = Inbox()
        layer = TransportLayer(inbox, limits=Limits(idle_timeout=idle, header_timeout=60))
        addr = await layer.listen(Transport.TCP, (LOCAL, 0))
        client = await Client.open(addr)
        try:
            for _ in range(8):  # 0.8 s of RFC 5626 pings, each answered
                client.writer.write(b"\r\n\r\n")
                await asyncio.sleep(0.1)
            assert client.is_open
            assert client.received == b"\r\n" * 8
            for n in range(8):  # then 0.8 s of whole messages
                client.writer.write(options(call_id=f"m{n}"))
                await inbox.get()
                await asyncio.sleep(0.1)
            assert client.is_open
            assert await client.lifetime(3.0) > 1.6  # and then silence is idleness
        finally:
            client.close()
            await layer.close()

    run(body(), timeout=20.0)


def test_byte_at_a_time_message_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 60 KiB message in one-byte TCP segments arrives whole, within the header timeout."""
    message = sized_message(60 * 1024)
    feeds = 0
    framed: list[bytes] = []
    feed = StreamFramer.feed

    def counting_feed(self: StreamFramer, data: bytes) -> list[bytes]:
        nonlocal feeds
        feeds += 1
        frames = feed(self, data)
        framed.extend(frames)
        return frames

    monkeypatch.setattr(StreamFramer, "feed", counting_feed)

    async def body() -> None:
        inbox = Inbox()
        layer = TransportLayer(inbox)
        addr = await layer.listen(Transport.TCP, (LOCAL, 0))
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(addr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            started = time.perf_counter()
            for i in range(len(message)):
                await loop.sock_sendall(sock, message[i : i + 1])
                await asyncio.sleep(0)  # let the layer read it, one segment per byte
            received, _ = await inbox.get(timeout=5.0)
            elapsed = time.perf_counter() - started
            assert received.call_id == "abc@test"
            assert framed == [message]
            assert elapsed < 5.0, f"{elapsed:.2f} s for {feeds} segments"
        finally:
            sock.close()
            await layer.close()

    run(body(), timeout=30.0)
    # The kernel may coalesce some bytes; most segments must still have been tiny.
    assert feeds > len(message) // 8, feeds


def _second_loopback_address() -> str | None:
    """127.0.0.2 as a second source IP, where the whole of 127/8 is loopback (Linux)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return None
    return "127.0.0.2"


def test_per_ip_and_total_connection_caps(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        inbox = Inbox()
        layer = TransportLayer(inbox, limits=Limits(max_connections_per_ip=3, max_connections=4))
        addr = await layer.listen(Transport.TCP, (LOCAL, 0))
        clients: list[Client] = []
        try:
            for _ in range(3):
                clients.append(await Client.open(addr))
            await until(lambda: len(layer._live) == 3)
            over_ip = await Client.open(addr)
            clients.append(over_ip)
            assert await over_ip.lifetime(2.0) < 1.0
            other = _second_loopback_address()
            if other is not None:
                # Another IP still fits under the total cap, and only one does.
                clients.append(await Client.open(addr, source=other))
                await until(lambda: len(layer._live) == 4)
                over_total = await Client.open(addr, source=other)
                clients.append(over_total)
                assert await over_total.lifetime(2.0) < 1.0
            live = [c for c in clients if c.is_open]
            assert len(live) == len(layer._live)
            for n, client in enumerate(live):
                client.writer.write(options(call_id=f"kept-{n}"))
                message, _ = await inbox.get()
                assert message.call_id == f"kept-{n}"
            # A slot freed is a slot to reuse.
            live[0].close()
            await until(lambda: len(layer._live) == len(live) - 1)
            again = await Client.open(addr)
            clients.append(again)
            again.writer.write(options(call_id="again"))
            message, _ = await inbox.get()
            assert message.call_id == "again"
        finally:
            for client in clients:
                client.close()
            await layer.close()

    with caplog.at_level(logging.INFO, logger="softswitch.transport"):
        run(body(), timeout=20.0)
    refusals = [r for r in caplog.records if "connection limit" in r.getMessage()]
    assert len(refusals) == (2 if _second_loopback_address() else 1)
