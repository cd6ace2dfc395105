"""The PostgreSQL CDR store: ``CdrStore``'s contract on a database several switches share.

Everything ``softswitch.cdr.CdrStore`` keeps in its SQLite file lives here in the tables of
``store.postgres_schema``: CDRs, the open calls of answered calls, the runs and their
heartbeats, the ledger's call debits, the reservations (and, through
``registrar.store``, the registrations). The writer thread, the queue and the group commit
are ``store.group_commit``'s, shared with the SQLite store; the rows are the same
``CdrRecord.values`` (PostgreSQL reads the ISO timestamps into ``timestamptz`` and the
decimal text into ``numeric``: exact, never a float).

Durability: each group commit is one transaction on a connection with
``synchronous_commit = on`` (``store.postgres_connect``), so ``write``'s future completes
only once the COMMIT is durable on the server. A lost connection fails the batch in hand
(its futures fail, its records are logged in full) and the next batch reconnects.

Several nodes. Each store is one row of ``switch_runs`` (its host and pid); the heartbeat,
the start and the stop are stamped with the *database's* clock, and recovery compares them
with that same clock, so the nodes' clocks may disagree without one node declaring another
dead. ``recover`` runs under an advisory lock (one recoverer at a time) and settles only runs
that ``store.recovery`` finds dead: stopped, or with a heartbeat older than three of its
intervals, or on this same host with its pid gone. Another node's live run is never touched.

The schema is not created here: ``softswitch migrate`` does that, and opening a database
whose schema is older than this code is refused (``store.migrations.require_current``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from softswitch.billing.ledger import Booking
from softswitch.billing.ledger import append as append_ledger

from .errors import StoreError
from .escaping import escaped
from .group_commit import GroupCommitStore
from .migrations import require_current
from .postgres_connect import Row, connect, redacted
from .records import (
    CSV_COLUMNS,
    OPEN_COLUMNS,
    CallStart,
    CdrRecord,
    Rater,
    RecoveredRun,
    Reservation,
    parse_ts,
    ts,
)
from .recovery import log_alive, log_recovered, recovered_calls, recovered_run, run_is_alive

__all__ = ["PostgresCdrStore", "query_postgres"]

#: Runs that may leave something to settle (``softswitch.cdr._UNRECOVERED_RUNS``), oldest
#: first.
_UNRECOVERED_RUNS = (
    "SELECT *, (SELECT count(*) FROM open_calls o WHERE o.run_id = switch_runs.run_id)"
    " AS open_left FROM switch_runs WHERE run_id != %s AND recovered_at IS NULL"
    " AND (stopped_at IS NULL"
    " OR EXISTS (SELECT 1 FROM open_calls o WHERE o.run_id = switch_runs.run_id))"
    " ORDER BY started_at"
)

#: ``pg_advisory_xact_lock`` key held while recovering: one recoverer at a time.
_RECOVERY_LOCK = 0x50F7CD12EC

_INSERT_CDR = (
    f"INSERT INTO cdrs ({', '.join(CSV_COLUMNS)}) VALUES ({', '.join(['%s'] * len(CSV_COLUMNS))})"
)
_INSERT_OPEN = (
    f"INSERT INTO open_calls ({', '.join(OPEN_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(OPEN_COLUMNS))})"
)
_COPY_CDRS = f"COPY cdrs ({', '.join(CSV_COLUMNS)}) FROM STDIN"
_COPY_OPEN = f"COPY open_calls ({', '.join(OPEN_COLUMNS)}) FROM STDIN"
_CLOSE_OPEN = "DELETE FROM open_calls WHERE call_id = %s AND answer_at = %s AND run_id = %s"
_RESERVE = (
    "UPDATE open_calls SET billed_until = %s, reserved = %s"
    " WHERE call_id = %s AND answer_at = %s AND run_id = %s"
)


def _escaped_row(row: Sequence[object]) -> list[object]:
    return [escaped(v, nul=True) for v in row]


Connection = psycopg.Connection[Row]


class PostgresCdrStore(GroupCommitStore[Connection]):
    """PostgreSQL CDR store with one writer thread (see the module docstring)."""

    _write_errors = (psycopg.Error, ValueError, TypeError)
    _name = "PostgresCdrStore"

    def __init__(self, url: str, *, batch_max: int = 1000, heartbeat_interval: float = 5.0) -> None:
        super().__init__(
            batch_max=batch_max, heartbeat_interval=heartbeat_interval, run_id=uuid.uuid4().hex
        )
        self.url = url
        self.host = socket.gethostname()
        require_current(url)
        with connect(url) as conn:
            conn.execute(
                "INSERT INTO switch_runs (run_id, host, pid, started_at, heartbeat_at,"
                " heartbeat_interval) VALUES (%s, %s, %s, now(), now(), %s)",
                (self.run_id, self.host, os.getpid(), heartbeat_interval),
            )
        self._conn: Connection | None = None
        self._start_writer()

    @property
    def path(self) -> Path:
        raise StoreError(
            f"{redacted(self.url)} is a PostgreSQL database, not a file: read it with query()"
        )

    def __repr__(self) -> str:
        return f"PostgresCdrStore({redacted(self.url)!r}, run_id={self.run_id!r})"

    def __enter__(self) -> PostgresCdrStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread's side (``store.group_commit``) -------------------------------

    def _writer_connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, application="softswitch cdr-writer")
        return self._conn

    def _close_writer_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _needs_escape(self, error: Exception) -> bool:
        # Surrogates fail to encode; a NUL is refused by the server (DataError).
        return isinstance(error, UnicodeEncodeError | psycopg.DataError)

    def _heartbeat(self, conn: Connection, *, stopped: bool) -> None:
        conn.execute(
            "UPDATE switch_runs SET heartbeat_at = now(),"
            " stopped_at = CASE WHEN %s THEN now() ELSE stopped_at END WHERE run_id = %s",
            (stopped, self.run_id),
        )

    def _insert(
        self,
        conn: Connection,
        starts: Sequence[CallStart],
        records: Sequence[tuple[CdrRecord, Booking | None]],
        slices: Sequence[Reservation] = (),
        *,
        escape: bool = False,
    ) -> None:
        """One transaction: the call starts, the CDRs, each answered CDR closing its call's
        start, the reservations, the CDRs' debits to the ledger. Rows go in by ``COPY`` (a
        third less of the writer's CPU per CDR than a pipelined ``executemany``:
        ``benches/cdr_write.py``), the rest by ``executemany``; the COMMIT is durable when
        it returns."""
        run_id = self.run_id
        rows: list[Sequence[object]] = [record.values() for record, _ in records]
        opened: list[Sequence[object]] = [start.values(run_id) for start in starts]
        if escape:
            rows = [_escaped_row(row) for row in rows]
            opened = [_escaped_row(row) for row in opened]
        debits = [debit for _, debit in records if debit is not None]
        with conn.transaction(), conn.cursor() as cursor:
            if opened:
                with cursor.copy(_COPY_OPEN) as copy:
                    for row in opened:
                        copy.write_row(row)
            if rows:
                with cursor.copy(_COPY_CDRS) as copy:
                    for row in rows:
                        copy.write_row(row)
                keys = [(row[0], row[11], run_id) for row in rows if row[11] is not None]
                if keys:
                    cursor.executemany(_CLOSE_OPEN, keys)
            if slices:
                cursor.executemany(
                    _RESERVE,
                    [
                        (r.billed_until, r.reserved, r.call_id, ts(r.answer_at), run_id)
                        for r in slices
                    ],
                )
            append_ledger(conn, debits, run_id)

    # -- recovery ----------------------------------------------------------------------

    def recover(self, rate: Rater | None = None) -> list[RecoveredRun]:
        """Close every call left open by a dead run: one CDR each, in one transaction (see
        ``CdrStore.recover``; dead by the database's clock, one recoverer at a time)."""
        recovered: list[RecoveredRun] = []
        with connect(self.url, application="softswitch recover") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_RECOVERY_LOCK,))
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            runs = conn.execute(_UNRECOVERED_RUNS, (self.run_id,)).fetchall()
            for run in runs:
                if run_is_alive(run, now, self.host):
                    log_alive(run)
                    continue
                recovered.append(self._recover_run(conn, run, rate, now))
        log_recovered(recovered)
        return recovered

    def pending_recovery(self) -> bool:
        """Whether another run is dead with something to settle (see
        ``CdrStore.pending_recovery``): a read without the recovery lock, on the database's
        clock."""
        with connect(self.url, application="softswitch recovery check") as conn:
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            runs = conn.execute(_UNRECOVERED_RUNS, (self.run_id,)).fetchall()
        return any(not run_is_alive(run, now, self.host) for run in runs)

    def _recover_run(
        self, conn: Connection, run: Row, rate: Rater | None, now: dt.datetime
    ) -> RecoveredRun:
        heartbeat = parse_ts(run["heartbeat_at"]) or now
        rows = conn.execute(
            "SELECT * FROM open_calls WHERE run_id = %s ORDER BY id FOR UPDATE", (run["run_id"],)
        ).fetchall()
        records, debits = recovered_calls(rows, run, heartbeat, rate)
        with conn.cursor() as cursor:
            if records:
                # Escaped always: a call start written escaped reads back with its escapes.
                cursor.executemany(_INSERT_CDR, [_escaped_row(r.values()) for r in records])
            # The dead run's own rows: every live meter counts them (``CdrStore._recover_run``).
            append_ledger(conn, debits, run["run_id"])
            cursor.execute("DELETE FROM open_calls WHERE run_id = %s", (run["run_id"],))
            cursor.execute(
                "UPDATE switch_runs SET recovered_at = now(),"
                " recovered_calls = recovered_calls + %s WHERE run_id = %s",
                (len(records), run["run_id"]),
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
        return query_postgres(
            self.url, since, until, call_id=call_id, account_id=account_id, limit=limit
        )


def query_postgres(
    url: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    *,
    call_id: str | None = None,
    account_id: str | None = None,
    limit: int | None = None,
) -> list[CdrRecord]:
    """Read CDRs from PostgreSQL without a store (``softswitch cdr``), oldest first, with
    ``since <= invite_at < until``: what ``cdr.query_file`` is for a SQLite file."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("account_id", "=", account_id),
        ("invite_at", ">=", since),
        ("invite_at", "<", until),
        ("call_id", "=", call_id),
    ):
        if value is not None:
            clauses.append(f"{column} {op} %s")
            params.append(value)
    sql = "SELECT * FROM cdrs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY invite_at, id"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    with connect(url, application="softswitch query") as conn:
        return [CdrRecord.from_row(row) for row in conn.execute(sql, params)]
