"""The records the stores keep, whatever the database: CDRs, call starts, reservations.

These are the values the switch hands a ``CdrSink`` and reads back from one. How a record
becomes a row is here too, once for every backend: ``CdrRecord.values`` (the ``cdrs``
columns in ``CSV_COLUMNS`` order, timestamps as fixed-width ISO 8601 text, money as exact
decimal text, attempts as compact JSON) is what the SQLite store binds and the CSV export
writes; ``CdrRecord.from_row`` reads a row of either database back (PostgreSQL hands back
datetimes, ``Decimal`` and parsed JSON where SQLite hands back text).

Row building is the CDR writer's main cost (``benches/cdr_write.py``), so it avoids work
that shows in a profile: one tuple rather than a dict per row, each distinct timestamp of a
record formatted once (the attempts repeat the record's own), and one shared JSON encoder.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TextIO

from softswitch.billing.ledger import Booking

__all__ = [
    "CSV_COLUMNS",
    "OPEN_COLUMNS",
    "AttemptRecord",
    "CallStart",
    "CdrAttempt",
    "CdrRecord",
    "CdrSink",
    "Rater",
    "RecoveredRun",
    "Reservation",
    "RowLike",
    "parse_ts",
    "seconds_between",
    "ts",
    "utc",
    "write_csv",
]


class RowLike(Protocol):
    """A stored row read by column name: ``sqlite3.Row``, ``store.postgres_connect.Row``,
    or a dict (a JSON object)."""

    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


_UTC = dt.UTC
#: ``json.dumps(..., separators=(",", ":"))`` without building an encoder per call.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def ts(value: dt.datetime | None) -> str | None:
    """Fixed-width ISO 8601 UTC, so text order is time order (``--since`` uses an index)."""
    if value is None:
        return None
    if value.tzinfo is not _UTC:
        value = utc(value)
    return value.isoformat(timespec="microseconds")


def _ts_memo(value: dt.datetime | None, memo: dict[dt.datetime, str]) -> str | None:
    """``ts`` remembering what it formatted for one record (whose attempts repeat its
    timestamps): a dict look-up costs a tenth of an ``isoformat``."""
    if value is None:
        return None
    text = memo.get(value)
    if text is None:
        aware = value if value.tzinfo is _UTC else utc(value)
        text = memo[value] = aware.isoformat(timespec="microseconds")
    return text


def _json_ts(value: dt.datetime | None, memo: dict[dt.datetime, str]) -> str:
    """A timestamp as a JSON value (ISO text needs no escaping)."""
    return "null" if value is None else f'"{_ts_memo(value, memo)}"'


#: An attempt as compact JSON, keys in ``CdrAttempt.to_json`` order: byte for byte what
#: ``json.dumps(attempt.to_json(), separators=(",", ":"))`` writes, at a third of the cost.
_ATTEMPT_JSON = (
    '{"gateway_id":%s,"status":%s,"outcome":%s,"started_at":%s,"ended_at":%s,'
    '"request_uri":%s,"ring_at":%s}'
)
_json_text = json.encoder.encode_basestring_ascii  # what json uses for ensure_ascii


def parse_ts(value: str | dt.datetime | None) -> dt.datetime | None:
    """A stored timestamp: ISO text (SQLite, JSON) or a datetime (PostgreSQL), as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return utc(value)
    return dt.datetime.fromisoformat(value)


def seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    """Seconds from ``start`` to ``end`` to the millisecond (never negative)."""
    if start is None or end is None:
        return None
    return max(0.0, round((utc(end) - utc(start)).total_seconds(), 3))


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
    # Version 2 of ``store.migrations``: appended, so the positions above never move.
    "caller_id",
)


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

    def to_json(self, memo: dict[dt.datetime, str] | None = None) -> dict[str, Any]:
        """The attempt as a JSON object; ``memo``: the record's formatted timestamps."""
        memo = {} if memo is None else memo
        return {
            "gateway_id": self.gateway_id,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": _ts_memo(self.started_at, memo),
            "ended_at": _ts_memo(self.ended_at, memo),
            "request_uri": self.request_uri,
            "ring_at": _ts_memo(self.ring_at, memo),
        }

    def json_text(self, memo: dict[dt.datetime, str]) -> str:
        """``to_json`` as compact JSON text (see ``_ATTEMPT_JSON``)."""
        status, uri = self.status, self.request_uri
        return _ATTEMPT_JSON % (
            _json_text(self.gateway_id),
            "null" if status is None else int(status),
            _json_text(self.outcome),
            _json_ts(self.started_at, memo),
            _json_ts(self.ended_at, memo),
            "null" if uri is None else _json_text(uri),
            _json_ts(self.ring_at, memo),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CdrAttempt:
        return cls(
            gateway_id=data["gateway_id"],
            status=data.get("status"),
            outcome=data["outcome"],
            started_at=parse_ts(data.get("started_at")),
            ended_at=parse_ts(data.get("ended_at")),
            request_uri=data.get("request_uri"),
            ring_at=parse_ts(data.get("ring_at")),
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

    ``caller`` is the ``From`` user as received; ``caller_id`` the caller-ID the switch routed
    on (``call.cli``: ``P-Asserted-Identity`` first, anonymity and ``Privacy`` honoured, the
    account's ``cli`` rules applied): ``""`` when the call had none, None when not recorded
    (refused before routing, or written before the column existed).
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
    caller_id: str | None = None

    def __post_init__(self) -> None:
        self.attempts = tuple(self.attempts)
        if self.duration is None:
            self.duration = seconds_between(self.answer_at, self.end_at) or 0.0
        if self.billsec is None:
            self.billsec = math.ceil(self.duration)
        if self.pdd is None:
            self.pdd = seconds_between(self.invite_at, self.ring_at)

    def values(self) -> tuple[Any, ...]:
        """The ``cdrs`` columns in ``CSV_COLUMNS`` order: text timestamps (fixed-width ISO
        8601 UTC) and money (exact decimal text), compact JSON attempts. What the SQLite
        store binds; built without an intermediate dict (the writer's hot path)."""
        memo: dict[dt.datetime, str] = {}
        sell_rate, sell_cost, buy_rate, buy_cost = (
            self.sell_rate,
            self.sell_cost,
            self.buy_rate,
            self.buy_cost,
        )
        attempts = self.attempts
        return (
            self.call_id,
            self.account_id,
            self.source,
            self.caller,
            self.callee_dialed,
            self.callee_normalised,
            self.callee_sent,
            self.gateway_id,
            self.route_prefix,
            _ts_memo(self.invite_at, memo),
            _ts_memo(self.ring_at, memo),
            _ts_memo(self.answer_at, memo),
            _ts_memo(self.end_at, memo),
            self.duration,
            self.billsec,
            self.pdd,
            self.hangup_side,
            str(self.end_reason),  # an EndReason's value: plain text
            self.status,
            self.q850,
            None if sell_rate is None else str(sell_rate),
            None if sell_cost is None else str(sell_cost),
            None if buy_rate is None else str(buy_rate),
            None if buy_cost is None else str(buy_cost),
            "[" + ",".join([a.json_text(memo) for a in attempts]) + "]",
            self.detail,
            self.caller_id,
        )

    def to_row(self) -> dict[str, Any]:
        """Column name -> SQL/CSV value (text timestamps and money, JSON attempts)."""
        return dict(zip(CSV_COLUMNS, self.values(), strict=True))

    @classmethod
    def from_row(cls, row: RowLike) -> CdrRecord:
        """A stored row back: SQLite's (text timestamps, money and JSON) or PostgreSQL's
        (datetimes, ``Decimal``, parsed JSON), or a JSON object of ``to_row``."""

        def money(value: str | Decimal | None) -> Decimal | None:
            return None if value is None else Decimal(value)

        attempts = row["attempts"]
        if isinstance(attempts, str):
            attempts = json.loads(attempts)

        invite_at = parse_ts(row["invite_at"])
        end_at = parse_ts(row["end_at"])
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
            ring_at=parse_ts(row["ring_at"]),
            answer_at=parse_ts(row["answer_at"]),
            end_at=end_at,
            duration=float(row["duration"]),
            billsec=row["billsec"],
            pdd=None if row["pdd"] is None else float(row["pdd"]),
            hangup_side=row["hangup_side"],
            end_reason=row["end_reason"],
            status=row["status"],
            q850=row["q850"],
            sell_rate=money(row["sell_rate"]),
            sell_cost=money(row["sell_cost"]),
            buy_rate=money(row["buy_rate"]),
            buy_cost=money(row["buy_cost"]),
            attempts=tuple(CdrAttempt.from_json(a) for a in attempts),
            detail=row["detail"],
            # A call start (or JSON) written before version 2 has no caller_id. keys():
            # ``in`` on a ``sqlite3.Row`` looks at its values.
            caller_id=row["caller_id"] if "caller_id" in row.keys() else None,  # noqa: SIM118
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

    def values(self, run_id: str) -> list[object]:
        """``open_calls`` values in ``OPEN_COLUMNS`` order for the run ``run_id``: the
        record as a JSON object of its ``cdrs`` row (what recovery reads back)."""
        row = self.cdr.values()
        return [
            run_id,
            row[0],  # call_id
            row[11],  # answer_at
            row[1],  # account_id
            row[7],  # gateway_id
            self.sell_deck,
            self.buy_deck,
            self.max_duration,
            _compact_json(dict(zip(CSV_COLUMNS, row, strict=True))),
            self.billed_account,
            self.billed_until,
            self.reserved,
        ]


#: The ``open_calls`` columns ``CallStart.values`` fills, in that order.
OPEN_COLUMNS = (
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
    """What the switch needs from a CDR store: ``cdr.CdrStore`` (SQLite) or
    ``store.postgres.PostgresCdrStore``."""

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
