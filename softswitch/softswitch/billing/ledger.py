"""The ledger: every change to an account's balance, one row each, next to the CDRs.

The balance *is* the ledger: ``SUM(amount)`` over an account's rows, and each row keeps
``balance_after`` (that sum up to and including it) so an operator reads a statement without
adding anything up. Amounts are nano-units (``billing.money``), signed: credit positive,
debit negative. ``kind`` is ``topup``, ``adjustment``, ``call`` (a call's sell cost, written
in the transaction that writes its CDR: ``cdr.CdrStore``) or ``refund``. ``reference`` is the
Call-ID for a call and the operator's note otherwise; ``run_id`` is the switch run that wrote
a call's row (``switch_runs``), NULL for what an operator booked, which is how a running
switch tells the entries it must pick up (top-ups) from its own.

Rows are only ever appended. Whoever appends holds the database's write lock while it reads
the account's last ``balance_after`` and inserts (``BEGIN IMMEDIATE`` here, the CDR writer's
transaction there), so two writers never compute a balance from the same predecessor.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

__all__ = [
    "KINDS",
    "LEDGER_SCHEMA",
    "Booking",
    "GatewaySpend",
    "LedgerEntry",
    "append",
    "balance_of",
    "balances",
    "book",
    "changes_since",
    "connect",
    "entries",
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
    def from_row(cls, row: sqlite3.Row) -> LedgerEntry:
        return cls(
            id=row["id"],
            account_id=row["account_id"],
            at=dt.datetime.fromisoformat(row["at"]),
            kind=row["kind"],
            amount=row["amount"],
            balance_after=row["balance_after"],
            reference=row["reference"],
            run_id=row["run_id"],
        )


def _ts(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def append(conn: sqlite3.Connection, bookings: Sequence[Booking], run_id: str | None) -> None:
    """Append ``bookings`` in order. The caller holds the write lock (an open write
    transaction) and commits; each row's ``balance_after`` follows its account's last."""
    if not bookings:
        return
    last: dict[str, int] = {}
    for b in bookings:
        if b.kind not in KINDS:
            raise ValueError(f"ledger kind {b.kind!r} is not one of {', '.join(KINDS)}")
        if b.account_id not in last:
            row = conn.execute(
                "SELECT balance_after FROM ledger WHERE account_id = ? ORDER BY id DESC LIMIT 1",
                (b.account_id,),
            ).fetchone()
            last[b.account_id] = row[0] if row is not None else 0
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
        conn.execute(_INSERT + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n), chunk)


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


def book(conn: sqlite3.Connection, booking: Booking) -> LedgerEntry:
    """Append one operator booking in its own transaction; returns the row as written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        append(conn, [booking], None)
        row = conn.execute("SELECT * FROM ledger WHERE id = last_insert_rowid()").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return LedgerEntry.from_row(row)


def balances(conn: sqlite3.Connection) -> tuple[dict[str, int], int]:
    """Every account's balance (the sum of its rows) and the ledger's last row id, read in
    one snapshot so that what follows the id is exactly what the sums lack."""
    conn.execute("BEGIN")
    try:
        sums = {
            row[0]: row[1]
            for row in conn.execute("SELECT account_id, SUM(amount) FROM ledger GROUP BY 1")
        }
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM ledger").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    return sums, last


def balance_of(conn: sqlite3.Connection, account_id: str) -> int:
    """One account's balance: its last row's ``balance_after`` (0 without rows)."""
    row = conn.execute(
        "SELECT balance_after FROM ledger WHERE account_id = ? ORDER BY id DESC LIMIT 1",
        (account_id,),
    ).fetchone()
    return int(row[0]) if row is not None else 0


def changes_since(
    conn: sqlite3.Connection, last_id: int, run_id: str | None
) -> tuple[list[tuple[str, int]], int]:
    """(account, amount) of the rows after ``last_id`` that ``run_id`` did not write, and
    the new last id: what a running switch has not yet counted."""
    rows = conn.execute(
        "SELECT id, account_id, amount, run_id FROM ledger WHERE id > ? ORDER BY id", (last_id,)
    ).fetchall()
    changes = [(r[1], r[2]) for r in rows if run_id is None or r[3] != run_id]
    return changes, (rows[-1][0] if rows else last_id)


def entries(
    conn: sqlite3.Connection,
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
    return [LedgerEntry.from_row(r) for r in conn.execute(sql + " ORDER BY id", params)]


def reserved(conn: sqlite3.Connection) -> dict[str, int]:
    """Credit held by answered calls not yet settled, per account (``open_calls.reserved``,
    kept up to date slice by slice by the running switch; a dead run's calls stay reserved
    until the next start settles them)."""
    try:
        rows = conn.execute(
            "SELECT billed_account, SUM(reserved) FROM open_calls"
            " WHERE billed_account IS NOT NULL GROUP BY 1"
        ).fetchall()
    except sqlite3.OperationalError:  # a database the switch never ran on
        return {}
    return {row[0]: row[1] or 0 for row in rows}


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
    conn: sqlite3.Connection,
    gateway_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[GatewaySpend]:
    """Per-gateway totals of answered CDRs with ``since <= invite_at < until``. Costs are
    summed as ``Decimal`` in Python: the CDRs keep them as exact decimal text."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'cdrs'").fetchone() is None:
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
    for gw, billsec, cost in conn.execute(sql, params):
        t = totals.get(gw) or GatewaySpend(gw, 0, 0, Decimal(0), 0)
        totals[gw] = GatewaySpend(
            gw,
            t.calls + 1,
            t.billsec + (billsec or 0),
            t.cost + (Decimal(cost) if cost is not None else 0),
            t.unrated + (cost is None),
        )
    return [totals[gw] for gw in sorted(totals)]
