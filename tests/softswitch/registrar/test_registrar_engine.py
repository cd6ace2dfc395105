"""REGISTER through the engine over a real UDP socket: the stateless 401, the 200 in a
server transaction (also when the client keeps the To tag of the last 200), and 405 when
no account registers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from registrar_support import CONFIG, NullSink, make_snapshot

from softswitch.call.live import LiveState
from softswitch.proxy.engine import Engine
from softswitch.proxy.pipeline import Pipeline
from softswitch.registrar import BindingWriter, Registrar, Registrations
from softswitch.sip import Response, parse_message
from softswitch.sip.digest import DigestAuthenticator, build_authorization
from softswitch.transport import Transport

LOCAL = "127.0.0.1"


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = parse_message(data)
        assert isinstance(message, Response)
        self.inbox.put_nowait(message)

    async def ask(self, text: str, port: int) -> Response:
        assert self.transport is not None
        self.transport.sendto(text.encode(), (LOCAL, port))
        return await asyncio.wait_for(self.inbox.get(), 3.0)


def register_text(port: int, cseq: int, *, to_tag: str = "", auth: str = "") -> str:
    lines = [
        f"REGISTER sip:{LOCAL}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {LOCAL}:9;branch=z9hG4bKreg{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:pbx@{LOCAL}>;tag=f1",
        f"To: <sip:pbx@{LOCAL}>{to_tag}",
        "Call-ID: engine-reg",
        f"CSeq: {cseq} REGISTER",
        "Contact: <sip:pbx@192.168.7.7:5060>",
        "Expires: 120",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return "\r\n".join([*lines, "Content-Length: 0", "", ""])


async def run(tmp_path: Path, config: str) -> list[Response]:
    snapshot = make_snapshot(tmp_path, config)
    live = LiveState()
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    bindings = Registrations()
    pipeline = Pipeline(snapshot, live, nonces, NullSink(), registrations=bindings)
    writer = BindingWriter(tmp_path / "cdr.sqlite")
    engine = Engine(pipeline)
    engine.registrar = Registrar(
        bindings,
        writer,
        snapshot=lambda: pipeline.snapshot,
        nonces=nonces,
        live=live,
        guard=pipeline.guard,
    )
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(LOCAL, 0))
    try:
        _, port = await engine.listen(Transport.UDP, (LOCAL, 0))
        challenge = await peer.ask(register_text(port, 1), port)
        out = [challenge]
        value = challenge.headers.get("WWW-Authenticate")
        if value is not None:
            uri = f"sip:{LOCAL}:{port}"
            auth = build_authorization(
                value, method="REGISTER", uri=uri, username="pbx", password="secret"
            )
            out.append(await peer.ask(register_text(port, 2, auth=auth), port))
            # A refresh that keeps the To tag of the 200 is still a REGISTER, not a dialog's.
            tag = f";tag={out[-1].to_tag}"
            auth = build_authorization(
                value, method="REGISTER", uri=uri, username="pbx", password="secret", nc=2
            )
            out.append(await peer.ask(register_text(port, 3, to_tag=tag, auth=auth), port))
        return out
    finally:
        assert peer.transport is not None
        peer.transport.close()
        await engine.close()
        writer.close()


def test_register_through_the_engine(tmp_path: Path) -> None:
    challenge, ok, refresh = asyncio.run(run(tmp_path, CONFIG))
    assert challenge.status == 401
    assert ok.status == 200
    assert ok.headers.get("Contact", "").startswith("<sip:pbx@192.168.7.7:5060>;expires=")
    assert refresh.status == 200


def test_without_registering_accounts_a_known_sources_register_is_405(tmp_path: Path) -> None:
    config = (
        CONFIG.replace("register = true", "")
        .replace('address = "registered:pbx"', 'address = "192.0.2.7"')
        .replace('ips = ["10.0.0.0/24"]', 'ips = ["127.0.0.1"]')
    )
    (answer,) = asyncio.run(run(tmp_path, config))
    assert answer.status == 405
