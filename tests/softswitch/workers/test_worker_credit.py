"""``WorkerCredit``: every worker's credit holds on an account, in shared memory, never
above its funds; a dead worker's holds let go by its replacement, counted as released. Real forked
processes, the table the supervisor makes (``SharedState``)."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from forking import exit_code, forked

from softswitch.billing.holds import later_released, released_since
from softswitch.config import demo_config
from softswitch.workers.credit import MAX_HELD, WorkerCredit, credit_key
from softswitch.workers.live import SharedState

NANO = 10**9


def test_concurrent_holds_from_two_processes_never_exceed_the_funds() -> None:
    shared = SharedState(workers=2, ids=1)
    start = os.pipe()
    funds = 150 * 7 * NANO  # 150 holds of 7.000000000

    def hold_all(worker: int) -> Callable[[], int]:
        def body() -> int:
            credit = WorkerCredit.of(shared, worker)
            os.read(start[0], 1)  # both start together
            held = 0
            for n in range(400):
                if credit.hold_now((worker, n), "acme", 7 * NANO, funds):
                    held += 1
            return held

        return body

    pids = [forked(hold_all(0)), forked(hold_all(1))]
    os.write(start[1], b"go")
    held = [exit_code(pid) for pid in pids]
    assert sum(held) == 150
    assert WorkerCredit.of(shared, 0).account_held("acme") == funds


def test_holds_slices_and_releases_in_two_processes_stay_within_the_funds() -> None:
    """Each process holds first increments and later slices of varying sizes and releases
    calls at random; after every hold the total across processes is within the funds."""
    shared = SharedState(workers=2, ids=1)
    funds = 1_000 * NANO + 123  # not a multiple of any amount held

    def churn(worker: int) -> Callable[[], int]:
        def body() -> int:
            credit = WorkerCredit.of(shared, worker)
            rng = random.Random(worker)
            calls: list[int] = []
            for n in range(3000):
                if calls and rng.random() < 0.3:
                    credit.release(calls.pop(rng.randrange(len(calls))))
                    continue
                key = rng.choice(calls) if calls and rng.random() < 0.5 else n
                if credit.hold_now(key, "acme", rng.randrange(1, 90) * NANO, funds):
                    if key == n:
                        calls.append(n)
                    if credit.account_held("acme") > funds:
                        return 99  # someone got past the funds
                elif key == n:
                    credit.release(n)
            for key in calls:
                credit.release(key)
            return 0

        return body

    pids = [forked(churn(0)), forked(churn(1))]
    assert [exit_code(pid) for pid in pids] == [0, 0]
    assert WorkerCredit.of(shared, 0).account_held("acme") == 0


def test_a_killed_process_holds_are_released_by_its_replacement_and_only_its_own() -> None:
    shared = SharedState(workers=2, ids=1)
    ready = os.pipe()
    funds = 100 * NANO
    mine = WorkerCredit.of(shared, 0)
    assert mine.hold_now("call-a", "acme", 30 * NANO, funds)

    def hold_and_hang() -> int:
        credit = WorkerCredit.of(shared, 1)
        ok = credit.hold_now("call-b", "acme", 50 * NANO, funds)
        ok = credit.hold_now("call-c", "acme", 20 * NANO, funds) and ok
        os.write(ready[1], b"y" if ok else b"n")
        signal.pause()
        return 0

    pid = forked(hold_and_hang)
    assert os.read(ready[0], 1) == b"y"
    # The funds are all held: 30 here, 70 by the other process.
    assert not mine.hold_now("call-d", "acme", 1, funds)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    # Reaped, its column stays held until its replacement takes it over (after recovery).
    assert not mine.hold_now("call-d", "acme", 1, funds)
    assert WorkerCredit.of(shared, 1).take_over() == 70 * NANO
    assert mine.account_held("acme") == 30 * NANO
    assert mine.hold_now("call-d", "acme", 70 * NANO, funds)
    assert not mine.hold_now("call-e", "acme", 1, funds)
    mine.release("call-a")
    mine.release("call-d")
    assert mine.account_held("acme") == 0


def test_accounts_are_counted_apart_and_a_refused_hold_takes_nothing() -> None:
    shared = SharedState(workers=2, ids=2)
    a, b = WorkerCredit.of(shared, 0), WorkerCredit.of(shared, 1)
    assert a.hold_now("x", "acme", 5, 10)
    assert not b.hold_now("y", "acme", 6, 10)
    assert b.held("y") == 0
    assert b.hold_now("z", "globex", 10, 10)
    assert b.hold_now("y", "acme", 2, 10)
    assert b.hold_now("y", "acme", 3, 10)  # a later slice of the same call
    assert (a.account_held("acme"), a.account_held("globex")) == (10, 10)
    assert b.claimed("y") == 5
    b.release("y")  # all of the call's holds back
    assert (a.account_held("acme"), a.account_held("globex")) == (5, 10)


def test_funds_beyond_the_field_and_negative_funds() -> None:
    shared = SharedState(workers=2, ids=1)
    credit = WorkerCredit.of(shared, 1)
    # A negative balance beyond the credit limit: nothing can be held.
    assert not credit.hold_now("x", "acme", 1, -5 * NANO)
    # Amounts and funds past the 64-bit field are counted as MAX_HELD, never wrap.
    assert credit.hold_now("x", "acme", 10**30, 10**40)
    assert credit.account_held("acme") == MAX_HELD
    assert not credit.hold_now("y", "acme", 1, 10**40)
    credit.release("x")
    assert credit.account_held("acme") == 0


def test_a_reload_that_adds_more_billed_accounts_than_the_table_holds_is_refused(
    tmp_path: Path,
) -> None:
    config = demo_config(tmp_path)
    shared = SharedState(workers=2, ids=1)  # 1024 slots: 768 accounts at most
    assert shared.refusal(config) is None
    # What credit_refusal reads of a configuration: its accounts' ids and billing.
    many = SimpleNamespace(
        accounts=[SimpleNamespace(id=f"acct{n}", billed=n % 2 == 0) for n in range(1600)]
    )
    refusal = shared.credit_refusal(many)  # type: ignore[arg-type]
    assert refusal is not None
    assert "shared credit table" in refusal, refusal
    fits = SimpleNamespace(accounts=many.accounts[:1500])  # 750 billed
    assert shared.credit_refusal(fits) is None  # type: ignore[arg-type]


def test_an_ended_calls_debit_stays_held_until_committed_then_counts_as_released() -> None:
    """Worker A's call ends with a debit of 6 of its 10 held: the 6 stay held (the other
    workers' balances do not show the debit yet) and A's own book, which debited it
    already, does not count it twice. Once committed it is let go and counted as released:
    a worker whose last ledger read is older is told to read before it may hold what the
    release would allow."""
    shared = SharedState(workers=2, ids=1)
    a, b = WorkerCredit.of(shared, 0), WorkerCredit.of(shared, 1)
    assert a.hold_now("x", "acme", 10, 10)
    assert a.keep("x", 6) == 6
    assert a.account_held("acme") == 6
    # B still reads a balance of 10: the kept 6 stand for the debit it cannot see.
    assert b.hold_checked("y", "acme", 5, 10, 0) == (False, 0)
    assert b.hold_now("y", "acme", 4, 10)
    b.release("y")
    # A's balance is 4 after its own debit; the kept 6 are not counted against it again.
    assert a.hold_now("z", "acme", 4, 4)
    assert not a.hold_now("w", "acme", 1, 4)
    a.release("z")
    a.committed([("acme", 6)])
    assert a.account_held("acme") == 0
    assert a.released(["acme", "other"]) == {"acme": 6, "other": 0}
    # B has not read the ledger since (seen 0): 5 fits its stale 10, not if 6 are debited.
    assert b.hold_checked("y", "acme", 5, 10, 0) == (None, 6)
    assert b.held("y") == 0
    # After reading (balance 4, seen 6) the answer is exact; 3 fits even with 6 unseen.
    assert b.hold_checked("y", "acme", 5, 4, 6) == (False, 6)
    assert b.hold_checked("y", "acme", 4, 4, 6) == (True, 6)
    assert b.hold_checked("v", "acme", 0, 4, 0) == (True, 6)
    b.release("y")
    assert b.hold_checked("y", "acme", 3, 10, 0) == (True, 6)


def test_released_debits_survive_a_workers_death() -> None:
    """A dead worker's holds are zeroed; what it released stays counted (monotonic)."""
    shared = SharedState(workers=2, ids=1)
    ready = os.pipe()

    def settle_then_hang() -> int:
        credit = WorkerCredit.of(shared, 1)
        ok = credit.hold_now("x", "acme", 7, 100) and credit.hold_now("y", "acme", 5, 100)
        ok = credit.keep("x", 7) == 7 and ok
        credit.committed([("acme", 7)])
        os.write(ready[1], b"y" if ok else b"n")
        signal.pause()
        return 0

    pid = forked(settle_then_hang)
    assert os.read(ready[0], 1) == b"y"
    mine = WorkerCredit.of(shared, 0)
    assert mine.account_held("acme") == 5
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert WorkerCredit.of(shared, 1).take_over() == 5
    assert mine.account_held("acme") == 0
    # What it released stays counted, and what its replacement let go is counted too.
    assert mine.released(["acme"]) == {"acme": 12}


