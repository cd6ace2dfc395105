"""Numbered migrations on both dialects: a fresh database, a file made before migrations,
idempotence, dry runs, a newer schema refused, the PostgreSQL store refusing an old schema,
and ``softswitch migrate``."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from postgres_tool import Postgres
from softswitch.cdr import CdrStore
from softswitch.commands import add_subcommands, dispatch
from softswitch.registrar.store import BINDING_COLUMNS
from softswitch.store import migrations
from softswitch.store.errors import StoreError
from softswitch.store.migrate_command import migrate_command
from softswitch.store.migrations import SchemaError, current_version, migrate, pending
from softswitch.store.opening import open_cdr_store

LEGACY = Path(__file__).with_name("legacy_v3.sql")


def sqlite_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def legacy_file(tmp_path: Path) -> Path:
    """The file ``legacy_v3.sql`` describes: made by ``CdrStore`` before migrations."""
    db = tmp_path / "legacy.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(LEGACY.read_text())
    conn.close()
    return db


def schema_of(db: Path) -> dict[str, str]:
    """Table and index definitions as SQLite keeps them, without ``IF NOT EXISTS``."""
    return {
        name: " ".join(sql.replace("IF NOT EXISTS ", "").split())
        for name, sql in sqlite_rows(db, "SELECT name, sql FROM sqlite_master WHERE sql NOT NULL")
        if name != "schema_version"
    }


# -- SQLite ----------------------------------------------------------------------------


def test_a_fresh_sqlite_file_gets_every_version_once(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "cdr.sqlite"
    assert migrate(db) == [1, 2, 3, 4, 5]
    assert migrate(db) == []
    assert current_version(db) == 5
    assert sqlite_rows(db, "SELECT version FROM schema_version") == [(1,), (2,), (3,), (4,), (5,)]
    assert sqlite_rows(db, "PRAGMA user_version") == [(3,)]  # what older switches read


def test_a_file_made_before_migrations_is_adopted_as_version_1_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = legacy_file(tmp_path)
    fresh = tmp_path / "fresh.sqlite"
    before = schema_of(db)
    cdrs = sqlite_rows(db, "SELECT * FROM cdrs ORDER BY id")
    ledger = sqlite_rows(db, "SELECT * FROM ledger ORDER BY id")
    assert current_version(db) == 0
    assert [m.version for m in pending(db)] == [1, 2, 3, 4, 5]
    with monkeypatch.context() as m:  # this code as it was at version 1
        m.setattr(migrations, "SQLITE", migrations.SQLITE[:1])
        migrate(fresh)
        assert migrate(db) == [1]
    # Version 1 is exactly the schema the switch wrote before: nothing to change, rows kept.
    assert schema_of(db) == before == schema_of(fresh)
    assert sqlite_rows(db, "SELECT * FROM cdrs ORDER BY id") == cdrs
    assert sqlite_rows(db, "SELECT * FROM ledger ORDER BY id") == ledger
    assert migrate(db) == [2, 3, 4, 5]
    assert migrate(db) == []


def test_a_version_1_file_upgrades_to_version_2_with_its_cdrs_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 2 adds ``cdrs.caller_id``: NULL in the rows written before, written after."""
    db = tmp_path / "cdr.sqlite"
    with monkeypatch.context() as m:
        m.setattr(migrations, "SQLITE", migrations.SQLITE[:1])
        assert migrate(db) == [1]
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO cdrs (call_id, account_id, source, caller, callee_dialed, invite_at,"
        " end_at, duration, billsec, end_reason, status, q850, attempts) VALUES ('old-1',"
        " 'cust', '10.0.0.1:5060', '100', '4420', '2026-11-02T09:00:00.000000+00:00',"
        " '2026-11-02T09:00:00.000000+00:00', 0, 0, 'no_route', 404, 3, '[]')"
    )
    conn.commit()
    conn.close()
    assert current_version(db) == 1
    assert [m.version for m in pending(db)] == [2, 3, 4, 5]
    with CdrStore(db) as store:  # the store migrates its own file
        new = replace(store.query()[0], call_id="new-1", caller_id="442079460000")
        store.write(new).result(timeout=30)
        rows = {r.call_id: r for r in store.query()}
    assert current_version(db) == 5
    assert rows["old-1"].caller_id is None
    assert rows["new-1"].caller_id == "442079460000"
    columns = [r[1] for r in sqlite_rows(db, "PRAGMA table_info(cdrs)")]
    assert columns[-1] == "caller_id"


