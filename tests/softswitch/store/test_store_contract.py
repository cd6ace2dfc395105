"""The ``CdrSink`` contract, once per database: SQLite and a real PostgreSQL.

Every field round-trips, queries filter alike, the writer acknowledges only committed
records and one bad record fails alone, call starts are closed by their CDRs, reservations
and debits are written with them, dead runs are recovered once and live ones left alone,
and registrations are kept. The SQLite-only checks (WAL, kill -9 of a SQLite writer) stay
in ``tests/softswitch/test_cdr_store.py``; PostgreSQL's kill -9 is ``test_store_crash.py``.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import io
import logging
from decimal import Decimal
from pathlib import Path

import pytest
from store_support import T0, Backend, call_start, ended, rate, record

from softswitch.billing import ledger
from softswitch.billing.ledger import Booking
from softswitch.call.refusal import EndReason
from softswitch.cdr import CSV_COLUMNS, Reservation, write_csv
from softswitch.commands import list_cdrs
from softswitch.registrar import BindingWriter, load
from softswitch.registrar.bindings import Binding


def test_round_trip_of_every_field(backend: Backend) -> None:
    original = record()
    with backend.open() as store:
        store.write(original).result(timeout=10)
        (stored,) = store.query()
    assert stored == original
    assert stored.attempts == original.attempts
    assert stored.sell_cost == Decimal("0.205000")
    assert str(stored.sell_cost) == "0.205000"


def test_end_reasons_and_times_are_stored_as_documented(backend: Backend) -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    local = T0.astimezone(paris)
    refused = record("r", local, end_reason=EndReason.BUSY, status=486, q850=17, answer_at=None)
    with backend.open() as store:
        store.write(refused).result(timeout=10)
        (stored,) = store.query()
    assert stored.end_reason == "busy"
    assert stored.invite_at == T0
    assert stored.invite_at.utcoffset() == dt.timedelta(0)
    (row,) = backend.rows("SELECT end_reason, duration, billsec FROM cdrs")
    assert row == {"end_reason": "busy", "duration": 0.0, "billsec": 0}


def test_query_since_until_call_id_account_limit(backend: Backend) -> None:
    with backend.open() as store:
        for i in range(5):
            store.enqueue(record(f"c{i}", T0 + dt.timedelta(minutes=i), account_id=f"a{i % 2}"))
        assert store.flush(timeout=10)
        since, until = T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=4)
        assert [r.call_id for r in store.query(since, until)] == ["c1", "c2", "c3"]
        assert [r.call_id for r in store.query(call_id="c4")] == ["c4"]
        assert [r.call_id for r in store.query(limit=2)] == ["c0", "c1"]
        assert [r.call_id for r in store.query(account_id="a1")] == ["c1", "c3"]
        out = io.StringIO()
        assert write_csv(store.query(), out) == 5
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["sell_cost"] == "0.205000"


def test_write_async_and_enqueue_commit(backend: Backend) -> None:
    async def main() -> None:
        with backend.open() as store:
            await store.write_async(record("a"))  # type: ignore[attr-defined]
            store.enqueue(record("b"))
            assert store.flush(timeout=10)
            assert [r.call_id for r in store.query()] == ["a", "b"]

    asyncio.run(main())


def test_undecodable_text_from_a_peer_is_stored_escaped(backend: Backend) -> None:
    with backend.open() as store:
        store.enqueue(record("ok"))
        store.enqueue(record("x\udcffy", caller="a\udcedb"))
        store.enqueue(record("nul", caller="a\x00b"))  # PostgreSQL text refuses NUL
        assert store.flush(timeout=10)
        stored = {r.call_id: r.caller for r in store.query()}
    assert stored["ok"] == "alice"
    assert stored["x\\xffy"] == "a\\xedb"
    assert stored["nul"] in {"a\x00b", "a\\x00b"}  # SQLite keeps it, PostgreSQL escapes it


def test_a_bad_record_fails_alone_and_is_logged(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    bad = record("bad", status="not a number")  # type: ignore[arg-type]
    with backend.open() as store:
        good = store.write(record("good"))
        failed = store.write(bad) if backend.postgres else None
        store.enqueue(record("also-good"))
        assert store.flush(timeout=10)
        good.result(timeout=10)
        if failed is not None:  # SQLite stores any value in an INTEGER column
            with pytest.raises(Exception, match=r"not a number|invalid input"):
                failed.result(timeout=10)
            assert "cdr write failed" in caplog.text
            assert '"call_id": "bad"' in caplog.text
        calls = {r["call_id"] for r in backend.rows("SELECT call_id FROM cdrs")}
    assert {"good", "also-good"} <= calls


def test_close_commits_what_is_queued_and_refuses_more(backend: Backend) -> None:
    store = backend.open()
    for i in range(50):
        store.enqueue(record(f"c{i}"))
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="is closed"):
        store.enqueue(record("late"))
    assert len(backend.rows("SELECT 1 FROM cdrs")) == 50
    (run,) = backend.rows("SELECT stopped_at FROM switch_runs")
    assert run["stopped_at"] is not None


def test_call_starts_are_closed_by_their_cdrs(backend: Backend) -> None:
    now = dt.datetime.now(dt.UTC)
    with backend.open() as store:
        starts = [call_start(f"up{i}", now) for i in range(40)]
        for start in starts:
            store.open_call(start)
        assert store.flush(timeout=10)
        rows = backend.rows("SELECT * FROM open_calls ORDER BY id")
        assert [r["call_id"] for r in rows] == [f"up{i}" for i in range(40)]
        assert {(r["run_id"], r["sell_deck"]) for r in rows} == {(store.run_id, "sell")}
        for start in starts[:35]:
            store.enqueue(ended(start, 10))
        quick = call_start("quick", now)  # answered and ended within one group commit
        store.open_call(quick)
        store.enqueue(ended(quick, 0.2))
        # Same Call-ID, another answer time: not this call's CDR, closes nothing.
        store.enqueue(ended(call_start("up35", now + dt.timedelta(seconds=1)), 5))
        assert store.flush(timeout=10)
        left = [r["call_id"] for r in backend.rows("SELECT call_id FROM open_calls ORDER BY id")]
    assert left == [f"up{i}" for i in range(35, 40)]


def test_reservations_and_debits_are_written_with_the_records(backend: Backend) -> None:
    now = dt.datetime.now(dt.UTC)
    start = call_start("billed", now, billed_account="acme", billed_until=60, reserved=120)
    with backend.open() as store:
        store.open_call(start)
        store.reserve(Reservation("billed", now, billed_until=120, reserved=240))
        assert store.flush(timeout=10)
        (row,) = backend.rows("SELECT billed_until, reserved FROM open_calls")
        assert (row["billed_until"], row["reserved"]) == (120, 240)
        with backend.ledger_connection() as c:
            assert ledger.reserved(c) == {"acme": 240}
            ledger.book(c, Booking("acme", "topup", 1_000_000_000, "t1", now))
            debit = Booking("acme", "call", -205_000_000, "billed", now)
            store.enqueue(ended(start, 65), debit)
            assert store.flush(timeout=10)
            assert ledger.balance_of(c, "acme") == 795_000_000
            assert ledger.reserved(c) == {}
            sums, last = ledger.balances(c)
            assert sums == {"acme": 795_000_000}
            assert last.last_id >= 2
            entries = ledger.entries(c, "acme")
            assert [(e.kind, e.amount, e.balance_after) for e in entries] == [
                ("topup", 1_000_000_000, 1_000_000_000),
                ("call", -205_000_000, 795_000_000),
            ]
            assert entries[1].run_id == store.run_id
            assert entries[1].at == now
            changes, _ = ledger.changes_since(c, 0, store.run_id)
            assert changes == [("acme", 1_000_000_000)]  # the run's own debit it counted
            (spent,) = ledger.spend(c)
            assert (spent.gateway_id, spent.calls, spent.unrated) == ("gwb", 1, 1)


def test_a_dead_runs_calls_are_recovered_once(backend: Backend) -> None:
    now = dt.datetime.now(dt.UTC)
    dead = backend.open()
    dead.open_call(call_start("lost", now - dt.timedelta(seconds=30)))
    dead.open_call(
        call_start("billed", now - dt.timedelta(seconds=30), billed_account="acme", billed_until=60)
    )
    assert dead.flush(timeout=10)
    dead.close()  # stopped cleanly after all, yet with calls open: dead, its calls settled
    backend.execute("UPDATE switch_runs SET stopped_at = NULL WHERE run_id = ?", (dead.run_id,))
    backend.age_heartbeat(dead.run_id, 10)  # its last heartbeat: 10 s ago
    backend.execute("UPDATE switch_runs SET pid = 999999999 WHERE run_id = ?", (dead.run_id,))
    with backend.open() as store:
        (run,) = store.recover(rate)
        assert store.recover(rate) == []  # idempotent
        records = {r.call_id: r for r in store.query()}
    assert run.run_id == dead.run_id
    assert run.calls == 2
    lost = records["lost"]
    assert lost.end_reason == "system_failure"
    assert lost.hangup_side == "switch"
    assert 19 <= lost.billsec <= 21  # answered 30 s ago, ended at the heartbeat 10 s ago
    assert lost.sell_cost == PER_SECOND_SELL * lost.billsec
    assert backend.rows("SELECT 1 FROM open_calls") == []
    debits = backend.rows("SELECT reference, amount FROM ledger")
    assert debits == [{"reference": "billed", "amount": -int(records["billed"].billsec * 2e6)}]


PER_SECOND_SELL = Decimal("0.002")


def test_a_clean_stop_leaves_nothing_to_recover(backend: Backend) -> None:
    with backend.open() as first:
        first.enqueue(record())
    with backend.open() as second:
        assert second.recover(rate) == []


def test_a_live_run_is_left_alone(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    now = dt.datetime.now(dt.UTC)
    with backend.open() as live, backend.open() as other:
        live.open_call(call_start("up", now))
        assert live.flush(timeout=10)
        with caplog.at_level(logging.WARNING):
            assert other.recover(rate) == []
        assert "looks alive" in caplog.text
        assert len(backend.rows("SELECT 1 FROM open_calls")) == 1


def test_registrations_are_kept(backend: Backend) -> None:
    with backend.open():
        pass  # the SQLite file's schema; PostgreSQL's is migrated already
    writer = BindingWriter(backend.database)
    alive = Binding(
        "acme", "sip:a@192.0.2.1", 2e9, 1.0, "r1", 1, "udp", "192.0.2.1", 5060, True, 1.5
    )
    gone = dataclasses.replace(alive, contact="sip:b@192.0.2.2", expires_at=10.0)
    dropped = dataclasses.replace(alive, contact="sip:c@192.0.2.3")
    writer.put([alive, gone, dropped])
    writer.put([dataclasses.replace(alive, cseq=2)])  # the latest state of a contact wins
    writer.remove([dropped])
    assert writer.flush()
    writer.close()
    assert load(backend.database, now=1000.0) == [dataclasses.replace(alive, cseq=2)]
    assert len(backend.rows("SELECT 1 FROM registrations")) == 1  # the expired one deleted


def test_softswitch_cdr_lists_either_database(backend: Backend, tmp_path: Path) -> None:
    with backend.open() as store:
        store.write(record("listed")).result(timeout=10)
    config = tmp_path / "switch.toml"
    config.write_text(f'[server]\ndatabase = "{backend.database}"\n')
    out, err = io.StringIO(), io.StringIO()
    assert list_cdrs(str(config), as_csv=True, out=out, err=err) == 0, err.getvalue()
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["call_id"] == "listed"
    assert row["buy_cost"] == "0.153750"