def test_a_dead_workers_credit_stays_held_until_taken_over_then_counts_as_released() -> None:
    """Worker 1 dies holding a call's slice and a debit kept for its writer. Until its
    replacement has recovered its calls, nothing it held can be held again; the take-over
    counts all of it as released, so a worker whose balance does not show those debits
    is told to read the ledger before a hold they could change."""
    shared = SharedState(workers=2, ids=1)
    ready = os.pipe()
    funds = 100 * NANO

    def hold_keep_and_hang() -> int:
        credit = WorkerCredit.of(shared, 1)
        ok = credit.hold_now("x", "acme", 50 * NANO, funds)
        ok = credit.keep("x", 30 * NANO) == 30 * NANO and ok  # its writer has not committed
        ok = credit.hold_now("y", "acme", 20 * NANO, funds) and ok
        os.write(ready[1], b"y" if ok else b"n")
        signal.pause()
        return 0

    pid = forked(hold_keep_and_hang)
    assert os.read(ready[0], 1) == b"y"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    mine = WorkerCredit.of(shared, 0)
    # Reaped, not replaced yet: its 50 stay held (the ledger may not show its debits).
    assert mine.account_held("acme") == 50 * NANO
    assert not mine.hold_now("a", "acme", 51 * NANO, funds)
    replacement = WorkerCredit.of(shared, 1)
    assert replacement.take_over() == 50 * NANO
    assert replacement.take_over() == 0
    assert mine.account_held("acme") == 0
    assert mine.released(["acme"]) == {"acme": 50 * NANO}
    # Worker 0 last read the ledger before (seen 0): 51 would fit its stale 100 but not
    # if the 50 are debited: it must read first.
    assert mine.hold_checked("a", "acme", 51 * NANO, funds, 0) == (None, 50 * NANO)
    assert mine.hold_checked("a", "acme", 50 * NANO, funds, 0) == (True, 50 * NANO)


