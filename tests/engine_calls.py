"""Calls through a whole switch in this process, without sockets: what SIPp's caller and
carrier would send, made from what the switch sent them.

A :class:`Rig` starts a :class:`softswitch.proxy.server.Switch` on a configuration file,
catches what it sends at its UDP endpoint instead of ``sendto``, and hands it datagrams as
its socket would (``TransportLayer._on_datagram``). A :class:`ScriptedCall` is one call's
SIPp side: the caller's INVITE, the carrier's 180 and 200 answering the INVITE the switch
sent, the caller's ACK and BYE along the route set of the 200, the carrier's 200 for the BYE.
The datagrams follow ``tests/captured_call.py`` (a real SIPp call through the switch).
Shared by ``benches/engine_call.py`` (CPU per call) and the express lane's differential test.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from softswitch.call.snapshot import build_snapshot
from softswitch.config import Config, load_config
from softswitch.proxy.collector import quiet_collector, restore_collector
from softswitch.proxy.server import Switch
from softswitch.workers.live import SharedState
from softswitch.workers.peers import peer_channels
from softswitch.workers.seat import Seat
from softswitch.workers.sockets import bind_worker_sockets, close_all
from softswitch.workers.statistics import stats_channel

LOCAL = "127.0.0.1"
CALLER = (LOCAL, 45061)
SDP_CALLER = (
    b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 47770 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP_CARRIER = (
    b"v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40266 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
#: Where the captured call's carrier listened: a scripted carrier's Contact, unless told.
CARRIER = (LOCAL, 38514)

Sent = list[tuple[bytes, tuple[str, int]]]


def header_lines(message: bytes) -> list[bytes]:
    return message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def every(lines: list[bytes], name: bytes) -> list[bytes]:
    """The lines of field ``name`` (lower case, with its colon), in order."""
    return [line for line in lines if line.lower().startswith(name)]


def only(lines: list[bytes], name: bytes) -> bytes:
    (line,) = every(lines, name)
    return line


def sent_to(out: Sent, dest: tuple[str, int], what: bytes) -> bytes:
    """The datagram sent to ``dest`` that starts with ``what``; fails if none was."""
    for data, to in out:
        if to == dest and data.startswith(what):
            return data
    raise AssertionError(f"call not relayed: expected {what!r} to {dest}, got {out!r}")


def one_carrier_config(
    tmp_path: Path, port: int, gateway: tuple[str, int], gateway_extra: str = ""
) -> Path:
    """A switch on ``LOCAL:port`` with one customer (``LOCAL``) and one carrier at
    ``gateway`` for 44 (``gateway_extra``: more lines for its table); the file's path."""
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.100000\n")
    (tmp_path / "buy.csv").write_text("prefix,rate\n44,0.010000\n")
    path = tmp_path / "switch.toml"
    path.write_text(
        f"""
[server]
listen = ["udp:{LOCAL}:{port}"]
database = "{tmp_path / "cdr.sqlite"}"

[management]
listen = "off"

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "buy"
file = "buy.csv"

[[accounts]]
id = "customer"
ips = ["{LOCAL}"]
rate_deck = "sell"
routing_plan = "main"

[[gateways]]
id = "carrier"
address = "{gateway[0]}:{gateway[1]}"
rate_deck = "buy"
{gateway_extra}

[[routes]]
plan = "main"
prefix = "44"
gateways = ["carrier"]
"""
    )
    return path


class ScriptedCall:
    """One call's SIPp side: what the caller and the carrier send, from what they received."""

    def __init__(
        self,
        call_id: str,
        switch: tuple[str, int],
        n: int = 0,
        tags: int | None = None,
        carrier: tuple[str, int] = CARRIER,
    ) -> None:
        """``n`` numbers the caller's branches, ``tags`` (``n`` when None) the tags;
        ``carrier`` is the carrier's address, its Contact (as SIPp's, the address it answers
        from: the gateway's) and the Request-URI of the caller's requests in the dialog."""
        self.n = n
        self.contact = b"sip:carrier@%s:%d;transport=UDP" % (carrier[0].encode(), carrier[1])
        self.switch = f"{switch[0]}:{switch[1]}".encode()
        self.call_id = call_id.encode()
        tag = n if tags is None else tags
        self.from_line = b'From: "caller" <sip:1000@127.0.0.1:45061>;tag=%dSIPpTag00' % tag
        self.to_tag = b"%dSIPpTag01" % tag
        self.carrier_invite = b""
        self.route: list[bytes] = []

    def invite(self) -> bytes:
        return (
            b"INVITE sip:441234567@" + self.switch + b" SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-%d-0\r\n"
            % self.n
            + self.from_line
            + b"\r\nTo: <sip:441234567@"
            + self.switch
            + b">\r\nCall-ID: "
            + self.call_id
            + b"\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@127.0.0.1:45061;transport=UDP>\r\n"
            b"Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SDP_CALLER) + SDP_CALLER
        )

    def carrier_answer(self, status: bytes, body: bytes = b"") -> bytes:
        """The carrier's answer to the INVITE the switch sent it (``carrier_invite``)."""
        lines = header_lines(self.carrier_invite)
        head = [
            b"SIP/2.0 " + status,
            *every(lines, b"via:"),
            only(lines, b"from:"),
            only(lines, b"to:") + b";tag=" + self.to_tag,
            only(lines, b"call-id:"),
            only(lines, b"cseq:"),
            *every(lines, b"record-route:"),
            b"Contact: <" + self.contact + b">",
        ]
        if body:
            head.append(b"Content-Type: application/sdp")
        head.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def answered(self, ok: bytes) -> None:
        """The caller's route set from the 200 it got (its Record-Route, in order: RFC 3261
        12.1.2)."""
        self.route = [
            b"Route:" + line.split(b":", 1)[1] for line in every(header_lines(ok), b"record-route:")
        ]

    def in_dialog(self, method: bytes, cseq: int, branch: str) -> bytes:
        """The caller's ``method`` in the dialog, along its route set."""
        return b"\r\n".join(
            [
                method + b" " + self.contact + b" SIP/2.0",
                b"Via: SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-%d-%s"
                % (self.n, branch.encode()),
                *self.route,
                self.from_line,
                b"To: <sip:441234567@" + self.switch + b">;tag=" + self.to_tag,
                b"Call-ID: " + self.call_id,
                b"CSeq: %d %s" % (cseq, method),
                b"Max-Forwards: 70",
                b"Content-Length: 0",
                b"",
                b"",
            ]
        )


