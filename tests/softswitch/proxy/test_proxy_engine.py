"""The engine's SIP behaviour against raw UDP peers whose every byte the test controls.

SIPp covers the usual flows end to end (``tests/e2e/test_call_flow.py``); these cover the
races a scenario file cannot stage: a carrier answering after the switch gave up on it, a
CANCEL before any provisional response, garbage on the socket.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from softswitch.call.refusal import EndReason
from softswitch.proxy import ending as ending_module
from softswitch.proxy.calls import Admission, Call, Target
from softswitch.proxy.engine import Engine, Reply
from softswitch.security import Screen
from softswitch.sip import Request, Response, parse_message
from softswitch.sip.timers import TimerConfig
from softswitch.transport import Flow, Malformed, Transport

LOCAL = "127.0.0.1"


class Peer(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives, parsed."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(parse_message(data))

    def send(self, text: str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), (LOCAL, port))

    async def expect(
        self, what: Callable[[Request | Response], bool], timeout: float = 3.0
    ) -> Request | Response:
        async def wait() -> Request | Response:
            while True:
                message = await self.inbox.get()
                if what(message):
                    return message

        return await asyncio.wait_for(wait(), timeout)


def is_request(method: str) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Request) and m.method == method


def is_status(status: int) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Response) and m.status == status


@dataclass
class Policy:
    """Two gateways, both with a 0.3 s setup timeout; CDRs kept in a list."""

    gateways: list[int]
    calls: list[Call] = field(default_factory=list)
    refused_malformed: list[Malformed] = field(default_factory=list)
    #: The methods of the requests asked who sent them (``origin``).
    asked: list[str] = field(default_factory=list)

    def origin(self, request: Request, flow: Flow) -> Flow:
        self.asked.append(request.method)
        return flow

    def screen(self, request: Request, flow: Flow) -> Screen | None:
        return None

    def admit(self, request: Request, flow: Flow, now: float) -> Admission | Reply:
        return Admission("acct", "441234567", "441234567", 10.0, 5, 10.0)

    def next_target(self, call: Call, now: float) -> Target | Reply | None:
        index = len(call.attempts)
        if index >= len(self.gateways):
            return None
        port = self.gateways[index]
        uri = f"sip:441234567@{LOCAL}:{port}"
        return Target(f"gw{index + 1}", Transport.UDP, (LOCAL, port), uri, "441234567", 0.3)

    def release_target(self, call: Call, target: Target) -> None:
        pass

    def exhausted(self, call: Call, status: int) -> Reply:
        return Reply(status, end_reason=EndReason.ALL_GATEWAYS_FAILED)

    def answered(self, call: Call) -> None:
        pass

    def dialog_peer(self, address: tuple[str, int]) -> None:
        pass

    def account(self, call: Call) -> None:
        self.calls.append(call)

    def account_refusal(self, request: object, flow: Flow, reply: Reply, now: float) -> None:
        pass

    def malformed(self, malformed: Malformed) -> bool:
        self.refused_malformed.append(malformed)
        return malformed.method == "INVITE"


@dataclass
class World:
    engine: Engine
    policy: Policy
    port: int
    caller: Peer
    gw1: Peer
    gw2: Peer


async def peer() -> Peer:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Peer, local_addr=(LOCAL, 0)
    )
    return protocol


@pytest.fixture
def world() -> Callable[[Callable[[World], Awaitable[None]]], None]:
    def run(body: Callable[[World], Awaitable[None]]) -> None:
        async def main() -> None:
            caller, gw1, gw2 = await peer(), await peer(), await peer()
            policy = Policy([gw1.port, gw2.port])
            engine = Engine(policy)
            bound = await engine.listen(Transport.UDP, (LOCAL, 0))
            try:
                await asyncio.wait_for(body(World(engine, policy, bound[1], caller, gw1, gw2)), 10)
            finally:
                await engine.close()
                for p in (caller, gw1, gw2):
                    assert p.transport is not None
                    p.transport.close()

        asyncio.run(main())

    return run


def invite(w: World, call_id: str = "call-1") -> str:
    return f"""INVITE sip:441234567@{LOCAL}:{w.port} SIP/2.0