def test_a_version_2_file_upgrades_to_version_3_with_its_registrations_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 3 adds ``registrations.credentials``: "" in the rows written before (judged as
    made under the credentials in force), the fingerprint a REGISTER passed after."""
    from softswitch.registrar import Binding, BindingWriter, load

    db = tmp_path / "cdr.sqlite"
    with monkeypatch.context() as m:
        m.setattr(migrations, "SQLITE", migrations.SQLITE[:2])
        assert migrate(db) == [1, 2]
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO registrations VALUES ('pbx', 'sip:old@192.0.2.1', 9e9, 1.0, 'c', 1,"
        " 'udp', '192.0.2.1', 5060, 0, 1000.0, 'old phone')"
    )
    conn.commit()
    conn.close()
    assert migrate(db) == [3, 4, 5]
    new = Binding("pbx", "sip:new@192.0.2.2", 9e9, 1.0, "c2", 1, "udp", "192.0.2.2", 5060,
                  False, 2000.0, "new phone", credentials="fp-1")  # fmt: skip
    writer = BindingWriter(db)
    writer.put([new])
    assert writer.flush()
    writer.close()
    rows = {b.contact: b for b in load(db, 3000.0)}
    assert rows["sip:old@192.0.2.1"].credentials == ""
    assert rows["sip:new@192.0.2.2"] == new


#: The registrations' columns at version 3 and 4 (version 5 adds ``path``).
V3_SELECT = "SELECT " + ", ".join(BINDING_COLUMNS[:13]) + " FROM registrations ORDER BY contact"


def registrations_v3() -> list[object]:
    """A binding as a version-3 table holds it (its REGISTER's fingerprint kept)."""
    from softswitch.registrar import Binding

    return [
        Binding("pbx", "sip:a@192.0.2.1", 9e9, 1.0, "c", 1, "udp", "192.0.2.1", 5060,
                False, 1000.0, "phone", credentials="fp-1"),
        Binding("pbx", "sip:gone@192.0.2.2", 1500.0, 1.0, "c2", 1, "udp", "192.0.2.2", 5060,
                False, 1000.0, "phone", credentials="fp-1"),
    ]  # fmt: skip


def test_a_version_3_file_upgrades_to_version_4_with_its_registrations_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 4 adds the index ``registrations_expires_at``: the rows stay as they were,
    and the purge of the rows expired long ago reads them by it, not the whole table."""
    from softswitch.registrar import load
    from softswitch.registrar.store import _PURGE, _row

    db = tmp_path / "cdr.sqlite"
    with monkeypatch.context() as m:  # this code as it was at version 3
        m.setattr(migrations, "SQLITE", migrations.SQLITE[:3])
        assert migrate(db) == [1, 2, 3]
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO registrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_row(b)[:13] for b in registrations_v3()],  # no path yet
    )
    conn.commit()
    conn.close()
    rows = sqlite_rows(db, V3_SELECT)
    assert "registrations_expires_at" not in schema_of(db)
    assert migrate(db) == [4, 5]
    assert current_version(db) == 5
    assert schema_of(db)["registrations_expires_at"] == (
        "CREATE INDEX registrations_expires_at ON registrations (expires_at)"
    )
    assert sqlite_rows(db, V3_SELECT) == rows
    purge_plan = f"EXPLAIN QUERY PLAN {_PURGE.replace('?', '1700.0')}"
    plan = " ".join(str(r[-1]) for r in sqlite_rows(db, purge_plan))
    assert "INDEX registrations_expires_at (expires_at<?)" in plan
    assert load(db, 2000.0) == registrations_v3()[:1]
    assert migrate(db) == []


def test_a_version_3_postgres_database_upgrades_to_version_4_with_its_registrations_kept(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    from softswitch.registrar import load
    from softswitch.registrar.store import _row

    url = postgres.database()
    with monkeypatch.context() as m:  # this code as it was at version 3
        m.setattr(migrations, "POSTGRES", migrations.POSTGRES[:3])
        assert migrate(url) == [1, 2, 3]
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            f"INSERT INTO registrations ({', '.join(BINDING_COLUMNS[:13])})"
            f" VALUES ({', '.join(['%s'] * 13)})",
            [_row(b, postgres=True)[:13] for b in registrations_v3()],  # no path yet
        )
    select = V3_SELECT
    with psycopg.connect(url) as conn:
        rows = conn.execute(select).fetchall()
    with pytest.raises(SchemaError, match="schema version 3, this switch needs 5"):
        migrations.require_current(url)  # a node of this code refuses it until migrated
    assert migrate(url) == [4, 5]
    migrations.require_current(url)
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'registrations'"
            " AND indexname = 'registrations_expires_at'"
        ).fetchall()
        assert conn.execute(select).fetchall() == rows
    assert [i for (i,) in indexes] == [
        "CREATE INDEX registrations_expires_at ON public.registrations USING btree (expires_at)"
    ]
    assert load(url, 2000.0) == registrations_v3()[:1]
    assert migrate(url) == []


#: A binding registered through a balancer that wrote a Path (RFC 3327).
PATHED = (
    "pbx", "sip:pathed@192.0.2.3", 9e9, 1.0, "c3", 1, "udp", "192.0.2.9", 5060, False,
    2000.0, "phone",
)  # fmt: skip


def test_a_version_4_file_upgrades_to_version_5_and_keeps_a_bindings_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 5 adds ``registrations.path``: "" (no Path) in the rows before, the Path a
    REGISTER came with after, read back as written."""
    from softswitch.registrar import Binding, BindingWriter, load
    from softswitch.registrar.store import _row

    db = tmp_path / "cdr.sqlite"
    with monkeypatch.context() as m:  # this code as it was at version 4
        m.setattr(migrations, "SQLITE", migrations.SQLITE[:4])
        assert migrate(db) == [1, 2, 3, 4]
    conn = sqlite3.connect(db)
    conn.executemany(
        f"INSERT INTO registrations VALUES ({', '.join('?' * 13)})",
        [_row(b)[:13] for b in registrations_v3()],
    )
    conn.commit()
    conn.close()
    rows = sqlite_rows(db, V3_SELECT)
    assert migrate(db) == [5]
    assert sqlite_rows(db, V3_SELECT) == rows
    assert sqlite_rows(db, "SELECT DISTINCT path FROM registrations") == [("",)]
    pathed = Binding(*PATHED, path="<sip:192.0.2.9:5070;lr;received=sip:192.0.2.3:5062>")
    writer = BindingWriter(db)
    writer.put([pathed])
    assert writer.flush()
    writer.close()
    assert load(db, 2000.0) == [registrations_v3()[0], pathed]


def test_a_version_4_postgres_database_upgrades_to_version_5_and_keeps_a_bindings_path(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    from softswitch.registrar import Binding, BindingWriter, load
    from softswitch.registrar.store import _row

    url = postgres.database()
    with monkeypatch.context() as m:  # this code as it was at version 4
        m.setattr(migrations, "POSTGRES", migrations.POSTGRES[:4])
        assert migrate(url) == [1, 2, 3, 4]
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            f"INSERT INTO registrations ({', '.join(BINDING_COLUMNS[:13])})"
            f" VALUES ({', '.join(['%s'] * 13)})",
            [_row(b, postgres=True)[:13] for b in registrations_v3()],
        )
    with pytest.raises(SchemaError, match="schema version 4, this switch needs 5"):
        migrations.require_current(url)
    assert migrate(url) == [5]
    pathed = Binding(*PATHED, path="<sip:192.0.2.9:5070;lr>, <sip:192.0.2.10;lr>")
    writer = BindingWriter(url)
    writer.put([pathed])
    assert writer.flush()
    writer.close()
    assert load(url, 2000.0) == [registrations_v3()[0], pathed]


def test_the_store_opens_a_file_made_before_migrations_and_recovers_its_dead_run(
    tmp_path: Path,
) -> None:
    db = legacy_file(tmp_path)
    with CdrStore(db) as store:
        (run,) = store.recover()
        rows = {r.call_id: r for r in store.query()}
    assert run.host == "legacy-host"
    assert run.calls == 1
    assert set(rows) == {"done-1", "busy-1", "up-1"}
    up = rows["up-1"]
    assert up.end_reason == "system_failure"
    # Ended at the dead run's last heartbeat: 58 s after the answer at 12:00:02.
    assert up.end_at == dt.datetime(2026, 3, 1, 12, 1, tzinfo=dt.UTC)
    assert up.billsec == 58
    assert current_version(db) == 5
    debits = sqlite_rows(db, "SELECT reference, amount FROM ledger ORDER BY id")
    assert debits[0] == ("done-1", -100000000)
    assert debits[1][0] == "up-1"


def test_a_version_2_legacy_file_gets_the_missing_tables_and_columns(tmp_path: Path) -> None:
    db = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(CDRS_V1)
    conn.execute(
        "CREATE TABLE switch_runs (run_id TEXT PRIMARY KEY, host TEXT NOT NULL,"
        " pid INTEGER NOT NULL, started_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL,"
        " heartbeat_interval REAL NOT NULL, stopped_at TEXT, recovered_at TEXT,"
        " recovered_calls INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "CREATE TABLE open_calls (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, call_id TEXT"
        " NOT NULL, answer_at TEXT NOT NULL, account_id TEXT, gateway_id TEXT, sell_deck TEXT,"
        " buy_deck TEXT, max_duration REAL, record TEXT NOT NULL)"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    assert migrate(db) == [1, 2, 3, 4, 5]
    columns = [r[1] for r in sqlite_rows(db, "PRAGMA table_info(open_calls)")]
    assert columns[-3:] == ["billed_account", "billed_until", "reserved"]
    tables = {r[0] for r in sqlite_rows(db, "SELECT name FROM sqlite_master")}
    assert {"ledger", "registrations", "schema_version"} <= tables
    assert sqlite_rows(db, "PRAGMA user_version") == [(3,)]


CDRS_V1 = """
CREATE TABLE cdrs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, account_id TEXT,
    source TEXT NOT NULL, caller TEXT NOT NULL, callee_dialed TEXT NOT NULL,
    callee_normalised TEXT, callee_sent TEXT, gateway_id TEXT, route_prefix TEXT,
    invite_at TEXT NOT NULL, ring_at TEXT, answer_at TEXT, end_at TEXT NOT NULL,
    duration REAL NOT NULL, billsec INTEGER NOT NULL, pdd REAL, hangup_side TEXT,
    end_reason TEXT NOT NULL, status INTEGER NOT NULL, q850 INTEGER NOT NULL, sell_rate TEXT,
    sell_cost TEXT, buy_rate TEXT, buy_cost TEXT, attempts TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


def test_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    assert migrate(missing, dry_run=True) == [1, 2, 3, 4, 5]
    assert not missing.exists()
    db = legacy_file(tmp_path)
    before = schema_of(db)
    assert migrate(db, dry_run=True) == [1, 2, 3, 4, 5]
    assert schema_of(db) == before
    assert current_version(db) == 0


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "cdr.sqlite"
    migrate(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (99, 'from the future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="schema version 99 is newer than this switch's 5"):
        migrate(db)
    with pytest.raises(SchemaError, match="version 99"):
        CdrStore(db)


# -- PostgreSQL ------------------------------------------------------------------------


def pg_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_a_fresh_postgres_database_gets_every_version_once(postgres: Postgres) -> None:
    url = postgres.database()
    assert current_version(url) == 0
    assert migrate(url, dry_run=True) == [1, 2, 3, 4, 5]
    assert pg_tables(url) == set()  # the dry run created nothing, not even schema_version
    assert migrate(url) == [1, 2, 3, 4, 5]
    assert migrate(url) == []
    assert current_version(url) == 5
    assert pg_tables(url) == {
        "cdrs",
        "switch_runs",
        "open_calls",
        "ledger",
        "registrations",
        "schema_version",
    }


def test_postgres_has_the_sqlite_columns_in_the_same_order(
    postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.database()
    migrate(url)
    db = tmp_path / "cdr.sqlite"
    migrate(db)
    with psycopg.connect(url) as conn:
        for table in ("cdrs", "switch_runs", "open_calls", "ledger", "registrations"):
            pg = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                    " ORDER BY ordinal_position",
                    (table,),
                )
                if (table, r[0]) != ("ledger", "tx")  # PostgreSQL's commit order: its own
            ]
            assert pg == [r[1] for r in sqlite_rows(db, f"PRAGMA table_info({table})")], table
        money = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name IN ('cdrs', 'ledger')"
            " AND column_name IN ('sell_rate', 'sell_cost', 'buy_rate', 'buy_cost', 'amount',"
            " 'balance_after')"
        ).fetchall()
    assert {t for _, t in money} <= {"numeric", "bigint"}  # never a float


def test_two_migrators_at_once_apply_each_migration_once(postgres: Postgres) -> None:
    url = postgres.database()
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[], [1, 2, 3, 4, 5]]


def test_the_postgres_store_refuses_an_unmigrated_database(postgres: Postgres) -> None:
    url = postgres.database()
    with pytest.raises(StoreError, match="softswitch migrate") as refused:
        open_cdr_store(url)
    assert "schema version 0, this switch needs 5" in str(refused.value)
    assert pg_tables(url) == set()  # the switch never migrates a shared database itself


def test_a_newer_postgres_schema_is_refused(postgres: Postgres) -> None:
    url = postgres.database()
    migrate(url)
    assert migrations.latest_version(url) == 5
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO schema_version (version, description) VALUES (6, 'next')")
    with pytest.raises(SchemaError, match="newer than this switch's 5"):
        open_cdr_store(url)


def test_migrate_command_dry_run_then_apply(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.database()
    out, err = io.StringIO(), io.StringIO()
    assert migrate_command(None, url, dry_run=True, out=out, err=err) == 0
    assert "would apply 1: baseline" in out.getvalue()
    assert "would apply 2: cdrs.caller_id" in out.getvalue()
    assert "would apply 3: registrations.credentials" in out.getvalue()
    assert "would apply 4: registrations_expires_at" in out.getvalue()
    assert "would apply 5: registrations.path" in out.getvalue()
    assert "dry run: nothing changed" in out.getvalue()
    assert current_version(url) == 0
    out = io.StringIO()
    assert migrate_command(None, url, out=out, err=err) == 0
    assert "applied 1: baseline" in out.getvalue()
    assert "at version 5 (5 migration(s) applied)" in out.getvalue()
    out = io.StringIO()
    assert migrate_command(None, url, out=out, err=err) == 0
    assert "(0 migration(s) applied)" in out.getvalue()
    assert err.getvalue() == ""


def test_migrate_command_reads_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "switch.toml").write_text('[server]\ndatabase = "state/cdr.sqlite"\n')
    import argparse

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["migrate", "--config", str(tmp_path / "switch.toml"), "--dry-run"])
    assert dispatch(args) == 0
    assert not (tmp_path / "state" / "cdr.sqlite").exists()
    out = io.StringIO()
    assert migrate_command(str(tmp_path / "switch.toml"), None, out=out) == 0
    assert current_version(tmp_path / "state" / "cdr.sqlite") == 5


def test_migrate_command_names_an_unreachable_database() -> None:
    out, err = io.StringIO(), io.StringIO()
    url = "postgresql://nobody:secret@127.0.0.1:1/none"
    assert migrate_command(None, url, out=out, err=err) == 1
    assert err.getvalue().startswith("error: postgresql://nobody:***@127.0.0.1:1/none:")
    assert "secret" not in err.getvalue()
