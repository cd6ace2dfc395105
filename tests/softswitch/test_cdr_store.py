"""The SQLite CDR store: every field round-trips, queries, CSV, and kill -9 durability."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

import softswitch
from softswitch.cdr import CSV_COLUMNS, CdrAttempt, CdrRecord, CdrStore, query_file, write_csv

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def record(call_id: str = "c1", start: dt.datetime = T0, **changes: object) -> CdrRecord:
    fields: dict[str, object] = {
        "call_id": call_id,
        "account_id": "acme",
        "source": "192.0.2.10:5060",
        "caller": "alice",
        "callee_dialed": "1234#+447911123456",
        "callee_normalised": "447911123456",
        "callee_sent": "777911123456",
        "gateway_id": "gwb",
        "route_prefix": "447",
        "invite_at": start,
        "ring_at": start + dt.timedelta(seconds=1.25),
        "answer_at": start + dt.timedelta(seconds=4),
        "end_at": start + dt.timedelta(seconds=65.5),
        "end_reason": "normal_clearing",
        "status": 200,
        "q850": 16,
        "hangup_side": "callee",
        "attempts": (
            CdrAttempt("gwa", 503, "failed", start, start + dt.timedelta(seconds=0.5)),
            CdrAttempt(
                "gwb",
                200,
                "answered",
                start + dt.timedelta(seconds=0.5),
                start + dt.timedelta(seconds=65.5),
                request_uri="sip:777911123456@192.0.2.2:5060",
                ring_at=start + dt.timedelta(seconds=1.25),
            ),
        ),
        "sell_rate": Decimal("0.200000"),
        "sell_cost": Decimal("0.205000"),
        "buy_rate": Decimal("0.150000"),
        "buy_cost": Decimal("0.153750"),
    }
    fields.update(changes)
    return CdrRecord(**fields)  # type: ignore[arg-type]


def test_derived_durations() -> None:
    r = record()
    assert r.duration == 61.5
    assert r.billsec == 62  # rounded up
    assert r.pdd == 1.25
    unanswered = record(answer_at=None, ring_at=None, end_reason="busy", status=486)
    assert (unanswered.duration, unanswered.billsec, unanswered.pdd) == (0.0, 0, None)


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    original = record()
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        store.write(original).result(timeout=10)
        (back,) = store.query()
    assert back == original
    assert isinstance(back.sell_cost, Decimal)
    assert back.attempts[1].request_uri == "sip:777911123456@192.0.2.2:5060"


def test_times_are_stored_as_utc(tmp_path: Path) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    local = T0.astimezone(plus2)
    naive = T0.replace(tzinfo=None)
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        store.write(record("local", local)).result(timeout=10)
        store.write(record("naive", naive)).result(timeout=10)
    rows = query_file(tmp_path / "cdr.sqlite")
    assert [r.invite_at for r in rows] == [T0, T0]
    raw = sqlite3.connect(tmp_path / "cdr.sqlite").execute("SELECT invite_at FROM cdrs").fetchall()
    assert raw == [("2026-03-01T12:00:00.000000+00:00",)] * 2


def test_query_since_until_call_id_limit(tmp_path: Path) -> None:
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        for i in range(5):
            store.write(record(f"c{i}", T0 + dt.timedelta(hours=i)))
        assert store.flush(timeout=10)
        ids = [r.call_id for r in store.query(since=T0 + dt.timedelta(hours=2))]
        assert ids == ["c2", "c3", "c4"]
        until = T0 + dt.timedelta(hours=2)
        assert [r.call_id for r in store.query(until=until)] == ["c0", "c1"]
        assert [r.call_id for r in store.query(call_id="c3")] == ["c3"]
        assert len(store.query(limit=2)) == 2


def test_enqueue_commits_without_a_future(tmp_path: Path) -> None:
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        for i in range(40):  # more than one multi-row INSERT
            store.enqueue(record(f"q{i}", T0 + dt.timedelta(seconds=i)))
        assert store.flush(timeout=10)
        assert [r.call_id for r in store.query()] == [f"q{i}" for i in range(40)]
    with pytest.raises(RuntimeError, match="closed"):
        store.enqueue(record())


def test_undecodable_bytes_from_a_peer_are_stored_escaped(tmp_path: Path) -> None:
    """The SIP parser keeps bytes that are not UTF-8 as surrogates; SQLite refuses those as
    text. The record is stored with them escaped instead of being lost."""
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        store.enqueue(record("ok"))
        store.enqueue(record("x\udcffy", caller="a\ud800b"))
        assert store.flush(timeout=10)
        stored = {r.call_id: r.caller for r in store.query()}
    assert stored == {"ok": "alice", "x\\xffy": "a\\xed\\xa0\\x80b"}


def test_schema_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cdr.sqlite"
    with CdrStore(path) as store:
        conn = store._connect()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in conn.execute("PRAGMA table_info(cdrs)")]
        conn.close()
    assert columns == ["id", *CSV_COLUMNS]


def test_csv_export(tmp_path: Path) -> None:
    out = io.StringIO()
    assert write_csv([record(), record("c2", sell_cost=None)], out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["sell_cost"] == "0.205000"
    assert rows[1]["sell_cost"] == ""
    attempts = json.loads(rows[0]["attempts"])
    assert [(a["gateway_id"], a["status"]) for a in attempts] == [("gwa", 503), ("gwb", 200)]


def test_write_async_from_the_event_loop(tmp_path: Path) -> None:
    store = CdrStore(tmp_path / "cdr.sqlite")

    async def main() -> None:
        await asyncio.gather(*(store.write_async(record(f"c{i}")) for i in range(100)))

    try:
        asyncio.run(main())
        assert len(store.query()) == 100
    finally:
        store.close()


def test_a_bad_record_fails_alone(tmp_path: Path) -> None:
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        bad = record("bad", status=None)
        futures = [store.write(record("ok1")), store.write(bad), store.write(record("ok2"))]
        with pytest.raises(sqlite3.IntegrityError):
            futures[1].result(timeout=10)
        futures[0].result(timeout=10)
        futures[2].result(timeout=10)
        assert [r.call_id for r in store.query()] == ["ok1", "ok2"]


def test_a_bad_enqueued_record_fails_alone_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with CdrStore(tmp_path / "cdr.sqlite") as store:
        store.enqueue(record("ok1"))
        store.enqueue(record("bad", status=None))
        store.enqueue(record("ok2"))
        assert store.flush(timeout=10)
        assert [r.call_id for r in store.query()] == ["ok1", "ok2"]
    assert any(
        "cdr write failed" in r.getMessage() and '"bad"' in r.getMessage() for r in caplog.records
    )


def test_close_commits_queued_records_and_refuses_more(tmp_path: Path) -> None:
    store = CdrStore(tmp_path / "cdr.sqlite")
    for i in range(200):
        store.write(record(f"c{i}"))
    store.close()
    store.close()
    assert len(query_file(tmp_path / "cdr.sqlite")) == 200
    with pytest.raises(RuntimeError):
        store.write(record())


def test_reopen_keeps_rows_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    with CdrStore(path) as store:
        store.write(record()).result(timeout=10)
    with CdrStore(path) as store:
        assert len(store.query()) == 1
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        CdrStore(path)


CHILD = """
import sys, datetime as dt, time
from softswitch.cdr import CdrRecord, CdrStore
store = CdrStore(sys.argv[1])
t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
def rec(i):
    return CdrRecord(call_id=f"call-{i}", account_id="a", source="s", caller="c",
                     callee_dialed="44", invite_at=t0, end_at=t0, end_reason="busy",
                     status=486, q850=17)
