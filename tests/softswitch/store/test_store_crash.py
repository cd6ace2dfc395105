"""kill -9 of a switch writing through the PostgreSQL store: every acknowledged CDR is there,
and its calls still up are settled by the next start of another node, but only once that
node can tell the killed one is dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from store_support import Backend, rate, record

from softswitch.store.opening import open_cdr_store

#: The child: opens ``OPEN`` calls (acknowledged once flushed), then writes CDRs one by one,
#: printing each Call-ID once its commit is acknowledged, until it is killed.
CHILD = """
import datetime as dt, sys
sys.path.insert(0, sys.argv[2])
from store_support import call_start, record
from softswitch.store.opening import open_cdr_store

store = open_cdr_store(sys.argv[1], heartbeat_interval=5.0)
now = dt.datetime.now(dt.UTC)
for i in range(5):
    store.open_call(call_start(f"up{i}", now - dt.timedelta(seconds=30)))
assert store.flush(timeout=30)
print("run", store.run_id, flush=True)
i = 0
while True:
    store.write(record(f"cdr{i}")).result(timeout=30)
    print("ack", f"cdr{i}", flush=True)
    i += 1
"""


def _run_and_kill(url: str, tmp_path: Path, acks: int = 40) -> tuple[str, set[str]]:
    """Start the child, kill -9 it after ``acks`` acknowledgements; (its run, the acked)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    run_id, acked = "", set()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            kind, value = line.split()
            if kind == "run":
                run_id = value
            else:
                acked.add(value)
            if len(acked) >= acks:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert run_id
    assert len(acked) >= acks
    return run_id, acked


def test_kill_9_loses_no_acknowledged_cdr_and_the_next_start_settles_its_calls(
    pg_url: str, tmp_path: Path
) -> None:
    run_id, acked = _run_and_kill(pg_url, tmp_path)
    backend = Backend("postgres", pg_url)
    stored = {r["call_id"] for r in backend.rows("SELECT call_id FROM cdrs")}
    assert acked <= stored
    assert len(backend.rows("SELECT 1 FROM open_calls WHERE run_id = ?", (run_id,))) == 5
    (run,) = backend.rows("SELECT stopped_at FROM switch_runs WHERE run_id = ?", (run_id,))
    assert run["stopped_at"] is None  # it never stopped cleanly
    # Its heartbeat is fresh, but it ran on this host and its pid is gone: provably dead.
    with open_cdr_store(pg_url) as next_start:
        (recovered,) = next_start.recover(rate)
        cdrs = next_start.query()
    assert recovered.run_id == run_id
    assert recovered.calls == 5
    settled = {r.call_id: r for r in cdrs if r.call_id.startswith("up")}
    assert set(settled) == {f"up{i}" for i in range(5)}
    assert {r.end_reason for r in settled.values()} == {"system_failure"}
    assert backend.rows("SELECT 1 FROM open_calls") == []


def test_a_killed_node_elsewhere_is_settled_only_once_its_heartbeat_is_stale(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, _ = _run_and_kill(pg_url, tmp_path, acks=5)
    backend = Backend("postgres", pg_url)
    # As if it had run on another machine: its pid tells this host nothing.
    backend.execute("UPDATE switch_runs SET host = 'node-b' WHERE run_id = ?", (run_id,))
    with open_cdr_store(pg_url) as node_a:
        assert node_a.recover(rate) == []  # heartbeat fresh: maybe alive, left alone
        assert "looks alive" in caplog.text
        assert len(backend.rows("SELECT 1 FROM open_calls")) == 5
        backend.age_heartbeat(run_id, 14)  # two intervals and more: not yet three
        assert node_a.recover(rate) == []
        backend.age_heartbeat(run_id, 16)  # more than three 5 s intervals: dead
        (recovered,) = node_a.recover(rate)
    assert recovered.run_id == run_id
    assert recovered.calls == 5
    assert backend.rows("SELECT 1 FROM open_calls") == []


def test_a_lost_connection_is_reopened_and_the_record_kept(pg_url: str) -> None:
    backend = Backend("postgres", pg_url)
    with open_cdr_store(pg_url) as store:
        store.write(record("before")).result(timeout=10)
        # The database drops the writer's connection (a restart, a failover, an idle cut).
        (killed,) = backend.rows(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
            " WHERE application_name = 'softswitch cdr-writer'"
        )
        assert killed["done"] is True
        store.write(record("after")).result(timeout=10)
        assert [r.call_id for r in store.query()] == ["before", "after"]
