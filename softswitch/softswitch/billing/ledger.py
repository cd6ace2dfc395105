"""The ledger: every change to an account's balance, one row each, next to the CDRs.

The balance *is* the ledger: ``SUM(amount)`` over an account's rows, and each row keeps
``balance_after`` (that sum up to and including it) so an operator reads a statement without
adding anything up. Amounts are nano-units (``billing.money``), signed: credit positive,
debit negative. ``kind`` is ``topup``, ``adjustment``, ``call`` (a call's sell cost, written
in the transaction that writes its CDR: ``cdr.CdrStore``) or ``refund``. ``reference`` is the
Call-ID for a call and the operator's note otherwise; ``run_id`` is the switch run whose call
a row debits (``switch_runs``; a dead run's calls settled by recovery keep the dead run's id),
NULL for what an operator booked, which is how a running switch tells the entries it must
pick up (top-ups, other runs' calls) from its own.

Rows are only ever appended. Whoever appends holds the database's write lock while it reads
the account's last ``balance_after`` and inserts (``BEGIN IMMEDIATE`` here, the CDR writer's
transaction there), so two writers never compute a balance from the same predecessor. On
PostgreSQL, where several switches (nodes) append at once and there is no database-wide
write lock, each account is locked instead (``pg_advisory_xact_lock`` on its id, taken in
sorted order so two writers never wait for each other in a cycle) for the transaction.

The functions take either database's connection: a ``sqlite3.Connection`` or a psycopg one
from ``store.postgres_connect`` (its rows read by name and position too); the SQL is
written once with ``?`` and given PostgreSQL's ``%s`` there. The PostgreSQL table is created
by ``store.migrations`` (``LEDGER_SCHEMA`` is the SQLite one).

A running switch reads what others booked since it last looked (``changes_since``, from the
``Position`` that ``balances`` or the previous read returned). On SQLite "the rows after the
last id" is exact: one writer at a time holds the write lock from the id's allocation to the
commit, so ids commit in order. On PostgreSQL they do not: two transactions (two nodes, or an
operator's top-up and a node's debits) take ids from the sequence and commit in either order,
so a reader that has seen id 11 may see id 10 commit later, and "after 11" would never count
it. There each row carries its writer's transaction id (``tx``, ``pg_current_xact_id()`` by
default), and the position is kept in transactions: every row of a transaction below the
``horizon`` is counted, plus the rows in ``seen``. A read, in one snapshot, takes the rows of
transactions from the horizon on, counts the ones not seen, and moves the horizon to its
snapshot's ``xmin``: every transaction below it had ended when the snapshot was taken, so
none of them can add a row later; the rows read at or above it are the new ``seen``. Nothing
is waited for (a top-up is counted as soon as it is committed) and nothing is counted twice.
A transaction left open anywhere on the server holds the horizon back: the rows since are
then re-read at each read (and skipped), not lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "LEDGER_SCHEMA",
    "Booking",
    "GatewaySpend",
    "LedgerEntry",
    "Position",
    "append",
    "balance_of",
    "balances",
    "book",
    "call_totals",
    "changes_since",
    "connect",
    "entries",
    "last_entry",
    "locked",
    "reserved",
    "spend",
]

KINDS = ("topup", "adjustment", "call", "refund")

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    TEXT    NOT NULL,
    at            TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('topup', 'adjustment', 'call', 'refund')),
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    reference     TEXT    NOT NULL,
    run_id        TEXT
);
CREATE INDEX IF NOT EXISTS ledger_account ON ledger (account_id, id);
"""


_ROWS_PER_INSERT = 32
_INSERT = (
    "INSERT INTO ledger (account_id, at, kind, amount, balance_after, reference, run_id) VALUES "
)


@dataclass(frozen=True, slots=True)
class Booking:
    """One row to append: ``amount`` nano-units, signed."""

    account_id: str
    kind: str
    amount: int
    reference: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    account_id: str
    at: dt.datetime
    kind: str
    amount: int
    balance_after: int
    reference: str
    run_id: str | None

    @classmethod
    def from_row(cls, row: Any) -> LedgerEntry:
        at = row["at"]  # text in SQLite, a datetime from PostgreSQL
        if not isinstance(at, dt.datetime):
            at = dt.datetime.fromisoformat(at)
        return cls(
            id=row["id"],
            account_id=row["account_id"],
            at=at.astimezone(dt.UTC),
            kind=row["kind"],
            amount=row["amount"],
            balance_after=row["balance_after"],
            reference=row["reference"],
            run_id=row["run_id"],
        )


