"""Bindings on disk: the ``registrations`` table of the switch's SQLite database.

A restart must not forget who is registered: a phone or PBX re-registers only when its
registration is about to expire, possibly an hour later, and until then it could not be
called. So every change is written to ``[server] database`` (the CDR file: the table is
part of ``cdr.SCHEMA``, created with the others), and :func:`load` reads the live ones back
at start, deleting the expired.

Writing never blocks the event loop. :class:`BindingWriter` has a thread of its own, not
the CDR writer's queue: that queue's items are the call records' (a CDR, a call start, a
reservation), committed with fsync, and a binding is a different kind of record whose
latest state is all that matters. Changes are *coalesced* by (account, contact) until the
thread takes them: at a high REGISTER rate a contact refreshed twice before a commit is
written once, and one transaction carries everything pending. The connection uses
``synchronous = NORMAL`` (WAL): a power cut may lose the last refreshes, which the clients
repeat anyway; it never corrupts the file. The writer and the CDR writer share the file,
each with its own connection; SQLite's lock (waited for up to 30 s) orders them.

With ``[server] database`` a ``postgresql://`` URL the same table lives in PostgreSQL
(created by ``softswitch migrate``), written the same way from the same thread; an upsert
there is ``INSERT ... ON CONFLICT DO UPDATE``, and the commits use
``synchronous_commit = off`` for the same reason SQLite's use ``NORMAL``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from softswitch.store.postgres_connect import connect as connect_postgres
from softswitch.store.postgres_connect import is_postgres_url

from .bindings import Binding

__all__ = ["REGISTRATIONS_SCHEMA", "BindingWriter", "load"]

logger = logging.getLogger("softswitch.registrar")

REGISTRATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    account_id    TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    expires_at    REAL    NOT NULL,
    q             REAL    NOT NULL,
    call_id       TEXT    NOT NULL,
    cseq          INTEGER NOT NULL,
    transport     TEXT    NOT NULL,
    source_ip     TEXT    NOT NULL,
    source_port   INTEGER NOT NULL,
    nat           INTEGER NOT NULL,
    registered_at REAL    NOT NULL,
    user_agent    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, contact)
);
"""

_COLUMNS = (
    "account_id",
    "contact",
    "expires_at",
    "q",
    "call_id",
    "cseq",
    "transport",
    "source_ip",
    "source_port",
    "nat",
    "registered_at",
    "user_agent",
)
_UPSERT = (
    f"INSERT OR REPLACE INTO registrations ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_DELETE = "DELETE FROM registrations WHERE account_id = ? AND contact = ?"
_UPSERT_PG = (
    f"INSERT INTO registrations ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    " ON CONFLICT (account_id, contact) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[2:])
)
_DELETE_PG = "DELETE FROM registrations WHERE account_id = %s AND contact = %s"

#: ``[server] database``: a SQLite file, or a PostgreSQL URL.
Database = str | Path


def _connect(database: Database) -> Any:
    if is_postgres_url(database):
        remote = connect_postgres(str(database), application="softswitch registrar")
        remote.execute("SET synchronous_commit = off")
        return remote
    conn = sqlite3.connect(database, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(REGISTRATIONS_SCHEMA)  # cdr.SCHEMA has it; a bare file may not
    return conn


def _row(binding: Binding, *, postgres: bool = False) -> tuple[object, ...]:
    b = binding
    return (
        b.account_id,
        b.contact,
        b.expires_at,
        b.q,
        b.call_id,
        b.cseq,
        b.transport,
        b.source_ip,
        b.source_port,
        bool(b.nat) if postgres else int(b.nat),
        b.registered_at,
        b.user_agent,
    )


def load(database: Database, now: float) -> list[Binding]:
    """The bindings still live at ``now`` (wall-clock seconds); the expired are deleted."""
    postgres = is_postgres_url(database)
    conn = _connect(database if postgres else Path(database))
    try:
        if postgres:
            conn.execute("DELETE FROM registrations WHERE expires_at <= %s", (now,))
        else:
            with conn:
                conn.execute("DELETE FROM registrations WHERE expires_at <= ?", (now,))
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM registrations").fetchall()
    finally:
        conn.close()
    return [
        Binding(
            account_id=r[0],
            contact=r[1],
            expires_at=float(r[2]),
            q=float(r[3]),
            call_id=r[4],
            cseq=int(r[5]),
            transport=r[6],
            source_ip=r[7],
            source_port=int(r[8]),
            nat=bool(r[9]),
            registered_at=float(r[10]),
            user_agent=r[11],
        )
        for r in rows
    ]


class BindingWriter:
    """Writes binding changes in a thread of its own, the latest change per contact."""

    def __init__(self, database: Database) -> None:
        self.postgres = is_postgres_url(database)
        self.database: Database = database if self.postgres else Path(database)
        _connect(self.database).close()  # the table exists (and errors surface) before any call
        self._pending: dict[tuple[str, str], Binding | None] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._idle = True
        self._thread = threading.Thread(target=self._run, name="registrar-writer", daemon=True)
        self._thread.start()

    def put(self, bindings: Iterable[Binding]) -> None:
        self._queue({b.key: b for b in bindings})

    def remove(self, bindings: Iterable[Binding]) -> None:
        self._queue({b.key: None for b in bindings})

    def _queue(self, changes: dict[tuple[str, str], Binding | None]) -> None:
        if not changes:
            return
        with self._cond:
            if self._closed:
                raise RuntimeError("BindingWriter is closed")
            self._pending.update(changes)
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._idle, timeout)

    def close(self) -> None:
        """Commit what is pending and stop the thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        conn = _connect(self.database)
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._pending) or self._closed)
                    batch, self._pending = self._pending, {}
                    self._idle = not batch
                    closing = self._closed
                if batch:
                    if self.postgres and conn.closed:  # the connection was lost: a new one
                        conn = _reconnect(self.database, conn)
                    self._commit(conn, batch)
                    with self._cond:
                        self._idle = True
                        self._cond.notify_all()
                if closing and not batch:
                    return
        finally:
            conn.close()

    def _commit(self, conn: Any, batch: dict[tuple[str, str], Binding | None]) -> None:
        upserts = [_row(b, postgres=self.postgres) for b in batch.values() if b is not None]
        deletes = [key for key, b in batch.items() if b is None]
        try:
            if self.postgres:
                with conn.transaction(), conn.cursor() as cursor:
                    _write(cursor, _DELETE_PG, deletes, _UPSERT_PG, upserts)
            else:
                with conn:
                    _write(conn, _DELETE, deletes, _UPSERT, upserts)
        except (sqlite3.Error, psycopg.Error) as e:
            # Lost changes are a client re-registering later than it could be called,
            # not a wrong call: logged, not retried (the next change of a contact rewrites it).
            logger.error("writing %d registration changes failed: %s", len(batch), e)


def _reconnect(database: Database, conn: Any) -> Any:
    """A new connection, or the old (closed) one when the database is still unreachable:
    the commit then fails and is logged, and the next batch tries again."""
    try:
        return _connect(database)
    except psycopg.Error as e:
        logger.error("reconnecting to the registrations database failed: %s", e)
        return conn


def _write(
    target: Any,
    delete: str,
    deletes: Sequence[tuple[str, str]],
    upsert: str,
    upserts: Sequence[tuple[object, ...]],
) -> None:
    if deletes:
        target.executemany(delete, deletes)
    if upserts:
        target.executemany(upsert, upserts)