def test_the_released_total_wraps_and_is_compared_modulo_2_64() -> None:
    """A lifetime total past 2**64 nano-units (weeks of an IDR account's traffic) wraps:
    the difference since a reading stays right and the check before a hold stays on."""
    shared = SharedState(workers=2, ids=1)
    a, b = WorkerCredit.of(shared, 0), WorkerCredit.of(shared, 1)
    near = 2**64 - 3
    with shared.lock:
        slot = shared.released.find(credit_key("acme"), create=True)
        assert slot is not None
        slot.add_total(0, 2**63)  # each worker's column past the signed range
        slot.add_total(1, 2**63 - 3)
    (seen,) = b.released(["acme"]).values()
    assert seen == near
    assert a.hold_now("x", "acme", 6, 10)
    assert a.keep("x", 6) == 6
    a.committed([("acme", 6)])
    assert a.account_held("acme") == 0
    assert a.released(["acme"]) == {"acme": 3}  # wrapped
    assert released_since(3, seen) == 6
    assert later_released(3, seen) == 3
    assert later_released(seen, 3) == 3
    # 6 released since b's reading: 5 fits b's stale 10, not if the 6 are debited.
    assert b.hold_checked("y", "acme", 5, 10, seen) == (None, 3)
    assert b.hold_checked("y", "acme", 4, 10, seen) == (True, 3)
