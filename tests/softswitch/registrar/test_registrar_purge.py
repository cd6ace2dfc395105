"""The rows expired long ago (tombstones, expiries) purged while the switch runs, not only at
its next start: the keeper's sweep has its writer delete, once a ``purge_interval``, the rows
expired more than ``KEEP_EXPIRED`` seconds ago, in the writer's thread; rows expired more
recently (a tombstone still guarding against an older REGISTER) and live rows stay; a
process that is not the keeper does not purge; a purge that fails is logged once and retried,
and the writer goes on writing. On SQLite and PostgreSQL.

Time is the ``now`` given to ``Registrar.sweep``; the rows are written by a writer of their
own (another worker's, or another node's), so the keeper purges rows it never indexed."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from registrar_support import NullSink, binding, make_snapshot

from postgres_tool import Postgres, either_database, postgres
from softswitch.call.live import LiveState
from softswitch.proxy.pipeline import Pipeline
from softswitch.registrar import Binding, BindingWriter, Registrar, Registrations, load
from softswitch.registrar.store import _LIVE, _PURGE, _PURGE_PG, KEEP_EXPIRED, SELECT_BINDINGS
from softswitch.sip.digest import DigestAuthenticator
from softswitch.store.migrations import migrate
from softswitch.store.postgres_connect import connect, is_postgres_url

__all__ = ["either_database", "postgres"]

#: Seconds between purges in these tests (the switch's is ``PURGE_INTERVAL``).
EVERY = 60.0
_processes = itertools.count()


class Process:
    """One switch process's registrar and writer on ``database`` (``keeper``: the one that
    deletes expired rows, as the primary of several workers, or each node's)."""

    def __init__(self, tmp_path: Path, database: Path | str, *, keeper: bool = True) -> None:
        where = tmp_path / f"process{next(_processes)}"
        where.mkdir()
        snapshot = make_snapshot(where)
        nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
        live = LiveState()
        self.bindings = Registrations()
        pipeline = Pipeline(snapshot, live, nonces, NullSink(), registrations=self.bindings)
        self.writer = BindingWriter(database)
        self.registrar = Registrar(
            self.bindings,
            self.writer,
            snapshot=lambda: pipeline.snapshot,
            nonces=nonces,
            live=live,
            guard=pipeline.guard,
            keeper=keeper,
        )
        self.registrar.purge_interval = EVERY

    def sweep(self, now: float) -> None:
        self.registrar.sweep(now)
        assert self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def keeper(tmp_path: Path, database: Path | str) -> Iterator[Process]:
    process = Process(tmp_path, database)
    yield process
    process.close()


def execute(database: Path | str, statement: str) -> None:
    if is_postgres_url(database):
        with connect(str(database)) as remote:
            remote.execute(statement)
        return
    local = sqlite3.connect(database)
    try:
        with local:
            local.executescript(statement)
    finally:
        local.close()


def contacts(database: Path | str) -> list[str]:
    """The contacts of every row of the table, live or not."""
    select = "SELECT contact FROM registrations ORDER BY contact"
    if is_postgres_url(database):
        with connect(str(database)) as remote:
            return [r[0] for r in remote.execute(select).fetchall()]
    local = sqlite3.connect(database)
    try:
        return [r[0] for r in local.execute(select).fetchall()]
    finally:
        local.close()


def written(database: Path | str, *, puts: list[Binding], tombstones: dict[str, float]) -> None:
    """Rows committed by another process's writer: ``puts``, then the unregisters of the
    contacts ``tombstones`` names (at the second given)."""
    other = BindingWriter(database)
    try:
        other.put(puts)
        assert other.flush()
        by_contact = {b.contact: b for b in puts}
        for contact, at in tombstones.items():
            other.remove([by_contact[contact]], tombstone_at=at)
        assert other.flush()
    finally:
        other.close()


def contact(name: str) -> str:
    return f"sip:{name}@192.0.2.50:5060"


