"""The recorded calls a replay reads: the switch's SQLite CDR database or its CSV export.

Only the columns a replay needs are read, as text, in batches: a period of a busy switch is
millions of rows, and building a full ``CdrRecord`` (its attempts parsed from JSON, every
timestamp and amount converted) for each would cost more than re-routing it. The first
gateway tried is taken from the ``attempts`` JSON by SQLite itself (``json_extract``).

A CSV file is what ``softswitch cdr --csv`` writes (``softswitch.cdr.CSV_COLUMNS``); its
header must hold the columns of :data:`NEEDED` (others are ignored, in any order).

``caller_id`` (the caller-ID the switch routed on, schema version 2) is read when the file
has it; CDRs from before it (a version-1 database, an older export) have None there and the
re-router falls back to ``caller`` (``reroute.caller_number``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

__all__ = ["NEEDED", "Recorded", "ReplaySourceError", "count_cdrs", "read_cdrs"]

#: The largest CSV field read (``csv.field_size_limit``; Python's default is 128 KiB). A
#: CDR's ``detail`` (the routing trace) and ``attempts`` JSON grow with the gateways tried;
#: 64 MiB is far above any real one and still bounds what a corrupt file can make us hold.
FIELD_LIMIT = 64 * 1024 * 1024

#: Rows per batch handed to the re-router: large enough for ``lcr``'s batch calls to pay,
#: small enough to keep memory flat and the progress line moving.
BATCH = 50_000

#: The columns a replay reads, in :class:`Recorded` order (``first_gateway`` is derived
#: from ``attempts``).
NEEDED = (
    "call_id",
    "account_id",
    "caller",
    "callee_dialed",
    "callee_normalised",
    "gateway_id",
    "route_prefix",
    "invite_at",
    "answer_at",
    "billsec",
    "end_reason",
    "sell_cost",
    "buy_cost",
    "attempts",
)


class ReplaySourceError(Exception):
    """The CDR file cannot be read as CDRs (says which file and why)."""


class Recorded(NamedTuple):
    """One CDR as recorded, the text of its columns (None for SQL NULL / an empty cell).

    ``first_gateway`` is the first gateway the switch tried (None: refused before any).
    ``caller_id``: SQL NULL and a missing column are None. A CSV export writes NULL and ""
    (the call had no caller-ID) alike, as an empty cell, which is read as None: replaying an
    export falls back to ``caller`` for the calls without a caller-ID, where replaying the
    database is exact.
    """

    call_id: str
    account_id: str | None
    caller: str
    callee_dialed: str
    callee_normalised: str | None
    gateway_id: str | None
    route_prefix: str | None
    invite_at: str
    answer_at: str | None
    billsec: int
    end_reason: str
    sell_cost: str | None
    buy_cost: str | None
    first_gateway: str | None
    #: The caller-ID the switch routed on: "" none, None not recorded (see the module).
    caller_id: str | None = None


#: The optional column read after :data:`NEEDED` when present.
CALLER_ID = "caller_id"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SELECT = (
    "SELECT call_id, account_id, caller, callee_dialed, callee_normalised, gateway_id,"
    " route_prefix, invite_at, answer_at, billsec, end_reason, sell_cost, buy_cost,"
    " json_extract(attempts, '$[0].gateway_id'), {caller_id} FROM cdrs"
)


def _select(conn: sqlite3.Connection) -> str:
    """:data:`_SELECT` with ``caller_id`` where the table has it (a version-1 file has not)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(cdrs)")}
    return _SELECT.format(caller_id=CALLER_ID if CALLER_ID in columns else "NULL")


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC


