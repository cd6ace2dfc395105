"""Call detail records: one per call attempt, written durably and off the signalling path.

Every INVITE the switch accepts for processing ends in exactly one ``CdrRecord`` (answered,
failed, cancelled or refused; a 407 challenge is not an attempt). The schema and the end
reasons are documented for operators in ``docs/cdr.md``.

Durability. ``CdrStore`` is SQLite in WAL mode with ``synchronous=FULL``: a transaction is
on disk when ``COMMIT`` returns, so a ``kill -9`` (or a power cut) of the switch loses no
committed CDR. Writing happens in one writer thread fed by a queue, so the event loop never
waits for the disk: ``write()`` only enqueues and returns a ``concurrent.futures.Future``
that completes when the record is committed (the durable acknowledgement). The writer
commits whatever has queued up in one transaction (group commit), so under load many CDRs
share one fsync and at low load each is committed within a millisecond or so of ``write``.
``write_async`` awaits that acknowledgement from asyncio without blocking the loop.

Calls in progress when the process dies. At the answer the switch queues a ``CallStart``
(the CDR as known at the 2xx, and the decks that rate it); the writer commits it with the
next group commit, into ``open_calls``, referencing this process's row in ``switch_runs``.
The writer refreshes that row's ``heartbeat_at`` every ``heartbeat_interval`` seconds (one
UPDATE per process, not per call). The CDR of an answered call deletes its ``open_calls`` row
in the transaction that inserts the CDR, so a crash leaves each call either open or recorded,
never both. At start-up ``recover`` closes every row left open by a dead run with end reason
``system_failure``, ended (and billed) at that run's last heartbeat.

Only the store touches SQLite; the rest of the switch sees the ``CdrSink`` protocol, which
``store.postgres.PostgresCdrStore`` implements too (``[server] database`` chooses:
``store.opening``). The records live in ``store.records``, the writer thread in
``store.group_commit`` and the recovery rules in ``store.recovery``, shared by both stores;
the schema is migrated by ``store.migrations`` when the store opens the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from softswitch.billing.ledger import Booking
from softswitch.billing.ledger import append as append_ledger
from softswitch.store.escaping import escaped
from softswitch.store.group_commit import GroupCommitStore
from softswitch.store.migrations import migrate
from softswitch.store.records import (
    CSV_COLUMNS,
    OPEN_COLUMNS,
    AttemptRecord,
    CallStart,
    CdrAttempt,
    CdrRecord,
    CdrSink,
    Rater,
    RecoveredRun,
    Reservation,
    parse_ts,
    ts,
    write_csv,
)
from softswitch.store.recovery import (
    log_alive,
    log_recovered,
    recovered_calls,
    recovered_run,
    run_is_alive,
)
from softswitch.store.sqlite_schema import LEGACY_VERSION, SCHEMA

__all__ = [
    "CSV_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "CallStart",
    "CdrAttempt",
    "CdrRecord",
    "CdrSink",
    "CdrStore",
    "Rater",
    "RecoveredRun",
    "Reservation",
    "query_file",
    "write_csv",
]

#: The file's ``PRAGMA user_version`` (what a switch from before ``store.migrations`` reads).
SCHEMA_VERSION = LEGACY_VERSION

#: Rows per multi-row statement (27 columns each: well under SQLite's 999 bound variables).
_ROWS_PER_INSERT = 32


def _multi_row_sql(head: str, width: int, n: int) -> str:
    """``head`` followed by ``n`` rows of ``width`` positional parameters."""
    return head + ", ".join(["(" + ", ".join("?" * width) + ")"] * n)


_INSERT_ROWS = {
    n: _multi_row_sql(f"INSERT INTO cdrs ({', '.join(CSV_COLUMNS)}) VALUES ", len(CSV_COLUMNS), n)
    for n in range(1, _ROWS_PER_INSERT + 1)
}
_INSERT_OPEN = {
    n: _multi_row_sql(
        f"INSERT INTO open_calls ({', '.join(OPEN_COLUMNS)}) VALUES ", len(OPEN_COLUMNS), n
    )
    for n in range(1, _ROWS_PER_INSERT + 1)
}
#: Close the open calls of this run named by (Call-ID, answer time) pairs; the join keeps it
#: on the ``open_calls_key`` index (a row-value ``IN`` would scan the table).
_CLOSE_OPEN = {
    n: "DELETE FROM open_calls WHERE id IN (SELECT o.id FROM ("
    + _multi_row_sql("VALUES ", 2, n)
    + ") AS k JOIN open_calls AS o ON o.call_id = k.column1 AND o.answer_at = k.column2"
    " AND o.run_id = ?)"
    for n in range(1, _ROWS_PER_INSERT + 1)
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _escaped_row(row: Sequence[object]) -> list[object]:
    return [escaped(v) for v in row]


#: The runs other than ours that may leave something to settle: not recovered, and not
#: stopped cleanly or stopped with open calls left (whether each is dead is decided in Python).
_UNRECOVERED_RUNS = (
    "SELECT *, (SELECT count(*) FROM open_calls o WHERE o.run_id = switch_runs.run_id)"
    " AS open_left FROM switch_runs WHERE run_id != ? AND recovered_at IS NULL"
    " AND (stopped_at IS NULL"
    " OR EXISTS (SELECT 1 FROM open_calls o WHERE o.run_id = switch_runs.run_id))"
)


class CdrStore(GroupCommitStore[sqlite3.Connection]):
    """SQLite CDR store (WAL, ``synchronous=FULL``) with one writer thread.

    Opening creates the file, migrates its schema (``store.migrations``: errors surface
    here, not in the writer) and registers this process as a run in ``switch_runs``; the
    writer refreshes its heartbeat every ``heartbeat_interval`` seconds. Use as a context
    manager or call ``close()``, which commits everything queued first and marks the run
    stopped.
    """

    _write_errors = (sqlite3.Error, ValueError, TypeError)

    def __init__(
        self, path: str | Path, *, batch_max: int = 1000, heartbeat_interval: float = 5.0
    ) -> None:
        super().__init__(
            batch_max=batch_max, heartbeat_interval=heartbeat_interval, run_id=uuid.uuid4().hex
        )
        self.path = Path(path)
        self.host = socket.gethostname()
        migrate(self.path)
        conn = self._connect()
        try:
            started = ts(_now())
            conn.execute(
                "INSERT INTO switch_runs (run_id, host, pid, started_at, heartbeat_at,"
                " heartbeat_interval) VALUES (?, ?, ?, ?, ?, ?)",
                (self.run_id, self.host, os.getpid(), started, started, heartbeat_interval),
            )
            conn.commit()
        finally:
            conn.close()
        self._conn: sqlite3.Connection | None = None
        self._start_writer()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def __enter__(self) -> CdrStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread's side (``store.group_commit``) -------------------------------

    def _writer_connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _close_writer_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _heartbeat(self, conn: sqlite3.Connection, *, stopped: bool) -> None:
        now = ts(_now())
        with conn:
            conn.execute(
                "UPDATE switch_runs SET heartbeat_at = ?,"
                " stopped_at = CASE WHEN ? THEN ? ELSE stopped_at END WHERE run_id = ?",
                (now, stopped, now, self.run_id),
            )

    def _insert(
        self,
        conn: sqlite3.Connection,
        starts: Sequence[CallStart],
        records: Sequence[tuple[CdrRecord, Booking | None]],
        slices: Sequence[Reservation] = (),
        *,
        escape: bool = False,
    ) -> None:
        """One transaction: the call starts, then the CDRs, each answered CDR closing its
        call's start, the reservations, then the CDRs' debits to the ledger. Committed (and
        fsynced: synchronous=FULL) on exit."""
        run_id = self.run_id
        rows: list[Sequence[object]] = [record.values() for record, _ in records]
        debits = [debit for _, debit in records if debit is not None]
        opened: list[Sequence[object]] = [start.values(run_id) for start in starts]
        if escape:
            rows = [_escaped_row(row) for row in rows]
            opened = [_escaped_row(row) for row in opened]
        with conn:
            # Many rows per statement rather than ``executemany``: sqlite3 releases the GIL
            # around every statement step, and each step's GIL hand-back stalls the event
            # loop thread; a group commit of N records now costs N/32 steps, not N.
            for first in range(0, len(opened), _ROWS_PER_INSERT):
                chunk = opened[first : first + _ROWS_PER_INSERT]
                conn.execute(_INSERT_OPEN[len(chunk)], [v for row in chunk for v in row])
            for first in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[first : first + _ROWS_PER_INSERT]
                conn.execute(_INSERT_ROWS[len(part)], [v for row in part for v in row])
            # (Call-ID, answer time) of the answered CDRs: their call starts are closed.
            keys = [v for row in rows if row[11] is not None for v in (row[0], row[11])]
            for first in range(0, len(keys), 2 * _ROWS_PER_INSERT):
                pairs = keys[first : first + 2 * _ROWS_PER_INSERT]
                conn.execute(_CLOSE_OPEN[len(pairs) // 2], [*pairs, run_id])
            if slices:
                conn.executemany(
                    "UPDATE open_calls SET billed_until = ?, reserved = ?"
                    " WHERE call_id = ? AND answer_at = ? AND run_id = ?",
                    [
                        (r.billed_until, r.reserved, r.call_id, ts(r.answer_at), run_id)
                        for r in slices
                    ],
                )
            append_ledger(conn, debits, run_id)

    # -- recovery ----------------------------------------------------------------------

    def recover(self, rate: Rater | None = None) -> list[RecoveredRun]:
        """Close every call left open by a dead run: one CDR each, in one transaction.

        Dead and alive as ``store.recovery`` decides: another live switch's calls on a
        shared file are left alone. Each open call becomes a CDR with end reason
        ``system_failure``, ``hangup_side`` ``switch``, ended at its run's last heartbeat
        (never before the answer), and costed with ``rate`` for the billed seconds at the
        answer time, as a normal CDR is. The CDRs, the deletion of the open calls and the
        runs' ``recovered_at`` are one transaction, so recovering twice (or crashing while
        recovering) never writes a CDR twice. Runs in the caller's thread, on its own
        connection.
        """
        now = _now()
        recovered: list[RecoveredRun] = []
        conn = self._connect()
        conn.isolation_level = None  # explicit BEGIN IMMEDIATE: one recoverer at a time
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                runs = conn.execute(_UNRECOVERED_RUNS, (self.run_id,)).fetchall()
                for run in runs:
                    if run_is_alive(run, now, self.host):
                        log_alive(run)
                        continue
                    recovered.append(self._recover_run(conn, run, rate, now))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        log_recovered(recovered)
        return recovered

    def pending_recovery(self) -> bool:
        """Whether another run is dead with calls (or its end) not settled yet: a read
        without the write lock, so a periodic check (``store.sweep``) costs the CDR writer
        nothing while every run is alive."""
        conn = self._connect()
        try:
            runs = conn.execute(_UNRECOVERED_RUNS, (self.run_id,)).fetchall()
        finally:
            conn.close()
        now = _now()
        return any(not run_is_alive(run, now, self.host) for run in runs)

    def _recover_run(
        self, conn: sqlite3.Connection, run: sqlite3.Row, rate: Rater | None, now: dt.datetime
    ) -> RecoveredRun:
        heartbeat = parse_ts(run["heartbeat_at"]) or now
        rows = conn.execute(
            "SELECT * FROM open_calls WHERE run_id = ? ORDER BY id", (run["run_id"],)
        ).fetchall()
        records, debits = recovered_calls(rows, run, heartbeat, rate)
        # Escaped always: a call start written escaped reads back with surrogates from its JSON.
        cdr_rows = [_escaped_row(r.values()) for r in records]
        for first in range(0, len(cdr_rows), _ROWS_PER_INSERT):
            part = cdr_rows[first : first + _ROWS_PER_INSERT]
            conn.execute(_INSERT_ROWS[len(part)], [v for row in part for v in row])
        # Booked as the dead run's own rows: every live switch's meter (this one's too, which
        # skips the rows it wrote itself) then counts the debits when it next reads the ledger.
        append_ledger(conn, debits, run["run_id"])
        conn.execute("DELETE FROM open_calls WHERE run_id = ?", (run["run_id"],))
        conn.execute(
            "UPDATE switch_runs SET recovered_at = ?, recovered_calls = recovered_calls + ?"
            " WHERE run_id = ?",
            (ts(now), len(records), run["run_id"]),
        )
        return recovered_run(run, heartbeat, len(records))

    # -- reading -----------------------------------------------------------------------

    def query(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        *,
        call_id: str | None = None,
        account_id: str | None = None,
        limit: int | None = None,
    ) -> list[CdrRecord]:
        """Committed CDRs with ``since <= invite_at < until``, oldest first."""
        return query_file(
            self.path, since, until, call_id=call_id, account_id=account_id, limit=limit
        )


def query_file(
    path: str | Path,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    *,
    call_id: str | None = None,
    account_id: str | None = None,
    limit: int | None = None,
) -> list[CdrRecord]:
    """Read CDRs from a store file without starting a writer (``softswitch cdr``, the
    management API's search), oldest first, with ``since <= invite_at < until``."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if account_id is not None:
        clauses.append("account_id = :account_id")
        params["account_id"] = account_id
    if since is not None:
        clauses.append("invite_at >= :since")
        params["since"] = ts(since)
    if until is not None:
        clauses.append("invite_at < :until")
        params["until"] = ts(until)
    if call_id is not None:
        clauses.append("call_id = :call_id")
        params["call_id"] = call_id
    sql = "SELECT * FROM cdrs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY invite_at, id"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    # Read-write (but never create): a reader may have to recover the WAL after a crash.
    uri = f"{Path(path).resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    with contextlib.closing(conn):
        return [CdrRecord.from_row(row) for row in conn.execute(sql, params)]
