"""Admission with ``[server] shared_state``: real engines and pipelines on loopback UDP, one
real Redis (``redis_tool``), raw UDP peers for the caller and the gateway.

Two "nodes" are two engines in one process, each with its own ``LiveState`` and its own
shared-state client: an account's ``max_calls`` holds across both, a call's slot is given
back exactly once however it ends (an answer, a CANCEL or a shutdown while Redis is being
asked), and a Redis that does not answer falls back to the node's own limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_support import eventually
from prometheus_client import CollectorRegistry, generate_latest

from loopback_ports import free_port
from redis_tool import running_redis
from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason
from softswitch.call.snapshot import build_snapshot
from softswitch.cdr import CdrRecord
from softswitch.cluster.admission import SharedLimits, Verdict, account_key
from softswitch.cluster.metrics import SharedStateCollector
from softswitch.config import ConfigError, load_config
from softswitch.proxy.calls import Call
from softswitch.proxy.engine import Engine, Reply
from softswitch.proxy.pipeline import Pipeline
from softswitch.sip import Request, Response, parse_message
from softswitch.sip.digest import DigestAuthenticator
from softswitch.transport import Transport

LOCAL = "127.0.0.1"

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"
shared_state = "{url}"

[defaults]
setup_timeout = 5
call_budget = 20

[[accounts]]
id = "cust"
ips = ["127.0.0.1/32"]
routing_plan = "main"
max_calls = {max_calls}

[[gateways]]
id = "gw"
address = "127.0.0.1:{gateway_port}"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["gw"]
"""


class Peer(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives, parsed."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.inbox.put_nowait(parse_message(data))

    def send(self, text: str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), (LOCAL, port))

    async def expect(self, what: Callable[[Request | Response], bool]) -> Request | Response:
        async def wait() -> Request | Response:
            while True:
                message = await self.inbox.get()
                if what(message):
                    return message

        return await asyncio.wait_for(wait(), 5.0)


def is_request(method: str) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Request) and m.method == method


def is_status(status: int) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Response) and m.status == status


class Sink:
    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def enqueue(self, record: CdrRecord, debit: object = None) -> None:
        self.records.append(record)


@dataclass
class Node:
    engine: Engine
    pipeline: Pipeline
    live: LiveState
    shared: SharedLimits
    cdrs: Sink
    port: int


async def peer() -> Peer:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Peer, local_addr=(LOCAL, 0)
    )
    return protocol


@asynccontextmanager
async def node(
    tmp_path: Path, name: str, url: str, prefix: str, gateway: Peer, max_calls: int = 1
) -> AsyncIterator[Node]:
    """An engine with a real pipeline, wired as ``Switch`` wires it with shared state."""
    root = tmp_path / name
    root.mkdir()
    path = root / "switch.toml"
    path.write_text(CONFIG.format(url=url, max_calls=max_calls, gateway_port=gateway.port))
    snapshot = await asyncio.to_thread(build_snapshot, load_config(path))
    live = LiveState()
    cdrs = Sink()
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    pipeline = Pipeline(snapshot, live, nonces, cdrs)  # type: ignore[arg-type]
    shared = SharedLimits(url, name, prefix=prefix)
    await shared.start()
    pipeline.shared = shared
    engine = Engine(pipeline)
    engine.shared_admission = pipeline.shared_admit
    bound = await engine.listen(Transport.UDP, (LOCAL, 0))
    try:
        yield Node(engine, pipeline, live, shared, cdrs, bound[1])
    finally:
        await engine.close()
        await shared.close()


def invite(caller: Peer, port: int, call_id: str) -> str:
    return f"""INVITE sip:441234567@{LOCAL}:{port} SIP/2.0
Via: SIP/2.0/UDP {LOCAL}:{caller.port};branch=z9hG4bK{call_id}
Max-Forwards: 70
From: <sip:1000@{LOCAL}:{caller.port}>;tag=caller
To: <sip:441234567@{LOCAL}:{port}>
Call-ID: {call_id}
CSeq: 1 INVITE
Contact: <sip:1000@{LOCAL}:{caller.port}>
Content-Length: 0

"""


def cancel(caller: Peer, port: int, call_id: str) -> str:
    return (
        invite(caller, port, call_id)
        .replace("INVITE sip", "CANCEL sip")
        .replace("1 INVITE", "1 CANCEL")
    )


