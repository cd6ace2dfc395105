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

With several workers (or nodes) each writes the REGISTERs it took, and the writers' commits
are not ordered across processes, so no write trusts its turn: a row is replaced only by a
binding registered at the same second or later (``registered_at``); an unregister is written
as a *tombstone* (the row kept, registered at the unregistering REGISTER's second and
expiring at it) so that an older REGISTER committed after it does not bring the contact back
(one process on SQLite, the only writer, deletes the row instead; on PostgreSQL other nodes
may write too); and an expiry or a reload's drop is deleted only if no later REGISTER
replaced the row (``BindingWriter.retire``). The rows expired (tombstones included) more
than :data:`KEEP_EXPIRED` seconds ago, long after any writer committed what it held, are
deleted by :func:`load` at start and, while the switch runs, by the keeper's writer
(``BindingWriter.purge``, asked for once a minute by ``Registrar.sweep``): a switch that runs
for months would otherwise keep every unregister and every expiry it did not retire, and
each node's listener reads them all again whenever it reconnects.

With ``[server] database`` a ``postgresql://`` URL the same table lives in PostgreSQL
(created by ``softswitch migrate``), written the same way from the same thread; an upsert
there is ``INSERT ... ON CONFLICT DO UPDATE``, and the commits use
``synchronous_commit = off`` for the same reason SQLite's use ``NORMAL``. Several nodes may
share that database, so each change the table took is also announced, in its transaction,
on the :data:`CHANNEL` of PostgreSQL's ``NOTIFY`` (``registrar.node_sync`` listens): the
binding itself, fingerprint included (the table keeps none), or the row deleted. Only a
change the table took is announced (an older REGISTER the ordering rule refused is not), and
PostgreSQL delivers notifications in commit order, so a listener replaying them replays the
table's own history.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import psycopg

from softswitch.store.postgres_connect import connect as connect_postgres
from softswitch.store.postgres_connect import is_postgres_url

from .bindings import Binding

__all__ = [
    "BINDING_COLUMNS",
    "CHANNEL",
    "EXPIRY_INDEX",
    "KEEP_EXPIRED",
    "READ_ALL",
    "REGISTRATIONS_SCHEMA",
    "SELECT_BINDINGS",
    "BindingWriter",
    "add_credentials_column",
    "add_expiry_index",
    "add_path_column",
    "binding_of",
    "binding_of_notice",
    "gone_notice",
    "load",
    "put_notice",
    "storable",
]

logger = logging.getLogger("softswitch.registrar")

#: The table as schema migration 1 makes it; migration 3 adds ``credentials`` (the
#: fingerprint of the credentials a binding's REGISTER passed, ``registrar.credentials``),
#: migration 4 an index on ``expires_at`` (:data:`EXPIRY_INDEX`), migration 5 ``path`` (the
#: REGISTER's Path, RFC 3327).
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

#: Schema migration 4: the rows by expiry, so that a purge (each node's keeper's, once a
#: minute) and :func:`load` read the rows expired long ago only, not the whole table.
EXPIRY_INDEX = "CREATE INDEX IF NOT EXISTS registrations_expires_at ON registrations (expires_at)"

#: A binding's fields, in the table's column order (the workers' journal writes them too).
BINDING_COLUMNS = (
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
    "credentials",
    "path",
)
#: Every row's binding fields (``binding_of`` reads them back): the read at a start, and the
#: other nodes' listeners' (``node_sync``).
SELECT_BINDINGS = f"SELECT {', '.join(BINDING_COLUMNS)} FROM registrations"
#: Seconds an expired row (a tombstone too) is kept before :func:`load` or a purge
#: (``BindingWriter.purge``) deletes it: longer than any writer holds a change it has not
#: committed (SQLite's lock waits up to 30 s).
KEEP_EXPIRED = 300.0