Via: SIP/2.0/UDP {LOCAL}:{w.caller.port};branch=z9hG4bKcaller1
Max-Forwards: 70
From: <sip:1000@{LOCAL}:{w.caller.port}>;tag=caller
To: <sip:441234567@{LOCAL}:{w.port}>
Call-ID: {call_id}
CSeq: 1 INVITE
Contact: <sip:1000@{LOCAL}:{w.caller.port}>
Content-Length: 0

"""


def answer(request: Request, status: str, tag: str = "gw") -> str:
    """A response to ``request`` as a gateway writes it (all Vias copied, a To tag)."""
    lines = [f"Via: {v}" for v in request.headers.get_all("Via")]
    lines += [f"Record-Route: {r}" for r in request.headers.get_all("Record-Route")]
    vias = "\n".join(lines)
    return f"""SIP/2.0 {status}
{vias}
From: {request.headers.get("From")}
To: {request.headers.get("To")};tag={tag}
Call-ID: {request.call_id}
CSeq: {request.headers.get("CSeq")}
Contact: <sip:gw@{LOCAL}:1>
Content-Length: 0

"""


def test_a_late_answer_from_an_abandoned_gateway_is_hung_up(
    world: Callable[[Callable[[World], Awaitable[None]]], None],
) -> None:
    async def body(w: World) -> None:
        w.caller.send(invite(w), w.port)
        await w.caller.expect(is_status(100))
        first = await w.gw1.expect(is_request("INVITE"))  # silent: setup timeout 0.3 s
        assert isinstance(first, Request)
        second = await w.gw2.expect(is_request("INVITE"))
        assert isinstance(second, Request)
        w.gw2.send(answer(second, "486 Busy Here"), w.port)
        await w.caller.expect(is_status(486))
        # gw1 answers after all: the switch must ACK it and hang it up at once
        w.gw1.send(answer(first, "200 OK"), w.port)
        await w.gw1.expect(is_request("ACK"))
        bye = await w.gw1.expect(is_request("BYE"))
        assert isinstance(bye, Request)
        assert bye.to_tag == "gw"
        (call,) = w.policy.calls
        assert call.end_reason == EndReason.BUSY
        assert [(a.gateway_id, a.outcome) for a in call.attempts] == [
            ("gw1", "setup_timeout"),
            ("gw2", "failed"),
        ]

    world(body)


def test_cancel_before_any_provisional_response(
    world: Callable[[Callable[[World], Awaitable[None]]], None],
) -> None:
    async def body(w: World) -> None:
        w.caller.send(invite(w), w.port)
        sent = await w.gw1.expect(is_request("INVITE"))
        assert isinstance(sent, Request)
        w.caller.send(
            invite(w).replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL"),
            w.port,
        )
        await w.caller.expect(is_status(200))
        await w.caller.expect(is_status(487))
        (call,) = w.policy.calls
        assert call.end_reason == EndReason.CALLER_CANCELLED
        # The gateway rings late: now (and only now) the CANCEL may be sent (RFC 3261 9.1).
        w.gw1.send(answer(sent, "180 Ringing"), w.port)
        cancel = await w.gw1.expect(is_request("CANCEL"))
        assert isinstance(cancel, Request)
        assert cancel.top_via == sent.top_via

    world(body)


def test_garbage_and_strays_do_not_stop_the_engine(
    world: Callable[[Callable[[World], Awaitable[None]]], None],
) -> None:
    async def body(w: World) -> None:
        w.caller.send("this is not SIP\n\n", w.port)
        w.caller.send(
            answer(parse_request(invite(w)), "200 OK"), w.port
        )  # a response nobody asked for
        stray_bye = invite(w, "nobody").replace("INVITE sip", "BYE sip")
        stray_bye = stray_bye.replace("1 INVITE", "2 BYE").replace(
            "To: <sip:441234567@", "To: <sip:441234567@"
        )
        w.caller.send(stray_bye.replace(f":{w.port}>\n", f":{w.port}>;tag=x\n", 1), w.port)
        await w.caller.expect(is_status(481))
        options = invite(w, "opt").replace("INVITE sip", "OPTIONS sip")
        w.caller.send(options.replace("1 INVITE", "1 OPTIONS"), w.port)
        await w.caller.expect(is_status(200))
        assert w.engine.active_calls == 0

    world(body)


def test_what_the_transport_refuses_as_malformed_goes_to_the_policy(
    world: Callable[[Callable[[World], Awaitable[None]]], None],
) -> None:
    """The transport answers 400 statelessly; the engine hands the policy what it knows and
    counts a recorded attempt among its refusals. No transaction, no call."""

    async def body(w: World) -> None:
        w.caller.send(invite(w, "bad-1").replace("Max-Forwards: 70", "Max-Forwards: x"), w.port)
        await w.caller.expect(is_status(400))
        w.caller.send("OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\nX\n\n", w.port)
        await w.caller.expect(is_status(400))
        first, second = w.policy.refused_malformed
        assert isinstance(first.message, Request)
        assert (first.status, first.method, first.message.call_id) == (400, "INVITE", "bad-1")
        assert first.flow.remote == (LOCAL, w.caller.port)
        assert (second.message, second.method) == (None, "OPTIONS")
        assert w.engine.stats.refused == 1  # the INVITE the policy recorded
        assert w.engine.active_calls == 0

    world(body)


def parse_request(text: str) -> Request:
    message = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(message, Request)
    return message


def in_dialog(w: World, method: str, cseq: int, *, from_caller: bool, route: str) -> str:
    """A mid-dialog request after the answer, as either side would send it."""
    if from_caller:
        via = f"{LOCAL}:{w.caller.port};branch=z9hG4bKc{method}{cseq}"
        from_, to = "<sip:1000@x>;tag=caller", "<sip:441234567@x>;tag=gw"
    else:
        via = f"{LOCAL}:{w.gw1.port};branch=z9hG4bKg{method}{cseq}"
        from_, to = "<sip:441234567@x>;tag=gw", "<sip:1000@x>;tag=caller"
    return f"""{method} sip:peer@{LOCAL}:1 SIP/2.0
