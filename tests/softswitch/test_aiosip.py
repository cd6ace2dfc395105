"""The aiosip-shaped API, end to end over loopback sockets between two in-process apps."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest

from loopback_ports import free_port
from softswitch import aiosip, sip
from softswitch.sip import parse_message
from softswitch.sip.timers import TimerConfig

LOCAL = "127.0.0.1"
FAST = TimerConfig(t1=0.02, t2=0.08, t4=0.1, timer_d=0.1)


def run(body: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout)

    aiosip.run(bounded())


@asynccontextmanager
async def pair(
    protocol: aiosip.Transport, *, timers: TimerConfig | None = None
) -> AsyncIterator[tuple[aiosip.Application, aiosip.Application, tuple[str, int]]]:
    """A server app listening on loopback and a client app; both closed afterwards."""
    server = aiosip.Application(timers=timers)
    client = aiosip.Application(timers=timers)
    try:
        addr = await server.run(local_addr=(LOCAL, 0), protocol=protocol)
        yield server, client, addr
    finally:
        await client.close()
        await server.close()


PROTOCOLS = pytest.mark.parametrize("protocol", [aiosip.UDP, aiosip.TCP], ids=["udp", "tcp"])


@PROTOCOLS
def test_options_round_trip(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        async with pair(protocol) as (server, client, addr):

            @server.route("OPTIONS")
            async def options(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                assert message.method == "OPTIONS"
                await request.reply(200, headers=[("Allow", "INVITE, ACK, BYE, OPTIONS")])

            peer = await client.connect(addr, protocol=protocol, local_addr=(LOCAL, 0))
            response = await peer.request("OPTIONS")
            assert (response.status, response.reason) == (200, "OK")
            assert response.headers.get_all("Allow") == ["INVITE", "ACK", "BYE", "OPTIONS"]
            assert response.to_tag is not None

    run(body)


def test_unrouted_methods_get_405_with_allow_and_failing_handlers_get_500() -> None:
    async def body() -> None:
        async with pair(aiosip.UDP) as (server, client, addr):

            async def broken(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                raise RuntimeError("bug in a handler")

            async def silent(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                return None

            server.router.add_route("MESSAGE", broken)
            server.router["info"] = silent
            peer = await client.connect(addr, local_addr=(LOCAL, 0))
            refused = await peer.request("SUBSCRIBE")
            assert refused.status == 405
            assert refused.headers.get_all("Allow") == ["ACK", "CANCEL", "MESSAGE", "INFO"]
            assert (await peer.request("MESSAGE")).status == 500
            assert (await peer.request("INFO")).status == 500
            # The server keeps working after its handlers misbehaved.
            server.router["MESSAGE"] = silent
            assert (await peer.request("SUBSCRIBE")).status == 405

    run(body)


@PROTOCOLS
def test_call_with_provisional_responses_dialog_requests_and_bye(
    protocol: aiosip.Transport,
) -> None:
    async def body() -> None:
        async with pair(protocol) as (server, client, addr):
            uas_dialogs: list[aiosip.Dialog] = []
            infos: list[str] = []

            @server.route("INVITE")
            async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                await request.reply(180)
                dialog = await request.prepare(200, body=b"v=0\r\n", content_type="application/sdp")

                async def on_info(req: aiosip.IncomingRequest, msg: aiosip.Request) -> None:
                    infos.append(msg.body.decode())
                    await req.reply(200)

                dialog.router["INFO"] = on_info
                uas_dialogs.append(dialog)

            peer = await client.connect(addr, protocol=protocol, local_addr=(LOCAL, 0))
            pending = peer.request("INVITE", "sip:bob@127.0.0.1", body=b"v=0\r\n")
            statuses = [response.status async for response in pending]
            assert statuses == [100, 180, 200]
            final = await pending
            assert final.body == b"v=0\r\n"
            dialog = pending.dialog
            assert dialog is not None
            assert dialog.call_id == final.call_id

            (uas,) = uas_dialogs
            await asyncio.wait_for(uas.wait_confirmed(), 2)  # our ACK arrived
            assert uas.id.remote_tag == dialog.id.local_tag

            info = await dialog.request("INFO", body=b"hello")
            assert info.status == 200
            assert infos == ["hello"]

            bye = await dialog.bye()
            assert bye.status == 200
            await asyncio.wait_for(uas.wait_closed(), 2)
            assert dialog.terminated
            assert uas.terminated
            assert client.dialogs == []
            assert server.dialogs == []

    run(body)


def test_in_dialog_requests_can_be_consumed_by_iterating_the_dialog() -> None:
    async def body() -> None:
        async with pair(aiosip.UDP) as (server, client, addr):
            seen: list[str] = []
            done = asyncio.Event()

            @server.route("INVITE")
            async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                dialog = await request.prepare(200)

                async def consume() -> None:
                    async for msg in dialog:
                        seen.append(msg.method)
                        if msg.method != "BYE":
                            await dialog.reply(msg, 202)
                    done.set()

                asyncio.get_running_loop().create_task(consume())
                await asyncio.sleep(0)

            peer = await client.connect(addr, local_addr=(LOCAL, 0))
            call = await peer.invite()
            assert (await call.request("MESSAGE", body=b"hi")).status == 202
            assert (await call.request("NOTIFY")).status == 202
            assert (await call.bye()).status == 200
            await asyncio.wait_for(done.wait(), 2)
            assert seen == ["MESSAGE", "NOTIFY", "BYE"]

    run(body)


def test_requests_outside_any_dialog_get_481_and_unanswered_ones_500() -> None:
    async def body() -> None:
        async with pair(aiosip.UDP, timers=FAST) as (server, client, addr):

            @server.route("INVITE")
            async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                await request.prepare(200)

            peer = await client.connect(addr, local_addr=(LOCAL, 0))
            call = await peer.invite()
            # Nobody routes or reads UPDATE on the server's dialog: it waits in the dialog's
            # queue (aiosip's programs read it later with recv()) until 32*T1, then the
            # stack answers for the program so the transaction ends before the peer's does.
            started = asyncio.get_running_loop().time()
            update = await call.request("UPDATE")
            assert (update.status, update.reason) == (500, "No Response From Application")
            waited = asyncio.get_running_loop().time() - started
            # The stack's timers fire on a grid (the loop's clock and the deadline queue's
            # resolution): up to a few milliseconds either side of 32*T1.
            assert 32 * FAST.t1 - 0.015 <= waited < 64 * FAST.t1
            stranger = await peer.request(
                "BYE", to=aiosip.NameAddr(aiosip.parse_uri("sip:x@127.0.0.1"), params={"tag": "n"})
            )
            assert stranger.status == 481

    run(body)


def test_cancel_ends_the_invite_with_487() -> None:
    async def body() -> None:
        async with pair(aiosip.TCP) as (server, client, addr):
            cancelled = asyncio.Event()

            @server.route("INVITE")
            async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                await request.reply(180)
                await request.cancelled.wait()
                cancelled.set()

            peer = await client.connect(addr, protocol=aiosip.TCP, local_addr=(LOCAL, 0))
            pending = peer.request("INVITE")
            async for response in pending:
                if response.status == 180:
                    cancel = pending.cancel()
                    assert (await cancel).status == 200
            assert (await pending).status == 487
            assert cancelled.is_set()
            with pytest.raises(RuntimeError, match="CANCEL needs"):
                pending.cancel()

    run(body)


class RawUdp(asyncio.DatagramProtocol):
    """A hand-driven UDP peer, to see retransmissions the way a peer on the wire sees them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    async def get(self, timeout: float = 2.0) -> tuple[sip.Request | sip.Response, tuple[str, int]]:
        data, addr = await asyncio.wait_for(self.queue.get(), timeout)
        return parse_message(data), addr

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


