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

Only the store touches SQLite; the rest of the switch sees the ``CdrSink`` protocol, so a
PostgreSQL store can replace it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import math
import queue
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TextIO

__all__ = [
    "CSV_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "CdrAttempt",
    "CdrRecord",
    "CdrSink",
    "CdrStore",
    "query_file",
    "write_csv",
]

logger = logging.getLogger("softswitch.cdr")

SCHEMA_VERSION = 1

SCHEMA = """
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
"""

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
    ``answered``, ``failed``, ``setup_timeout``, ``cancelled``, ``transport_error``.
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
    each is computed from the timestamps when left as None. ``status`` is the final SIP code
    the caller got (200 for answered calls). ``hangup_side`` is ``caller``, ``callee`` or
    ``switch`` (max duration, shutdown) for answered calls, None otherwise.
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
            "end_reason": self.end_reason,
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


class CdrSink(Protocol):
    """What the switch needs from a CDR store (SQLite now, PostgreSQL later)."""

    def write(self, record: CdrRecord) -> Future[None]: ...

    def enqueue(self, record: CdrRecord) -> None: ...

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


#: Rows per multi-row INSERT (26 columns each: well under SQLite's 999 bound variables).
_ROWS_PER_INSERT = 32
_ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(CSV_COLUMNS)) + ")"


def _insert_rows_sql(n: int) -> str:
    """``INSERT`` of ``n`` rows in one statement, positional parameters in column order."""
    return f"INSERT INTO cdrs ({', '.join(CSV_COLUMNS)}) VALUES " + ", ".join(
        [_ROW_PLACEHOLDERS] * n
    )


_INSERT_ROWS = {n: _insert_rows_sql(n) for n in range(1, _ROWS_PER_INSERT + 1)}


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
_Item = tuple[CdrRecord, "Future[None] | None"] | _Flush | object


class CdrStore:
    """SQLite CDR store (WAL, ``synchronous=FULL``) with one writer thread.

    Opening creates the file and schema (errors surface here, not in the writer). Use as a
    context manager or call ``close()``, which commits everything queued first.
    """

    def __init__(self, path: str | Path, *, batch_max: int = 1000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._batch_max = batch_max
        conn = self._connect()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(
                    f"{self.path}: CDR schema version {version}, this switch writes "
                    f"{SCHEMA_VERSION}"
                )
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.commit()
        finally:
            conn.close()
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
        fails, e.g. the disk is full.
        """
        if self._closed:
            raise RuntimeError("CdrStore is closed")
        future: Future[None] = Future()
        self._queue.put((record, future))
        return future

    def enqueue(self, record: CdrRecord) -> None:
        """``write`` without a future to wait on: the switch's path, one record per call.

        Never blocks; a failed commit logs the record in full, as for ``write``. (A future
        costs a lock and a condition to make, a measurable share of a call at full load.)
        """
        if self._closed:
            raise RuntimeError("CdrStore is closed")
        self._queue.put((record, None))

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
        """Commit everything queued, stop the writer thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> CdrStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        conn = self._connect()
        try:
            stop = False
            while not stop:
                batch: list[_Item] = [self._queue.get()]
                while len(batch) < self._batch_max:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: Sequence[_Item]) -> None:
        writes = [item for item in batch if isinstance(item, tuple)]
        if writes:
            errors: list[Exception | None]
            try:
                self._insert(conn, [record for record, _ in writes])
                errors = [None] * len(writes)
            except (sqlite3.Error, ValueError, TypeError):
                # One bad record must not cost the others theirs: retry one by one.
                errors = [self._insert_alone(conn, record) for record, _ in writes]
            for (_, future), error in zip(writes, errors, strict=True):
                if future is None:
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        for item in batch:
            if isinstance(item, _Flush):
                item.future.set_result(None)

    def _insert_alone(self, conn: sqlite3.Connection, record: CdrRecord) -> Exception | None:
        """Commit one record, or log it in full and return why it could not be."""
        try:
            try:
                self._insert(conn, [record])
            except UnicodeEncodeError:
                # A peer's undecodable bytes (kept as surrogates by the SIP parser) are not
                # valid UTF-8 text: store them escaped rather than lose the record.
                self._insert(conn, [record], escape=True)
        except (sqlite3.Error, ValueError, TypeError) as e:
            logger.error(
                "cdr write failed (%s); record=%s",
                e,
                json.dumps(record.to_row(), default=str),
                extra={"call_id": record.call_id},
            )
            return e
        return None

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, records: Sequence[CdrRecord], *, escape: bool = False
    ) -> None:
        rows = [record.to_row() for record in records]
        if escape:
            rows = [{k: _escaped(v) for k, v in row.items()} for row in rows]
        with conn:  # one transaction, committed (and fsynced: synchronous=FULL) on exit
            # Many rows per statement rather than ``executemany``: sqlite3 releases the GIL
            # around every statement step, and each step's GIL hand-back stalls the event
            # loop thread; a group commit of N records now costs N/32 steps, not N.
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(
                    _INSERT_ROWS[len(chunk)],
                    [row[column] for row in chunk for column in CSV_COLUMNS],
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


def query_file(
    path: str | Path,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    *,
    call_id: str | None = None,
    limit: int | None = None,
) -> list[CdrRecord]:
    """Read CDRs from a store file without starting a writer (``softswitch cdr``)."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
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