def _stamp(moment: dt.datetime | None) -> str | None:
    """A bound as the store writes timestamps (fixed-width UTC text: text order is time
    order, so the ``invite_at`` index answers the range)."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _where(since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("invite_at >= ?")
        params.append(_stamp(since) or "")
    if until is not None:
        clauses.append("invite_at < ?")
        params.append(_stamp(until) or "")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _connect(path: Path) -> sqlite3.Connection:
    # Read-write but never create, as ``softswitch.cdr.query_file``: a reader may have to
    # recover the WAL of a switch that crashed. Nothing is written.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30.0)


def count_cdrs(path: Path, since: dt.datetime | None, until: dt.datetime | None) -> int | None:
    """How many CDRs a replay of ``path`` reads (for the progress line); None for a CSV
    file (its progress is counted in bytes)."""
    if not _is_sqlite(path):
        return None
    where, params = _where(since, until)
    with contextlib.closing(_connect(path)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM cdrs" + where, params).fetchone()[0])
        except sqlite3.Error as e:
            raise ReplaySourceError(f"{path}: not a CDR database ({e})") from None


def read_cdrs(
    path: Path,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    *,
    batch: int = BATCH,
    read: list[int] | None = None,
) -> Iterator[list[Recorded]]:
    """The CDRs of ``path`` with ``since <= invite_at < until``, in batches, oldest first
    (a CSV file in its own order). ``read[0]`` counts the bytes of a CSV file read so far."""
    if not path.is_file():
        raise ReplaySourceError(f"{path}: no such file")
    if _is_sqlite(path):
        yield from _read_sqlite(path, since, until, batch)
    else:
        yield from _read_csv(path, since, until, batch, read if read is not None else [0])


def _read_sqlite(
    path: Path, since: dt.datetime | None, until: dt.datetime | None, batch: int
) -> Iterator[list[Recorded]]:
    where, params = _where(since, until)
    with contextlib.closing(_connect(path)) as conn:
        try:
            cursor = conn.execute(_select(conn) + where + " ORDER BY invite_at, id", params)
        except sqlite3.Error as e:
            raise ReplaySourceError(f"{path}: not a CDR database ({e})") from None
        make = Recorded._make
        while True:
            try:
                rows = cursor.fetchmany(batch)
            except sqlite3.Error as e:
                raise ReplaySourceError(_reading_failed(conn, path, e)) from None
            if not rows:
                break
            yield list(map(make, rows))


def _reading_failed(conn: sqlite3.Connection, path: Path, error: sqlite3.Error) -> str:
    """What stopped a read of the CDRs half way, naming the first CDR whose ``attempts``
    is not JSON when that is the cause (SQLite's ``json_extract`` fails on it)."""
    try:
        bad = conn.execute(
            "SELECT id, call_id FROM cdrs WHERE NOT json_valid(attempts) ORDER BY id LIMIT 1"
        ).fetchone()
    except sqlite3.Error:
        bad = None
    if bad is not None:
        return (
            f"{path}: CDR id {bad[0]} (call_id {bad[1]!r}): attempts: not the JSON array of"
            f" attempts ({error})"
        )
    return f"{path}: reading the CDRs failed: {error}"


def _read_csv(
    path: Path,
    since: dt.datetime | None,
    until: dt.datetime | None,
    batch: int,
    read: list[int],
) -> Iterator[list[Recorded]]:
    low, high = _stamp(since), _stamp(until)
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(_counted(handle, read))
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise ReplaySourceError(f"{path}: line 1: {e}") from None
        if header is None:
            raise ReplaySourceError(f"{path}: empty file (expected a CDR CSV export)")
        missing = [c for c in NEEDED if c not in header]
        if missing:
            raise ReplaySourceError(
                f"{path}: not a CDR export (softswitch cdr --csv): no column"
                f" {', '.join(repr(c) for c in missing)} in its header"
            )
        where = [header.index(c) for c in NEEDED]
        caller_id = header.index(CALLER_ID) if CALLER_ID in header else None
        out: list[Recorded] = []
        for line, cells in _records(reader, path):
            if len(cells) != len(header):
                raise ReplaySourceError(
                    f"{path}: line {line}: {len(cells)} fields, the header has {len(header)}"
                )
            values = [cells[i] for i in where]
            invite_at = _csv_time(values[7], path, line, "invite_at")
            if (low is not None and invite_at < low) or (high is not None and invite_at >= high):
                continue
            row = _csv_row(values, invite_at, path, line)
            if caller_id is not None and cells[caller_id]:
                row = row._replace(caller_id=cells[caller_id])
            out.append(row)
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out


class _LineReader(Protocol):
    """A ``csv.reader``: its records and the physical line it has read up to."""

    @property
    def line_num(self) -> int: ...

    def __next__(self) -> list[str]: ...


def _records(reader: _LineReader, path: Path) -> Iterator[tuple[int, list[str]]]:
    """Each record of ``reader`` with the physical line it starts on (a quoted field may
    span lines, so the record count is not the line). A record the csv module cannot read
    is an error naming that line."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ReplaySourceError(f"{path}: line {start}: {e}") from None
        yield start, cells


def _csv_time(text: str, path: Path, line: int, column: str) -> str:
    """The timestamp as the store's fixed-width UTC text (so it compares with the bounds)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ReplaySourceError(
            f"{path}: line {line}: {column}: not an ISO 8601 time: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _csv_row(values: list[str], invite_at: str, path: Path, line: int) -> Recorded:
    def text(i: int) -> str | None:
        return values[i] or None

    try:
        billsec = int(values[9] or "0")
    except ValueError:
        raise ReplaySourceError(
            f"{path}: line {line}: billsec: not whole seconds: {values[9]!r}"
        ) from None
    try:
        attempts = json.loads(values[13] or "[]")
        first = attempts[0]["gateway_id"] if attempts else None
    except (ValueError, LookupError, TypeError):
        raise ReplaySourceError(
            f"{path}: line {line}: attempts: not the JSON array of attempts"
        ) from None
    answer_at = values[8]
    return Recorded(
        call_id=values[0],
        account_id=text(1),
        caller=values[2],
        callee_dialed=values[3],
        callee_normalised=text(4),
        gateway_id=text(5),
        route_prefix=text(6),
        invite_at=invite_at,
        answer_at=_csv_time(answer_at, path, line, "answer_at") if answer_at else None,
        billsec=billsec,
        end_reason=values[10],
        sell_cost=text(11),
        buy_cost=text(12),
        first_gateway=first,
    )


def _counted(lines: Iterator[str], read: list[int]) -> Iterator[str]:
    """The lines of a file, adding their length to ``read[0]`` for the progress line."""
    for line in lines:
        read[0] += len(line)
        yield line
