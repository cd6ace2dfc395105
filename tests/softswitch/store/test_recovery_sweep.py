"""The recovery sweep: a running switch settles another run's calls once that run is dead,
without waiting for a start; the debits are booked as the dead run's rows, so the sweeping
switch's own meter counts them too; several sweepers settle a run once."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest
from store_support import Backend, call_start, rate

from softswitch.billing import ledger
from softswitch.store.records import ts
from softswitch.store.sweep import RecoverySweep


def _dead_node(backend: Backend, run_id: str, calls: int, heartbeat_age: float) -> None:
    """A run of another host with ``calls`` billed calls up, its heartbeat ``heartbeat_age``
    seconds old (its interval 5 s: older than 15 s is dead)."""
    now = dt.datetime.now(dt.UTC)
    beat = now - dt.timedelta(seconds=heartbeat_age)
    backend.execute(
        "INSERT INTO switch_runs (run_id, host, pid, started_at, heartbeat_at,"
        " heartbeat_interval) VALUES (?, ?, ?, ?, ?, 5)",
        (run_id, "node-b", 4242, beat, beat)
        if backend.postgres
        else (run_id, "node-b", 4242, ts(beat), ts(beat)),
    )
    for i in range(calls):
        start = call_start(
            f"{run_id}-call{i}",
            now - dt.timedelta(seconds=60),
            billed_account="acme",
            billed_until=3600,
            reserved=10**9,
        )
        backend.execute(
            "INSERT INTO open_calls (run_id, call_id, answer_at, account_id, gateway_id,"
            " sell_deck, buy_deck, max_duration, record, billed_account, billed_until, reserved)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(start.values(run_id)),
        )


def test_a_live_run_is_left_alone_and_a_dead_one_is_settled_by_the_sweep(
    backend: Backend,
) -> None:
    with backend.open() as store:
        _dead_node(backend, "node-b-run", calls=2, heartbeat_age=1)
        sweep = RecoverySweep(store, rate, interval=60)
        assert not store.pending_recovery()  # fresh heartbeat on another host: alive
        assert asyncio.run(sweep.sweep()) == []
        assert len(backend.rows("SELECT 1 FROM open_calls")) == 2

        backend.age_heartbeat("node-b-run", 16)  # three 5 s heartbeats missed: dead
        assert store.pending_recovery()
        refreshed: list[bool] = []

        async def meter_reads() -> None:
            refreshed.append(True)

        sweep.recovered = meter_reads
        (run,) = asyncio.run(sweep.sweep())
        assert (run.run_id, run.calls) == ("node-b-run", 2)
        assert refreshed == [True]
        assert not store.pending_recovery()  # settled: nothing left to do
        assert asyncio.run(sweep.sweep()) == []
        assert refreshed == [True]
        settled = [c for c in store.query() if c.call_id.startswith("node-b-run")]
        assert sorted(c.end_reason for c in settled) == ["system_failure"] * 2

        # The debits are the dead run's rows: the sweeping run's meter, which skips its own
        # rows, still counts them.
        debits = backend.rows("SELECT amount, run_id FROM ledger ORDER BY id")
        assert [d["run_id"] for d in debits] == ["node-b-run"] * 2
        assert all(d["amount"] < 0 for d in debits)
        with backend.ledger_connection() as conn:
            changes, _ = ledger.changes_since(conn, 0, store.run_id)
        assert sorted(changes) == sorted(("acme", d["amount"]) for d in debits)
    assert backend.rows("SELECT 1 FROM open_calls") == []


def test_two_sweepers_settle_a_dead_run_once(backend: Backend) -> None:
    with backend.open() as a, backend.open() as b:
        _dead_node(backend, "gone", calls=3, heartbeat_age=30)

        async def both() -> list[int]:
            sweeps = [RecoverySweep(s, rate, interval=60) for s in (a, b)]
            found = await asyncio.gather(*(s.sweep() for s in sweeps))
            return [sum(r.calls for r in runs) for runs in found]

        assert sorted(asyncio.run(both())) == [0, 3]
    cdrs = backend.rows("SELECT call_id FROM cdrs WHERE call_id LIKE ?", ("gone-%",))
    assert len(cdrs) == 3
    assert len(backend.rows("SELECT 1 FROM ledger")) == 3


def test_the_periodic_task_settles_a_run_that_dies_while_it_runs(backend: Backend) -> None:
    with backend.open() as store:

        async def run() -> None:
            sweep = RecoverySweep(store, rate, interval=0.05)
            sweep.start()
            try:
                await asyncio.sleep(0.2)
                _dead_node(backend, "late", calls=1, heartbeat_age=60)
                for _ in range(200):
                    if not backend.rows("SELECT 1 FROM open_calls"):
                        break
                    await asyncio.sleep(0.05)
            finally:
                await sweep.close()

        asyncio.run(run())
        assert backend.rows("SELECT 1 FROM open_calls") == []
        assert [c.end_reason for c in store.query(call_id="late-call0")] == ["system_failure"]


def test_a_failing_check_is_logged_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.failing = True
            self.checks = 0

        def pending_recovery(self) -> bool:
            self.checks += 1
            if self.failing:
                raise OSError("database unreachable")
            return False

        def recover(self, rate: object = None) -> list[object]:
            raise AssertionError("never asked: nothing pending")

    store = Flaky()

    async def run() -> None:
        sweep = RecoverySweep(store, None, interval=0.01)  # type: ignore[arg-type]
        sweep.start()
        try:
            while store.checks < 5:
                await asyncio.sleep(0.01)
            store.failing = False
            seen = store.checks
            while store.checks < seen + 3:
                await asyncio.sleep(0.01)
        finally:
            await sweep.close()

    with caplog.at_level(logging.WARNING, logger="softswitch.cdr"):
        asyncio.run(run())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1, messages
    assert sum("works again" in m for m in messages) == 1, messages
