"""The PostgreSQL schema, version 1 of ``store.migrations``: today's SQLite tables in
PostgreSQL's types.

The same tables and columns as the SQLite file (``store.sqlite_schema``), so a query, the
CSV export and an operator's SQL read the same either way, with the types PostgreSQL has:
timestamps are ``timestamptz`` (UTC), money is ``numeric`` (exact, as the decimal text the
SQLite file keeps) and ledger amounts ``bigint`` nano-units, never a float; a CDR's attempts
are ``jsonb``. Identities are ``bigserial``: several switches (nodes) write into one table.

One column more than SQLite's: ``ledger.tx``, the transaction that wrote the row
(``pg_current_xact_id()``, filled in by default). Ledger ids from one sequence commit in any
order when several transactions append at once, so a running switch reads the ledger's
changes by transaction, not by id (``billing.ledger.changes_since``); SQLite's one writer
commits ids in order and needs no such column.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V1"]

SCHEMA_V1 = """
CREATE TABLE cdrs (
    id                bigserial PRIMARY KEY,
    call_id           text        NOT NULL,
    account_id        text,
    source            text        NOT NULL,
    caller            text        NOT NULL,
    callee_dialed     text        NOT NULL,
    callee_normalised text,
    callee_sent       text,
    gateway_id        text,
    route_prefix      text,
    invite_at         timestamptz NOT NULL,
    ring_at           timestamptz,
    answer_at         timestamptz,
    end_at            timestamptz NOT NULL,
    duration          double precision NOT NULL,
    billsec           integer     NOT NULL,
    pdd               double precision,
    hangup_side       text,
    end_reason        text        NOT NULL,
    status            integer     NOT NULL,
    q850              integer     NOT NULL,
    sell_rate         numeric,
    sell_cost         numeric,
    buy_rate          numeric,
    buy_cost          numeric,
    attempts          jsonb       NOT NULL,
    detail            text        NOT NULL DEFAULT ''
);
CREATE INDEX cdrs_invite_at ON cdrs (invite_at);
CREATE INDEX cdrs_call_id ON cdrs (call_id);

CREATE TABLE switch_runs (
    run_id             text        PRIMARY KEY,
    host               text        NOT NULL,
    pid                integer     NOT NULL,
    started_at         timestamptz NOT NULL,
    heartbeat_at       timestamptz NOT NULL,
    heartbeat_interval double precision NOT NULL,
    stopped_at         timestamptz,
    recovered_at       timestamptz,
    recovered_calls    integer     NOT NULL DEFAULT 0
);

CREATE TABLE open_calls (
    id             bigserial   PRIMARY KEY,
    run_id         text        NOT NULL REFERENCES switch_runs (run_id),
    call_id        text        NOT NULL,
    answer_at      timestamptz NOT NULL,
    account_id     text,
    gateway_id     text,
    sell_deck      text,
    buy_deck       text,
    max_duration   double precision,
    record         text        NOT NULL,
    billed_account text,
    billed_until   integer,
    reserved       bigint      NOT NULL DEFAULT 0
);
CREATE INDEX open_calls_key ON open_calls (call_id, answer_at);
CREATE INDEX open_calls_run ON open_calls (run_id);

CREATE TABLE ledger (
    id            bigserial   PRIMARY KEY,
    account_id    text        NOT NULL,
    at            timestamptz NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('topup', 'adjustment', 'call', 'refund')),
    amount        bigint      NOT NULL,
    balance_after bigint      NOT NULL,
    reference     text        NOT NULL,
    run_id        text,
    tx            xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX ledger_account ON ledger (account_id, id);
CREATE INDEX ledger_tx ON ledger (tx);

CREATE TABLE registrations (
    account_id    text    NOT NULL,
    contact       text    NOT NULL,
    expires_at    double precision NOT NULL,
    q             double precision NOT NULL,
    call_id       text    NOT NULL,
    cseq          bigint  NOT NULL,
    transport     text    NOT NULL,
    source_ip     text    NOT NULL,
    source_port   integer NOT NULL,
    nat           boolean NOT NULL,
    registered_at double precision NOT NULL,
    user_agent    text    NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, contact)
);
"""
