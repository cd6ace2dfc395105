"""Balances and top-ups of billed accounts, through ``softswitch.billing``.

The same code as ``softswitch balance`` and ``softswitch topup`` (``billing.commands``'s
checks, ``billing.ledger``'s reads and its one booking transaction), run in a worker thread:
SQLite may wait for the CDR writer's lock, PostgreSQL for the network and the account's
ledger lock, and the event loop carries the calls. The database is ``[server] database`` either
way: a SQLite file or a ``postgresql://`` URL (``billing.commands.database_of``). A top-up
is a ledger row like one booked from the command line, so the running switch picks it up by
itself (its meter reads the ledger every ``[billing] sync_interval``, and a call about to
be refused for credit reads it first); a top-up through the API makes the meter read it at
once, so the answer's ``live`` view already counts it.

A balance has two views, both served: the ledger's (what is booked: the statement) and the
running meter's (what admission uses now: holds of calls in progress, top-ups not yet read).
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from softswitch.billing import ledger
from softswitch.billing.commands import (
    BillingInputError,
    billed_account,
    database_of,
    money_text,
    open_database,
    operator_amount,
    utc_now,
)
from softswitch.billing.ledger import Booking, LedgerEntry
from softswitch.billing.money import to_nanos
from softswitch.config import Account, Config
from softswitch.store.postgres_connect import is_postgres_url

from .accounts import account_of
from .errors import ApiError, json_response
from .table import INTEGER, MONEY, STRING, TIME, Endpoint, nullable, obj, read_json, switch_of

__all__ = ["ENDPOINTS"]

logger = logging.getLogger("softswitch.management")

AMOUNTS = obj(
    {
        "balance": MONEY,
        "credit_limit": MONEY,
        "reserved": {**MONEY, "description": "held by calls in progress"},
        "available": {**MONEY, "description": "balance + credit_limit - reserved"},
    }
)
BALANCE = obj(
    {
        "account": STRING,
        "billing": {"type": "string", "enum": ["prepaid", "postpaid"]},
        "ledger": nullable({**AMOUNTS, "description": "booked; null before the first booking"}),
        "live": {**AMOUNTS, "description": "the running switch's meter, what admission uses"},
    }
)
ENTRY = obj(
    {
        "id": INTEGER,
        "at": TIME,
        "kind": STRING,
        "amount": MONEY,
        "balance_after": MONEY,
        "reference": STRING,
    }
)


def _path(config_path: Path | None) -> str | None:
    return None if config_path is None else str(config_path)


def _billed(config: Config, config_path: Path | None, account: Account) -> int:
    """The account's deck precision; 409 when it is not billed."""
    try:
        return billed_account(config, _path(config_path), account.id)[1]
    except BillingInputError as e:
        raise ApiError(409, "; ".join(e.lines)) from None


def _amounts(balance: int, limit: int, reserved: int, precision: int) -> dict[str, str]:
    values = (balance, limit, reserved, balance + limit - reserved)
    names = ("balance", "credit_limit", "reserved", "available")
    return {n: money_text(v, precision) for n, v in zip(names, values, strict=True)}


def _read_ledger(database: Path | str, account_id: str) -> tuple[int, int] | None:
    """(balance, reserved) as booked; None before the SQLite file exists. A PostgreSQL
    database always exists (``softswitch migrate`` made it; ``open_database`` refuses one
    that is unreachable or not migrated)."""
    if not is_postgres_url(database) and not Path(database).exists():
        return None
    with open_database(database) as conn:
        balance = ledger.balance_of(conn, account_id)
        held = ledger.reserved(conn)
    return balance, held.get(account_id, 0)


def _live(request: web.Request, account: Account, precision: int) -> dict[str, str]:
    book = switch_of(request).meter.book
    limit = to_nanos(account.credit_limit or Decimal(0))
    return _amounts(book.balance(account.id), limit, book.reserved(account.id), precision)


async def get_balance(request: web.Request) -> web.StreamResponse:
    switch = switch_of(request)
    account = account_of(request)
    config = switch.pipeline.snapshot.config
    precision = _billed(config, switch.config_path, account)
    limit = to_nanos(account.credit_limit or Decimal(0))
    try:
        database = database_of(config, _path(switch.config_path))
        booked = await asyncio.to_thread(_read_ledger, database, account.id)
    except BillingInputError as e:
        raise ApiError(409, "; ".join(e.lines)) from None
    view = None if booked is None else _amounts(booked[0], limit, booked[1], precision)
    return json_response(
        {
            "account": account.id,
            "billing": account.billing,
            "ledger": view,
            "live": _live(request, account, precision),
        }
    )


def _book(database: Path | str, booking: Booking) -> LedgerEntry:
    with open_database(database, create=True) as conn:
        return ledger.book(conn, booking)


async def topup(request: web.Request) -> web.StreamResponse:
    switch = switch_of(request)
    account = account_of(request)
    config = switch.pipeline.snapshot.config
    precision = _billed(config, switch.config_path, account)
    body = await read_json(request)
    unknown = sorted(set(body) - {"amount", "note"})
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; a top-up takes 'amount' and 'note'")
    amount, note = body.get("amount"), body.get("note", "")
    if isinstance(amount, bool) or not isinstance(amount, str | int):
        raise ApiError(
            400, 'amount must be a decimal string such as "12.50" (money is never a float)'
        )
    if not isinstance(note, str):
        raise ApiError(400, "note must be a string")
    try:
        units = operator_amount(str(amount), precision)
        database = database_of(config, _path(switch.config_path), write=True)
        entry = await asyncio.to_thread(
            _book, database, Booking(account.id, "topup", units, note, utc_now())
        )
    except BillingInputError as e:
        raise ApiError(400, "; ".join(e.lines)) from None
    logger.warning(
        "account %s: top-up %s booked by an operator (management API, from %s): ledger entry"
        " %d, balance after %s",
        account.id,
        money_text(entry.amount, precision),
        request.remote,
        entry.id,
        money_text(entry.balance_after, precision),
    )
    # The meter reads the ledger now rather than at its next sync: the answer shows the
    # top-up counted, and so does the next call.
    await switch.meter.refresh()
    return json_response(
        {
            "account": account.id,
            "entry": {
                "id": entry.id,
                "at": entry.at,
                "kind": entry.kind,
                "amount": money_text(entry.amount, precision),
                "balance_after": money_text(entry.balance_after, precision),
                "reference": entry.reference,
            },
            "live": _live(request, account, precision),
        }
    )


_ID = {"account_id": "the billed account's id"}
_ERRORS = {404: "no account with that id", 409: "the account is not billed"}

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/accounts/{account_id}/balance",
        get_balance,
        "A billed account's balance",
        "billing",
        description="As `softswitch balance` (the ledger) and as the running meter sees it.",
        path_params=_ID,
        response=BALANCE,
        errors=_ERRORS,
    ),
    Endpoint(
        "POST",
        "/api/accounts/{account_id}/topup",
        topup,
        "Top up a billed account",
        "billing",
        description=(
            "A `topup` ledger row, as `softswitch topup` books it; the running switch counts it"
            " at once (`live`)."
        ),
        path_params=_ID,
        body=obj(
            {
                "amount": {**MONEY, "description": 'positive, e.g. "25" or "12.50"'},
                "note": {**STRING, "description": "kept as the entry's reference"},
            }
        )
        | {"required": ["amount"]},
        response=obj(
            {
                "account": STRING,
                "entry": ENTRY,
                "live": AMOUNTS,
                "note": STRING,
            }
        ),
        errors={**_ERRORS, 400: "a missing, malformed or non-positive amount"},
    ),
)
