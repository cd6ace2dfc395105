"""The express lane (``softswitch.proxy.express``) relays an ACK exactly as the full path
does, or leaves it to the full path.

Two calls are answered through one switch in this process (``tests/engine_calls.py``), the
same but for their Call-IDs and the caller's branches. Each ACK variant, made by the same
edits of each call's ACK, goes to call A through the lane and to call B the full way (the
transport's shortcut off); what the switch sent, with A's identifiers written as B's, must
be the same bytes to the same place, with the same log records, counters and ACK timers.
The variants are the captured shape with seeded random edits (mostly one at a time, so that
one edit the lane declines does not hide another): header order, Max-Forwards values (ten
digits too), inert and meaningful extra fields, repeated fields, compact and lower-case
names, Route sets ours and not, Via ``rport``/``received``/a second Via/two on a line/
another host/the INVITE's branch, CSeq and tag mismatches, the callee's ACK, bodies, white
space, bare CRs, Request-URIs with headers, repeated parameters or a padded port, bad URIs
and bytes; then the same after both calls ended. The lane must take the usual ones and
decline many others.

Edits that change nothing the lane could get wrong (a check it makes that another one
already covers: a To without a tag, a Call-ID the grammar refuses) are in the mix too; the
INVITE's branch is one (after a 2xx its server transaction is gone, so ``serves`` is False
either way) kept for the day it is not.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from engine_calls import (
    CALLER,
    LOCAL,
    Rig,
    ScriptedCall,
    bye_answer,
    header_lines,
    one_carrier_config,
    sent_to,
)
from loopback_ports import free_port
from softswitch.proxy import core
from softswitch.proxy.calls import Call, Phase
from softswitch.transport import Flow

Edit = Callable[[list[bytes], int], list[bytes]]


def _field(lines: list[bytes], name: bytes) -> int:
    for i, line in enumerate(lines):
        if line.lower().startswith(name):
            return i
    return -1


def _replace(name: bytes, make: Callable[[bytes], bytes]) -> Edit:
    def edit(lines: list[bytes], k: int) -> list[bytes]:
        i = _field(lines, name)
        if i >= 0:  # (0: the Request-Line, b"ack ")
            lines[i] = make(lines[i])
        return lines

    return edit


def _add(line: bytes, at: int | None = None) -> Edit:
    def edit(lines: list[bytes], k: int) -> list[bytes]:
        where = len(lines) if at is None else min(at, len(lines))
        return [*lines[:where], line, *lines[where:]]

    return edit


def _drop(name: bytes) -> Edit:
    return lambda lines, k: [line for line in lines if not line.lower().startswith(name)]


def _shuffle(lines: list[bytes], k: int) -> list[bytes]:
    rest = lines[1:]
    random.Random(k).shuffle(rest)
    return [lines[0], *rest]


def edits(port: int) -> list[Edit]:
    ours = b"<sip:127.0.0.1:%d;lr>" % port
    return [
        _shuffle,
        _replace(b"max-forwards:", lambda line: b"Max-Forwards: 0"),
        _replace(b"max-forwards:", lambda line: b"Max-Forwards: 1"),
        _replace(b"max-forwards:", lambda line: b"Max-Forwards:  5"),
        _replace(b"max-forwards:", lambda line: b"Max-Forwards: x"),
        _replace(b"max-forwards:", lambda line: b"max-forwards: 9"),
        _drop(b"max-forwards:"),
        _add(b"User-Agent: SIPp/3.7"),
        _add(b"X-Trace: abc;def"),
        _add(b"Subject: hello", 2),
        _add(b"user-agent: lower"),
        _add(b"Contact: <sip:1000@127.0.0.1:45061>"),
        _add(b"Record-Route: <sip:192.0.2.9;lr>"),
        _add(b"Proxy-Require: foo"),
        _add(b"k: timer"),
        _replace(b"via:", lambda line: b"v:" + line[4:]),
        _replace(b"from:", lambda line: b"f:" + line[5:]),
        _replace(b"call-id:", lambda line: b"i:" + line[8:]),
        _replace(b"content-length:", lambda line: b"l: 0"),
        _replace(b"via:", lambda line: b"via:" + line[4:]),
        _replace(b"via:", lambda line: line + b";rport"),
        _replace(b"via:", lambda line: line + b";received=127.0.0.1"),
        _replace(b"via:", lambda line: line.replace(b"127.0.0.1:45061", b"127.0.0.2:45061")),
        _replace(b"via:", lambda line: line.replace(b"z9hG4bK-", b"old-")),
        _replace(b"via:", lambda line: line.replace(b"-ack", b"-0")),  # the INVITE's branch
        _add(b"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKdownstream", 2),
        _drop(b"route:"),
        _add(b"Route: " + ours, 1),
        _add(b"Route: <sip:192.0.2.8;lr>"),
        _add(b"Route: <sip:192.0.2.8;lr>", 1),
        _add(b"Route: <sip:127.0.0.1:%d;lr>" % (port + 1), 1),
        _replace(b"route:", lambda line: line + b", <sip:192.0.2.8;lr>"),
        _replace(b"route:", lambda line: b"Route: <sip:127.0.0.1:%d;lr;transport=udp>" % port),
        _replace(b"cseq:", lambda line: b"CSeq: 1 INVITE"),
        _replace(b"cseq:", lambda line: b"CSeq: 2 ACK"),
        _replace(b"cseq:", lambda line: b"CSeq: ACK"),
        _replace(b"to:", lambda line: line.split(b";tag=")[0]),
        _replace(b"to:", lambda line: line + b"x"),
        _replace(b"from:", lambda line: line + b"y"),
        _replace(b"to:", lambda line: line + b" "),
        _replace(b"call-id:", lambda line: line + b"\t"),
        _add(b"From: <sip:other@192.0.2.1>;tag=9"),
        _replace(b"content-length:", lambda line: b"Content-Length: 4"),
        _replace(b"content-length:", lambda line: b"Content-Length: 00"),
        _drop(b"content-length:"),
        _replace(b"ack ", lambda line: line.replace(b"sip:carrier", b"sips:carrier")),
        _replace(b"ack ", lambda line: b"ACK tel:+441234567 SIP/2.0"),
        _replace(b"ack ", lambda line: b"ACK sip:@@ SIP/2.0"),
        _replace(b"ack ", lambda line: line.replace(b"SIP/2.0", b"SIP/3.0")),
        _add(b"X-Name: caf\xc3\xa9"),
        _add(b" folded continuation", 3),
        _add(b"X-Note: a\rb"),
        _add(b"Max-Forwards: 69"),
        _add(b"CSeq: 1 ACK"),
        _replace(b"via:", lambda line: line + b", SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKx"),
        _replace(b"call-id:", lambda line: line + b" x"),
        _replace(b"max-forwards:", lambda line: b"Max-Forwards: 2147483649"),
        _replace(b"max-forwards:", lambda line: b"Max-Forwards: 4294967296"),
        _replace(b"max-forwards:", lambda line: b"Max-Forwards: 0070"),
        _replace(b"ack ", lambda line: line.replace(b";transport=UDP", b";transport=UDP?X=y")),
        _replace(b"ack ", lambda line: line.replace(b";transport=UDP", b";lr;lr")),
        _replace(b"ack ", lambda line: re.sub(rb"@127\.0\.0\.1:", b"@127.0.0.1:0", line)),
        _replace(b"ack ", lambda line: line.replace(b"sip:carrier", b"SIP:carrier")),
        FROM_CALLEE,
    ]


def FROM_CALLEE(lines: list[bytes], k: int) -> list[bytes]:  # noqa: N802  # a marker too
    """The callee's ACK (From and To tags swapped; sent from the gateway's address)."""
    i, j = _field(lines, b"from:"), _field(lines, b"to:")
    if i > 0 and j > 0 and b";tag=" in lines[i] and b";tag=" in lines[j]:
        (fa, ft), (ta, tt) = lines[i].split(b";tag="), lines[j].split(b";tag=")
        lines[i], lines[j] = fa + b";tag=" + tt, ta + b";tag=" + ft
    return lines


def variant(base: bytes, recipe: list[tuple[Edit, int]], body: bytes) -> bytes:
    lines = header_lines(base)
    for edit, k in recipe:
        lines = edit(lines, k)
    if any(line.lower().startswith(b"content-length: 4") for line in lines):
        body = b"abcd"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Records(logging.Handler):
    """The switch's log records at INFO and above (the security report aside: it speaks
    once a minute, so only the first of two paths would say it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("softswitch.security"):
            self.seen.append(f"{record.name} {record.levelname} {record.getMessage()}")

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