def aged(database: Path | str, now: float) -> None:
    """Rows of every age at ``now``: expired or unregistered long ago, recently, and live."""
    long_ago = now - KEEP_EXPIRED - 10
    recently = now - KEEP_EXPIRED + 30  # expired, kept for 30 more seconds
    puts = [
        binding(contact("old-tombstone"), registered_at=long_ago - 100, expires_at=now + 3600),
        binding(contact("old-expired"), registered_at=long_ago - 600, expires_at=long_ago),
        binding(contact("new-tombstone"), registered_at=now - 100, expires_at=now + 3600),
        binding(contact("new-expired"), registered_at=recently - 600, expires_at=recently),
        binding(contact("live"), registered_at=now - 100, expires_at=now + 3600),
    ]
    written(
        database,
        puts=puts,
        tombstones={contact("old-tombstone"): long_ago, contact("new-tombstone"): now - 10},
    )


class Elapsing:
    """Seconds passing after ``now``, as the keeper sees them: its clock moves on (the purge
    interval goes by it). On PostgreSQL the purge goes by the database's clock too, which a
    test cannot move on: the rows are made older by as much instead."""

    def __init__(self, database: Path | str, now: float) -> None:
        self.database = database
        self.now = now
        self._aged = 0.0

    def after(self, seconds: float) -> float:
        """The keeper's ``now``, ``seconds`` after the start."""
        if is_postgres_url(self.database):
            older = seconds - self._aged
            execute(
                self.database,
                f"UPDATE registrations SET expires_at = expires_at - {older},"
                f" registered_at = registered_at - {older}",
            )
            self._aged = seconds
        return self.now + seconds


def test_the_keepers_sweep_purges_what_expired_long_ago_and_keeps_the_rest(
    database: Path | str, keeper: Process
) -> None:
    now = time.time()
    aged(database, now)
    assert len(contacts(database)) == 5
    keeper.sweep(now)
    assert contacts(database) == [contact("live"), contact("new-expired"), contact("new-tombstone")]
    # The tombstone still there keeps out an older REGISTER committed after it.
    written(
        database,
        puts=[binding(contact("new-tombstone"), registered_at=now - 50, expires_at=now + 3600)],
        tombstones={},
    )
    assert [b.contact for b in load(database, now)] == [contact("live")]
    # Not purged again before the interval is over, even though a row is old enough by then.
    time_passes = Elapsing(database, now)
    keeper.sweep(time_passes.after(31))
    assert contact("new-expired") in contacts(database)
    keeper.sweep(time_passes.after(EVERY))
    assert contacts(database) == [contact("live"), contact("new-tombstone")]
    keeper.sweep(time_passes.after(KEEP_EXPIRED + EVERY))
    assert contacts(database) == [contact("live")]