def answer(request: Request, status: str) -> str:
    vias = "\n".join(f"Via: {v}" for v in request.headers.get_all("Via"))
    return f"""SIP/2.0 {status}
{vias}
From: {request.headers.get("From")}
To: {request.headers.get("To")};tag=gw
Call-ID: {request.call_id}
CSeq: {request.headers.get("CSeq")}
Content-Length: 0

"""


def run(body: Callable[[Peer, Peer], Awaitable[None]]) -> None:
    async def main() -> None:
        caller, gateway = await peer(), await peer()
        try:
            await asyncio.wait_for(body(caller, gateway), 30)
        finally:
            for p in (caller, gateway):
                assert p.transport is not None
                p.transport.close()

    asyncio.run(main())


async def total(n: Node) -> int:
    state = n.shared.state
    assert state is not None
    return await state.total(account_key("cust"))


def test_max_calls_holds_across_two_nodes_and_the_end_gives_the_slot_back(
    tmp_path: Path, url: str, prefix: str
) -> None:
    async def body(caller: Peer, gateway: Peer) -> None:
        async with (
            node(tmp_path, "a", url, prefix, gateway) as a,
            node(tmp_path, "b", url, prefix, gateway) as b,
        ):
            caller.send(invite(caller, a.port, "c1"), a.port)
            first = await gateway.expect(is_request("INVITE"))
            assert isinstance(first, Request)
            assert await total(a) == 1

            # Node b's own count is 0, so its LiveState passes; the shared count refuses.
            caller.send(invite(caller, b.port, "c2"), b.port)
            refused = await caller.expect(is_status(503))
            assert isinstance(refused, Response)
            assert refused.call_id == "c2"
            assert "cause=34" in (refused.headers.get("Reason") or "")
            (record,) = b.cdrs.records
            assert record.end_reason == EndReason.LIMIT_EXCEEDED
            assert record.q850 == 34
            assert "max_calls 1 across nodes" in record.detail
            assert b.live.account_calls("cust") == 0  # the local slot went back too
            assert b.engine.active_calls == 0

            # The first call ends (the gateway is busy): its slot goes back, once.
            gateway.send(answer(first, "486 Busy Here"), a.port)
            await caller.expect(is_status(486))
            await a.shared.settle()
            assert await total(a) == 0
            assert a.shared.state is not None
            assert a.shared.state.held(account_key("cust")) == 0

            caller.send(invite(caller, b.port, "c3"), b.port)
            third = await gateway.expect(is_request("INVITE"))
            assert isinstance(third, Request)
            assert third.call_id != "c1"
            assert await total(b) == 1
            gateway.send(answer(third, "486 Busy Here"), b.port)
            await caller.expect(is_status(486))
            await b.shared.settle()
            assert await total(b) == 0

    run(body)


def gated(n: Node) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the shared check of node ``n``'s calls until ``go`` is set; ``checked`` is set
    once the pipeline's check has answered."""
    go, checked = asyncio.Event(), asyncio.Event()

    async def check(call: Call) -> Reply | None:
        await go.wait()
        try:
            return await n.pipeline.shared_admit(call)
        finally:
            checked.set()

    n.engine.shared_admission = check
    return go, checked


def test_a_cancel_while_redis_is_asked_answers_487_and_the_slot_goes_back(
    tmp_path: Path, url: str, prefix: str
) -> None:
    async def body(caller: Peer, gateway: Peer) -> None:
        async with node(tmp_path, "a", url, prefix, gateway) as a:
            go, checked = gated(a)
            caller.send(invite(caller, a.port, "c1"), a.port)
            await caller.expect(is_status(100))
            caller.send(cancel(caller, a.port, "c1"), a.port)
            await caller.expect(is_status(200))
            await caller.expect(is_status(487))
            (record,) = a.cdrs.records
            assert record.end_reason == EndReason.CALLER_CANCELLED
            assert a.live.account_calls("cust") == 0
            # Redis answers after the call ended: the slot it took is given back at once.
            go.set()
            await checked.wait()
            await a.shared.settle()
            assert await total(a) == 0
            assert a.engine.active_calls == 0
            assert gateway.inbox.empty()

    run(body)


def test_a_shutdown_while_redis_is_asked_answers_503(tmp_path: Path, url: str, prefix: str) -> None:
    async def body(caller: Peer, gateway: Peer) -> None:
        async with node(tmp_path, "a", url, prefix, gateway) as a:
            gated(a)
            caller.send(invite(caller, a.port, "c1"), a.port)
            await caller.expect(is_status(100))
            await a.engine.close()
            await caller.expect(is_status(503))
            (record,) = a.cdrs.records
            assert record.end_reason == EndReason.SYSTEM_SHUTDOWN
            assert a.live.account_calls("cust") == 0
            assert await total(a) == 0

    run(body)