def test_the_lane_sends_what_the_full_path_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round: call A's ACK through the transport with the lane on, call B's with it off;
    the same datagrams to the same places, the same log records, the same counters, the same
    ACK timers (each call's re-armed before the round)."""
    port, gateway = free_port(), (LOCAL, free_port())
    config = one_carrier_config(tmp_path, port, gateway)
    records = Records()
    logging.getLogger("softswitch").addHandler(records)

    def as_b(items: list[bytes] | list[str]) -> list[bytes | str]:
        out: list[bytes | str] = []
        for item in items:
            if isinstance(item, bytes):
                out.append(
                    item.replace(b"A-express", b"B-express")
                    .replace(b"-1-ack", b"-2-ack")
                    .replace(b"-1-0", b"-2-0")
                )
            else:
                out.append(
                    item.replace("A-express", "B-express")
                    .replace("-1-ack", "-2-ack")
                    .replace("-1-0", "-2-0")
                )
        return out

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        async with Rig(config, port) as rig:
            a = ScriptedCall("A-express@127.0.0.1", (LOCAL, port), n=1, tags=7, carrier=gateway)
            b = ScriptedCall("B-express@127.0.0.1", (LOCAL, port), n=2, tags=7, carrier=gateway)
            rig.answer(a, gateway)
            rig.answer(b, gateway)
            engine = rig.switch.engine
            calls = {c.call_id: c for c in engine.calls()}
            call_a, call_b = calls["A-express@127.0.0.1"], calls["B-express@127.0.0.1"]
            assert isinstance(call_a, Call)
            assert isinstance(call_b, Call)
            # Our Via's branch is the one random part of a relayed ACK: fixed here (an ACK
            # opens no transaction, so the same branch twice is no clash).
            branches = core.make_branch
            monkeypatch.setattr(core, "make_branch", lambda: "z9hG4bKfixed")
            lane = rig.transport.shortcut
            assert lane is not None
            decided: list[bool] = []

            def watched(data: bytes, flow: Flow) -> bool:
                took = lane(data, flow)
                decided.append(took)
                return took

            taken = declined = 0
            rng = random.Random(20261205)
            every_edit = edits(port)
            for round_ in range(2000):
                if round_ == 1800:  # both calls hung up: their dialogs linger, ended
                    monkeypatch.setattr(core, "make_branch", branches)  # BYEs open transactions
                    for call in (a, b):
                        bye = rig.feed(call.in_dialog(b"BYE", 2, "bye"), CALLER)
                        rig.feed(bye_answer(sent_to(bye, gateway, b"BYE ")), gateway)
                    assert call_a.phase is Phase.ENDED
                    assert call_b.phase is Phase.ENDED
                    monkeypatch.setattr(core, "make_branch", lambda: "z9hG4bKfixed")
                many = rng.choice((1, 1, 1, 2, 2, 3, 4))  # mostly one edit: less often masked
                picks = [] if round_ % 1800 < 3 else rng.sample(every_edit, many)
                recipe = [(edit, rng.randrange(1000)) for edit in picks]
                body = b"x" if round_ % 1800 >= 3 and rng.random() < 0.03 else b""
                source = gateway if FROM_CALLEE in picks else CALLER
                ack_a = variant(a.in_dialog(b"ACK", 1, "ack"), recipe, body)
                ack_b = variant(b.in_dialog(b"ACK", 1, "ack"), recipe, body)
                for call in (call_a, call_b):  # each round starts with the ACK awaited
                    if call.ack_timer is not None:
                        call.ack_timer.cancel()
                    call.ack_timer = loop.call_later(3600, lambda: None)
                records.take()
                refused = engine.stats.refused
                rig.transport.shortcut = watched
                out_a = rig.feed(ack_a, source)
                seen_a, refused_a = records.take(), engine.stats.refused - refused
                rig.transport.shortcut = None
                out_b = rig.feed(ack_b, source)
                seen_b, refused_b = records.take(), engine.stats.refused - refused - refused_a
                if decided.pop():
                    taken += 1
                else:
                    declined += 1
                why = (round_, [e for e, _ in recipe], ack_a)
                assert [(as_b([d])[0], t) for d, t in out_a] == out_b, why
                assert as_b(seen_a) == seen_b, why
                assert refused_a == refused_b, why
                assert (call_a.ack_timer is None) == (call_b.ack_timer is None), why
            rig.transport.shortcut = lane
            return taken, declined

    try:
        taken, declined = asyncio.run(main())
    finally:
        logging.getLogger("softswitch").removeHandler(records)
    print(f"express lane: {taken} taken, {declined} declined")
    assert taken >= 300, taken  # the usual shapes go the express way
    assert declined >= 800, declined  # and the others the full way


def test_the_lane_takes_the_captured_ack_and_stops_the_ack_timer(tmp_path: Path) -> None:
    port, gateway = free_port(), (LOCAL, free_port())
    config = one_carrier_config(tmp_path, port, gateway)

    async def main() -> None:
        async with Rig(config, port) as rig:
            call = ScriptedCall("express@127.0.0.1", (LOCAL, port), n=3, carrier=gateway)
            rig.answer(call, gateway)
            (live,) = rig.switch.engine.calls()
            assert live.ack_timer is not None
            lane = rig.transport.shortcut
            assert lane is not None
            ack = call.in_dialog(b"ACK", 1, "ack")
            rig.sent.clear()
            assert lane(ack, rig.endpoint.flow(CALLER))
            ((out, to),) = rig.sent
            assert to == gateway
            assert out.startswith(b"ACK sip:carrier@127.0.0.1:%d;" % gateway[1])
            assert live.ack_timer is None
            lines = header_lines(out)
            assert lines[1].startswith(b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK" % port)
            assert b"Max-Forwards: 69" in lines
            assert not any(line.startswith(b"Route:") for line in lines)  # ours, taken off

    asyncio.run(main())