#: A row is replaced by a binding registered at the same second or later only: another
#: worker's writer may commit an older REGISTER (or its tombstone) after a newer one.
_NEWER = " WHERE excluded.registered_at >= registrations.registered_at"
_UPSERT = (
    f"INSERT INTO registrations ({', '.join(BINDING_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(BINDING_COLUMNS))})"
    " ON CONFLICT (account_id, contact) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in BINDING_COLUMNS[2:])
    + _NEWER
)
#: A retired binding's row goes unless a later REGISTER (another worker's, say) replaced it.
_RETIRE = "DELETE FROM registrations WHERE account_id = ? AND contact = ? AND registered_at <= ?"
_UPSERT_PG = _UPSERT.replace("?", "%s")
_RETIRE_PG = _RETIRE.replace("?", "%s")
#: A binding's fields as a notice carries them: the table's columns and the fingerprint.
_FIELDS = tuple(f.name for f in dataclasses.fields(Binding))
#: PostgreSQL's ``NOTIFY`` channel of the changes the table took (``registrar.node_sync``).
CHANNEL = "softswitch_registrations"
#: The longest ``NOTIFY`` payload PostgreSQL takes is 8000 bytes; a change whose notice
#: would not fit is announced as :data:`READ_ALL` (the listeners read the table again).
_NOTICE_MAX = 7999
READ_ALL = '["all"]'
#: A change is announced only when the table took it (``RETURNING`` gives its row then): an
#: older REGISTER refused by ``_NEWER``, or a retire a later REGISTER beat, is not.
_UPSERT_NOTIFY = f"WITH changed AS ({_UPSERT_PG} RETURNING 1) SELECT pg_notify(%s, %s) FROM changed"
_RETIRE_NOTIFY = f"WITH gone AS ({_RETIRE_PG} RETURNING 1) SELECT pg_notify(%s, %s) FROM gone"
#: Live rows: not expired, and not a tombstone (which expires the moment it is registered;
#: a REGISTER's binding never does: a zero expiry unregisters). ``+expires_at`` keeps the
#: planners off the index on ``expires_at`` (migration 4): nearly every row is live, and
#: SQLite read 100,000 of them in 327 ms through it against 190 ms straight.
_LIVE = " WHERE +expires_at > ? AND expires_at <> registered_at"
#: The live rows and the tombstones (``load(..., settled=True)``).
_LIVE_OR_TOMBSTONE = " WHERE +expires_at > ? OR expires_at = registered_at"
#: The rows expired (tombstones too) at or before a second.
_PURGE = "DELETE FROM registrations WHERE expires_at <= ?"
#: The second up to which PostgreSQL's purge goes: the one asked for (``before``), and no
#: later than the database's clock less ``keep`` (:data:`KEEP_EXPIRED`): the nodes' clocks
#: differ, and one running ahead would otherwise delete the other nodes' live bindings, and
#: the tombstones still keeping an older REGISTER out, early. ``statement_timestamp()`` is
#: stable within the statement, so the planner finds the rows by the index (a cutoff from a
#: CTE is unknown when the plan is made: it scanned the table, 13 ms per 100,000 rows).
_PURGE_CUTOFF = "LEAST(%(before)s, extract(epoch FROM statement_timestamp())::float8 - %(keep)s)"
#: The same on PostgreSQL, where several nodes' keepers may purge at once and their writers
#: upsert meanwhile: the rows are locked first, skipping any another transaction holds, so
#: a purge never waits for a lock, and so never deadlocks a writer's batch or another
#: node's purge (a row skipped goes at the next purge). A row a REGISTER replaced after
#: this statement began is checked again once locked, and kept. Gives the second used and
#: the rows deleted.
_PURGE_PG = (
    "WITH gone AS (DELETE FROM registrations WHERE (account_id, contact) IN"
    " (SELECT account_id, contact FROM registrations"
    f" WHERE expires_at <= {_PURGE_CUTOFF} FOR UPDATE SKIP LOCKED) RETURNING 1)"
    f" SELECT {_PURGE_CUTOFF}, (SELECT count(*) FROM gone)"
)

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
    add_credentials_column(conn)
    add_expiry_index(conn)
    add_path_column(conn)
    return conn


