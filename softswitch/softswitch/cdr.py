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

Only the store touches SQLite; the rest of the switch sees the ``CdrSink`` protocol, so a
PostgreSQL store can replace it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TextIO

from softswitch.billing.ledger import LEDGER_SCHEMA, Booking
from softswitch.billing.ledger import append as append_ledger
from softswitch.billing.money import to_nanos
from softswitch.call.refusal import END_REASONS, EndReason
from softswitch.registrar.store import REGISTRATIONS_SCHEMA

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

logger = logging.getLogger("softswitch.cdr")

SCHEMA_VERSION = 3
#: Versions this switch opens (and upgrades to ``SCHEMA_VERSION``): 1 lacks the run tables,
#: 2 the ledger and the open calls' billing columns. (The registrar's ``registrations``
#: table came without a new version: it is only added, ``IF NOT EXISTS``, so a version-3
#: file gets it when opened and a switch that predates it still opens the file.)
_READABLE_VERSIONS = (0, 1, 2, SCHEMA_VERSION)

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS cdrs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id           TEXT    NOT NULL,
    account_id        TEXT,
    source            TEXT    NOT NULL,
    caller            TEXT    NOT NULL,
    callee_dialed     TEXT    NOT NULL,
    callee_normalised TEXT,
    callee_sent       TEXT,
    gateway_id        TEXT,
    route_prefix      TEXT,
    invite_at         TEXT    NOT NULL,
    ring_at           TEXT,
    answer_at         TEXT,
    end_at            TEXT    NOT NULL,
    duration          REAL    NOT NULL,
    billsec           INTEGER NOT NULL,
    pdd               REAL,
    hangup_side       TEXT,
    end_reason        TEXT    NOT NULL,
    status            INTEGER NOT NULL,
    q850              INTEGER NOT NULL,
    sell_rate         TEXT,
    sell_cost         TEXT,
    buy_rate          TEXT,
    buy_cost          TEXT,
    attempts          TEXT    NOT NULL,
    detail            TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cdrs_invite_at ON cdrs (invite_at);
CREATE INDEX IF NOT EXISTS cdrs_call_id ON cdrs (call_id);