Via: SIP/2.0/UDP {via}
Route: {route}
Max-Forwards: 70
From: {from_}
To: {to}
Call-ID: call-1
CSeq: {cseq} {method}
Content-Length: 0

"""


def test_in_dialog_requests_follow_the_record_routed_path(
    world: Callable[[Callable[[World], Awaitable[None]]], None],
) -> None:
    async def body(w: World) -> None:
        w.caller.send(invite(w), w.port)
        sent = await w.gw1.expect(is_request("INVITE"))
        assert isinstance(sent, Request)
        (record_route,) = sent.headers.get_all("Record-Route")
        w.gw1.send(answer(sent, "200 OK"), w.port)
        ok = await w.caller.expect(is_status(200))
        assert ok.headers.get_all("Record-Route") == [record_route]
        # INFO from the caller: our Route entry is consumed, the request reaches the carrier
        w.caller.send(in_dialog(w, "INFO", 2, from_caller=True, route=record_route), w.port)
        info = await w.gw1.expect(is_request("INFO"))
        assert isinstance(info, Request)
        assert "Route" not in info.headers
        assert len(info.via) == 2
        w.gw1.send(answer(info, "200 OK"), w.port)
        await w.caller.expect(
            lambda m: isinstance(m, Response) and m.headers.get("CSeq") == "2 INFO"
        )
        # re-INVITE from the carrier reaches the caller; its 200 and the ACK cross back
        w.gw1.send(in_dialog(w, "INVITE", 1, from_caller=False, route=record_route), w.port)
        reinvite = await w.caller.expect(is_request("INVITE"))
        assert isinstance(reinvite, Request)
        w.caller.send(answer(reinvite, "200 OK", tag="caller"), w.port)
        await w.gw1.expect(lambda m: isinstance(m, Response) and m.status == 200)
        w.gw1.send(in_dialog(w, "ACK", 1, from_caller=False, route=record_route), w.port)
        await w.caller.expect(is_request("ACK"))
        # BYE from the carrier ends the call: one CDR, hung up by the callee
        w.gw1.send(in_dialog(w, "BYE", 2, from_caller=False, route=record_route), w.port)
        bye = await w.caller.expect(is_request("BYE"))
        assert isinstance(bye, Request)
        w.caller.send(answer(bye, "200 OK", tag="caller"), w.port)
        await w.gw1.expect(lambda m: isinstance(m, Response) and m.headers.get("CSeq") == "2 BYE")
        (call,) = w.policy.calls
        assert (call.end_reason, call.hangup_side) == (EndReason.NORMAL_CLEARING, "callee")
        # Only the call's first request was asked who sent it: a call's own requests need
        # no identity (behind a trusted proxy they would count for pike, or name anyone).
        assert w.policy.asked == ["INVITE"]

    world(body)


@dataclass
class SummaryPolicy(Policy):
    """Keeps what each call ended with, not the call: a kept call is never garbage."""

    ends: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def account(self, call: Call) -> None:
        self.ends.append((call.call_id, call.end_reason, call.hangup_side))


def test_finished_calls_leave_no_reference_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The premise of running without CPython's automatic collector (proxy.collector).

    An answered call hung up by the caller and a call that fails over (503) to a busy
    gateway (486) run with the collector off; once the engine has let them go, a
    collection must find none of the switch's objects unreachable: reference counting
    alone freed them.
    """
    monkeypatch.setattr(ending_module, "LINGER", 0.05)  # where the linger is armed

    async def main() -> None:
        caller, gw1, gw2 = await peer(), await peer(), await peer()
        policy = SummaryPolicy([gw1.port, gw2.port])
        # Short timers, so completed transactions (Timer J, K, H) end within the test.
        engine = Engine(policy, timers=TimerConfig(t1=0.01, t2=0.04, t4=0.02, timer_d=0.02))
        port = (await engine.listen(Transport.UDP, (LOCAL, 0)))[1]
        w = World(engine, policy, port, caller, gw1, gw2)
        try:
            # 1. answered, then BYE from the caller
            caller.send(invite(w, "call-1"), port)
            sent = await gw1.expect(is_request("INVITE"))
            assert isinstance(sent, Request)
            (record_route,) = sent.headers.get_all("Record-Route")
            gw1.send(answer(sent, "180 Ringing"), port)
            gw1.send(answer(sent, "200 OK"), port)
            await caller.expect(is_status(200))
            caller.send(in_dialog(w, "ACK", 1, from_caller=True, route=record_route), port)
            await gw1.expect(is_request("ACK"))
            caller.send(in_dialog(w, "BYE", 2, from_caller=True, route=record_route), port)
            bye = await gw1.expect(is_request("BYE"))
            assert isinstance(bye, Request)
            gw1.send(answer(bye, "200 OK"), port)
            await caller.expect(is_status(200))
            # 2. 503 from the first gateway, 486 from the second, ACKed by the caller
            caller.send(invite(w, "call-2").replace("caller1", "caller2"), port)
            sent = await gw1.expect(is_request("INVITE"))
            assert isinstance(sent, Request)
            gw1.send(answer(sent, "503 Service Unavailable"), port)
            sent = await gw2.expect(is_request("INVITE"))
            assert isinstance(sent, Request)
            gw2.send(answer(sent, "486 Busy Here"), port)
            busy = await caller.expect(is_status(486))
            caller.send(
                f"ACK sip:441234567@{LOCAL}:{port} SIP/2.0\n"
                f"Via: SIP/2.0/UDP {LOCAL}:{caller.port};branch=z9hG4bKcaller2\n"
                f"From: {busy.headers.get('From')}\nTo: {busy.headers.get('To')}\n"
                "Call-ID: call-2\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n",
                port,
            )
            for _ in range(200):
                if not len(engine.transactions) and not engine.active_calls:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # the dialog's linger
            assert len(engine.transactions) == 0
            assert [end[:2] for end in policy.ends] == [
                ("call-1", EndReason.NORMAL_CLEARING),
                ("call-2", EndReason.BUSY),
            ]
            # The engine is alive here, so only what the calls left behind can be garbage.
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                gc.collect()
                left = {type(o).__qualname__ for o in gc.garbage}
                ours = sorted({type(o).__qualname__ for o in gc.garbage if _is_ours(o)})
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            assert ours == [], left
        finally:
            await engine.close()
            for p in (caller, gw1, gw2):
                assert p.transport is not None
                p.transport.close()

    gc.collect()
    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()


def _is_ours(o: object) -> bool:
    return type(o).__module__.startswith("softswitch")