def add_credentials_column(conn: sqlite3.Connection) -> None:
    """Schema migration 3 on SQLite (``store.migrations``), and what a bare file the writer
    opens gets too: ``registrations.credentials``, "" in the rows before it."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(registrations)")}
    if "credentials" not in have:
        conn.execute("ALTER TABLE registrations ADD COLUMN credentials TEXT NOT NULL DEFAULT ''")


def add_path_column(conn: sqlite3.Connection) -> None:
    """Schema migration 5 on SQLite (``store.migrations``), and what a bare file the writer
    opens gets too: ``registrations.path``, "" in the rows before it (no Path)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(registrations)")}
    if "path" not in have:
        conn.execute("ALTER TABLE registrations ADD COLUMN path TEXT NOT NULL DEFAULT ''")


def add_expiry_index(conn: sqlite3.Connection) -> None:
    """Schema migration 4 on SQLite (``store.migrations``), and what a bare file the writer
    opens gets too: :data:`EXPIRY_INDEX`."""
    conn.execute(EXPIRY_INDEX)


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
        b.credentials,
        b.path,
    )


def load(database: Database, now: float, *, settled: bool = False) -> list[Binding]:
    """The bindings still live at ``now`` (wall-clock seconds); the rows expired more than
    :data:`KEEP_EXPIRED` seconds ago (tombstones too) are deleted (on PostgreSQL, ago by
    ``now`` and by the database's clock both: ``_PURGE_PG``).

    ``settled``: the tombstones not purged yet too, for a reader that replays changes over
    the table and must refuse the older REGISTERs they beat (``workers.registrations``),
    then drops them."""
    postgres = is_postgres_url(database)
    conn = _connect(database if postgres else Path(database))
    select = SELECT_BINDINGS + (_LIVE_OR_TOMBSTONE if settled else _LIVE)
    try:
        if postgres:
            conn.execute(_PURGE_PG, {"before": now - KEEP_EXPIRED, "keep": KEEP_EXPIRED})
            rows = conn.execute(select.replace("?", "%s"), (now,)).fetchall()
        else:
            with conn:
                conn.execute(_PURGE, (now - KEEP_EXPIRED,))
            rows = conn.execute(select, (now,)).fetchall()
    finally:
        conn.close()
    return [binding_of(r) for r in rows]


def storable(text: str) -> str:
    """``text`` as both databases store it unchanged: a byte the SIP parser could not decode
    (kept as a surrogate) as a ``\\xNN`` escape, a NUL (which PostgreSQL's text refuses) as
    ``\\x00``. A binding's free text (its User-Agent) is made so before it is kept, so the
    index, the table and the notices say the same; an encoding error in the writer would
    otherwise stop it, and a NUL lose its whole batch."""
    if text.isascii() and "\x00" not in text:
        return text
    clean = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return clean.replace("\x00", "\\x00")


def binding_of(row: Sequence[Any]) -> Binding:
    """A row of :data:`BINDING_COLUMNS` as a binding, with the fingerprint of the credentials
    its REGISTER passed ("" in a row written before schema migration 3 kept it: the index
    then judges it as made under the credentials in force, ``Registrations.stamped``)."""
    r = row
    return Binding(
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
        credentials=r[12] or "",
        path=r[13] or "",
    )