def test_a_cancelled_admission_gives_back_the_slot_its_question_took(url: str, prefix: str) -> None:
    async def main() -> None:
        limits = SharedLimits(url, "a", prefix=prefix)
        await limits.start()
        try:
            asking = asyncio.create_task(limits.admit("cust", 5, None))
            await asyncio.sleep(0)  # the question is on its way
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            await limits.settle()
            state = limits.state
            assert state is not None
            assert await state.total(account_key("cust")) == 0
            # The question did run: the rate and counter still work and count from zero.
            assert await limits.admit("cust", 1, None) is Verdict.HELD
            assert await limits.admit("cust", 1, None) is Verdict.MAX_CALLS
            limits.release("cust")
            await limits.settle()
            assert await state.total(account_key("cust")) == 0
        finally:
            await limits.close()

    asyncio.run(main())


def test_max_cps_holds_across_nodes_and_its_refusal_keeps_no_slot(url: str, prefix: str) -> None:
    async def main() -> None:
        a = SharedLimits(url, "a", prefix=prefix)
        b = SharedLimits(url, "b", prefix=prefix)
        await a.start()
        await b.start()
        try:
            assert await a.admit("cust", 10, 2) is Verdict.HELD
            assert await b.admit("cust", 10, 2) is Verdict.HELD
            assert await b.admit("cust", 10, 2) is Verdict.MAX_CPS
            await b.settle()
            assert b.state is not None
            assert await b.state.total(account_key("cust")) == 2
            assert await a.admit("cust", None, None) is Verdict.ADMITTED  # no limits: no Redis
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_redis_down_falls_back_to_the_nodes_limits_and_warns_once(
    caplog: pytest.LogCaptureFixture, prefix: str
) -> None:
    async def main() -> None:
        with running_redis() as redis:
            redis.pause()  # connects, but never answers
            limits = SharedLimits(redis.url, "a", prefix=prefix, timeout=0.2, reconnect=0.1)
            try:
                await limits.start()  # no exception: the node starts on its own limits
                assert limits.state is None
                # Held in the node's book (written once it connects, if still up).
                assert await limits.admit("cust", 1, 1) is Verdict.HELD
                limits.release("cust")
                assert await limits.admit("cust", 1, 1) is Verdict.HELD
                limits.release("cust")
                assert not limits.up
                assert limits.errors >= 1
                registry = CollectorRegistry()
                registry.register(SharedStateCollector(limits))
                scraped = generate_latest(registry).decode()
                assert "softswitch_shared_state_up 0.0" in scraped
                assert f"softswitch_shared_state_errors_total {limits.errors:.1f}" in scraped
                down = [r for r in caplog.records if "unavailable" in r.getMessage()]
                assert len(down) == 1
                assert down[0].levelno == logging.WARNING
                redis.resume()
                while limits.state is None:  # reconnects every 0.1 s
                    await asyncio.sleep(0.05)
                assert limits.up
                assert "softswitch_shared_state_up 1.0" in generate_latest(registry).decode()
                assert [r for r in caplog.records if "answers again" in r.getMessage()]
                assert await limits.admit("cust", 1, 1) is Verdict.HELD
                assert await limits.admit("cust", 1, 1) is Verdict.MAX_CALLS
                limits.release("cust")
                # Redis stops answering mid-run: the next call falls back, warned once more,
                # and is held in the node's book (written when Redis answers again).
                redis.pause()
                assert await limits.admit("cust", 1, None) is Verdict.HELD
                down = [r for r in caplog.records if "unavailable" in r.getMessage()]
                assert len(down) == 2
                limits.release("cust")
            finally:
                redis.resume()
                await limits.close()

    caplog.set_level(logging.WARNING, logger="softswitch.cluster")
    asyncio.run(main())


async def two_calls_count_until_they_end(a: SharedLimits, b: SharedLimits, when: str) -> None:
    """``a`` holds two calls of ``cust`` that Redis was not told of (``when``): its renewal
    writes them, so ``b`` is refused a ``max_calls`` of 2 until they end, and admitted
    after."""
    state = a.state
    assert state is not None

    async def counted() -> bool:
        return await state.total("account:cust") == 2

    await eventually(counted, f"the calls {when} written")
    assert await b.admit("cust", 2, None) is Verdict.MAX_CALLS
    a.release("cust")
    a.release("cust")
    await a.settle()
    assert await state.total("account:cust") == 0
    assert await b.admit("cust", 2, None) is Verdict.HELD
    b.release("cust")


