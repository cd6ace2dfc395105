"""The hand-off: every request of a call ends at the worker its Call-ID names, whatever
socket of the reuse-port group the kernel gave it to.

Real sockets throughout: a reuse-port group bound by ``bind_worker_sockets`` as the
supervisor binds it, the hand-off channels ``handoff_channels`` makes, one
``TransportLayer`` per worker on one event loop (the code path a worker runs: the listen
socket adopted, ``divert`` on it, the channel injected into the transport), and ONE client
socket sending every request (one source ip:port: the wholesale SBC). The group's program
and every hand-off hash with one secret key (:data:`KEY`), as in a running switch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from test_steering import request

from loopback_ports import LOCAL, free_port
from softswitch.config import SecurityConfig
from softswitch.security.guard import SourceGuard
from softswitch.sip import Message, Request, Response, parse_message
from softswitch.transport import Flow, Malformed, Transport, TransportLayer
from softswitch.workers.handoff import Handoff, blocked_sources, handoff_channels
from softswitch.workers.sockets import bind_worker_sockets, close_all
from softswitch.workers.steering import FIRST, WINDOW, SteeringKey, call_id_owner, steered_index

#: The key of every group's program and every hand-off here (from a fixed secret, so the
#: owners are the same on every run).
KEY = SteeringKey.from_secret(b"test_handoff: the switch's secret key")


class Workers:
    """``size`` workers' transports on one loop, each with its listen socket and hand-off."""

    def __init__(self, size: int, *, steer: bool) -> None:
        self.size = size
        self.port = free_port()
        self.groups = bind_worker_sockets(
            [f"udp:{LOCAL}:{self.port}"], size, None, steer_by_call_id=steer, steering_key=KEY
        )
        self.channels = handoff_channels(size)
        senders = [ends[0] for ends in self.channels]
        self.handoffs = [Handoff(i, senders, self.channels[i][1], KEY) for i in range(size)]
        #: (worker index, method or None for a malformed datagram, flow)
        self.handled: list[tuple[int, str | None, Flow]] = []
        self.layers = [self._layer(i) for i in range(size)]
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind((LOCAL, 0))
        self.client.setblocking(False)

    def _layer(self, index: int) -> TransportLayer:
        def on_message(message: Message, flow: Flow) -> None:
            method = message.method if isinstance(message, Request) else "response"
            self.handled.append((index, method, flow))

        def on_malformed(malformed: Malformed) -> None:
            self.handled.append((index, None, malformed.flow))

        return TransportLayer(on_message, on_malformed=on_malformed)

    async def start(self, *, handing: bool = True) -> None:
        for index, layer in enumerate(self.layers):
            if handing:
                layer.divert = self.handoffs[index].divert
            (transport, sock, _) = self.groups[index].sockets[0]
            await layer.adopt(transport, sock, own=False)
            if handing:
                self.handoffs[index].start(layer.inject)

    async def send(self, *payloads: bytes) -> list[tuple[int, str | None, Flow]]:
        """Send each payload from the client (the next once the last was handled, as a
        CANCEL follows a 180); what the workers made of them, in order."""
        before = len(self.handled)
        for n, payload in enumerate(payloads, start=1):  # each once the last was handled
            self.client.sendto(payload, (LOCAL, self.port))
            for _ in range(500):
                if len(self.handled) >= before + n:
                    break
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # nothing handled twice
        return self.handled[before:]

    async def close(self) -> None:
        for handoff in self.handoffs:
            handoff.stop()
        for layer in self.layers:
            await layer.close()
        self.client.close()
        close_all(self.groups)
        for pair in self.channels:
            for sock in pair:
                sock.close()


def _run(
    body: Callable[[Workers], Awaitable[None]], *, steer: bool, size: int = 3, handing: bool = True
) -> None:
    async def main() -> None:
        group = Workers(size, steer=steer)
        try:
            await group.start(handing=handing)
            await body(group)
        finally:
            await group.close()

    asyncio.run(main())


#: With the kernel's Call-ID program attached, and without it (a kernel that refused it).
_STEER = pytest.mark.parametrize("steer", [True, False], ids=["program", "no-program"])