class BindingWriter:
    """Writes binding changes in a thread of its own, the latest change per contact."""

    def __init__(self, database: Database) -> None:
        self.postgres = is_postgres_url(database)
        self.database: Database = database if self.postgres else Path(database)
        _connect(self.database).close()  # the table exists (and errors surface) before any call
        self._pending: dict[tuple[str, str], Binding | _Retired] = {}
        #: The latest purge asked for and not begun yet: rows expired at or before it go.
        self._purge_before: float | None = None
        #: Whether the last purge failed (the next failure is not logged at ERROR again).
        self._purge_failed = False
        self._cond = threading.Condition()
        self._closed = False
        self._idle = True
        self._thread = threading.Thread(target=self._run, name="registrar-writer", daemon=True)
        self._thread.start()

    def put(self, bindings: Iterable[Binding]) -> None:
        self._queue({b.key: b for b in bindings})

    def remove(self, bindings: Iterable[Binding], *, tombstone_at: float | None = None) -> None:
        """Unregister. With several workers or nodes (``tombstone_at``: the unregistering
        REGISTER's wall-clock second) each binding's row becomes a tombstone registered and
        expiring then, so that a REGISTER older than it, committed later by another writer,
        does not replace it. In one process on SQLite (one writer, committing in order) the
        row is deleted, unless a later REGISTER replaced it."""
        if tombstone_at is None:
            self.retire(bindings)
            return
        # A binding dated after the unregister (made by a node whose clock runs ahead, or
        # before this one's clock stepped back) cannot be replaced by a tombstone of that
        # second (the table keeps the later row), and one dated at its own second would
        # refuse the contact's next REGISTER through this node, dated now, until the clock
        # passes it: its row is deleted instead, unless a later REGISTER replaced it.
        changes: dict[tuple[str, str], Binding | _Retired] = {}
        for b in bindings:
            later = b.registered_at > tombstone_at
            changes[b.key] = _Retired(b.registered_at) if later else _tombstone(b, tombstone_at)
        self._queue(changes)

    def retire(self, bindings: Iterable[Binding]) -> None:
        """Delete the rows of bindings that expired or a reload dropped, each unless a later
        REGISTER replaced it meanwhile: with several workers that REGISTER may have been
        written by another worker's writer, in an order this one does not know."""
        self._queue({b.key: _Retired(b.registered_at) for b in bindings})

    def purge(self, now: float) -> None:
        """Delete, in the writer's thread, the rows expired (tombstones included) more than
        :data:`KEEP_EXPIRED` seconds before ``now`` (wall-clock seconds): long after any
        writer committed a REGISTER older than a tombstone, so none can bring its contact
        back. Requests not begun yet are one purge, up to the latest ``now``. Idempotent, so
        several processes on one database (each node's keeper) may all purge.

        On PostgreSQL, shared by nodes whose clocks differ, never past :data:`KEEP_EXPIRED`
        seconds before the database's clock either (``_PURGE_PG``): a node whose clock runs
        ahead must not delete the others' live bindings, nor tombstones still needed."""
        before = now - KEEP_EXPIRED
        with self._cond:
            if self._closed:
                raise RuntimeError("BindingWriter is closed")
            if self._purge_before is None or before > self._purge_before:
                self._purge_before = before
            self._cond.notify()

    def _queue(self, changes: dict[tuple[str, str], Binding | _Retired]) -> None:
        if not changes:
            return
        with self._cond:
            if self._closed:
                raise RuntimeError("BindingWriter is closed")
            self._pending.update(changes)
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far (a purge too) is done; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_work() and self._idle, timeout)

    def _has_work(self) -> bool:
        return bool(self._pending) or self._purge_before is not None

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
                    self._cond.wait_for(lambda: self._has_work() or self._closed)
                    batch, self._pending = self._pending, {}
                    purge_before, self._purge_before = self._purge_before, None
                    work = bool(batch) or purge_before is not None
                    self._idle = not work
                    closing = self._closed
                if work:
                    if self.postgres and conn.closed:  # the connection was lost: a new one
                        conn = _reconnect(self.database, conn)
                    if batch:
                        self._commit(conn, batch)
                    if purge_before is not None:
                        self._purge(conn, purge_before)
                    with self._cond:
                        self._idle = True
                        self._cond.notify_all()
                if closing and not batch:
                    return
        finally:
            conn.close()

    def _commit(self, conn: Any, batch: dict[tuple[str, str], Binding | _Retired]) -> None:
        puts = [b for b in batch.values() if isinstance(b, Binding)]
        retired = [(*key, b.registered_at) for key, b in batch.items() if isinstance(b, _Retired)]
        try:
            if self.postgres:
                # Announced to every node in the same transaction: delivered on commit only.
                announced_puts = [
                    (*_row(b, postgres=True), CHANNEL, _notice(put_notice(b))) for b in puts
                ]
                announced_retired = [(*r, CHANNEL, _notice(gone_notice(*r))) for r in retired]
                with conn.transaction(), conn.cursor() as cursor:
                    _write(
                        cursor, _UPSERT_NOTIFY, announced_puts, _RETIRE_NOTIFY, announced_retired
                    )
            else:
                with conn:
                    _write(conn, _UPSERT, [_row(b) for b in puts], _RETIRE, retired)
        except Exception as e:  # whatever it was, the writer goes on
            # Lost changes are a client re-registering later than it could be called,
            # not a wrong call: logged, not retried (the next change of a contact rewrites it).
            logger.error("writing %d registration changes failed: %s", len(batch), e)

    def _purge(self, conn: Any, before: float) -> None:
        """Delete the rows expired at or before ``before``. No notice: every node already
        dropped them, by the tombstone's own notice or by its clock (a node that missed the
        tombstone while cut off keeps its contact until the contact expires)."""
        try:
            if self.postgres:
                before, deleted = conn.execute(
                    _PURGE_PG, {"before": before, "keep": KEEP_EXPIRED}
                ).fetchone()
            else:
                with conn:
                    deleted = conn.execute(_PURGE, (before,)).rowcount
        except Exception as e:  # whatever it was, the writer goes on
            # Retried at the next purge; one ERROR per run of failures, not one a minute.
            if self._purge_failed:
                logger.debug("purging expired registrations failed again: %s", e)
            else:
                logger.error("purging expired registrations failed (retried later): %s", e)
            self._purge_failed = True
            return
        if self._purge_failed:
            logger.warning("purging expired registrations works again")
        self._purge_failed = False
        logger.debug("purged %d registrations expired before %.0f", deleted, before)


