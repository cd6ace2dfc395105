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
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

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


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(REGISTRATIONS_SCHEMA)  # cdr.SCHEMA has it; a bare file may not
    return conn


def _row(binding: Binding) -> tuple[object, ...]:
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
        int(b.nat),
        b.registered_at,
        b.user_agent,
    )


def load(path: str | Path, now: float) -> list[Binding]:
    """The bindings still live at ``now`` (wall-clock seconds); the expired are deleted."""
    conn = _connect(Path(path))
    try:
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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _connect(self.path).close()  # the table exists (and errors surface) before any call
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
        conn = _connect(self.path)
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._pending) or self._closed)
                    batch, self._pending = self._pending, {}
                    self._idle = not batch
                    closing = self._closed
                if batch:
                    self._commit(conn, batch)
                    with self._cond:
                        self._idle = True
                        self._cond.notify_all()
                if closing and not batch:
                    return
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, batch: dict[tuple[str, str], Binding | None]
    ) -> None:
        upserts = [_row(b) for b in batch.values() if b is not None]
        deletes = [key for key, b in batch.items() if b is None]
        try:
            with conn:
                if deletes:
                    conn.executemany(_DELETE, deletes)
                if upserts:
                    conn.executemany(_UPSERT, upserts)
        except sqlite3.Error as e:
            # Lost changes are a client re-registering later than it could be called,
            # not a wrong call: logged, not retried (the next change of a contact rewrites it).
            logger.error("writing %d registration changes failed: %s", len(batch), e)