def test_calls_admitted_while_redis_did_not_answer_count_across_nodes_once_it_does(
    prefix: str,
) -> None:
    """A node that admits calls under its own limits while Redis does not answer counts them
    in its book; the lease's renewal writes them once Redis answers again, so another node
    is refused the account's ``max_calls`` for as long as those calls are up (they were
    invisible to every other node for their whole life before)."""

    async def main() -> None:
        with running_redis() as redis:
            a = SharedLimits(redis.url, "a", lease=1.5, prefix=prefix, timeout=0.2)
            b = SharedLimits(redis.url, "b", lease=1.5, prefix=prefix, timeout=0.2)
            await a.start()
            await b.start()
            try:
                redis.pause()
                try:
                    verdicts = [await a.admit("cust", 2, None) for _ in range(2)]
                finally:
                    redis.resume()
                assert verdicts == [Verdict.HELD, Verdict.HELD]
                await two_calls_count_until_they_end(a, b, "admitted in the outage")
            finally:
                await a.close()
                await b.close()

    asyncio.run(main())


def test_calls_admitted_before_the_first_connection_count_across_nodes_once_it_is_made(
    prefix: str,
) -> None:
    """A node started while Redis does not answer admits on its own limits and keeps those
    calls in its book; once it connects, its first renewal writes them, so another node is
    refused the account's ``max_calls`` while they are up. A call that ended before the
    connection is not written at all."""

    async def main() -> None:
        with running_redis() as redis:
            b = SharedLimits(redis.url, "b", lease=1.5, prefix=prefix, timeout=0.2)
            await b.start()
            a = SharedLimits(redis.url, "a", lease=1.5, prefix=prefix, timeout=0.2, reconnect=0.1)
            redis.pause()
            try:
                await a.start()
                assert a.state is None
                verdicts = [await a.admit("cust", 3, None) for _ in range(3)]
                a.release("cust")  # one of them ends before Redis answers
            finally:
                redis.resume()
            try:
                assert verdicts == [Verdict.HELD] * 3
                while a.state is None:
                    await asyncio.sleep(0.05)
                await two_calls_count_until_they_end(a, b, "admitted before connecting")
            finally:
                await a.close()
                await b.close()

    asyncio.run(main())


def test_a_call_admitted_before_connecting_that_ends_before_it_is_written_warns_nothing(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Released after the connection but before the first renewal wrote it, such a call's
    field is not in Redis yet: the release finds nothing there, which is expected and no
    sign of a lost lease (it logged "already gone in Redis (lease expired?)")."""

    async def main() -> None:
        with running_redis() as redis:
            a = SharedLimits(redis.url, "a", lease=30.0, prefix=prefix, timeout=0.2, reconnect=0.1)
            redis.pause()
            try:
                await a.start()
                assert await a.admit("cust", 3, None) is Verdict.HELD
            finally:
                redis.resume()
            try:
                while a.state is None:
                    await asyncio.sleep(0.02)
                a.release("cust")  # the first renewal is 10 s away
                await a.settle()
                assert await a.state.total("account:cust") == 0
            finally:
                await a.close()

    caplog.set_level(logging.WARNING, logger="softswitch.cluster")
    asyncio.run(main())
    assert not [r for r in caplog.records if "already gone" in r.getMessage()]


def test_the_config_keys_are_checked_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    bad = CONFIG.format(url="http://127.0.0.1:6379", max_calls=1, gateway_port=free_port())
    path.write_text(bad)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    text = str(raised.value)
    # FILE: KEY: REASON, as every key's problem (lines are the TOML syntax errors').
    assert f"{path}: server.shared_state: " in text
    assert "redis://" in text
    path.write_text(
        bad.replace("http://", "redis://").replace("[defaults]", 'node_id = "a b"\n[defaults]')
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert f"{path}: server.node_id: " in str(raised.value)
    password = CONFIG.format(url="redis://:s3cret@127.0.0.1:6379/x", max_calls=1, gateway_port=1)
    path.write_text(password)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "s3cret" not in str(raised.value)
    assert "database number" in str(raised.value)
