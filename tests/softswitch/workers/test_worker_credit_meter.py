"""Two workers' credit meters (``CreditMeter``) on one SQLite file, sharing one credit table
in shared memory (``WorkerCredit``), as ``softswitch run --workers 2`` runs them: each
meter is a run of its own with its own CDR writer (a real ``CdrStore``), in one process
here (the table is the supervisor's; ``test_worker_credit`` forks real processes).

Covered: a slice another worker's calls leave no room for cuts the call; an ended call's
debit stays held until its writer commits it, then is let go and counted as released, and
nothing stays held once the calls are over (no leak); a worker whose balance does not show
a released debit reads the ledger before a hold it could change; a slice whose read cannot
happen keeps the call on what it holds; a debit whose write failed stays held; a starting
worker counts only dead runs' calls as unsettled; the credit a dead predecessor held is
taken over only once start-up recovery has succeeded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import lcr
from softswitch.billing import ledger
from softswitch.billing.credit import Terms
from softswitch.billing.ledger import Booking
from softswitch.billing.meter import CreditMeter
from softswitch.billing.money import to_nanos
from softswitch.call.refusal import EndReason
from softswitch.cdr import CallStart, CdrStore
from softswitch.proxy.calls import Admission, Call
from softswitch.sip import Request, parse_message
from softswitch.sip.transaction import ServerTransaction
from softswitch.store.records import CdrRecord
from softswitch.transport import Flow, Transport
from softswitch.workers.credit import WorkerCredit
from softswitch.workers.live import SharedState

CALLER = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.5", 5062))
NUMBER = "447911123456"


def n(text: str) -> int:
    return to_nanos(Decimal(text))


def per_second() -> lcr.Rate:
    """0.60 a minute, per second: the first increment costs 0.01, a slice 0.60."""
    return _rate(1)


def per_minute() -> lcr.Rate:
    """0.60 a minute, per minute: the first increment costs 0.60."""
    return _rate(60)


def _rate(increment: int) -> lcr.Rate:
    deck = lcr.RateDeck.from_rows(
        [("44", "UK", "0.600000", "0", increment, increment)], precision=6
    )
    found = deck.lookup(NUMBER)
    assert found is not None
    return found


def a_call(call_id: str) -> Call:
    text = (
        f"INVITE sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@10.0.0.5>;tag=caller\r\n"
        f"To: <sip:{NUMBER}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:1000@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return Call(
        call_id=call_id,
        invite=request,
        caller_flow=CALLER,
        server_tx=ServerTransaction(request, reliable=False),
        admission=Admission("acme", NUMBER, NUMBER, 3600.0, 3, 10.0),
        invite_at=time.time(),
        started_mono=time.monotonic(),
    )


def cdr_of(call: Call, sell_cost: Decimal, billsec: int) -> CdrRecord:
    """The answered call's CDR as the pipeline writes it at the end."""
    assert call.answer_at is not None
    answer = dt.datetime.fromtimestamp(call.answer_at, dt.UTC)
    return CdrRecord(
        call_id=call.call_id,
        account_id="acme",
        source="10.0.0.5:5062",
        caller="1000",
        callee_dialed=NUMBER,
        callee_normalised=NUMBER,
        invite_at=answer,
        answer_at=answer,
        end_at=answer + dt.timedelta(seconds=billsec),
        end_reason="normal_clearing",
        status=200,
        q850=16,
        hangup_side="caller",
        sell_cost=sell_cost,
    )


class Worker:
    """One worker's meter, store and credit holds; ``cut`` collects its calls' cuts."""

    def __init__(self, path: Path, state: SharedState, index: int) -> None:
        self.store = CdrStore(path)
        self.meter = CreditMeter(self.store, path, self.store.run_id, sync_interval=30)
        self.meter.book.configure({"acme": Terms("prepaid")})
        self.credit = WorkerCredit.of(state, index)
        self.meter.share_credit(self.credit, "workers")
        self.cut: list[tuple[str, EndReason]] = []
        self.meter.hang_up = lambda call, reason: self.cut.append((call.call_id, reason))

    async def up(self, call: Call, rate: lcr.Rate) -> None:
        """Admit and answer ``call``; its first slice asked for across workers."""
        assert self.meter.admit(call, "acme", rate, 3600)
        call.answer_at = time.time()
        self.meter.answered(call, call, rate)
        await settled(self.meter)

    def end(self, call: Call, sell_cost: str, billsec: int, *, fail: bool = False) -> None:
        """End ``call`` as the pipeline does: the meter's debit, queued with the CDR
        (``fail``: a debit the database refuses, as a write that fails)."""
        call.end_at = time.time()
        debit = self.meter.ended(call, call, Decimal(sell_cost), billsec)
        assert debit is not None
        if fail:
            debit = dataclasses.replace(debit, kind="not-a-kind")
        self.store.enqueue(cdr_of(call, Decimal(sell_cost), billsec), debit)

    async def close(self) -> None:
        await self.meter.close()
        self.store.close()


