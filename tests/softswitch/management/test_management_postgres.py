"""The management API's CDR search and CSV export on a switch whose ``[server] database`` is
PostgreSQL (the session's real server, ``postgres_tool``): the calls it carried, searched
and exported from PostgreSQL, as on the SQLite file; the prepaid account without credit
refused (its meter reads the PostgreSQL ledger); its balance read and a top-up booked in
the PostgreSQL ledger through the API, and a database at an older schema refused."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from pathlib import Path

import management_support
import psycopg
import pytest
from management_support import NUMBER, World, run, status
from test_management_resources import answered_and_hung_up

from postgres_tool import Postgres, postgres
from softswitch.billing import ledger
from softswitch.billing.commands import open_database
from softswitch.billing.ledger import Booking
from softswitch.store.migrations import migrate
from softswitch.store.postgres import query_postgres

__all__ = ["postgres"]


@pytest.fixture
def pg_url(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated database, and the switch's configuration naming it."""
    url = postgres.database()
    migrate(url)
    sqlite = 'database = "cdr.sqlite"'
    assert sqlite in management_support.CONFIG
    monkeypatch.setattr(
        management_support,
        "CONFIG",
        management_support.CONFIG.replace(sqlite, f'database = "{url}"'),
    )
    return url


def test_cdrs_are_searched_and_exported_from_postgres(tmp_path: Path, pg_url: str) -> None:
    async def body(w: World) -> None:
        for call_id in ("p1", "p2"):
            w.invite(call_id=call_id)
            await answered_and_hung_up(w, w.gw1.port, call_id)
        w.invite(number="7777" + NUMBER, call_id="p3")  # prepaid without credit: 402
        await w.caller.expect(status(402))
        assert w.switch.cdrs.flush(5.0)
        code, found = await w.get("/api/cdrs", params={"account": "acme"})
        assert (code, [r["call_id"] for r in found["cdrs"]]) == (200, ["p1", "p2"])
        assert found["cdrs"][0]["attempts"][0]["gateway_id"] == "gw1"
        assert found["cdrs"][0]["sell_cost"] is not None
        code, found = await w.get("/api/cdrs", params={"call_id": "p2"})
        assert [r["call_id"] for r in found["cdrs"]] == ["p2"]
        code, found = await w.get("/api/cdrs", params={"limit": "1"})
        assert (found["count"], found["limit"]) == (1, 1)
        code, _, text = await w.text("/api/cdrs.csv")
        assert code == 200
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [(r["call_id"], r["end_reason"]) for r in rows] == [
            ("p1", "operator_hangup"),
            ("p2", "operator_hangup"),
            ("p3", "insufficient_balance"),
        ]
        code, _, text = await w.text("/api/cdrs.csv", params={"account": "prepaid"})
        assert [r["call_id"] for r in csv.DictReader(io.StringIO(text))] == ["p3"]
        assert (await w.get("/api/cdrs", params={"since": "2999-01-01"}))[1]["cdrs"] == []

    run(tmp_path, body)
    assert [r.call_id for r in query_postgres(pg_url)] == ["p1", "p2", "p3"]
    assert not (tmp_path / "cdr.sqlite").exists()


def _book_as_the_cli(url: str, amount: int, note: str) -> None:
    """A top-up as ``softswitch topup`` books it (another operator, another node)."""
    at = dt.datetime.now(dt.UTC)
    with open_database(url) as conn:
        ledger.book(conn, Booking("prepaid", "topup", amount, note, at))


def test_a_top_up_through_the_api_is_booked_in_postgres(tmp_path: Path, pg_url: str) -> None:
    zero = {"balance": "0.000000", "credit_limit": "0.000000", "reserved": "0.000000"}

    async def body(w: World) -> None:
        w.invite(number="7777" + NUMBER, call_id="p1")
        await w.caller.expect(status(402))
        code, balance = await w.get("/api/accounts/prepaid/balance")
        assert code == 200, balance
        assert balance["ledger"] == balance["live"] == {**zero, "available": "0.000000"}
        code, booked = await w.post(
            "/api/accounts/prepaid/topup", json={"amount": "5", "note": "card 42"}
        )
        assert code == 200, booked
        entry = booked["entry"]
        assert (entry["kind"], entry["amount"], entry["balance_after"], entry["reference"]) == (
            "topup",
            "5.000000",
            "5.000000",
            "card 42",
        )
        assert booked["live"]["available"] == "5.000000"  # the meter read it at once
        w.invite(number="7777" + NUMBER, call_id="p2")  # now it has credit
        await answered_and_hung_up(w, w.gw1.port, "p2")
        assert w.switch.cdrs.flush(5.0)
        code, balance = await w.get("/api/accounts/prepaid/balance")
        assert balance["ledger"]["balance"] == "4.900000"  # 60 s first increment at 0.10/min
        await asyncio.to_thread(_book_as_the_cli, pg_url, 2_500_000_000, "cli")
        code, balance = await w.get("/api/accounts/prepaid/balance")
        assert (code, balance["ledger"]["balance"]) == (200, "7.400000")
        # the checks are the SQLite ones
        code, refused = await w.post("/api/accounts/prepaid/topup", json={"amount": 5.5})
        assert code == 400
        assert "never a float" in refused["error"]
        code, refused = await w.get("/api/accounts/acme/balance")
        assert (code, refused["error"]) == (
            409,
            "account 'acme' is not billed (billing = \"none\")",
        )

    run(tmp_path, body)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT kind, amount, reference FROM ledger WHERE account_id = 'prepaid' ORDER BY id"
        ).fetchall()
    assert [(k, r) for k, _, r in rows] == [("topup", "card 42"), ("call", "p2"), ("topup", "cli")]
    assert [a for _, a, _ in rows] == [5_000_000_000, -100_000_000, 2_500_000_000]
    assert not (tmp_path / "cdr.sqlite").exists()


def test_a_database_at_an_older_schema_is_refused(tmp_path: Path, pg_url: str) -> None:
    async def body(w: World) -> None:
        # as if the database were replaced by one not migrated while the switch runs
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE schema_version RENAME TO schema_version_hidden")
        try:
            code, refused = await w.get("/api/accounts/prepaid/balance")
            assert code == 409
            assert "schema version 0" in refused["error"]
            assert "softswitch migrate" in refused["error"]
            code, refused = await w.post("/api/accounts/prepaid/topup", json={"amount": "5"})
            assert (code, "softswitch migrate" in refused["error"]) == (400, True)
        finally:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("ALTER TABLE schema_version_hidden RENAME TO schema_version")

    run(tmp_path, body)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