def _call(call_id: str, before: int) -> list[bytes]:
    """An INVITE with ``before`` Vias before its Call-ID, its CANCEL, its failure ACK."""
    return [
        request("INVITE", call_id, before=before, body=True),
        request("CANCEL", call_id, before=1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL"),
        request("ACK", call_id, before=1, to_tag=";tag=x-9"),
    ]


@_STEER
def test_a_call_past_the_window_ends_at_its_owner(steer: bool) -> None:
    """The INVITE's Call-ID past the program's window (12 Vias), its short CANCEL and ACK
    in it: without the hand-off the kernel would split them, with it all reach the owner,
    on the listen address (so the answers leave from the address the caller sent to)."""

    async def body(workers: Workers) -> None:
        owners = set()
        for n in range(12):
            call_id = f"{n}f81d4fae-7dec-11d0-a765-00a0c91e6bf6@192.0.2.4"
            invite, cancel, ack = _call(call_id, 12)
            assert invite.index(call_id.encode()) > FIRST + WINDOW
            assert steered_index(invite, 3, KEY) is None  # the kernel's 4-tuple hash decides
            owner = call_id_owner(invite, 3, KEY)
            assert owner is not None
            assert steered_index(cancel, 3, KEY) == owner == call_id_owner(ack, 3, KEY)
            handled = await workers.send(invite, cancel, ack)
            assert [(i, m) for i, m, _ in handled] == [
                (owner, "INVITE"),
                (owner, "CANCEL"),
                (owner, "ACK"),
            ]
            client = workers.client.getsockname()
            assert {(f.local, f.remote) for _, _, f in handled} == {((LOCAL, workers.port), client)}
            owners.add(owner)
        assert owners == {0, 1, 2}  # one source's calls spread over every worker

    _run(body, steer=steer)


@_STEER
def test_every_request_ends_at_its_owner(steer: bool) -> None:
    """Short and long, long and compact form: each request at the worker its Call-ID owns."""

    async def body(workers: Workers) -> None:
        for n in range(30):
            call_id = f"{n:08d}-call@example.com"
            header = ("Call-ID: ", "call-id:", "i: ")[n % 3]
            payload = request("OPTIONS", call_id, header=header, before=1 + n % 14)
            handled = await workers.send(payload)
            assert [(i, m) for i, m, _ in handled] == [(call_id_owner(payload, 3, KEY), "OPTIONS")]

    _run(body, steer=steer)


@_STEER
def test_the_owner_answers_from_the_listen_address(steer: bool) -> None:

    async def body(workers: Workers) -> None:
        invite = _call("answered-here@example.com", 12)[0]
        ((owner, _, flow),) = await workers.send(invite)
        reply = Response.for_request(_parsed(invite), 100, "Trying")
        assert workers.layers[owner].send(flow, reply)
        loop = asyncio.get_running_loop()
        data, source = await asyncio.wait_for(loop.sock_recvfrom(workers.client, 65535), 5)
        assert data.startswith(b"SIP/2.0 100 Trying")
        assert source == (LOCAL, workers.port)

    _run(body, steer=steer)


def _parsed(payload: bytes) -> Request:
    message = parse_message(payload, stream=False)
    assert isinstance(message, Request)
    return message


@_STEER
def test_no_call_id_stays_where_it_arrived(steer: bool) -> None:
    """Garbage, a request with no Call-ID line, a STUN binding request: handled by the
    worker the kernel's 4-tuple hash gave them to, all the same one from one source; none
    is handed."""

    async def body(workers: Workers) -> None:
        no_call_id = [
            b"hello there, not SIP at all",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nX-Call-ID: abc@def\r\n\r\n",
            bytes.fromhex("000100002112a442") + b"\x01" * 12,  # STUN
        ]
        for payload in no_call_id:
            assert call_id_owner(payload, 3, KEY) is None
            assert workers.handoffs[0].divert(payload, (LOCAL, workers.port), ("192.0.2.1", 1)) is (
                False
            )
        handled = await workers.send(*no_call_id)
        assert len(handled) == len(no_call_id)
        assert len({i for i, _, _ in handled}) == 1
        for pair in workers.channels:
            with pytest.raises(BlockingIOError):
                pair[1].recv(65535)

    _run(body, steer=steer)


def test_a_handed_datagram_is_never_handed_again() -> None:
    """A datagram handed to worker 1 that worker 1 does not own (as another worker count
    would compute it) is handled at worker 1, not handed on."""

    async def body(workers: Workers) -> None:
        payload = next(
            p
            for n in range(100)
            if call_id_owner(p := request("OPTIONS", f"{n:08d}-x@example.com"), 3, KEY) == 2
        )
        line = f"{LOCAL} {workers.port} 192.0.2.9 5062\n".encode()
        workers.channels[1][0].send(line + payload)
        for _ in range(500):
            if workers.handled:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert [(i, m, f.remote) for i, m, f in workers.handled] == [
            (1, "OPTIONS", ("192.0.2.9", 5062))
        ]

    _run(body, steer=True)


def test_a_full_channel_drops_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The owner not reading (dead, restarting): once its channel is full a request for it
    is dropped, counted, not handled where it arrived (earlier copies still wait in the
    owner's queue: handled here too, one INVITE could become two calls), and the WARNING
    does not repeat for every datagram."""

    async def body(workers: Workers) -> None:
        handoff = workers.handoffs[0]
        # A small channel whatever the host's wmem_max (the kernel doubles it).
        workers.channels[1][0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        payloads = [request("OPTIONS", f"{n:08d}-full@example.com") for n in range(400)]
        theirs = [p for p in payloads if call_id_owner(p, 2, KEY) == 1]
        with caplog.at_level(logging.WARNING, logger="softswitch.workers"):
            for n in range(100000):
                taken = handoff.divert(
                    theirs[n % len(theirs)], (LOCAL, workers.port), ("192.0.2.1", 9)
                )
                assert taken  # handed or dropped: never handled here
                if handoff.dropped == 300:
                    break
        assert n + 1 - handoff.dropped > 10  # the channel holds a backlog for a restarting owner
        assert handoff.dropped == 300
        await asyncio.sleep(0.05)
        assert workers.handled == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 1 <= len(warnings) < 10
        message = warnings[0].getMessage()
        assert "cannot hand 1 datagrams to worker 1 (it is not reading): dropped" in message

    _run(body, steer=False, size=2, handing=False)  # nobody reads the channels


def test_the_channel_sizes_granted_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Once, with the sizes the kernel granted (read back, whatever the host allows); at
    WARNING when they hold less than a second of hand-offs at 2,000 requests a second."""
    with caplog.at_level(logging.INFO, logger="softswitch.workers"):
        pairs = handoff_channels(2)
    try:
        sent = pairs[0][0].getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        received = pairs[0][1].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        [record] = [r for r in caplog.records if "hand-off channels" in r.getMessage()]
        message = record.getMessage()
        assert f"{sent} bytes to send, {received} to receive per worker" in message
        small = sent < 2000 * 2304
        assert record.levelno == (logging.WARNING if small else logging.INFO)
        assert ("net.core.wmem_max" in message) is small
        # 4 MiB asked (doubled by the kernel): past wmem_max when forced, else up to it.
        wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
        assert sent >= min(2 * 4 * 1024 * 1024, 2 * wmem_max)
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_a_blocked_source_is_not_handed() -> None:
    """A source on the block list is dropped before the hand-off, as the owner's screening
    would drop it: no hand-off, no parsing; once unblocked its requests reach their owner."""
    security = dataclasses.replace(SecurityConfig(), blocked_source="drop", block_time=60.0)
    guard = SourceGuard(security)

    async def body(workers: Workers) -> None:
        for layer in workers.layers:
            layer.blocked = blocked_sources(guard)
        payloads = [request("OPTIONS", f"{n:08d}-blocked@example.com") for n in range(12)]
        assert {call_id_owner(p, 3, KEY) for p in payloads} == {0, 1, 2}
        guard.block(LOCAL, "test")
        for payload in payloads:
            workers.client.sendto(payload, (LOCAL, workers.port))
        for _ in range(500):  # each dropped by the worker that received it, and counted
            if guard.refusals.totals["blocked"] == len(payloads):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert guard.refusals.totals["blocked"] == len(payloads)
        assert workers.handled == []
        guard.blocks.unblock(LOCAL)
        handled = await workers.send(*payloads)
        assert [i for i, _, _ in handled] == [call_id_owner(p, 3, KEY) for p in payloads]

    _run(body, steer=False)


def test_an_ipv6_source_is_injected_as_received() -> None:
    """A handed datagram from an IPv6 source, to an IPv6 listen address: the owner takes it
    with both addresses as the worker that received it saw them."""

    async def main() -> None:
        handled: list[Flow] = []
        layer = TransportLayer(lambda message, flow: handled.append(flow))
        bound = await layer.listen(Transport.UDP, ("::1", 0))
        channels = handoff_channels(2)
        senders = [ends[0] for ends in channels]
        sender = Handoff(0, senders, channels[0][1], KEY)
        owner = Handoff(1, senders, channels[1][1], KEY)
        owner.start(layer.inject)
        try:
            payload = next(
                p
                for n in range(100)
                if call_id_owner(p := request("OPTIONS", f"{n:08d}-v6@example.com"), 2, KEY) == 1
            )
            assert sender.divert(payload, bound, ("2001:db8::9", 5062))
            for _ in range(500):
                if handled:
                    break
                await asyncio.sleep(0.01)
            assert [(f.local, f.remote) for f in handled] == [(bound, ("2001:db8::9", 5062))]
        finally:
            owner.stop()
            await layer.close()
            for pair in channels:
                for sock in pair:
                    sock.close()

    asyncio.run(main())


def test_a_udp_datagram_fits_the_channel() -> None:
    """The largest UDP datagram with its addresses passes through a channel whole."""
    (sender, inbox), *_ = handoff_channels(1)
    try:
        data = b"x" * 65507
        line = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 ::ffff:192.0.2.1 65535\n"
        sender.send(line + data)
        assert inbox.recv(65536 + 256) == line + data
    finally:
        sender.close()
        inbox.close()