def bye_answer(bye: bytes) -> bytes:
    """The carrier's 200 for the BYE the switch sent it."""
    lines = header_lines(bye)
    head = [b"SIP/2.0 200 OK", *every(lines, b"via:")]
    head += [only(lines, name) for name in (b"from:", b"to:", b"call-id:", b"cseq:")]
    return b"\r\n".join([*head, b"Content-Length: 0", b"", b""])


class Rig:
    """A switch started on ``config`` (a file), listening on ``LOCAL:port`` with sends
    caught; ``feed`` a datagram, get what it sent. Use ``async with``.

    ``workers`` above 1: the switch is worker 0 (the primary) of that many, on the shared
    tables, channels and sockets ``softswitch run --workers`` gives each worker, with no
    sibling running (so no request is handed on: each call's every message comes here)."""

    def __init__(self, config: Path, port: int, *, workers: int = 1, host: str = LOCAL) -> None:
        """``host``: the listen address (``0.0.0.0``: a wildcard listener, one process)."""
        loaded = load_config(config)
        self.config = loaded
        self.port = port
        self.host = host
        self._closing: list[Callable[[], None]] = []
        seat = None if workers < 2 else self._seat(loaded, workers)
        self.switch = Switch(loaded, build_snapshot(loaded), config, seat)
        self.sent: Sent = []

    def _seat(self, config: Config, workers: int) -> Seat:
        groups = bind_worker_sockets([f"udp:{LOCAL}:{self.port}"], workers, None)
        shared = SharedState.for_config(config, workers=workers)
        ready_r, ready_w = os.pipe()
        stats, peers = stats_channel(), peer_channels(workers)
        own = tuple(a for group in groups for a in group.own_addresses())
        self._closing += [lambda: close_all(groups), shared.lock.close]
        self._closing += [functools.partial(os.close, fd) for fd in (ready_r, ready_w)]
        self._closing += [end.close for end in (*stats, *(e for pair in peers for e in pair))]
        return Seat(0, workers, shared, groups[0], own, ready_w, *stats, tuple(peers))

    async def __aenter__(self) -> Rig:
        quiet_collector(self.config.server.gc_threshold)  # as ``softswitch run`` does
        await self.switch.start([f"udp:{self.host}:{self.port}"])
        self.transport = self.switch.engine.transport
        endpoints = list(self.transport._udp.values())
        for endpoint in endpoints:
            endpoint.send = self._catch  # type: ignore[method-assign]
        self.endpoint = endpoints[-1]  # the listen port's (a worker's own port comes first)
        self.deliver = self.transport._on_datagram
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.switch.stop(0)
        restore_collector()
        for close in self._closing:
            close()

    def _catch(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sent.append((data, dest))

    def feed(self, data: bytes, source: tuple[str, int]) -> Sent:
        self.sent.clear()
        self.deliver(self.endpoint, data, source)
        return list(self.sent)

    def answer(self, call: ScriptedCall, gateway: tuple[str, int]) -> None:
        """Take ``call`` up to the caller's 200: INVITE, 180, 200 (not the ACK)."""
        out = self.feed(call.invite(), CALLER)
        sent_to(out, CALLER, b"SIP/2.0 100")
        call.carrier_invite = sent_to(out, gateway, b"INVITE ")
        sent_to(self.feed(call.carrier_answer(b"180 Ringing"), gateway), CALLER, b"SIP/2.0 180")
        out = self.feed(call.carrier_answer(b"200 OK", SDP_CARRIER), gateway)
        call.answered(sent_to(out, CALLER, b"SIP/2.0 200"))
