"""What the store tests share: records like the switch's, and each backend as a test sees it.

``Backend`` is one database (a SQLite file or a migrated PostgreSQL database) with the few
things a test does to it directly: read a table, change a row (a heartbeat made old, a pid
made dead), open a store on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from softswitch.cdr import CallStart, CdrAttempt, CdrRecord
from softswitch.store.opening import CdrStoreLike, open_cdr_store

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)

#: Per-second test rates: a deck id's cost of one billed second.
PER_SECOND = {"sell": Decimal("0.002"), "buy-gwb": Decimal("0.001")}


def rate(deck: str | None, number: str, start: dt.datetime, billsec: int) -> Decimal | None:
    """A ``Rater``: recovery must ask for the normalised number of the records below."""
    assert number == "447911123456"
    return None if deck is None else PER_SECOND[deck] * billsec


def record(call_id: str = "c1", start: dt.datetime = T0, **changes: object) -> CdrRecord:
    fields: dict[str, object] = {
        "call_id": call_id,
        "account_id": "acme",
        "source": "192.0.2.10:5060",
        "caller": "alice",
        "callee_dialed": "1234#+447911123456",
        "callee_normalised": "447911123456",
        "callee_sent": "777911123456",
        "gateway_id": "gwb",
        "route_prefix": "447",
        "invite_at": start,
        "ring_at": start + dt.timedelta(seconds=1.25),
        "answer_at": start + dt.timedelta(seconds=4),
        "end_at": start + dt.timedelta(seconds=65.5),
        "end_reason": "normal_clearing",
        "status": 200,
        "q850": 16,
        "hangup_side": "callee",
        "attempts": (
            CdrAttempt("gwa", 503, "failed", start, start + dt.timedelta(seconds=0.5)),
            CdrAttempt(
                "gwb",
                200,
                "answered",
                start + dt.timedelta(seconds=0.5),
                start + dt.timedelta(seconds=65.5),
                request_uri="sip:777911123456@192.0.2.2:5060",
                ring_at=start + dt.timedelta(seconds=1.25),
            ),
        ),
        "sell_rate": Decimal("0.200000"),
        "sell_cost": Decimal("0.205000"),
        "buy_rate": Decimal("0.150000"),
        "buy_cost": Decimal("0.153750"),
    }
    fields.update(changes)
    return CdrRecord(**fields)  # type: ignore[arg-type]


def call_start(call_id: str, answer_at: dt.datetime, **changes: Any) -> CallStart:
    """The mark ``Pipeline.answered`` queues: the CDR as known at the 2xx."""
    cdr = record(
        call_id,
        answer_at - dt.timedelta(seconds=4),
        end_at=answer_at,
        end_reason="system_failure",
        q850=41,
        hangup_side="switch",
        sell_cost=None,
        buy_cost=None,
    )
    attempts = list(cdr.attempts)
    attempts[-1] = CdrAttempt("gwb", 200, "answered", answer_at - dt.timedelta(seconds=3.5))
    cdr.attempts = tuple(attempts)
    return CallStart(cdr, sell_deck="sell", buy_deck="buy-gwb", max_duration=3600.0, **changes)


def ended(start: CallStart, seconds: float) -> CdrRecord:
    """The same call's normal CDR, ``seconds`` after its answer."""
    assert start.cdr.answer_at is not None
    return dataclasses.replace(
        start.cdr,
        end_at=start.cdr.answer_at + dt.timedelta(seconds=seconds),
        end_reason="normal_clearing",
        q850=16,
        hangup_side="caller",
        duration=None,
        billsec=None,
    )


@dataclasses.dataclass
class Backend:
    """One database of either kind (see the module docstring)."""

    name: str
    database: str | Path

    @property
    def postgres(self) -> bool:
        return self.name == "postgres"

    def open(self, **kw: Any) -> CdrStoreLike:
        return open_cdr_store(self.database, **kw)

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        if self.postgres:
            with psycopg.connect(str(self.database), row_factory=dict_row) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql, params)]

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        if self.postgres:
            with psycopg.connect(str(self.database), autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), params)
            return
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            conn.execute(sql, params)
            conn.commit()

    def ledger_connection(self) -> Any:
        """A connection ``billing.ledger``'s functions take."""
        if self.postgres:
            from softswitch.store.postgres_connect import connect

            return connect(str(self.database))
        from softswitch.billing import ledger

        return ledger.connect(self.database)

    def age_heartbeat(self, run_id: str, seconds: float) -> None:
        """Make ``run_id``'s heartbeat ``seconds`` old (as if it stopped beating then)."""
        if self.postgres:
            self.execute(
                "UPDATE switch_runs SET heartbeat_at = now() - make_interval(secs => ?)"
                " WHERE run_id = ?",
                (seconds, run_id),
            )
        else:
            old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).isoformat(
                timespec="microseconds"
            )
            self.execute("UPDATE switch_runs SET heartbeat_at = ? WHERE run_id = ?", (old, run_id))
