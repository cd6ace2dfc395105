"""What a peer on the wire can do to an aiosip-shaped program: odd Expires values, a
Call-ID and From tag reused for the next request, a 2xx never ACKed over TCP.

The peer here is hand-driven (raw UDP datagrams, a raw TCP stream), so that exactly the
bytes under test reach the application.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from aiosip_support import FAST, LOCAL, contact, run

from softswitch import aiosip
from softswitch.aiosip.dialog import MAX_EXPIRES, _parse_expires
from softswitch.sip import Response, parse_message

HUGE = "9" * 310  # float(HUGE) * 1.1 overflows


class Wire(asyncio.DatagramProtocol):
    """A peer that sends datagrams we write by hand and keeps what comes back."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    async def final(self, timeout: float = 2.0) -> Response:
        """The next final response (100 Trying is skipped)."""
        while True:
            message = parse_message(await asyncio.wait_for(self.queue.get(), timeout))
            assert isinstance(message, Response)
            if message.status >= 200:
                return message


@asynccontextmanager
async def wire() -> AsyncIterator[tuple[Wire, int]]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Wire, local_addr=(LOCAL, 0))
    try:
        yield peer, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def request(
    method: str,
    port: int,
    *,
    call_id: str,
    cseq: int,
    expires: str | None = None,
    to_tag: str | None = None,
    transport: str = "UDP",
) -> bytes:
    to = "<sip:carol@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:carol@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/{transport} {LOCAL}:{port};branch=z9hG4bK{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        "From: <sip:dave@127.0.0.1>;tag=dave1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:dave@{LOCAL}:{port}>",
    ]
    if method == "SUBSCRIBE":
        lines.append("Event: presence")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


class Dialplan(aiosip.BaseDialplan):
    def __init__(self, **handlers: Any) -> None:
        self.handlers = handlers

    async def resolve(self, *args: Any, **kwargs: Any) -> Any:
        return self.handlers.get(kwargs["method"].lower())


# ------------------------------------------------------------------------- Expires


def test_expires_is_ascii_delta_seconds_clamped_to_2_to_the_32() -> None:
    assert _parse_expires(" 3600 ") == 3600
    assert _parse_expires("0000") == 0
    assert _parse_expires(HUGE) == MAX_EXPIRES == 2**32 - 1
    assert _parse_expires("0" * 400 + "7") == 7
    for bad in ("²", "1²", "١٢", "-1", "3.5", "", "Thu, 01 Dec 1994 16:00:00 GMT"):
        assert _parse_expires(bad) is None, bad


def test_a_subscribe_with_an_odd_expires_gets_400_or_a_clamped_dialog() -> None:
    async def body() -> None:
        refreshed: list[str] = []

        async def on_subscribe(request: Any, message: Any) -> None:
            dialog = await request.prepare(status_code=200, headers={"Expires": "60"})
            async for refresh in dialog:
                refreshed.append(refresh.headers["Expires"])
                await dialog.reply(refresh, 200)

        app = aiosip.Application(dialplan=Dialplan(subscribe=on_subscribe))
        try:
            port = (await app.run(protocol=aiosip.UDP, local_addr=(LOCAL, 0)))[1]
            async with wire() as (peer, own):
                peer_send = peer.transport
                assert peer_send is not None

                def send(data: bytes) -> None:
                    assert peer_send is not None
                    peer_send.sendto(data, (LOCAL, port))

                # A new SUBSCRIBE with a non-ASCII digit: 400, no dialog left behind.
                send(request("SUBSCRIBE", own, call_id="bad", cseq=1, expires="²"))
                assert (await peer.final()).status == 400
                assert app.dialogs == []

                # A huge one is clamped: 200, and the dialog it opens has its expiry timer.
                send(request("SUBSCRIBE", own, call_id="huge", cseq=1, expires=HUGE))
                ok = await peer.final()
                assert ok.status == 200
                (dialog,) = app.dialogs
                assert dialog._expiry is not None

                # In the dialog: a malformed Expires gets 400, the dialog lives on ...
                tag = ok.to_tag
                send(request("SUBSCRIBE", own, call_id="huge", cseq=2, expires="1²", to_tag=tag))
                assert (await peer.final()).status == 400
                assert not dialog.terminated
                # ... and a huge one reaches the program, which answers it.
                send(request("SUBSCRIBE", own, call_id="huge", cseq=3, expires=HUGE, to_tag=tag))
                assert (await peer.final()).status == 200
                assert refreshed == [HUGE]
                assert dialog._expiry is not None
        finally:
            await app.close()

    run(body)