@dataclass(frozen=True, slots=True)
class Position:
    """How far a reader has counted the ledger (see the module docstring): on SQLite every
    row up to ``last_id``; on PostgreSQL every row of a transaction below ``horizon`` (an
    ``xid8``) and the rows whose ids are in ``seen``. ``last_id`` is the newest row counted
    on both. ``Position()`` has counted nothing."""

    last_id: int = 0
    horizon: int = 0
    seen: frozenset[int] = frozenset()


def _ts(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _postgres(conn: Any) -> bool:
    return not isinstance(conn, sqlite3.Connection)


def _execute(conn: Any, sql: str, params: Sequence[object] = ()) -> Any:
    """``conn.execute`` with the SQL's ``?`` marks in the connection's own style."""
    if _postgres(conn):
        sql = sql.replace("?", "%s")
    return conn.execute(sql, params)


def _lock(conn: Any, account_ids: Sequence[str]) -> None:
    """PostgreSQL: lock each account until the transaction ends (sorted: no deadlock)."""
    for account in sorted(set(account_ids)):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (account,))


@contextlib.contextmanager
def locked(conn: Any, account_ids: Sequence[str]) -> Iterator[None]:
    """A write transaction in which nobody else appends to ``account_ids`` (SQLite:
    ``BEGIN IMMEDIATE``, the write lock; PostgreSQL: the accounts' advisory locks), for a
    check that must hold when the row goes in, as a refund's "no more than was debited"."""
    if _postgres(conn):
        with conn.transaction():
            _lock(conn, account_ids)
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _last_balance(conn: Any, account_id: str) -> int:
    row = _execute(
        conn,
        "SELECT balance_after FROM ledger WHERE account_id = ? ORDER BY id DESC LIMIT 1",
        (account_id,),
    ).fetchone()
    return int(row[0]) if row is not None else 0


def append(conn: Any, bookings: Sequence[Booking], run_id: str | None) -> None:
    """Append ``bookings`` in order. The caller holds an open write transaction and commits
    (on PostgreSQL the accounts' locks are taken here); each row's ``balance_after`` follows
    its account's last."""
    if not bookings:
        return
    for b in bookings:
        if b.kind not in KINDS:
            raise ValueError(f"ledger kind {b.kind!r} is not one of {', '.join(KINDS)}")
    accounts = sorted({b.account_id for b in bookings})
    if _postgres(conn):
        _lock(conn, accounts)
    last = {account: _last_balance(conn, account) for account in accounts}
    values: list[object] = []
    for b in bookings:
        last[b.account_id] += b.amount
        values += (b.account_id, _ts(b.at), b.kind, b.amount, last[b.account_id], b.reference)
        values.append(run_id)
    # Many rows per statement, as the CDR writer does: each statement step hands the GIL
    # back, which stalls the event loop thread; a batch of N debits is N/32 steps, not N.
    width = 7
    for start in range(0, len(values), width * _ROWS_PER_INSERT):
        chunk = values[start : start + width * _ROWS_PER_INSERT]
        n = len(chunk) // width
        _execute(conn, _INSERT + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n), chunk)


