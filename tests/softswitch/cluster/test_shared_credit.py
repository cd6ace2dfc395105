"""Credit across nodes (``cluster.credit``): every node's holds on ``credit:<account>`` never
exceed the account's funds, a call's end gives back all it held, and a Redis that does not
answer refuses new holds (fail closed).

The meters' tests use two real meters on one real PostgreSQL ledger (``postgres_tool``), as
two nodes do, each with its own client of one real Redis (``redis_tool``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from cluster_support import eventually, nodes

import lcr
from postgres_tool import Postgres, postgres
from redis_tool import running_redis
from softswitch.billing import ledger
from softswitch.billing.credit import Terms
from softswitch.billing.ledger import Booking
from softswitch.billing.meter import CreditMeter
from softswitch.billing.money import to_nanos
from softswitch.call.refusal import EndReason
from softswitch.cluster import SharedState
from softswitch.cluster.credit import SharedCredit, credit_key
from softswitch.proxy.calls import Admission, Call
from softswitch.sip import Request, parse_message
from softswitch.sip.transaction import ServerTransaction
from softswitch.store.migrations import migrate
from softswitch.store.opening import open_cdr_store
from softswitch.store.postgres_connect import connect
from softswitch.transport import Flow, Transport

__all__ = ["postgres"]

CALLER = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.5", 5062))


def n(text: str) -> int:
    return to_nanos(Decimal(text))


def credit_of(state: SharedState) -> SharedCredit:
    return SharedCredit(lambda: state)


def test_holds_of_every_node_stay_within_the_funds(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            ca, cb = credit_of(a), credit_of(b)
            answers = await asyncio.gather(
                *((ca if i % 2 else cb).hold(f"call{i}", "acme", 30, funds=100) for i in range(6))
            )
            assert sorted(answers, key=str) == [False, False, False, True, True, True]
            assert await a.total(credit_key("acme")) == 90
            held = [i for i, ok in enumerate(answers) if ok]
            first = held[0]
            owner = ca if first % 2 else cb
            # A later slice of the same call: 10 more fit, 11 do not.
            assert await owner.hold(f"call{first}", "acme", 10, funds=100) is True
            assert await owner.hold(f"call{first}", "acme", 1, funds=100) is False
            assert owner.held(f"call{first}") == 40
            owner.release(f"call{first}")  # all it held, first hold and slice
            await owner.settle()
            assert await a.total(credit_key("acme")) == 60
            for i in held[1:]:
                (ca if i % 2 else cb).release(f"call{i}")
            await ca.settle()
            await cb.settle()
            assert await b.total(credit_key("acme")) == 0

    asyncio.run(main())


def test_a_hold_answered_after_the_call_ended_goes_back(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a") as (a,):
            credit = credit_of(a)
            asking = asyncio.create_task(credit.hold("c", "acme", 25, funds=100))
            await asyncio.sleep(0)  # the question is on its way
            credit.release("c")  # a CANCEL meanwhile
            assert await asking is True
            await credit.settle()
            assert await a.total(credit_key("acme")) == 0
            assert credit.held("c") == 0

    asyncio.run(main())


def test_credit_fails_closed_when_redis_does_not_answer(prefix: str) -> None:
    async def main() -> None:
        assert await SharedCredit(lambda: None).hold("c", "acme", 10, funds=100) is None
        with running_redis() as server:
            async with nodes(server.url, prefix, "a", timeout=0.3) as (a,):
                credit = credit_of(a)
                assert await credit.hold("up", "acme", 10, funds=100) is True
                server.pause()
                try:
                    assert await credit.hold("new", "acme", 10, funds=100) is None
                    assert credit.errors == 1
                    assert credit.held("up") == 10  # the call up keeps its hold
                finally:
                    server.resume()
                credit.release("up")
                await credit.settle()

                async def released() -> bool:
                    return await a.total(credit_key("acme")) == 0

                await eventually(released, "the hold given back once Redis answers")

    asyncio.run(main())


# -- the meters: two nodes on one PostgreSQL ledger ----------------------------------------


def uk_rate() -> lcr.Rate:
    """0.60 a minute, per second: the first second costs 0.01."""
    deck = lcr.RateDeck.from_rows([("44", "UK", "0.600000", "0", 1, 1)], precision=6)
    found = deck.lookup("447911123456")
    assert found is not None
    return found


def a_call(call_id: str) -> Call:
    text = (
        "INVITE sip:447911123456@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@10.0.0.5>;tag=caller\r\n"
        f"To: <sip:447911123456@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:1000@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return Call(
        call_id=call_id,
        invite=request,
        caller_flow=CALLER,
        server_tx=ServerTransaction(request, reliable=False),
        admission=Admission("acme", "447911123456", "447911123456", 3600.0, 3, 10.0),
        invite_at=time.time(),
        started_mono=time.monotonic(),
    )


Body = Callable[[list[CreditMeter], list[SharedState]], Awaitable[None]]


def with_two_nodes(pg_url: str, url: str, prefix: str, balance: str, body: Body) -> None:
    """Two meters (each its own store run) on ``pg_url`` whose ledger gives ``acme``
    ``balance``, each with its node's shared credit."""
    with connect(pg_url) as operator:
        ledger.book(operator, Booking("acme", "topup", n(balance), "op", dt.datetime.now(dt.UTC)))

    async def main() -> None:
        stores = [open_cdr_store(pg_url) for _ in range(2)]
        meters = [CreditMeter(s, pg_url, s.run_id, sync_interval=30) for s in stores]
        try:
            async with nodes(url, prefix, "a", "b") as states:
                for meter, state in zip(meters, states, strict=True):
                    meter.book.configure({"acme": Terms("prepaid")})
                    await asyncio.to_thread(meter.load)
                    meter.shared = credit_of(state)
                await body(meters, states)
                for meter in meters:
                    assert meter.shared is not None
                    await meter.shared.settle()
        finally:
            for meter in meters:
                await meter.close()
            for store in stores:
                store.close()

    asyncio.run(main())


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    url = postgres.database()
    migrate(url)
    return url