def test_a_2xx_with_a_huge_expires_still_completes_register() -> None:
    async def body() -> None:
        async def on_register(request: Any, message: Any) -> None:
            await request.prepare(status_code=200, headers={"Expires": HUGE})

        server = aiosip.Application(dialplan=Dialplan(register=on_register))
        client = aiosip.Application()
        try:
            port = (await server.run(protocol=aiosip.UDP, local_addr=(LOCAL, 0)))[1]
            peer = await client.connect((LOCAL, port))
            registration = await asyncio.wait_for(
                peer.register(from_details=contact("e", port), to_details=contact("e", port)), 3
            )
            assert registration.status_code == 200
            assert registration._expiry is not None
        finally:
            await client.close()
            await server.close()

    run(body)


# ------------------------------------------------- a Call-ID and From tag used again


def test_a_refresh_reusing_call_id_and_from_tag_reaches_the_dialplan_again() -> None:
    async def body() -> None:
        seen: list[tuple[str, int]] = []

        async def on_register(request: Any, message: Any) -> None:
            seen.append((message.method, message.cseq.seq))
            await request.prepare(status_code=200, headers={"Expires": "60"})

        async def on_options(request: Any, message: Any) -> None:
            seen.append((message.method, message.cseq.seq))
            await request.prepare(status_code=200)  # the README's OPTIONS handler

        app = aiosip.Application(dialplan=Dialplan(register=on_register, options=on_options))
        try:
            port = (await app.run(protocol=aiosip.UDP, local_addr=(LOCAL, 0)))[1]
            async with wire() as (peer, own):
                assert peer.transport is not None
                for seq in (1, 2):
                    for method in ("REGISTER", "OPTIONS"):
                        message = request(
                            method, own, call_id=f"same-{method}", cseq=seq, expires="60"
                        )
                        peer.transport.sendto(message, (LOCAL, port))
                        assert (await peer.final()).status == 200  # at once, not 500 later
            assert seen == [("REGISTER", 1), ("OPTIONS", 1), ("REGISTER", 2), ("OPTIONS", 2)]
        finally:
            await app.close()

    run(body)


# ------------------------------------------------------------ 2xx over TCP, no ACK


def test_a_2xx_never_acked_over_tcp_is_retransmitted_then_the_dialog_ends() -> None:
    async def body() -> None:
        async def on_invite(request: Any, message: Any) -> None:
            await request.prepare(status_code=200)

        app = aiosip.Application(dialplan=Dialplan(invite=on_invite), timers=FAST)
        try:
            port = (await app.run(protocol=aiosip.TCP, local_addr=(LOCAL, 0)))[1]
            reader, writer = await asyncio.open_connection(LOCAL, port)
            try:
                own = writer.get_extra_info("sockname")[1]
                writer.write(request("INVITE", own, call_id="noack", cseq=1, transport="TCP"))
                await writer.drain()
                received = b""
                while received.count(b"SIP/2.0 200 OK") < 3:  # the 2xx, then two copies
                    received += await asyncio.wait_for(reader.read(65536), 2)
                assert len(app.dialogs) == 1
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 64 * FAST.t1 + 1
                while app.dialogs and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert app.dialogs == []  # 64*T1 without ACK: the dialog is over
            finally:
                writer.close()
        finally:
            await app.close()

    run(body)