@contextlib.contextmanager
def connect(path: str | Path, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the switch's database file in autocommit mode (the caller begins
    its own transactions). Without ``create`` a missing file is an error, not a new file."""
    if create:
        conn = sqlite3.connect(path, timeout=30.0)
    else:
        uri = f"{Path(path).resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    conn.isolation_level = None
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(LEDGER_SCHEMA)
        yield conn
    finally:
        conn.close()


def book(conn: Any, booking: Booking) -> LedgerEntry:
    """Append one operator booking in its own transaction; returns the row as written."""
    with locked(conn, [booking.account_id]):
        append(conn, [booking], None)
        return last_entry(conn, booking.account_id)


def last_entry(conn: Any, account_id: str) -> LedgerEntry:
    """The account's newest row; in ``locked`` after an append, the one just written (the
    account is locked until the commit)."""
    row = _execute(
        conn, "SELECT * FROM ledger WHERE account_id = ? ORDER BY id DESC LIMIT 1", (account_id,)
    ).fetchone()
    return LedgerEntry.from_row(row)


@contextlib.contextmanager
def _snapshot(conn: Any) -> Iterator[None]:
    """One snapshot for several reads (PostgreSQL: ``REPEATABLE READ``)."""
    if _postgres(conn):
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _horizon(conn: Any) -> int:
    """PostgreSQL: the snapshot's ``xmin``, below which every transaction has ended."""
    return int(conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0])


def balances(conn: Any) -> tuple[dict[str, int], Position]:
    """Every account's balance (the sum of its rows) and the position they count up to,
    read in one snapshot, so that what ``changes_since`` that position finds is exactly
    what the sums lack."""
    with _snapshot(conn):
        sums = {
            row[0]: int(row[1])
            for row in conn.execute("SELECT account_id, SUM(amount) FROM ledger GROUP BY 1")
        }
        last = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM ledger").fetchone()[0])
        if not _postgres(conn):
            return sums, Position(last)
        horizon = _horizon(conn)
        seen = conn.execute("SELECT id FROM ledger WHERE tx >= %s::xid8", (str(horizon),))
        return sums, Position(last, horizon, frozenset(int(row[0]) for row in seen))


def balance_of(conn: Any, account_id: str) -> int:
    """One account's balance: its last row's ``balance_after`` (0 without rows)."""
    return _last_balance(conn, account_id)


def changes_since(
    conn: Any, since: Position | int, run_id: str | None
) -> tuple[list[tuple[str, int]], Position]:
    """(account, amount) of the rows committed since ``since`` that ``run_id`` did not
    write, in id order, and the new position: what a running switch has not yet counted.

    ``since`` is a position from ``balances`` or the last call; an id means "the rows after
    it", which only SQLite can answer (on PostgreSQL only 0, nothing counted yet)."""
    if isinstance(since, int):
        if since and _postgres(conn):
            raise ValueError(
                "on PostgreSQL ledger ids do not commit in order: read changes from the"
                " Position that balances() or changes_since() returned, not from an id"
            )
        since = Position(since)
    if not _postgres(conn):
        rows = _execute(
            conn,
            "SELECT id, account_id, amount, run_id FROM ledger WHERE id > ? ORDER BY id",
            (since.last_id,),
        ).fetchall()
        changes = [(r[1], r[2]) for r in rows if run_id is None or r[3] != run_id]
        return changes, Position(rows[-1][0] if rows else since.last_id)
    with _snapshot(conn):
        horizon = max(since.horizon, _horizon(conn))
        rows = conn.execute(
            "SELECT id, account_id, amount, run_id, tx::text FROM ledger"
            " WHERE tx >= %s::xid8 ORDER BY id",
            (str(since.horizon),),
        ).fetchall()
    new = [r for r in rows if r[0] not in since.seen]
    changes = [(r[1], int(r[2])) for r in new if run_id is None or r[3] != run_id]
    seen = frozenset(int(r[0]) for r in rows if int(r[4]) >= horizon)
    last = max([since.last_id, *(int(r[0]) for r in new)])
    return changes, Position(last, horizon, seen)