CREATE TABLE IF NOT EXISTS switch_runs (
    run_id             TEXT    PRIMARY KEY,
    host               TEXT    NOT NULL,
    pid                INTEGER NOT NULL,
    started_at         TEXT    NOT NULL,
    heartbeat_at       TEXT    NOT NULL,
    heartbeat_interval REAL    NOT NULL,
    stopped_at         TEXT,
    recovered_at       TEXT,
    recovered_calls    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS open_calls (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT    NOT NULL REFERENCES switch_runs (run_id),
    call_id    TEXT    NOT NULL,
    answer_at  TEXT    NOT NULL,
    account_id TEXT,
    gateway_id TEXT,
    sell_deck    TEXT,
    buy_deck     TEXT,
    max_duration REAL,
    record       TEXT    NOT NULL,
    billed_account TEXT,
    billed_until   INTEGER,
    reserved       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS open_calls_key ON open_calls (call_id, answer_at);
CREATE INDEX IF NOT EXISTS open_calls_run ON open_calls (run_id);
"""
    + LEDGER_SCHEMA
    + REGISTRATIONS_SCHEMA
)

#: Columns version 2's ``open_calls`` lacks, added when such a file is opened.
_OPEN_CALLS_V3 = (
    ("billed_account", "TEXT"),
    ("billed_until", "INTEGER"),
    ("reserved", "INTEGER NOT NULL DEFAULT 0"),
)

#: Columns in table (and CSV) order, without the surrogate ``id``.
CSV_COLUMNS: tuple[str, ...] = (
    "call_id",
    "account_id",
    "source",
    "caller",
    "callee_dialed",
    "callee_normalised",
    "callee_sent",
    "gateway_id",
    "route_prefix",
    "invite_at",
    "ring_at",
    "answer_at",
    "end_at",
    "duration",
    "billsec",
    "pdd",
    "hangup_side",
    "end_reason",
    "status",
    "q850",
    "sell_rate",
    "sell_cost",
    "buy_rate",
    "buy_cost",
    "attempts",
    "detail",
)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


def _utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _ts(value: dt.datetime | None) -> str | None:
    """Fixed-width ISO 8601 UTC, so text order is time order (``--since`` uses an index)."""
    if value is None:
        return None
    return _utc(value).isoformat(timespec="microseconds")


def _parse_ts(value: str | None) -> dt.datetime | None:
    return None if value is None or value == "" else dt.datetime.fromisoformat(value)


def _seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` to the millisecond (never negative)."""
    if start is None or end is None:
        return None
    return max(0.0, round((_utc(end) - _utc(start)).total_seconds(), 3))


@dataclass(frozen=True, slots=True)
class CdrAttempt:
    """One gateway tried, with its final code and timing.

    ``status`` is the final SIP code the gateway sent (None when it sent none: a setup
    timeout or a transport error). ``outcome`` says why we stopped with it, e.g.
    ``answered``, ``failed``, ``setup_timeout``, ``cancelled``, ``transport_error``,
    ``media_unavailable``.
    ``request_uri`` is what it was sent; ``ring_at`` its first 18x.
    """

    gateway_id: str
    status: int | None
    outcome: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None = None
    request_uri: str | None = None
    ring_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway_id,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": _ts(self.started_at),
            "ended_at": _ts(self.ended_at),
            "request_uri": self.request_uri,
            "ring_at": _ts(self.ring_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CdrAttempt:
        return cls(
            gateway_id=data["gateway_id"],
            status=data.get("status"),
            outcome=data["outcome"],
            started_at=_parse_ts(data.get("started_at")),
            ended_at=_parse_ts(data.get("ended_at")),
            request_uri=data.get("request_uri"),
            ring_at=_parse_ts(data.get("ring_at")),
        )


#: The earlier name of ``CdrAttempt``.
AttemptRecord = CdrAttempt


@dataclass(slots=True)
class CdrRecord:
    """The record of one call attempt. Timestamps are aware UTC datetimes (naive = UTC).

    ``duration`` is seconds from answer to end (to the millisecond), ``billsec`` that rounded
    *up* to whole seconds (what is billed), ``pdd`` seconds from the INVITE to the first 18x;
    each is computed from the timestamps when left as None. ``end_reason`` is an
    ``EndReason`` (read back from the store, its value as text, which compares equal).
    ``status`` is the final SIP code the caller got (200 for answered calls). ``hangup_side``
    is ``caller``, ``callee`` or ``switch`` (max duration, shutdown) for answered calls, None
    otherwise.
    """

    call_id: str
    account_id: str | None
    source: str
    caller: str
    callee_dialed: str
    invite_at: dt.datetime
    end_at: dt.datetime
    end_reason: str
    status: int
    q850: int
    callee_normalised: str | None = None
    callee_sent: str | None = None
    gateway_id: str | None = None
    route_prefix: str | None = None
    attempts: tuple[CdrAttempt, ...] = ()
    ring_at: dt.datetime | None = None
    answer_at: dt.datetime | None = None
    duration: float | None = None
    billsec: int | None = None
    pdd: float | None = None
    hangup_side: str | None = None
    sell_rate: Decimal | None = None
    sell_cost: Decimal | None = None
    buy_rate: Decimal | None = None
    buy_cost: Decimal | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        self.attempts = tuple(self.attempts)
        if self.duration is None:
            self.duration = _seconds_between(self.answer_at, self.end_at) or 0.0
        if self.billsec is None:
            self.billsec = math.ceil(self.duration)
        if self.pdd is None:
            self.pdd = _seconds_between(self.invite_at, self.ring_at)

    def to_row(self) -> dict[str, Any]:
        """Column name -> SQL/CSV value (text timestamps and money, JSON attempts)."""

        def money(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {
            "call_id": self.call_id,
            "account_id": self.account_id,
            "source": self.source,
            "caller": self.caller,
            "callee_dialed": self.callee_dialed,
            "callee_normalised": self.callee_normalised,
            "callee_sent": self.callee_sent,
            "gateway_id": self.gateway_id,
            "route_prefix": self.route_prefix,
            "invite_at": _ts(self.invite_at),
            "ring_at": _ts(self.ring_at),
            "answer_at": _ts(self.answer_at),
            "end_at": _ts(self.end_at),
            "duration": self.duration,
            "billsec": self.billsec,
            "pdd": self.pdd,
            "hangup_side": self.hangup_side,
            "end_reason": str(self.end_reason),  # an EndReason's value: plain text
            "status": self.status,
            "q850": self.q850,
            "sell_rate": money(self.sell_rate),
            "sell_cost": money(self.sell_cost),
            "buy_rate": money(self.buy_rate),
            "buy_cost": money(self.buy_cost),
            "attempts": json.dumps([a.to_json() for a in self.attempts], separators=(",", ":")),
            "detail": self.detail,
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> CdrRecord:
        def money(value: str | None) -> Decimal | None:
            return None if value is None else Decimal(value)

        invite_at = _parse_ts(row["invite_at"])
        end_at = _parse_ts(row["end_at"])
        if invite_at is None or end_at is None:
            raise ValueError(f"CDR {row['call_id']!r} lacks invite_at or end_at")
        return cls(
            call_id=row["call_id"],
            account_id=row["account_id"],
            source=row["source"],
            caller=row["caller"],
            callee_dialed=row["callee_dialed"],
            callee_normalised=row["callee_normalised"],
            callee_sent=row["callee_sent"],
            gateway_id=row["gateway_id"],
            route_prefix=row["route_prefix"],
            invite_at=invite_at,
            ring_at=_parse_ts(row["ring_at"]),
            answer_at=_parse_ts(row["answer_at"]),
            end_at=end_at,
            duration=row["duration"],
            billsec=row["billsec"],
            pdd=row["pdd"],
            hangup_side=row["hangup_side"],
            end_reason=row["end_reason"],
            status=row["status"],
            q850=row["q850"],
            sell_rate=money(row["sell_rate"]),
            sell_cost=money(row["sell_cost"]),
            buy_rate=money(row["buy_rate"]),
            buy_cost=money(row["buy_cost"]),
            attempts=tuple(CdrAttempt.from_json(a) for a in json.loads(row["attempts"])),
            detail=row["detail"],
        )


def write_csv(records: Iterable[CdrRecord], out: TextIO) -> int:
    """CSV with a header of ``CSV_COLUMNS``; attempts as a JSON array. Returns the rows."""
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    n = 0
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in record.to_row().items()})
        n += 1
    return n


# --------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStart:
    """The durable mark of an answered call: written at the 2xx, deleted with its CDR.

    ``cdr`` is the call's record as known at the answer and as it must read if the process
    dies before the call ends: end reason ``system_failure``, no end yet (``end_at`` is the
    answer), no costs. ``sell_deck`` and ``buy_deck`` are the decks that rate it (the
    account's and the answering gateway's), so a later run can bill the call without the live
    ``Call``: see ``CdrStore.recover``; ``max_duration`` (seconds) caps what it bills, as
    the switch would have cut the call there. The call's CDR closes it by its key, the Call-ID
    and the answer time (``CdrRecord.call_id``, ``CdrRecord.answer_at``). ``billed_account``
    is set for a call of a prepaid or postpaid account: recovery then debits its cost to the
    ledger, never beyond the seconds its credit covered (``Reservation``).
    """

    cdr: CdrRecord
    sell_deck: str | None = None
    buy_deck: str | None = None
    max_duration: float | None = None
    billed_account: str | None = None
    billed_until: int | None = None
    reserved: int = 0

    def __post_init__(self) -> None:
        if self.cdr.answer_at is None:
            raise ValueError(f"call {self.cdr.call_id!r}: a call start needs an answer time")


@dataclass(frozen=True, slots=True)
class Reservation:
    """A billed call's credit as it stands: ``reserved`` nano-units covering its first
    ``billed_until`` seconds. Queued at each slice (never a round trip of its own), it is
    what a later run bills the call up to if this one dies, and what ``softswitch balance``
    shows as reserved. Keyed like the call start: Call-ID and answer time."""

    call_id: str
    answer_at: dt.datetime
    billed_until: int
    reserved: int


#: ``(deck id, number, start, billed seconds) -> cost``: how recovery rates a call, as the
#: switch does (``call.billing.deck_cost`` with the start-up snapshot). None: unknown.
Rater = Callable[[str | None, str, dt.datetime, int], Decimal | None]


@dataclass(frozen=True, slots=True)
class RecoveredRun:
    """A dead run whose open calls ``CdrStore.recover`` closed (``calls`` of them)."""

    run_id: str
    host: str
    pid: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    calls: int


class CdrSink(Protocol):
    """What the switch needs from a CDR store (SQLite now, PostgreSQL later)."""

    def write(self, record: CdrRecord) -> Future[None]: ...

    def enqueue(self, record: CdrRecord, debit: Booking | None = None) -> None: ...

    def open_call(self, start: CallStart) -> None: ...

    def reserve(self, reservation: Reservation) -> None: ...

    def query(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        *,
        call_id: str | None = None,
        limit: int | None = None,
    ) -> list[CdrRecord]: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


#: Rows per multi-row statement (26 columns each: well under SQLite's 999 bound variables).
_ROWS_PER_INSERT = 32
_OPEN_COLUMNS = (
    "run_id",
    "call_id",
    "answer_at",
    "account_id",
    "gateway_id",
    "sell_deck",
    "buy_deck",
    "max_duration",
    "record",
    "billed_account",
    "billed_until",
    "reserved",
)


def _multi_row_sql(head: str, width: int, n: int) -> str:
    """``head`` followed by ``n`` rows of ``width`` positional parameters."""
    return head + ", ".join(["(" + ", ".join("?" * width) + ")"] * n)


_INSERT_ROWS = {
    n: _multi_row_sql(f"INSERT INTO cdrs ({', '.join(CSV_COLUMNS)}) VALUES ", len(CSV_COLUMNS), n)
    for n in range(1, _ROWS_PER_INSERT + 1)
}
_INSERT_OPEN = {
    n: _multi_row_sql(
        f"INSERT INTO open_calls ({', '.join(_OPEN_COLUMNS)}) VALUES ", len(_OPEN_COLUMNS), n
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


def _escaped(value: object) -> object:
    """Text that SQLite can store: surrogates (undecodable bytes) as ``\\xNN`` escapes."""
    if isinstance(value, str) and not value.isascii():
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no byte was escaped into
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")
    return value


class _Flush:
    """A queue marker: completes its future once everything queued before it is committed."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: Future[None] = Future()


_STOP = object()
_Write = tuple[CdrRecord, "Future[None] | None", Booking | None]
_Item = _Write | CallStart | Reservation | _Flush | object

#: Run ids of the stores open in this process: alive whatever their pid says.
_LIVE_RUNS: set[str] = set()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class CdrStore:
    """SQLite CDR store (WAL, ``synchronous=FULL``) with one writer thread.

    Opening creates the file and schema (errors surface here, not in the writer) and
    registers this process as a run in ``switch_runs``; the writer refreshes its heartbeat
    every ``heartbeat_interval`` seconds. Use as a context manager or call ``close()``, which
    commits everything queued first and marks the run stopped.
    """

    def __init__(
        self, path: str | Path, *, batch_max: int = 1000, heartbeat_interval: float = 5.0
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._batch_max = batch_max
        self.heartbeat_interval = heartbeat_interval
        self.run_id = uuid.uuid4().hex
        self.host = socket.gethostname()
        conn = self._connect()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in _READABLE_VERSIONS:
                raise RuntimeError(
                    f"{self.path}: CDR schema version {version}, this switch writes "
                    f"{SCHEMA_VERSION}"
                )
            conn.executescript(SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(open_calls)")}
            for column, kind in _OPEN_CALLS_V3:
                if column not in have:
                    conn.execute(f"ALTER TABLE open_calls ADD COLUMN {column} {kind}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            started = _ts(_now())
            conn.execute(
                "INSERT INTO switch_runs (run_id, host, pid, started_at, heartbeat_at,"
                " heartbeat_interval) VALUES (?, ?, ?, ?, ?, ?)",
                (self.run_id, self.host, os.getpid(), started, started, heartbeat_interval),
            )
            conn.commit()
        finally:
            conn.close()
        _LIVE_RUNS.add(self.run_id)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    # -- writing -----------------------------------------------------------------------

    def write(self, record: CdrRecord) -> Future[None]:
        """Queue ``record``; the returned future completes when it is committed to disk.

        Never blocks. The future fails (and the record is logged in full) if the commit
        fails, e.g. the disk is full. A record with an answer time also closes its call's
        ``CallStart`` (same Call-ID and answer time, this run) in the same transaction.
        """
        if self._closed:
            raise RuntimeError("CdrStore is closed")
        future: Future[None] = Future()
        self._queue.put((record, future, None))
        return future

    def enqueue(self, record: CdrRecord, debit: Booking | None = None) -> None:
        """``write`` without a future to wait on: the switch's path, one record per call.

        ``debit`` (a billed call's sell cost) is appended to the ledger in the transaction
        that inserts the CDR: both or neither. Never blocks; a failed commit logs the record
        in full, as for ``write``. (A future costs a lock and a condition to make, a
        measurable share of a call at full load.)
        """
        if self._closed:
            raise RuntimeError("CdrStore is closed")
        self._queue.put((record, None, debit))

    def reserve(self, reservation: Reservation) -> None:
        """Queue a billed call's new reservation (committed with the next group commit)."""
        if self._closed:
            raise RuntimeError("CdrStore is closed")
        self._queue.put(reservation)

    def open_call(self, start: CallStart) -> None:
        """Queue an answered call's durable mark (the switch's path at the 2xx).

        Never blocks: committed with the writer's next group commit. The call's CDR, when it
        is written, deletes the mark in the same transaction; if the process dies first,
        ``recover`` in a later run turns the mark into the call's CDR.
        """
        if self._closed:
            raise RuntimeError("CdrStore is closed")
        self._queue.put(start)

    async def write_async(self, record: CdrRecord) -> None:
        """``write`` and wait, without blocking the event loop, until it is durable."""
        await asyncio.wrap_future(self.write(record))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything written before this call is committed; False on timeout."""
        marker = _Flush()
        self._queue.put(marker)
        try:
            marker.future.result(timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Commit everything queued, mark the run stopped, stop the writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        _LIVE_RUNS.discard(self.run_id)

    def __enter__(self) -> CdrStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        conn = self._connect()
        try:
            next_beat = time.monotonic() + self.heartbeat_interval
            stop = False
            while not stop:
                batch: list[_Item] = []
                try:
                    wait = max(0.0, next_beat - time.monotonic())
                    batch.append(self._queue.get(timeout=wait))
                except queue.Empty:
                    pass
                while batch and len(batch) < self._batch_max:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                if batch:
                    self._commit(conn, batch)
                if stop or time.monotonic() >= next_beat:
                    self._heartbeat(conn, stopped=stop)
                    next_beat = time.monotonic() + self.heartbeat_interval
        finally:
            conn.close()

    def _heartbeat(self, conn: sqlite3.Connection, *, stopped: bool) -> None:
        """This run's ``heartbeat_at`` (and ``stopped_at`` at a clean close) set to now."""
        now = _ts(_now())
        try:
            with conn:
                conn.execute(
                    "UPDATE switch_runs SET heartbeat_at = ?,"
                    " stopped_at = CASE WHEN ? THEN ? ELSE stopped_at END WHERE run_id = ?",
                    (now, stopped, now, self.run_id),
                )
        except sqlite3.Error as e:
            logger.error("cdr store heartbeat failed: %s", e)

    def _commit(self, conn: sqlite3.Connection, batch: Sequence[_Item]) -> None:
        starts = [item for item in batch if isinstance(item, CallStart)]
        writes: list[_Write] = [item for item in batch if isinstance(item, tuple)]
        slices = [item for item in batch if isinstance(item, Reservation)]
        if starts or writes or slices:
            errors: list[Exception | None]
            try:
                self._insert(conn, starts, [(r, d) for r, _, d in writes], slices)
                errors = [None] * len(writes)
            except (sqlite3.Error, ValueError, TypeError):
                # One bad record must not cost the others theirs: retry one by one, the call
                # starts first (a call's start is always queued before its CDR).
                for start in starts:
                    self._insert_alone(conn, start)
                for reservation in slices:
                    self._insert_alone(conn, reservation)
                errors = [self._insert_alone(conn, (r, d)) for r, _, d in writes]
            for (_, future, _), error in zip(writes, errors, strict=True):
                if future is None:
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        for item in batch:
            if isinstance(item, _Flush):
                item.future.set_result(None)

    def _insert_alone(
        self,
        conn: sqlite3.Connection,
        item: tuple[CdrRecord, Booking | None] | CallStart | Reservation,
    ) -> Exception | None:
        """Commit one record and its debit (or a call start, or a reservation), or log it in
        full and return why it could not be."""
        starts = [item] if isinstance(item, CallStart) else []
        slices = [item] if isinstance(item, Reservation) else []
        records = [item] if isinstance(item, tuple) else []
        try:
            try:
                self._insert(conn, starts, records, slices)
            except UnicodeEncodeError:
                # A peer's undecodable bytes (kept as surrogates by the SIP parser) are not
                # valid UTF-8 text: store them escaped rather than lose the record.
                self._insert(conn, starts, records, slices, escape=True)
        except (sqlite3.Error, ValueError, TypeError) as e:
            if isinstance(item, Reservation):
                logger.error("reservation write failed (%s): %s", e, item)
                return e
            record = item.cdr if isinstance(item, CallStart) else item[0]
            debit = item[1] if isinstance(item, tuple) else None
            logger.error(
                "%s write failed (%s); record=%s debit=%s",
                "call start" if isinstance(item, CallStart) else "cdr",
                e,
                json.dumps(record.to_row(), default=str),
                debit,
                extra={"call_id": record.call_id},
            )
            return e
        return None

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
        rows = [record.to_row() for record, _ in records]
        debits = [debit for _, debit in records if debit is not None]
        opened = [self._open_row(start) for start in starts]
        if escape:
            rows = [{k: _escaped(v) for k, v in row.items()} for row in rows]
            opened = [[_escaped(v) for v in row] for row in opened]
        keys = [(row["call_id"], row["answer_at"]) for row in rows if row["answer_at"]]
        with conn:
            # Many rows per statement rather than ``executemany``: sqlite3 releases the GIL
            # around every statement step, and each step's GIL hand-back stalls the event
            # loop thread; a group commit of N records now costs N/32 steps, not N.
            for start in range(0, len(opened), _ROWS_PER_INSERT):
                chunk = opened[start : start + _ROWS_PER_INSERT]
                conn.execute(_INSERT_OPEN[len(chunk)], [v for row in chunk for v in row])
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                part = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(
                    _INSERT_ROWS[len(part)],
                    [row[column] for row in part for column in CSV_COLUMNS],
                )
            for start in range(0, len(keys), _ROWS_PER_INSERT):
                pairs = keys[start : start + _ROWS_PER_INSERT]
                conn.execute(
                    _CLOSE_OPEN[len(pairs)], [v for pair in pairs for v in pair] + [self.run_id]
                )
            if slices:
                conn.executemany(
                    "UPDATE open_calls SET billed_until = ?, reserved = ?"
                    " WHERE call_id = ? AND answer_at = ? AND run_id = ?",
                    [
                        (r.billed_until, r.reserved, r.call_id, _ts(r.answer_at), self.run_id)
                        for r in slices
                    ],
                )
            append_ledger(conn, debits, self.run_id)

    def _open_row(self, start: CallStart) -> list[object]:
        """``open_calls`` values in ``_OPEN_COLUMNS`` order."""
        row = start.cdr.to_row()
        return [
            self.run_id,
            row["call_id"],
            row["answer_at"],
            row["account_id"],
            row["gateway_id"],
            start.sell_deck,
            start.buy_deck,
            start.max_duration,
            json.dumps(row, separators=(",", ":")),
            start.billed_account,
            start.billed_until,
            start.reserved,
        ]

    # -- recovery ----------------------------------------------------------------------

    def recover(self, rate: Rater | None = None) -> list[RecoveredRun]:
        """Close every call left open by a dead run: one CDR each, in one transaction.

        A run is dead when it stopped cleanly, when its heartbeat is more than three of its
        intervals old, or when it ran on this host and its pid is gone (or is ours, reused:
        a container restarted). Another live switch's calls on a shared file are left alone.
        Each open call becomes a CDR with end reason ``system_failure``, ``hangup_side``
        ``switch``, ended at its run's last heartbeat (never before the answer), and costed
        with ``rate`` for the billed seconds at the answer time, as a normal CDR is. The
        CDRs, the deletion of the open calls and the runs' ``recovered_at`` are one
        transaction, so recovering twice (or crashing while recovering) never writes a CDR
        twice. Runs in the caller's thread, on its own connection.
        """
        now = _now()
        recovered: list[RecoveredRun] = []
        conn = self._connect()
        conn.isolation_level = None  # explicit BEGIN IMMEDIATE: one recoverer at a time
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                runs = conn.execute(
                    "SELECT * FROM switch_runs WHERE run_id != ? AND recovered_at IS NULL"
                    " AND (stopped_at IS NULL"
                    " OR EXISTS (SELECT 1 FROM open_calls o WHERE o.run_id = switch_runs.run_id))",
                    (self.run_id,),
                ).fetchall()
                for run in runs:
                    if self._alive(run, now):
                        logger.warning(
                            "run %s (pid %s on %s) looks alive: its open calls are left to it",
                            run["run_id"],
                            run["pid"],
                            run["host"],
                        )
                        continue
                    recovered.append(self._recover_run(conn, run, rate, now))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        for run in recovered:
            if run.calls:
                logger.warning(
                    "closed %d calls of run %s (pid %d on %s, started %s) as %s,"
                    " billed to its last heartbeat %s",
                    run.calls,
                    run.run_id,
                    run.pid,
                    run.host,
                    _ts(run.started_at),
                    EndReason.SYSTEM_FAILURE,
                    _ts(run.heartbeat_at),
                )
        return recovered

    def _alive(self, run: sqlite3.Row, now: dt.datetime) -> bool:
        if run["stopped_at"] is not None:
            return False
        heartbeat = _parse_ts(run["heartbeat_at"])
        stale_after = 3 * run["heartbeat_interval"]
        if heartbeat is None or (now - heartbeat).total_seconds() > stale_after:
            return False
        if run["host"] != self.host:
            return True  # another host's pids mean nothing here: trust its heartbeat
        if run["pid"] == os.getpid():
            return run["run_id"] in _LIVE_RUNS
        return _pid_running(run["pid"])

    def _recover_run(
        self, conn: sqlite3.Connection, run: sqlite3.Row, rate: Rater | None, now: dt.datetime
    ) -> RecoveredRun:
        heartbeat = _parse_ts(run["heartbeat_at"]) or now
        started = _parse_ts(run["started_at"]) or heartbeat
        rows = conn.execute(
            "SELECT * FROM open_calls WHERE run_id = ? ORDER BY id", (run["run_id"],)
        ).fetchall()
        records: list[CdrRecord] = []
        debits: list[Booking] = []
        for row in rows:
            try:
                record = _recovered_cdr(row, run, heartbeat, rate)
                records.append(record)
                if row["billed_account"] is not None:
                    debits.append(_recovered_debit(row["billed_account"], record))
            except (ValueError, TypeError, KeyError) as e:
                # Unreadable (a bug or a damaged file): loud, with all that is known.
                logger.error(
                    "open call %s of run %s unreadable (%s), dropped; row=%s",
                    row["call_id"],
                    run["run_id"],
                    e,
                    json.dumps(dict(row), default=str),
                    extra={"call_id": row["call_id"]},
                )
        # Escaped always: a call start written escaped reads back with surrogates from its JSON.
        cdr_rows = [{k: _escaped(v) for k, v in r.to_row().items()} for r in records]
        for start in range(0, len(cdr_rows), _ROWS_PER_INSERT):
            part = cdr_rows[start : start + _ROWS_PER_INSERT]
            conn.execute(
                _INSERT_ROWS[len(part)], [row[column] for row in part for column in CSV_COLUMNS]
            )
        append_ledger(conn, debits, self.run_id)
        conn.execute("DELETE FROM open_calls WHERE run_id = ?", (run["run_id"],))
        conn.execute(
            "UPDATE switch_runs SET recovered_at = ?, recovered_calls = recovered_calls + ?"
            " WHERE run_id = ?",
            (_ts(now), len(records), run["run_id"]),
        )
        return RecoveredRun(
            run_id=run["run_id"],
            host=run["host"],
            pid=run["pid"],
            started_at=started,
            heartbeat_at=heartbeat,
            calls=len(records),
        )

    # -- reading -----------------------------------------------------------------------

    def query(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        *,
        call_id: str | None = None,
        limit: int | None = None,
    ) -> list[CdrRecord]:
        """Committed CDRs with ``since <= invite_at < until``, oldest first."""
        return query_file(self.path, since, until, call_id=call_id, limit=limit)


def _recovered_cdr(
    row: sqlite3.Row, run: sqlite3.Row, heartbeat: dt.datetime, rate: Rater | None
) -> CdrRecord:
    """The CDR of a call its run's death cut: ended at the run's last heartbeat."""
    at_answer = CdrRecord.from_row(json.loads(row["record"]))
    answer_at = at_answer.answer_at
    if answer_at is None:
        raise ValueError("no answer time")
    end_at = max(heartbeat, answer_at)  # never before the answer: duration 0, not negative
    if row["max_duration"] is not None and row["max_duration"] > 0:
        # The switch would have cut the call at its maximum (and billed exactly that).
        end_at = min(end_at, answer_at + dt.timedelta(seconds=row["max_duration"]))
    if row["billed_account"] is not None:
        # Never beyond the seconds the call's credit covered: the switch cuts it there.
        covered = row["billed_until"] or 0
        end_at = min(end_at, answer_at + dt.timedelta(seconds=covered))
    attempts = tuple(
        dataclasses.replace(a, ended_at=end_at)
        if a.outcome == "answered" and a.ended_at is None
        else a
        for a in at_answer.attempts
    )
    note = (
        f"system failure: run {run['run_id']} (pid {run['pid']}) died;"
        f" billed to its last heartbeat {_ts(heartbeat)}"
    )
    status, q850 = END_REASONS[EndReason.SYSTEM_FAILURE]
    record = dataclasses.replace(
        at_answer,
        end_reason=EndReason.SYSTEM_FAILURE,  # what the call start already says, made sure
        status=status,
        q850=q850,
        hangup_side="switch",
        end_at=end_at,
        duration=None,  # recomputed: answer to end, never negative
        billsec=None,
        attempts=attempts,
        detail=f"{at_answer.detail}; {note}" if at_answer.detail else note,
    )
    if rate is not None and record.callee_normalised is not None:
        number, billsec = record.callee_normalised, record.billsec or 0
        try:
            record.sell_cost = rate(row["sell_deck"], number, answer_at, billsec)
            if record.gateway_id is not None:
                record.buy_cost = rate(row["buy_deck"], number, answer_at, billsec)
        except Exception:  # a costing bug must not cost us the record
            logger.exception("costing a recovered call failed", extra={"call_id": row["call_id"]})
            record.sell_cost = record.buy_cost = None
            record.detail += "; costing failed, see the log"
    return record


def _recovered_debit(account_id: str, record: CdrRecord) -> Booking:
    """The ledger debit of a recovered call: its CDR's sell cost (0, logged, when it could
    not be rated: the CDR says so too, and an operator settles it by hand)."""
    if record.sell_cost is None:
        logger.error(
            "recovered call of billed account %s has no sell cost: debited 0",
            account_id,
            extra={"call_id": record.call_id},
        )
    amount = to_nanos(record.sell_cost) if record.sell_cost is not None else 0
    return Booking(account_id, "call", -amount, record.call_id, record.end_at)


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
        params["since"] = _ts(since)
    if until is not None:
        clauses.append("invite_at < :until")
        params["until"] = _ts(until)
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