@dataclass(frozen=True, slots=True)
class _Retired:
    """A queued delete of a binding registered at ``registered_at`` (``retire``)."""

    registered_at: float


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
    upsert: str,
    upserts: Sequence[tuple[object, ...]],
    retire: str,
    retired: Sequence[tuple[object, ...]],
) -> None:
    if upserts:
        target.executemany(upsert, upserts)
    if retired:
        target.executemany(retire, retired)


def put_notice(binding: Binding) -> list[object]:
    """The notice of a binding the table took: every field, the fingerprint included (a
    tombstone is one, registered and expiring at its unregister). A binding without a Path
    leaves that last field out: a node of the version before it (upgraded one at a time)
    still reads the notices of the bindings it could have made itself."""
    fields = [getattr(binding, name) for name in _FIELDS]
    return ["put", fields if binding.path else fields[:-1]]


#: What each field of a ``put`` notice must be, as JSON gives it back (a number may come as
#: an int or a float; a bool is never a number here).
_NOTICE_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "account_id": (str,),
    "contact": (str,),
    "expires_at": (int, float),
    "q": (int, float),
    "call_id": (str,),
    "cseq": (int,),
    "transport": (str,),
    "source_ip": (str,),
    "source_port": (int,),
    "nat": (bool,),
    "registered_at": (int, float),
    "user_agent": (str,),
    "credentials": (str,),
    "path": (str,),
}


def binding_of_notice(values: object) -> Binding:
    """The binding a ``put`` notice carries; ValueError when it is not one (any role that
    may connect may send a notice: nothing in it is taken on trust, not even its shape)."""
    if not isinstance(values, list) or len(values) not in (len(_FIELDS) - 1, len(_FIELDS)):
        raise ValueError("not a binding's fields")
    if len(values) < len(_FIELDS):  # no Path (``put_notice``)
        values = [*values, ""]
    for name, value in zip(_FIELDS, values, strict=True):
        kinds = _NOTICE_TYPES[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ValueError(f"{name}: {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: not finite")
    fields = dict(zip(_FIELDS, values, strict=True))
    for name in ("expires_at", "q", "registered_at"):
        fields[name] = float(fields[name])
    return Binding(**fields)


def gone_notice(account_id: str, contact: str, registered_at: float) -> list[object]:
    """The notice of a row deleted (an expiry, a reload's drop) unless a later REGISTER had
    replaced it: listeners drop a binding registered at ``registered_at`` or earlier."""
    return ["gone", account_id, contact, registered_at]


def _notice(change: list[object]) -> str:
    text = json.dumps(change)  # ASCII: its length is its size in bytes
    return text if len(text) <= _NOTICE_MAX else READ_ALL


def _tombstone(binding: Binding, at: float) -> Binding:
    """The row an unregister leaves: registered at ``at`` and expired at it."""
    return replace(binding, expires_at=at, registered_at=at)