async def settled(meter: CreditMeter) -> None:
    """Let the meter's slice tasks run (a hold across workers answers at once)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def committed(meter: CreditMeter) -> None:
    """Wait for the meter's kept debits to be let go (its writer commits within ms)."""
    deadline = time.monotonic() + 30
    while meter._committing is not None and not meter._committing.done():
        assert time.monotonic() < deadline, "kept debits never let go"
        await asyncio.sleep(0.01)


def with_workers(
    tmp_path: Path, balance: str, body: Callable[[Worker, Worker, Path], Awaitable[None]]
) -> None:
    path = tmp_path / "switch.sqlite"
    state = SharedState(workers=2, ids=1)

    async def main() -> None:
        workers = [Worker(path, state, 0), Worker(path, state, 1)]
        with ledger.connect(path) as conn:
            ledger.book(conn, Booking("acme", "topup", n(balance), "op", dt.datetime.now(dt.UTC)))
        try:
            for w in workers:
                await asyncio.to_thread(w.meter.load)
            await body(workers[0], workers[1], path)
        finally:
            for w in workers:
                await w.close()

    asyncio.run(main())


def test_two_workers_hold_exactly_the_balance_and_let_every_debit_go(tmp_path: Path) -> None:
    async def body(a: Worker, b: Worker, path: Path) -> None:
        x, y = a_call("x"), a_call("y")
        await a.up(x, per_second())
        assert a.credit.account_held("acme") == n("0.60")  # x's first slice
        # y's first second fits (0.61 of 1.00), its first slice (1.20) does not: cut.
        await b.up(y, per_second())
        assert b.cut == [("y", EndReason.CREDIT_EXHAUSTED)]
        b.end(y, "0.01", 1)
        a.end(x, "0.50", 50)
        # Kept until committed, then let go: nothing stays held, both counted released.
        await committed(a.meter)
        await committed(b.meter)
        assert a.credit.account_held("acme") == 0
        assert a.credit.released(["acme"]) == {"acme": n("0.51")}
        # b's book still reads 0.99 (its own debit only); the ledger says 0.49. Holding the
        # 0.60 of a per-minute call needs the ledger read first, which refuses it.
        assert b.meter.book.balance("acme") == n("0.99")
        z = a_call("z")
        assert not b.meter.admit(z, "acme", per_minute(), 3600)
        assert b.meter.book.balance("acme") == n("0.49")
        assert b.credit.account_held("acme") == 0
        # A top-up is seen by the read before a refusal: admitted.
        with ledger.connect(path) as conn:
            ledger.book(conn, Booking("acme", "topup", n("1.00"), "op", dt.datetime.now(dt.UTC)))
        assert b.meter.admit(z, "acme", per_minute(), 3600)
        assert b.credit.account_held("acme") == n("0.60")
        b.meter.release(z)
        assert b.credit.account_held("acme") == 0
        with ledger.connect(path) as conn:
            assert ledger.balance_of(conn, "acme") == n("1.49")

    with_workers(tmp_path, "1.00", body)


def test_a_slice_whose_ledger_read_cannot_happen_keeps_the_call_on_its_hold(
    tmp_path: Path,
) -> None:
    async def body(a: Worker, b: Worker, path: Path) -> None:
        x, y = a_call("x"), a_call("y")
        await a.up(x, per_second())
        await b.up(y, per_second())
        b.end(y, "0.60", 60)
        await committed(b.meter)
        # a's book reads 1.50 and has not seen y's 0.60 released: x's next slice needs a
        # ledger read first, and a read of a's meter is in progress (its lock is taken).
        assert a.credit.account_held("acme") == n("0.60")
        taken, done = threading.Event(), threading.Event()

        def reading() -> None:
            with a.meter._lock:
                taken.set()
                done.wait(30)

        thread = threading.Thread(target=reading)
        thread.start()
        try:
            assert taken.wait(30)
            shared = a.meter.shared
            assert shared is not None
            await a.meter._hold_slice(shared, x, "acme", n("0.60"))
            assert a.cut == []  # not cut: it goes on with what it holds
            assert a.credit.held(x) == n("0.60")
            # A new call is refused meanwhile (fails closed).
            assert not a.meter.admit(a_call("w"), "acme", per_minute(), 3600)
            assert a.credit.account_held("acme") == n("0.60")
        finally:
            done.set()
            thread.join()
        # Readable again: the slice is decided on the ledger's 0.90: 1.20 does not fit.
        await a.meter._hold_slice(shared, x, "acme", n("0.60"))
        assert a.cut == [("x", EndReason.CREDIT_EXHAUSTED)]
        assert a.meter.book.balance("acme") == n("0.90")
        a.end(x, "0.30", 30)
        await committed(a.meter)
        assert a.credit.account_held("acme") == 0

    with_workers(tmp_path, "1.50", body)