def entries(
    conn: Any,
    account_id: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[LedgerEntry]:
    """An account's rows, oldest first, with ``since <= at < until``."""
    sql = "SELECT * FROM ledger WHERE account_id = ?"
    params: list[object] = [account_id]
    if since is not None:
        sql += " AND at >= ?"
        params.append(_ts(since))
    if until is not None:
        sql += " AND at < ?"
        params.append(_ts(until))
    return [LedgerEntry.from_row(r) for r in _execute(conn, sql + " ORDER BY id", params)]


def call_totals(conn: Any, account_id: str, call_id: str) -> tuple[int, int] | None:
    """(debited, refunded) of one call of the account, both positive; None when the call
    has no debit. Read in ``locked`` for a refund, so no other refund passes the same check."""
    rows = _execute(
        conn,
        "SELECT kind, SUM(amount) FROM ledger"
        " WHERE account_id = ? AND reference = ? AND kind IN ('call', 'refund') GROUP BY kind",
        (account_id, call_id),
    ).fetchall()
    totals = {row[0]: int(row[1]) for row in rows}
    if "call" not in totals:
        return None
    return -totals["call"], totals.get("refund", 0)


def reserved(conn: Any, dead: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, int]:
    """Credit held by answered calls not settled yet, per account (``open_calls.reserved``,
    kept up to date slice by slice by the running switch). With ``dead``, only dead runs'
    calls: what recovery could not settle (a dead run's calls stay reserved until it
    does). ``dead`` says which runs are (``store.recovery.run_is_alive``), given the
    ``switch_runs`` row's ``run_id``, ``host``, ``pid``, ``heartbeat_at``,
    ``heartbeat_interval`` and ``stopped_at``: a live run's calls (a sibling worker's,
    another node's) are that run's own, counted by its own book."""
    if dead is None:
        try:
            rows = conn.execute(
                "SELECT billed_account, SUM(reserved) FROM open_calls"
                " WHERE billed_account IS NOT NULL GROUP BY 1"
            ).fetchall()
        except sqlite3.OperationalError:  # a database the switch never ran on
            return {}
        return {row[0]: int(row[1] or 0) for row in rows}
    try:
        rows = conn.execute(
            "SELECT o.billed_account, SUM(o.reserved), r.run_id, r.host, r.pid,"
            " r.heartbeat_at, r.heartbeat_interval, r.stopped_at"
            " FROM open_calls o JOIN switch_runs r ON r.run_id = o.run_id"
            " WHERE o.billed_account IS NOT NULL"
            " GROUP BY o.billed_account, r.run_id, r.host, r.pid, r.heartbeat_at,"
            " r.heartbeat_interval, r.stopped_at"
        ).fetchall()
    except sqlite3.OperationalError:  # a database the switch never ran on
        return {}
    names = ("run_id", "host", "pid", "heartbeat_at", "heartbeat_interval", "stopped_at")
    out: dict[str, int] = {}
    for row in rows:
        run = dict(zip(names, tuple(row)[2:], strict=True))
        if dead(run):
            out[row[0]] = out.get(row[0], 0) + int(row[1] or 0)
    return out


@dataclass(frozen=True, slots=True)
class GatewaySpend:
    """What one carrier terminated for us: answered calls, billed seconds and buy cost.
    ``unrated`` answered calls have no buy cost (no deck, or no rate): reconcile by hand."""

    gateway_id: str
    calls: int
    billsec: int
    cost: Decimal
    unrated: int


def spend(
    conn: Any,
    gateway_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[GatewaySpend]:
    """Per-gateway totals of answered CDRs with ``since <= invite_at < until``. Costs are
    summed as ``Decimal`` in Python: the CDRs keep them as exact decimal text."""
    if not _postgres(conn) and (
        conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'cdrs'").fetchone() is None
    ):
        return []  # a database the switch never ran on (only a top-up booked so far)
    sql = "SELECT gateway_id, billsec, buy_cost FROM cdrs WHERE answer_at IS NOT NULL"
    sql += " AND gateway_id IS NOT NULL"
    params: list[object] = []
    if gateway_id is not None:
        sql += " AND gateway_id = ?"
        params.append(gateway_id)
    if since is not None:
        sql += " AND invite_at >= ?"
        params.append(_ts(since))
    if until is not None:
        sql += " AND invite_at < ?"
        params.append(_ts(until))
    totals: dict[str, GatewaySpend] = {}
    for gw, billsec, cost in _execute(conn, sql, params):
        t = totals.get(gw) or GatewaySpend(gw, 0, 0, Decimal(0), 0)
        totals[gw] = GatewaySpend(
            gw,
            t.calls + 1,
            t.billsec + (billsec or 0),
            t.cost + (Decimal(cost) if cost is not None else 0),
            t.unrated + (cost is None),
        )
    return [totals[gw] for gw in sorted(totals)]
