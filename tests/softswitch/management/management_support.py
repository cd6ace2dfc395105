"""A real switch in the test's event loop, its management API on a free port, and raw UDP
peers (a caller, two carriers) whose every SIP byte the test writes.

``run(tmp_path, body)`` starts it all, runs ``body(world)`` bounded, and stops it all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy.server import Switch
from softswitch.sip import Request, Response, SipURI, parse_message

LOCAL = "127.0.0.1"
NUMBER = "441234567"
TOKEN = "s3cret-token"


class Peer(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives, parsed."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(parse_message(data))

    def send(self, text: str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), (LOCAL, port))

    async def expect(self, what: Callable[[Request | Response], bool]) -> Request | Response:
        """The next message ``what`` accepts (others are skipped); bounded by the test."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), 5.0)
            if what(message):
                return message


def request(method: str) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Request) and m.method == method


def status(code: int) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Response) and m.status == code


async def peer() -> Peer:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Peer, local_addr=(LOCAL, 0)
    )
    return protocol


CONFIG = """
[server]
database = "cdr.sqlite"
drain_timeout = 1
[defaults]
setup_timeout = 2
[billing]
sync_interval = 0.05
[management]
listen = "127.0.0.1:0"
{management}
[[rate_decks]]
id = "sell"
file = "sell.csv"
[[rate_decks]]
id = "buy"
file = "buy.csv"
[[accounts]]
id = "acme"
ips = ["127.0.0.1"]
routing_plan = "p"
rate_deck = "sell"
[[accounts]]
id = "prepaid"
ips = ["127.0.0.1"]
tech_prefix = "7777"
routing_plan = "p"
rate_deck = "sell"
billing = "prepaid"
[[accounts]]
id = "dormant"
username = "dormant"
password = "pw"
routing_plan = "p"
enabled = false
[[gateways]]
id = "gw1"
address = "127.0.0.1:{gw1}"
rate_deck = "buy"
priority = 0
[[gateways]]
id = "gw2"
address = "127.0.0.1:{gw2}"
rate_deck = "buy"
priority = 1
[[gateways]]
id = "gw3"
address = "127.0.0.1:9"
rate_deck = "buy"
priority = 2
enabled = false
[[routes]]
plan = "p"
prefix = "44"
gateways = ["gw1", "gw2", "gw3"]
strategy = "priority"
"""


@dataclass
class World:
    switch: Switch
    config: Path
    http: aiohttp.ClientSession
    base: str
    port: int
    caller: Peer
    gw1: Peer
    gw2: Peer
    headers: dict[str, str]

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        """(status, the JSON body) of one request, with the token when there is one."""
        headers = {**self.headers, **kw.pop("headers", {})}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            assert r.content_type == "application/json", (r.status, await r.text())
            return r.status, await r.json()

    async def text(self, path: str, **kw: Any) -> tuple[int, str, str]:
        """(status, content type, body) of a GET that is not JSON."""
        headers = {**self.headers, **kw.pop("headers", {})}
        async with self.http.get(self.base + path, headers=headers, **kw) as r:
            return r.status, r.content_type, await r.text()

    def invite(self, number: str = NUMBER, call_id: str = "call-1") -> None:
        """The caller's INVITE (no SDP: the switch does not look)."""
        c = self.caller.port
        self.caller.send(
            f"""INVITE sip:{number}@{LOCAL}:{self.port} SIP/2.0
Via: SIP/2.0/UDP {LOCAL}:{c};branch=z9hG4bK{_token(call_id)}
Max-Forwards: 70
From: <sip:1000@{LOCAL}:{c}>;tag=caller
To: <sip:{number}@{LOCAL}:{self.port}>
Call-ID: {call_id}
CSeq: 1 INVITE
Contact: <sip:1000@{LOCAL}:{c}>
Content-Length: 0

""",
            self.port,
        )

    def ack(self, ok: Response, call_id: str = "call-1") -> None:
        """The caller's ACK of the 2xx, along the record-routed path."""
        c = self.caller.port
        routes = "\n".join(f"Route: {r}" for r in reversed(ok.headers.get_all("Record-Route")))
        self.caller.send(
            f"""ACK sip:gw@{LOCAL}:1 SIP/2.0
Via: SIP/2.0/UDP {LOCAL}:{c};branch=z9hG4bKack{_token(call_id)}
{routes}
Max-Forwards: 70
From: <sip:1000@{LOCAL}:{c}>;tag=caller
To: {ok.headers.get("To")}
Call-ID: {call_id}
CSeq: 1 ACK
Content-Length: 0

""",
            self.port,
        )


def _token(text: str) -> str:
    """``text`` as a branch token (a Call-ID may hold ``@`` and ``/``, a branch may not)."""
    return "".join(ch if ch.isalnum() else "-" for ch in text)


def answer(request: Request, status_line: str, tag: str = "gw") -> str:
    """A response to ``request`` as its recipient writes it (all Vias, a To tag, and a
    Contact naming where the request reached it, as a gateway's does: the call's later
    requests go there)."""
    uri = request.uri
    where = f"{uri.host}:{uri.port or 5060}" if isinstance(uri, SipURI) else f"{LOCAL}:1"
    lines = [f"Via: {v}" for v in request.headers.get_all("Via")]
    lines += [f"Record-Route: {r}" for r in request.headers.get_all("Record-Route")]
    to = request.headers.get("To") or ""
    if ";tag=" not in to:
        to += f";tag={tag}"
    vias = "\n".join(lines)
    return f"""SIP/2.0 {status_line}
{vias}
From: {request.headers.get("From")}
To: {to}
Call-ID: {request.call_id}
CSeq: {request.headers.get("CSeq")}
Contact: <sip:{tag}@{where}>
Content-Length: 0

"""


def write_config(tmp_path: Path, management: str = "", gw1: int = 9, gw2: int = 9) -> Path:
    (tmp_path / "sell.csv").write_text("prefix,destination,rate\n44,UK,0.100000\n")
    (tmp_path / "buy.csv").write_text("prefix,destination,rate\n44,UK,0.010000\n")
    path = tmp_path / "switch.toml"
    path.write_text(CONFIG.format(management=management, gw1=gw1, gw2=gw2))
    return path


def run(
    tmp_path: Path,
    body: Callable[[World], Awaitable[None]],
    *,
    token: str | None = None,
    send_token: bool = True,
) -> None:
    """Start the switch (SIP and API on free ports) and the peers, run ``body``, stop."""

    async def main() -> None:
        caller, gw1, gw2 = await peer(), await peer(), await peer()
        management = f'token = "{token}"' if token else ""
        path = write_config(tmp_path, management, gw1.port, gw2.port)
        config = load_config(path)
        switch = Switch(config, build_snapshot(config), path)
        try:
            await switch.start([f"udp:{LOCAL}:0"])
            address = switch.management.address
            assert address is not None
            (sip,) = switch.engine._ours  # the one address listened on
            headers = {"Authorization": f"Bearer {token}"} if token and send_token else {}
            async with aiohttp.ClientSession() as http:
                world = World(
                    switch,
                    path,
                    http,
                    f"http://{LOCAL}:{address[1]}",
                    sip[1],
                    caller,
                    gw1,
                    gw2,
                    headers,
                )
                await asyncio.wait_for(body(world), 30)
        finally:
            await switch.stop(0)
            for p in (caller, gw1, gw2):
                assert p.transport is not None
                p.transport.close()

    asyncio.run(main())