if sys.argv[2] == "one-by-one":
    i = 0
    while True:
        store.write(rec(i)).result()
        print(i, flush=True)
        i += 1
else:
    futures = [store.write(rec(i)) for i in range(500)]
    for f in futures:
        f.result()
    print("acked", flush=True)
    time.sleep(60)
"""


def _run_and_kill(db: Path, mode: str, wait_for: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), mode],
        stdout=subprocess.PIPE,
        text=True,
        # The repository root would shadow the package with the distribution folder.
        cwd=Path(softswitch.__file__).parents[1],
    )
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the writer process ended early"
            if line.strip() == wait_for:
                os.kill(child.pid, signal.SIGKILL)  # right after the acknowledgement
                break
        else:
            pytest.fail("no acknowledgement from the writer process")
    finally:
        child.kill()
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def test_kill_9_after_each_acknowledged_write_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "cdr.sqlite"
    _run_and_kill(db, "one-by-one", "49")
    ids = {r.call_id for r in query_file(db)}
    assert {f"call-{i}" for i in range(50)} <= ids


def test_kill_9_after_a_burst_is_acknowledged_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "cdr.sqlite"
    _run_and_kill(db, "burst", "acked")
    assert (tmp_path / "cdr.sqlite-wal").exists()  # never checkpointed or closed
    rows = query_file(db)
    assert len(rows) == 500
    with CdrStore(db) as store:  # and the switch can reopen it
        assert len(store.query()) == 500