def test_a_debit_whose_write_failed_stays_held_and_is_never_counted_released(
    tmp_path: Path,
) -> None:
    async def body(a: Worker, b: Worker, path: Path) -> None:
        x, y = a_call("x"), a_call("y")
        await a.up(x, per_second())
        await a.up(y, per_second())
        a.end(x, "0.30", 30, fail=True)  # the writer logs the record: not in the ledger
        a.end(y, "0.20", 20)
        await committed(a.meter)
        assert a.credit.account_held("acme") == n("0.30")
        assert a.credit.released(["acme"]) == {"acme": n("0.20")}
        assert a.meter.unwritten == n("0.30")
        with ledger.connect(path) as conn:
            assert ledger.balance_of(conn, "acme") == n("1.80")

    with_workers(tmp_path, "2.00", body)


def test_flush_debits_reports_the_debits_whose_write_failed(tmp_path: Path) -> None:
    with CdrStore(tmp_path / "cdrs.sqlite") as store:
        call = a_call("bad")
        call.answer_at = time.time()
        at = dt.datetime.now(dt.UTC)
        good = Booking("acme", "call", -5, "good", at)
        bad = Booking("acme", "not-a-kind", -7, "bad", at)
        store.enqueue(dataclasses.replace(cdr_of(call, Decimal(0), 1), call_id="good"), good)
        store.enqueue(cdr_of(call, Decimal(0), 1), bad)
        assert store.flush(10)  # a plain flush takes nothing from the report
        assert store.flush_debits(10) == [bad]
        assert store.flush_debits(10) == []


def test_a_starting_worker_counts_only_dead_runs_calls_as_unsettled(tmp_path: Path) -> None:
    path = tmp_path / "switch.sqlite"

    def billed_start(call_id: str, reserved: str) -> CallStart:
        call = a_call(call_id)
        call.answer_at = time.time()
        return CallStart(
            cdr_of(call, Decimal(0), 0),
            max_duration=3600.0,
            billed_account="acme",
            billed_until=60,
            reserved=n(reserved),
        )

    with CdrStore(path) as sibling, CdrStore(path) as starting:
        sibling.open_call(billed_start("live", "0.60"))  # a live worker's call
        dead = CdrStore(path)
        dead.open_call(billed_start("left", "0.20"))  # a run that died, not recovered
        dead.close()
        assert sibling.flush(10)
        with ledger.connect(path) as conn:
            ledger.book(conn, Booking("acme", "topup", n("1.00"), "op", dt.datetime.now(dt.UTC)))
        meter = CreditMeter(starting, path, starting.run_id)
        meter.book.configure({"acme": Terms("prepaid")})
        meter.load()
        assert meter.book.available("acme") == n("0.80")
        # Recovery settles the dead run later (its call debited 0.05): the next ledger
        # read counts the debit and no longer the call's hold.
        (run,) = starting.recover(lambda deck, number, at, billsec: Decimal("0.05"))
        assert run.calls == 1

        async def read() -> None:
            await meter.refresh()
            await meter.close()

        asyncio.run(read())
        assert meter.book.available("acme") == n("0.95")


def test_a_dead_predecessors_credit_is_taken_over_only_after_recovery(tmp_path: Path) -> None:
    path = tmp_path / "switch.sqlite"
    state = SharedState(workers=2, ids=1)
    # What a dead worker 1 left in its column: a call's hold and a debit kept.
    predecessor = WorkerCredit.of(state, 1)
    assert predecessor.hold_now("x", "acme", n("0.40"), n("1.00"))
    assert predecessor.keep("x", n("0.40")) == n("0.40")
    assert predecessor.hold_now("y", "acme", n("0.30"), n("1.00"))
    attempts: list[int] = []

    def recover() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("database is locked")

    async def main() -> None:
        worker = Worker(path, state, 1)
        try:
            await worker.meter.recover_then_take_over(recover, 0.01)
            # Recovery failed: the column stays held (fail closed) and it is retried.
            assert worker.credit.account_held("acme") == n("0.70")
            deadline = time.monotonic() + 30
            while worker.credit.account_held("acme"):
                assert time.monotonic() < deadline, "the column was never taken over"
                await asyncio.sleep(0.01)
            assert len(attempts) == 2
            assert worker.credit.released(["acme"]) == {"acme": n("0.70")}
        finally:
            await worker.close()

    asyncio.run(main())
