"""``softswitch balance``, ``topup``, ``adjust``, ``refund``, ``ledger`` and ``spend`` with
``[server] database`` a ``postgresql://`` URL: the same answers as on the SQLite file, from
the shared database (the session's real server, ``postgres_tool``); an unmigrated or
unreachable database refused with one ``error:`` line, without its password."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from test_commands import T0, cdr, run, write_config

from loopback_ports import LOCAL, free_port
from postgres_tool import Postgres, postgres
from softswitch.billing import ledger
from softswitch.billing.commands import refund
from softswitch.billing.ledger import Booking
from softswitch.billing.money import to_nanos
from softswitch.store.migrations import latest_version, migrate
from softswitch.store.opening import open_cdr_store
from softswitch.store.postgres_connect import Row, connect

__all__ = ["postgres"]

Connection = psycopg.Connection[Row]


def n(text: str) -> int:
    return to_nanos(Decimal(text))


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    url = postgres.database()
    migrate(url)
    return url


@pytest.fixture
def config(tmp_path: Path, pg_url: str) -> Path:
    return write_config(tmp_path, pg_url)


@pytest.fixture
def conn(pg_url: str) -> Iterator[Connection]:
    with connect(pg_url) as c:
        yield c


def debit(conn: Connection, account: str, call_id: str, amount: str) -> None:
    """A call's debit as a switch's CDR writer appends it (its run, in its transaction)."""
    with conn.transaction():
        ledger.append(conn, [Booking(account, "call", -n(amount), call_id, T0)], "run-1")


def test_topup_adjust_balance_and_ledger(
    config: Path, conn: Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(config, capsys, "topup", "alice", "25", "--note", "card 1234")
    assert status == 0, err
    assert out.startswith("alice: topup 25.000000; balance after 25.000000 (ledger entry 1 at ")
    status, out, err = run(config, capsys, "adjust", "bob", "-5", "--note", "goodwill")
    assert status == 0, err
    assert out.startswith("bob: adjustment -5.00; balance after -5.00 (ledger entry 2 at ")
    status, out, err = run(config, capsys, "balance")
    assert (status, err) == (0, "")
    assert out.splitlines()[1:] == [
        "alice    prepaid   25.000000      0.000000  0.000000  25.000000",
        "bob      postpaid      -5.00        100.00      0.00      95.00",
    ]
    status, out, _ = run(config, capsys, "ledger", "alice", "--csv")
    assert status == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert (row["id"], row["kind"], row["amount"], row["reference"]) == (
        "1",
        "topup",
        "25.000000",
        "card 1234",
    )
    assert ledger.balances(conn)[0] == {"alice": n("25"), "bob": n("-5")}
    assert not (tmp_path / "cdr.sqlite").exists()  # nothing went to a file


def test_balance_subtracts_what_calls_in_progress_hold_on_any_node(
    config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "topup", "alice", "10")[0] == 0
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO switch_runs (run_id, host, pid, started_at, heartbeat_at,"
            " heartbeat_interval) VALUES ('node-b', 'b', 1, now(), now(), 5)"
        )
        c.execute(
            "INSERT INTO open_calls (run_id, call_id, answer_at, record, billed_account,"
            " billed_until, reserved) VALUES ('node-b', 'x', now(), '{}', 'alice', 60, %s)",
            (n("0.6"),),
        )
    status, out, _ = run(config, capsys, "balance", "alice", "--csv")
    assert status == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert (row["balance"], row["reserved"], row["available"]) == (
        "10.000000",
        "0.600000",
        "9.400000",
    )


def test_refund_checks_and_books_in_one_locked_transaction(
    config: Path, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "topup", "alice", "20")[0] == 0
    debit(conn, "alice", "call-1", "2")
    status, out, err = run(config, capsys, "refund", "alice", "call-1", "0.5")
    assert status == 0, err
    assert out.startswith("alice: refund 0.500000 of call 'call-1' (debited 2.000000); ")
    status, _, err = run(config, capsys, "refund", "alice", "call-1", "1.6")
    assert status == 1
    assert "refund 1.600000 is more than the 1.500000 left to refund" in err
    status, _, err = run(config, capsys, "refund", "alice", "call-2")
    assert (status, err) == (1, "error: account 'alice' has no call debit with Call-ID 'call-2'\n")

    # Four operators refunding the rest at once: one of them does.
    statuses: list[int] = []

    def full_refund() -> None:
        out, err = io.StringIO(), io.StringIO()
        statuses.append(refund(str(config), "alice", "call-1", out=out, err=err))

    threads = [threading.Thread(target=full_refund) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [0, 1, 1, 1]
    refunds = [e.amount for e in ledger.entries(conn, "alice") if e.kind == "refund"]
    assert refunds == [n("0.5"), n("1.5")]
    assert ledger.balance_of(conn, "alice") == n("20")


def test_spend_sums_the_cdrs_of_postgres(
    config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_cdr_store(pg_url) as store:
        store.enqueue(cdr("c1", "gw_a", billsec=61, buy="0.050833"))
        store.enqueue(cdr("c2", "gw_a", billsec=30, buy="0.025000"))
        store.enqueue(cdr("c3", "gw_a", answered=False))
        store.enqueue(cdr("c4", "gw_b", billsec=120, buy="0.1"))
        store.enqueue(cdr("c5", "gw_b", billsec=7, buy=None))
        store.enqueue(cdr("c7", "gw_a", buy="1.000000", start=T0 + dt.timedelta(days=1)))
    status, out, err = run(config, capsys, "spend", "--until", "2026-05-02")
    assert status == 0, err
    assert out.splitlines() == [
        "gateway  calls  billsec  minutes  buy_cost  unrated",
        "gw_a         2       91     1.52  0.075833        0",
        "gw_b         2      127     2.12       0.1        1",
    ]
    status, out, _ = run(config, capsys, "spend", "--since", "2026-05-02", "--csv")
    assert out.splitlines()[1:] == ["gw_a,1,60,1.00,1.000000,0"]


def test_an_unmigrated_database_is_refused_naming_migrate(
    tmp_path: Path, postgres: Postgres, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres.database()
    config = write_config(tmp_path, url)
    for args in (["topup", "alice", "1"], ["balance"], ["ledger", "alice"], ["spend"]):
        status, out, err = run(config, capsys, *args)
        assert (status, out) == (1, ""), args
        assert f"schema version 0, this switch needs {latest_version(url)};" in err
        assert "softswitch migrate" in err
    with psycopg.connect(url) as c:
        tables = c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)  # nothing was created


def test_an_unreachable_database_is_refused_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://billing:s3cret@{LOCAL}:{free_port()}/switch"
    config = write_config(tmp_path, url)
    status, out, err = run(config, capsys, "topup", "alice", "1")
    assert (status, out) == (1, "")
    assert err.startswith(f"error: database postgresql://billing:***@{LOCAL}:")
    assert "s3cret" not in err