def test_a_node_whose_clock_runs_ahead_purges_by_the_databases_clock(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Nodes sharing a PostgreSQL do not share a clock: a keeper whose clock runs a day
    ahead deletes what expired ``KEEP_EXPIRED`` seconds ago by the database's clock (the
    purge runs), not the other nodes' live bindings, nor the rows expired or unregistered
    just now (a tombstone still keeping an older REGISTER out)."""
    database = postgres.database()
    migrate(database)
    with connect(database) as remote:
        (now,) = remote.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    aged(database, now)
    keeper = Process(tmp_path, database)
    try:
        keeper.sweep(now + 86400.0)
        assert contacts(database) == [
            contact("live"),
            contact("new-expired"),
            contact("new-tombstone"),
        ]
        # The same at a start (``load`` purges too), the binding still live by then.
        assert [b.contact for b in load(database, now + 60)] == [contact("live")]
        assert len(contacts(database)) == 3
    finally:
        keeper.close()


def test_purges_asked_for_before_the_writer_takes_them_are_one(
    database: Path | str, keeper: Process, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    aged(database, now)
    caplog.set_level(logging.DEBUG, logger="softswitch.registrar")
    writer = keeper.writer
    with writer._cond:  # the writer's thread cannot take them before all three are asked
        writer.purge(now - 1000)
        writer.purge(now)
        writer.purge(now - 500)
    assert writer.flush()
    purged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("purged")]
    assert len(purged) == 1
    assert purged[0].startswith("purged 2 registrations")  # at the latest ``now`` asked
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    assert contacts(database) == [contact("live"), contact("new-expired"), contact("new-tombstone")]
    caplog.clear()
    writer.purge(now)
    assert writer.flush()
    assert [r.getMessage() for r in caplog.records] == [
        f"purged 0 registrations expired before {now - KEEP_EXPIRED:.0f}"
    ]
    assert caplog.records[0].levelno == logging.DEBUG


def test_a_process_that_is_not_the_keeper_does_not_purge(
    tmp_path: Path, database: Path | str, keeper: Process
) -> None:
    now = time.time()
    aged(database, now)
    other = Process(tmp_path, database, keeper=False)
    try:
        for later in (0.0, EVERY, 10 * EVERY):
            other.sweep(now + later)
            assert len(contacts(database)) == 5
        other.writer.put([binding(contact("other"), registered_at=now, expires_at=now + 60)])
        assert other.writer.flush()
        assert len(contacts(database)) == 6
    finally:
        other.close()
    keeper.sweep(now)
    assert contact("old-tombstone") not in contacts(database)


def test_several_keepers_on_one_database_purge_the_same_rows_without_error(
    tmp_path: Path, database: Path | str, keeper: Process, caplog: pytest.LogCaptureFixture
) -> None:
    """Each node's keeper purges the shared table; deleting a row twice is deleting it once."""
    now = time.time()
    aged(database, now)
    others = [Process(tmp_path, database) for _ in range(3)]
    try:
        for process in [keeper, *others]:
            process.registrar.sweep(now)
        for process in [keeper, *others]:
            assert process.writer.flush()
    finally:
        for process in others:
            process.close()
    assert contacts(database) == [contact("live"), contact("new-expired"), contact("new-tombstone")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failing_purge_is_logged_once_retried_and_does_not_stop_the_writer(
    database: Path | str, keeper: Process, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    aged(database, now)
    caplog.set_level(logging.DEBUG, logger="softswitch.registrar")
    if is_postgres_url(database):
        execute(
            database,
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'deleting refused'; END $$;"
            " CREATE TRIGGER refuse BEFORE DELETE ON registrations"
            " FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
    else:
        execute(
            database,
            "CREATE TRIGGER refuse BEFORE DELETE ON registrations"
            " BEGIN SELECT RAISE(ABORT, 'deleting refused'); END;",
        )
    keeper.sweep(now)
    keeper.sweep(now + EVERY)  # failing again: not another ERROR
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "purging expired registrations failed" in errors[0].getMessage()
    assert "deleting refused" in errors[0].getMessage()
    assert len(contacts(database)) == 5
    # The writer goes on: later changes land.
    later = binding(contact("later"), registered_at=now + EVERY, expires_at=now + 3600)
    keeper.writer.put([later])
    assert keeper.writer.flush()
    assert contact("later") in contacts(database)
    # Retried at the next purge once deleting works again.
    execute(
        database,
        "DROP TRIGGER refuse ON registrations"
        if is_postgres_url(database)
        else "DROP TRIGGER refuse",
    )
    keeper.sweep(now + 2 * EVERY)
    assert contact("old-tombstone") not in contacts(database)
    assert contact("old-expired") not in contacts(database)
    assert contact("later") in contacts(database)
    assert "purging expired registrations works again" in caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_a_purge_on_postgresql_skips_a_row_another_transaction_holds(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Several nodes' writers and keepers share the table: a purge never waits for a row
    another transaction locked (so it never deadlocks with it); that row goes next time."""
    database = postgres.database()
    migrate(database)
    keeper = Process(tmp_path, database)
    try:
        now = time.time()
        aged(database, now)
        with connect(database) as holder, holder.transaction():
            holder.execute(
                "SELECT 1 FROM registrations WHERE contact = %s FOR UPDATE",
                (contact("old-expired"),),
            )
            started = time.monotonic()
            keeper.sweep(now)
            assert time.monotonic() - started < 5.0
            assert contact("old-tombstone") not in contacts(database)
            assert contact("old-expired") in contacts(database)
        keeper.sweep(now + EVERY)
        assert contact("old-expired") not in contacts(database)
    finally:
        keeper.close()


def test_the_running_sweep_purges(tmp_path: Path, database: Path | str) -> None:
    """``sweep_forever`` as the switch runs it, with a purge every sweep here."""
    now = time.time()
    aged(database, now)
    process = Process(tmp_path, database)
    process.registrar.purge_interval = 0.0

    async def main() -> None:
        sweeper = asyncio.create_task(process.registrar.sweep_forever(interval=0.05))
        try:
            deadline = time.monotonic() + 10.0
            while contact("old-tombstone") in await asyncio.to_thread(contacts, database):
                assert time.monotonic() < deadline, "not purged while running"
                await asyncio.sleep(0.05)
        finally:
            sweeper.cancel()

    try:
        asyncio.run(main())
    finally:
        process.close()
    assert contact("live") in contacts(database)
    assert contact("new-tombstone") in contacts(database)


def test_a_change_the_database_cannot_take_does_not_stop_the_writer(
    database: Path | str, keeper: Process, caplog: pytest.LogCaptureFixture
) -> None:
    """Text the database cannot encode (a surrogate, as the SIP parser keeps an undecodable
    byte) fails its commit, logged; the writer goes on and later changes land. (The registrar
    escapes such text first, ``store.storable``: this is the writer's own guard.)"""
    now = time.time()
    caplog.set_level(logging.ERROR, logger="softswitch.registrar")
    bad = dataclasses.replace(
        binding(contact("bad"), registered_at=now, expires_at=now + 3600), user_agent="\udcff"
    )
    keeper.writer.put([bad])
    assert keeper.writer.flush()
    assert "writing 1 registration changes failed" in caplog.text
    later = binding(contact("later"), registered_at=now, expires_at=now + 3600)
    keeper.writer.put([later])
    assert keeper.writer.flush()
    assert contact("later") in contacts(database)


def test_the_purge_finds_its_rows_by_the_index_and_the_start_reads_the_table(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Migration 4's index serves the purge, rows to delete or not, on both dialects (on
    PostgreSQL the cutoff must be known to the planner: one from a CTE made it scan the
    table); the read of the live rows at a start, nearly every row, does not go through
    it."""
    now = time.time()
    live = [
        binding(f"sip:l{n}@192.0.2.1:5060", registered_at=now, expires_at=now + 3600)
        for n in range(5000)
    ]
    long_ago = now - 2 * KEEP_EXPIRED
    dead = [
        binding(f"sip:d{n}@192.0.2.1:5060", registered_at=long_ago - 600, expires_at=long_ago)
        for n in range(20)
    ]
    purge_args = {"before": now - KEEP_EXPIRED, "keep": KEEP_EXPIRED}
    url = postgres.database()
    migrate(url)
    for database in (url, tmp_path / "registrations.sqlite"):
        writer = BindingWriter(database)
        writer.put(live + dead)
        assert writer.flush()
        writer.close()
        with connect(database) if is_postgres_url(database) else sqlite3.connect(database) as c:
            c.execute("ANALYZE registrations")
            if is_postgres_url(database):
                plan = "\n".join(
                    r[0] for r in c.execute("EXPLAIN (ANALYZE) " + _PURGE_PG, purge_args)
                )
                live_read = "\n".join(
                    r[0]
                    for r in c.execute(
                        "EXPLAIN " + SELECT_BINDINGS + _LIVE.replace("?", "%s"), (now,)
                    )
                )
            else:
                plan = str(c.execute("EXPLAIN QUERY PLAN " + _PURGE, (now,)).fetchall())
                live_read = str(
                    c.execute("EXPLAIN QUERY PLAN " + SELECT_BINDINGS + _LIVE, (now,)).fetchall()
                )
        assert "registrations_expires_at" in plan, plan
        assert "Seq Scan on registrations" not in plan, plan
        assert "registrations_expires_at" not in live_read, live_read
        assert {b.contact for b in load(database, now)} == {b.contact for b in live}
