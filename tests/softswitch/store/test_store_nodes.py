"""Several switches (nodes) on one PostgreSQL database: their CDRs and debits land in the same
tables without losing or reordering anything, and a node's recovery settles only dead runs."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading

from store_support import T0, Backend, call_start, rate, record

from softswitch.billing.ledger import Booking
from softswitch.store.opening import open_cdr_store


def test_two_nodes_write_cdrs_and_debits_into_one_database(pg_url: str) -> None:
    per_node = 300
    nodes = [open_cdr_store(pg_url), open_cdr_store(pg_url)]
    errors: list[BaseException] = []

    def carry(n: int) -> None:
        store = nodes[n]
        try:
            futures = []
            for i in range(per_node):
                cdr = record(f"n{n}-{i}", T0 + dt.timedelta(seconds=i))
                debit = Booking("shared", "call", -(i + 1), cdr.call_id, cdr.end_at)
                if i % 3 == 0:
                    futures.append(store.write(cdr))
                    store.enqueue(record(f"n{n}-{i}-debit"), debit)
                else:
                    store.enqueue(cdr, debit)
            for future in futures:
                future.result(timeout=30)
            assert store.flush(timeout=30)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=carry, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for node in nodes:
        node.close()
    assert errors == []
    backend = Backend("postgres", pg_url)
    calls = {r["call_id"] for r in backend.rows("SELECT call_id FROM cdrs")}
    assert len(calls) == 2 * (per_node + per_node // 3)
    runs = backend.rows("SELECT run_id, stopped_at FROM switch_runs")
    assert {r["run_id"] for r in runs} == {n.run_id for n in nodes}
    assert all(r["stopped_at"] is not None for r in runs)
    # One account debited by both nodes at once: every row follows the one before it.
    rows = backend.rows("SELECT amount, balance_after, run_id FROM ledger ORDER BY id")
    assert len(rows) == 2 * per_node
    balance = 0
    for row in rows:
        balance += row["amount"]
        assert row["balance_after"] == balance
    assert balance == -2 * sum(range(1, per_node + 1))
    assert {r["run_id"] for r in rows} == {n.run_id for n in nodes}


def _foreign_run(backend: Backend, run_id: str, host: str, pid: int) -> None:
    """A run row with a fresh heartbeat and one open call, as another node writes them."""
    backend.execute(
        "INSERT INTO switch_runs (run_id, host, pid, started_at, heartbeat_at,"
        " heartbeat_interval) VALUES (?, ?, ?, now(), now(), 5)",
        (run_id, host, pid),
    )
    start = call_start(f"call-of-{run_id}", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=20))
    backend.execute(
        "INSERT INTO open_calls (run_id, call_id, answer_at, account_id, gateway_id, sell_deck,"
        " buy_deck, max_duration, record, billed_account, billed_until, reserved)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        tuple(start.values(run_id)),
    )


def test_another_nodes_live_run_is_never_recovered(pg_url: str) -> None:
    backend = Backend("postgres", pg_url)
    _foreign_run(backend, "node-b-run", "node-b", os.getpid())  # its pid: ours by chance
    with open_cdr_store(pg_url) as node_a:
        assert node_a.recover(rate) == []
        assert len(backend.rows("SELECT 1 FROM open_calls")) == 1
        # Three heartbeats missed (by the database's clock): node b is dead.
        backend.age_heartbeat("node-b-run", 16)
        (run,) = node_a.recover(rate)
        assert run.run_id == "node-b-run"
        assert run.calls == 1
        (cdr,) = node_a.query(call_id="call-of-node-b-run")
    assert cdr.end_reason == "system_failure"
    assert backend.rows("SELECT 1 FROM open_calls") == []


def test_a_run_on_this_host_is_dead_when_its_pid_is(pg_url: str) -> None:
    backend = Backend("postgres", pg_url)
    host = socket.gethostname()
    _foreign_run(backend, "running", host, os.getppid())  # a live process, not a store of ours
    _foreign_run(backend, "killed", host, 999_999_999)  # no such pid: provably dead
    with open_cdr_store(pg_url) as store:
        recovered = store.recover(rate)
    assert [r.run_id for r in recovered] == ["killed"]
    left = backend.rows("SELECT run_id FROM open_calls")
    assert left == [{"run_id": "running"}]
