"""The SQLite schema as today's switch writes it: version 1 of ``store.migrations``.

Before numbered migrations the file carried its own version in ``PRAGMA user_version``
(``LEGACY_VERSION``, 3): 1 lacked the run tables, 2 the ledger and the open calls' billing
columns. Migration 1 brings any of those (and a new file) to this schema, which is exactly
what the switch wrote at ``user_version`` 3, and keeps ``user_version`` at 3 so that a switch
from before the migrations still opens the file. (The registrar's ``registrations`` table came
without a version of its own: it is only added, ``IF NOT EXISTS``.)
"""

from __future__ import annotations

from softswitch.billing.ledger import LEDGER_SCHEMA
from softswitch.registrar.store import REGISTRATIONS_SCHEMA

__all__ = ["LEGACY_READABLE", "LEGACY_VERSION", "OPEN_CALLS_V3", "SCHEMA", "statements"]

LEGACY_VERSION = 3
#: ``user_version`` values migration 1 adopts (0: a new file, or one that predates it).
LEGACY_READABLE = (0, 1, 2, LEGACY_VERSION)

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
OPEN_CALLS_V3 = (
    ("billed_account", "TEXT"),
    ("billed_until", "INTEGER"),
    ("reserved", "INTEGER NOT NULL DEFAULT 0"),
)


def statements(script: str) -> list[str]:
    """The statements of a DDL script (none of ours has a ``;`` inside a statement), to run
    one by one inside a transaction: ``executescript`` would commit first."""
    return [part.strip() for part in script.split(";") if part.strip()]