@asynccontextmanager
async def raw_udp() -> AsyncIterator[tuple[RawUdp, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    transport, raw = await loop.create_datagram_endpoint(RawUdp, local_addr=(LOCAL, 0))
    try:
        yield raw, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


def test_udp_requests_are_retransmitted_until_answered_and_time_out_as_408() -> None:
    async def body() -> None:
        app = aiosip.Application(timers=FAST)
        try:
            async with raw_udp() as (raw, addr):
                peer = await app.connect(addr, local_addr=(LOCAL, 0))
                pending = peer.request("OPTIONS")
                first, source = await raw.get()
                again, _ = await raw.get()  # Timer E fired: the same request again
                assert isinstance(first, sip.Request)
                assert isinstance(again, sip.Request)
                assert bytes(first) == bytes(again)
                raw.send(bytes(aiosip.Response.for_request(first, 200, to_tag="x")), source)
                assert (await pending).status == 200

                lost = peer.request("OPTIONS")
                response = await lost  # Timer F, 64*T1 = 1.28 s: answered 408 locally
                assert response.status == 408
                copies = raw.queue.qsize()
                assert copies >= 5  # E doubled from T1 up to T2 meanwhile
        finally:
            await app.close()

    run(body)


def test_uas_retransmits_its_2xx_until_the_ack_arrives() -> None:
    async def body() -> None:
        app = aiosip.Application(timers=FAST)

        @app.route("INVITE")
        async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
            await request.prepare(200)

        try:
            addr = await app.run(local_addr=(LOCAL, 0))
            async with raw_udp() as (raw, raw_addr):
                invite_bytes = (
                    "INVITE sip:uas@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {LOCAL}:{raw_addr[1]};branch=z9hG4bK-raw1;rport\r\n"
                    "Max-Forwards: 70\r\n"
                    "From: <sip:raw@127.0.0.1>;tag=raw\r\n"
                    "To: <sip:uas@127.0.0.1>\r\n"
                    "Call-ID: raw-call\r\n"
                    "CSeq: 1 INVITE\r\n"
                    f"Contact: <sip:raw@{LOCAL}:{raw_addr[1]}>\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
                raw.send(invite_bytes, addr)
                statuses: list[int] = []
                while len([s for s in statuses if s == 200]) < 3:
                    response, _ = await raw.get()
                    assert isinstance(response, sip.Response)
                    statuses.append(response.status)
                assert statuses[0] == 100
                ok = response
                (dialog,) = app.dialogs
                ack = (
                    "ACK sip:uas@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {LOCAL}:{raw_addr[1]};branch=z9hG4bK-raw2\r\n"
                    "Max-Forwards: 70\r\n"
                    "From: <sip:raw@127.0.0.1>;tag=raw\r\n"
                    f"To: <sip:uas@127.0.0.1>;tag={ok.to_tag}\r\n"
                    "Call-ID: raw-call\r\n"
                    "CSeq: 1 ACK\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
                raw.send(ack, addr)
                await asyncio.wait_for(dialog.wait_confirmed(), 1)
                await asyncio.sleep(0.05)  # let 200s already on the wire arrive
                while not raw.queue.empty():
                    raw.queue.get_nowait()
                with pytest.raises(TimeoutError):
                    await raw.get(timeout=0.3)  # no more 200s once ACKed
        finally:
            await app.close()

    run(body)


# ------------------------------------------------------------------ the README examples


def _readme_example(heading: str) -> str:
    """The Python block under ``heading`` in the repository README, exactly as published."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    after = readme.split(heading, 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


UAS_EXAMPLE = _readme_example("### A UAS that answers OPTIONS")
UAC_EXAMPLE = _readme_example("### A UAC that sends one")


def test_readme_examples_talk_to_each_other(tmp_path: Path) -> None:
    """The README's UAS and UAC, verbatim but for the port, run as a user would run them."""
    port = str(free_port())
    uas = tmp_path / "uas.py"
    uac = tmp_path / "uac.py"
    uas.write_text(UAS_EXAMPLE.replace("5080", port))
    uac.write_text(UAC_EXAMPLE.replace("5080", port))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    server = subprocess.Popen([sys.executable, str(uas)], env=env, stderr=subprocess.PIPE)
    try:
        for _ in range(50):  # wait until the UAS is bound
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((LOCAL, int(port)))
                except OSError:
                    break
            if server.poll() is not None:
                break
            time.sleep(0.05)
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        result = subprocess.run(
            [sys.executable, str(uac)], env=env, capture_output=True, text=True, timeout=20
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "200 OK"
    finally:
        server.kill()
        server.wait(timeout=5)
        if server.stderr is not None:
            server.stderr.close()


def test_a_refused_reinvite_leaves_the_dialog_up_and_an_accepted_one_is_acked() -> None:
    async def body() -> None:
        async with pair(aiosip.UDP) as (server, client, addr):
            answers = iter([488, 200])
            uas_dialogs: list[aiosip.Dialog] = []

            @server.route("INVITE")
            async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
                dialog = await request.prepare(200)

                async def reinvite(req: aiosip.IncomingRequest, msg: aiosip.Request) -> None:
                    await req.reply(next(answers))

                dialog.router["INVITE"] = reinvite
                uas_dialogs.append(dialog)

            peer = await client.connect(addr, local_addr=(LOCAL, 0))
            call = await peer.invite()
            (uas,) = uas_dialogs
            await asyncio.wait_for(uas.wait_confirmed(), 2)
            assert (await call.request("INVITE")).status == 488
            assert not call.terminated
            assert not uas.terminated
            assert (await call.request("INVITE")).status == 200
            await asyncio.sleep(0.1)  # the ACK for the re-INVITE's 2xx stops its retransmission
            assert uas._unacked is None
            assert (await call.bye()).status == 200

    run(body)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
@PROTOCOLS
def test_options_and_a_call_over_ipv6(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        server, client = aiosip.Application(), aiosip.Application()

        @server.route("OPTIONS")
        async def options(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
            await request.reply(200)

        @server.route("INVITE")
        async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
            await request.prepare(200)

        try:
            addr = await server.run(local_addr=("::1", 0), protocol=protocol)
            peer = await client.connect(addr, protocol=protocol, local_addr=("::1", 0))
            response = await peer.request("OPTIONS")
            assert response.status == 200
            assert response.top_via is not None
            assert response.top_via.host == "[::1]"
            call = await peer.invite()
            assert (await call.bye()).status == 200
        finally:
            await client.close()
            await server.close()

    run(body)