def test_two_meters_admit_exactly_what_the_balance_covers(
    pg_url: str, url: str, prefix: str
) -> None:
    async def body(meters: list[CreditMeter], states: list[SharedState]) -> None:
        rate = uk_rate()
        keys = [f"c{i}" for i in range(8)]
        for i, key in enumerate(keys):
            # Each node alone has 0.05 for its 4 calls: every local admission passes.
            assert meters[i % 2].admit(key, "acme", rate, 3600)
        refusals = await asyncio.gather(
            *(meters[i % 2].admit_across(key) for i, key in enumerate(keys))
        )
        admitted = [k for k, r in zip(keys, refusals, strict=True) if r is None]
        refused = [r for r in refusals if r is not None]
        assert len(admitted) == 5
        assert {r.end_reason for r in refused} == {EndReason.INSUFFICIENT_BALANCE}
        assert await states[0].total(credit_key("acme")) == n("0.05")
        for i, key in enumerate(keys):
            meters[i % 2].release(key)
        for meter in meters:
            assert meter.shared is not None
            await meter.shared.settle()
        assert await states[1].total(credit_key("acme")) == 0

    with_two_nodes(pg_url, url, prefix, "0.05", body)


def test_a_slice_the_other_node_holds_cuts_the_call(pg_url: str, url: str, prefix: str) -> None:
    async def body(meters: list[CreditMeter], states: list[SharedState]) -> None:
        rate = uk_rate()
        cut: list[tuple[str, EndReason]] = []
        for meter in meters:
            meter.hang_up = lambda call, reason: cut.append((call.call_id, reason))
        first, second = a_call("first"), a_call("second")
        # Node A's call is up with its first minute (0.60 of the 0.70) held.
        assert meters[0].admit(first, "acme", rate, 3600)
        assert await meters[0].admit_across(first) is None
        first.answer_at = time.time()
        meters[0].answered(first, first, rate)

        async def first_slice_held() -> bool:
            return await states[0].total(credit_key("acme")) == n("0.60")

        await eventually(first_slice_held, "node A's first slice held across nodes")
        # Node B's call: its first second fits (0.61), its first minute does not.
        assert meters[1].admit(second, "acme", rate, 3600)
        assert await meters[1].admit_across(second) is None
        second.answer_at = time.time()
        meters[1].answered(second, second, rate)

        async def was_cut() -> bool:
            return bool(cut)

        await eventually(was_cut, "node B's call cut for credit")
        assert cut == [("second", EndReason.CREDIT_EXHAUSTED)]
        second.end_at = first.end_at = time.time()
        meters[1].ended(second, second, Decimal("0.01"), 1)
        meters[0].ended(first, first, Decimal("0.01"), 1)
        for meter in meters:
            assert meter.shared is not None
            await meter.shared.settle()
        assert await states[0].total(credit_key("acme")) == 0

    with_two_nodes(pg_url, url, prefix, "0.70", body)


def test_a_meter_refuses_a_billed_call_503_when_redis_is_not_connected(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_cdr_store(tmp_path / "cdr.sqlite")
        meter = CreditMeter(store, None, None)
        meter.book.configure({"acme": Terms("prepaid", credit_limit=n("1"))})
        meter.shared = SharedCredit(lambda: None)
        try:
            assert meter.admit("c", "acme", uk_rate(), 3600)  # the node's own book: fine
            refusal = await meter.admit_across("c")
            assert refusal is not None
            assert (refusal.end_reason, refusal.status) == (EndReason.INTERNAL_ERROR, 503)
            assert "shared state (Redis) unavailable" in refusal.detail
        finally:
            meter.release("c")
            await meter.close()
            store.close()

    asyncio.run(main())


def test_a_slice_asked_for_after_its_call_ended_holds_nothing(
    url: str, prefix: str, tmp_path: Path
) -> None:
    """The answer takes the call's first slice and asks for it across nodes in a task; a
    call ended before that task's first step (an operator's hang-up, the media timeout:
    any end queued earlier in the same turn of the loop) must not have the slice held after
    its end, where nothing would ever give it back (the node's lease would keep it counted
    on every node until the node restarts)."""

    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            store = open_cdr_store(tmp_path / "cdr.sqlite")
            meter = CreditMeter(store, None, None)
            meter.book.configure({"acme": Terms("prepaid", credit_limit=n("1"))})
            shared = credit_of(a)
            meter.shared = shared
            try:
                rate = uk_rate()
                call = a_call("ended-before-its-slice")
                assert meter.admit(call, "acme", rate, 3600)
                assert await meter.admit_across(call) is None
                call.answer_at = time.time()
                meter.answered(call, call, rate)  # the slice's task is queued ...
                call.end_at = time.time()
                meter.ended(call, call, Decimal("0.01"), 1)  # ... and the call ends first
                await asyncio.sleep(0.2)
                await shared.settle()
                assert shared.claimed(call) == 0
                assert a.held(credit_key("acme")) == 0
                assert await b.total(credit_key("acme")) == 0
            finally:
                await meter.close()
                store.close()

    asyncio.run(main())
