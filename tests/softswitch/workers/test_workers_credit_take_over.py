"""A replacement worker takes over exactly what its dead predecessor left in its credit
column, never its own calls' holds nor its own debits kept for its writer: when start-up
recovery is retried, the replacement takes calls before the take-over, on that same column.
Real forked processes for the shared table; two meters on one SQLite file for the switch's
path (``recover_then_take_over``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
import time
from pathlib import Path

from forking import forked
from test_worker_credit_meter import Worker, a_call, n, per_minute

from softswitch.billing import ledger
from softswitch.billing.ledger import Booking
from softswitch.workers.credit import WorkerCredit
from softswitch.workers.live import SharedState

NANO = 10**9


def test_take_over_lets_go_only_what_the_dead_predecessor_left() -> None:
    shared = SharedState(workers=2, ids=2)
    ready = os.pipe()
    funds = 100 * NANO

    def hold_and_hang() -> int:  # worker 1's first run: a call's hold, a debit kept
        credit = WorkerCredit.of(shared, 1)
        ok = credit.hold_now("x", "acme", 30 * NANO, funds)
        ok = credit.keep("x", 10 * NANO) == 10 * NANO and ok
        ok = credit.hold_now("y", "acme", 20 * NANO, funds) and ok
        ok = credit.hold_now("z", "globex", 5 * NANO, funds) and ok
        os.write(ready[1], b"y" if ok else b"n")
        signal.pause()
        return 0

    pid = forked(hold_and_hang)
    assert os.read(ready[0], 1) == b"y"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    other = WorkerCredit.of(shared, 0)
    assert other.account_held("acme") == 30 * NANO
    # The replacement takes calls before its (retried) recovery lets the column go.
    replacement = WorkerCredit.of(shared, 1)
    assert replacement.hold_now("a", "acme", 40 * NANO, funds)
    assert replacement.hold_now("b", "acme", 20 * NANO, funds)
    assert replacement.keep("b", 15 * NANO) == 15 * NANO  # its writer has not committed
    assert replacement.hold_now("c", "globex", 7 * NANO, funds)
    assert other.account_held("acme") == (30 + 40 + 15) * NANO
    assert replacement.take_over() == (30 + 5) * NANO  # the predecessor's, no more
    assert replacement.take_over() == 0
    # The replacement's own holds and kept debit stay held: no one can hold them again.
    assert other.account_held("acme") == (40 + 15) * NANO
    assert other.account_held("globex") == 7 * NANO
    assert not other.hold_now("d", "acme", 46 * NANO, funds)
    assert other.released(["acme", "globex"]) == {"acme": 30 * NANO, "globex": 5 * NANO}
    # Its calls end as calls end: every hold given back, the debit committed, no leak.
    replacement.release("a")
    replacement.release("c")
    replacement.committed([("acme", 15 * NANO)])
    assert (other.account_held("acme"), other.account_held("globex")) == (0, 0)
    assert other.released(["acme"]) == {"acme": 45 * NANO}


def test_a_retried_recovery_keeps_the_calls_the_replacement_took_meanwhile(
    tmp_path: Path,
) -> None:
    """Worker 1's first start-up recovery fails; it takes a billed call before the retry
    succeeds. The take-over that follows must leave that call's hold: worker 0 cannot then
    hold the same credit again (1.00 funds, 0.60 per call)."""
    path = tmp_path / "switch.sqlite"
    state = SharedState(workers=2, ids=1)
    attempts: list[int] = []

    def recover() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("database is locked")

    async def main() -> None:
        w0, w1 = Worker(path, state, 0), Worker(path, state, 1)
        with ledger.connect(path) as conn:
            ledger.book(conn, Booking("acme", "topup", n("1.00"), "op", dt.datetime.now(dt.UTC)))
        try:
            for w in (w0, w1):
                await asyncio.to_thread(w.meter.load)
            await w1.meter.recover_then_take_over(recover, 0.05)
            call = a_call("A")
            await w1.up(call, per_minute())  # 0.60 held before the retry
            assert w1.credit.account_held("acme") == n("0.60")
            deadline = time.monotonic() + 30
            while len(attempts) < 2 or not w1.meter._taking_over.done():  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "recovery was never retried"
                await asyncio.sleep(0.01)
            assert w1.credit.account_held("acme") == n("0.60")
            assert w1.credit.released(["acme"]) == {"acme": 0}
            assert not w0.meter.admit(a_call("B"), "acme", per_minute(), 3600)
            w1.meter.release(call)
            assert w1.credit.account_held("acme") == 0
        finally:
            for w in (w0, w1):
                await w.close()

    asyncio.run(main())
