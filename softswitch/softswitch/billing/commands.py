"""The operator's billing commands: ``balance``, ``topup``, ``adjust``, ``refund``, ``ledger``
and ``spend``.

Like ``softswitch.commands``: ``softswitch.cli`` parses the arguments, each function here
takes plain values and the output streams and returns the exit status (0 fine, 1 the
operator's input is wrong, with one ``error:`` line saying what). A refused command writes
nothing. The reading commands never create the database: before the switch has run there
is no file, and every balance is 0. The writing commands (``topup``, ``adjust``,
``refund``) create it (the ledger table only: the switch adds the rest when it starts).

With ``[server] database`` a ``postgresql://`` URL the commands read and write that
database (``store.postgres_connect``; ``billing.ledger`` speaks both), which
``softswitch migrate`` must have made: an older schema is refused, naming that command, as
the switch refuses it.

Amounts are read with ``money.parse_amount`` and shown with ``money.format_amount`` at the
precision of the account's rate deck: exact decimals, never floats.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TextIO

import psycopg

from ..commands import parse_time
from ..config import Account, Config, ConfigError, demo_config, demo_state_dir, load_config
from ..store.errors import StoreError
from ..store.migrations import require_current
from ..store.postgres_connect import connect as connect_postgres
from ..store.postgres_connect import is_postgres_url, redacted
from . import ledger
from .ledger import Booking, LedgerEntry
from .money import AmountError, format_amount, parse_amount, to_nanos

__all__ = [
    "BillingInputError",
    "add_subcommands",
    "adjust",
    "billed_account",
    "database_of",
    "database_path",
    "list_ledger",
    "money_text",
    "open_database",
    "operator_amount",
    "refund",
    "show_balance",
    "show_spend",
    "topup",
    "utc_now",
]


class BillingInputError(Exception):
    """What is wrong with the operator's input: each line is printed as ``error: ...``."""

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines)
        self.lines = lines


def _refused(e: BillingInputError, err: TextIO) -> int:
    for line in e.lines:
        print(f"error: {line}", file=err)
    return 1


def _config(path: str | None) -> Config:
    """The file's configuration, or the embedded demo's when no file is given."""
    try:
        return load_config(path) if path else demo_config(demo_state_dir())
    except ConfigError as e:
        raise BillingInputError(*(str(p) for p in e.problems)) from None


def billed_account(cfg: Config, path: str | None, account_id: str) -> tuple[Account, int]:
    """The billed account ``account_id`` and its deck's precision."""
    try:
        account = cfg.account(account_id)
    except KeyError:
        raise BillingInputError(f"{path or 'demo'}: no account with id {account_id!r}") from None
    if not account.billed:
        raise BillingInputError(f'account {account_id!r} is not billed (billing = "none")')
    precision = _precision(cfg, account.rate_deck)
    return account, 9 if precision is None else precision  # a billed account has a deck


def _precision(cfg: Config, deck_id: str | None) -> int | None:
    """The deck's precision (decimals); None for no deck."""
    for deck in cfg.rate_decks:
        if deck.id == deck_id:
            return deck.precision
    return None


def database_of(cfg: Config, path: str | None, *, write: bool = False) -> Path | str:
    """The switch's database: its ``postgresql://`` URL, or its file (``database_path``)."""
    if is_postgres_url(cfg.server.database):
        return str(cfg.server.database)
    return database_path(cfg, path, write=write)


def database_path(cfg: Config, path: str | None, *, write: bool = False) -> Path:
    """The switch's database file; refused if its folder does not exist (a typo in
    ``[server] database``). The demo's state folder is the exception: ``softswitch run``
    makes it, so before the demo has run there is nothing to read, and a write makes it.
    A PostgreSQL database has no file: refused here (``database_of`` takes either)."""
    if is_postgres_url(cfg.server.database):
        raise BillingInputError(
            f"database {redacted(str(cfg.server.database))} is PostgreSQL, not a file:"
            " this reads a SQLite database only"
        )
    database = Path(cfg.server.database)
    if path is None and write:
        database.parent.mkdir(parents=True, exist_ok=True)
    if not database.parent.is_dir() and path is not None:
        raise BillingInputError(f"database {database}: folder {database.parent} does not exist")
    if database.exists() and not database.is_file():
        raise BillingInputError(f"database {database} is not a file")
    return database


@contextlib.contextmanager
def open_database(database: Path | str, *, create: bool = False) -> Iterator[Any]:
    """A connection ``billing.ledger`` takes, with the database's errors refused: for a
    file ``ledger.connect`` (SQLite: locked too long, not a database), for a PostgreSQL
    URL a connection to a database at this code's schema (unreachable, not migrated)."""
    if not is_postgres_url(database):
        try:
            with ledger.connect(database, create=create) as conn:
                yield conn
        except sqlite3.Error as e:
            raise BillingInputError(f"database {database}: {e}") from None
        return
    url = str(database)
    try:
        require_current(url)
        with connect_postgres(url, application="softswitch billing") as remote:
            yield remote
    except StoreError as e:
        raise BillingInputError(str(e)) from None
    except psycopg.Error as e:
        raise BillingInputError(f"database {redacted(url)}: {e}") from None


def _exists(database: Path | str) -> bool:
    """Whether there is a database to read: a file the switch made; PostgreSQL always."""
    return is_postgres_url(database) or Path(database).exists()


def _no_database(database: Path | str, err: TextIO) -> None:
    print(f"note: no database at {database} yet (the switch has not run): balances are 0", file=err)


def money_text(units: int, precision: int) -> str:
    """``units`` at ``precision`` decimals, more if an amount is finer (never rounded)."""
    step = 10 ** (9 - precision)
    while precision < 9 and units % step:
        precision += 1
        step //= 10
    return format_amount(units, precision)


def operator_amount(text: str, precision: int, *, signed: bool = False) -> int:
    try:
        return parse_amount(text, precision, signed=signed)
    except AmountError as e:
        raise BillingInputError(f"amount {e}") from None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str, out: TextIO) -> None:
    """Columns as wide as their widest cell, aligned as ``align`` says (``l``/``r`` each)."""
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    for row in rows:
        print(line(row), file=out)


def _csv(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)


def _period(since: dt.datetime | None, until: dt.datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise BillingInputError(
            f"--until {until.isoformat()} is not after --since {since.isoformat()}"
        )


# -- balance ---------------------------------------------------------------------------


def show_balance(
    path: str | None,
    account_id: str | None = None,
    *,
    as_csv: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """One billed account's balance, or every billed account's: the ledger's sum, the
    credit limit, what answered calls hold (reserved) and what is left to call with."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = _config(path)
        if account_id is not None:
            accounts = [billed_account(cfg, path, account_id)]
        else:
            accounts = [billed_account(cfg, path, a.id) for a in cfg.accounts if a.billed]
        if not accounts:
            print(f"{path or 'demo'}: no billed accounts", file=out)
            return 0
        database = database_of(cfg, path)
        sums: dict[str, int] = {}
        held: dict[str, int] = {}
        if _exists(database):
            with open_database(database) as conn:
                sums, _ = ledger.balances(conn)
                held = ledger.reserved(conn)
        else:
            _no_database(database, err)
    except BillingInputError as e:
        return _refused(e, err)
    headers = ("account", "billing", "balance", "credit_limit", "reserved", "available")
    rows = []
    for account, precision in accounts:
        balance = sums.get(account.id, 0)
        limit = to_nanos(account.credit_limit or Decimal(0))
        reserved = held.get(account.id, 0)
        amounts = (balance, limit, reserved, balance + limit - reserved)
        rows.append((account.id, account.billing, *(money_text(a, precision) for a in amounts)))
    if as_csv:
        _csv(headers, rows, out)
    else:
        _table(headers, rows, "llrrrr", out)
    return 0


# -- topup, adjust, refund -------------------------------------------------------------


def _print_entry(entry: LedgerEntry, precision: int, out: TextIO, detail: str = "") -> None:
    print(
        f"{entry.account_id}: {entry.kind} {money_text(entry.amount, precision)}{detail}; "
        f"balance after {money_text(entry.balance_after, precision)} "
        f"(ledger entry {entry.id} at {entry.at.isoformat(timespec='seconds')})",
        file=out,
    )


def _book(
    path: str | None,
    account_id: str,
    kind: str,
    amount: str,
    note: str,
    *,
    signed: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    try:
        cfg = _config(path)
        _, precision = billed_account(cfg, path, account_id)
        units = operator_amount(amount, precision, signed=signed)
        database = database_of(cfg, path, write=True)
        with open_database(database, create=True) as conn:
            entry = ledger.book(conn, Booking(account_id, kind, units, note, utc_now()))
    except BillingInputError as e:
        return _refused(e, err)
    _print_entry(entry, precision, out)
    return 0


def topup(
    path: str | None,
    account_id: str,
    amount: str,
    *,
    note: str = "",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Credit ``amount`` (positive) to a billed account: a ``topup`` row, ``note`` its
    reference."""
    out = out or sys.stdout
    err = err or sys.stderr
    return _book(path, account_id, "topup", amount, note, signed=False, out=out, err=err)


def adjust(
    path: str | None,
    account_id: str,
    amount: str,
    *,
    note: str | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """A correction, credit or (negative ``amount``) debit: an ``adjustment`` row whose
    reference is ``note``, which is required (a correction says why)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if note is None or not note.strip():
        msg = "adjust needs --note TEXT saying why (it is kept as the entry's reference)"
        return _refused(BillingInputError(msg), err)
    return _book(path, account_id, "adjustment", amount, note, signed=True, out=out, err=err)


def refund(
    path: str | None,
    account_id: str,
    call_id: str,
    amount: str | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Give back a call's debit, all that is left of it (no ``amount``) or part of it: a
    ``refund`` row whose reference is the Call-ID. Never more than the call was debited
    less what was refunded before; the check and the row are one write transaction, so two
    refunds at once cannot both pass it."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = _config(path)
        _, precision = billed_account(cfg, path, account_id)
        units = None if amount is None else operator_amount(amount, precision)
        database = database_of(cfg, path)
        if not _exists(database):
            raise BillingInputError(
                f"no database at {database}: account {account_id!r} has no calls"
            )
        with open_database(database) as conn, ledger.locked(conn, [account_id]):
            totals = ledger.call_totals(conn, account_id, call_id)
            if totals is None:
                raise BillingInputError(
                    f"account {account_id!r} has no call debit with Call-ID {call_id!r}"
                )
            debited, refunded = totals
            if units is None:
                units = debited - refunded
            _check_refund(account_id, call_id, units, debited, refunded, precision)
            ledger.append(conn, [Booking(account_id, "refund", units, call_id, utc_now())], None)
            entry = ledger.last_entry(conn, account_id)
    except BillingInputError as e:
        return _refused(e, err)
    detail = f" of call {call_id!r} (debited {money_text(debited, precision)})"
    _print_entry(entry, precision, out, detail)
    return 0


def _check_refund(
    account_id: str, call_id: str, units: int, debited: int, refunded: int, precision: int
) -> None:
    left = debited - refunded
    if left <= 0:
        raise BillingInputError(
            f"call {call_id!r} of account {account_id!r}: nothing left to refund (debited "
            f"{money_text(debited, precision)}, refunded {money_text(refunded, precision)})"
        )
    if units > left:
        raise BillingInputError(
            f"call {call_id!r} of account {account_id!r}: refund {money_text(units, precision)}"
            f" is more than the {money_text(left, precision)} left to refund (debited "
            f"{money_text(debited, precision)}, refunded {money_text(refunded, precision)})"
        )


# -- ledger, spend ---------------------------------------------------------------------

LEDGER_COLUMNS = ("id", "at", "kind", "amount", "balance_after", "reference")


def list_ledger(
    path: str | None,
    account_id: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    as_csv: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """An account's ledger entries with ``since <= at < until``, oldest first (a statement:
    each row's ``balance_after`` is the balance once it was booked)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = _config(path)
        _, precision = billed_account(cfg, path, account_id)
        _period(since, until)
        database = database_of(cfg, path)
        rows: list[LedgerEntry] = []
        if _exists(database):
            with open_database(database) as conn:
                rows = ledger.entries(conn, account_id, since, until)
        else:
            _no_database(database, err)
    except BillingInputError as e:
        return _refused(e, err)
    cells = [
        (
            str(r.id),
            r.at.isoformat(timespec="microseconds" if as_csv else "seconds"),
            r.kind,
            money_text(r.amount, precision),
            money_text(r.balance_after, precision),
            r.reference,
        )
        for r in rows
    ]
    if as_csv:
        _csv(LEDGER_COLUMNS, cells, out)
        return 0
    _table(LEDGER_COLUMNS, cells, "rllrrl", out)
    print(f"{len(rows)} {'entry' if len(rows) == 1 else 'entries'}", file=out)
    return 0


SPEND_COLUMNS = ("gateway", "calls", "billsec", "minutes", "buy_cost", "unrated")


def show_spend(
    path: str | None,
    *,
    gateway_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    as_csv: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """What each carrier terminated, for reconciling its invoice: answered calls (INVITE
    with ``since <= invite_at < until``), billed seconds, billed minutes (seconds / 60, to
    0.01 half up), buy cost (exact, the CDRs' sum) and answered calls with no buy cost."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = _config(path)
        _period(since, until)
        known = {g.id: g for g in cfg.gateways}
        if gateway_id is not None and gateway_id not in known:
            print(f"note: {path or 'demo'}: no gateway with id {gateway_id!r} now", file=err)
        database = database_of(cfg, path)
        totals: list[ledger.GatewaySpend] = []
        if _exists(database):
            with open_database(database) as conn:
                totals = ledger.spend(conn, gateway_id, since, until)
        else:
            print(f"note: no database at {database} yet (the switch has not run)", file=err)
    except BillingInputError as e:
        return _refused(e, err)
    rows = []
    for t in totals:
        gateway = known.get(t.gateway_id)
        precision = _precision(cfg, gateway.rate_deck) if gateway is not None else None
        minutes = (Decimal(t.billsec) / 60).quantize(Decimal("0.01"), ROUND_HALF_UP)
        cost = _exact(t.cost, precision)
        rows.append(
            (t.gateway_id, str(t.calls), str(t.billsec), f"{minutes:f}", cost, str(t.unrated))
        )
    if as_csv:
        _csv(SPEND_COLUMNS, rows, out)
        return 0
    _table(SPEND_COLUMNS, rows, "lrrrrr", out)
    return 0


def _exact(value: Decimal, precision: int | None) -> str:
    """``value`` at ``precision`` decimals when that is exact, else as it is."""
    if precision is not None:
        quantized = value.quantize(Decimal(1).scaleb(-precision))
        if quantized == value:
            return f"{quantized:f}"
    return f"{value:f}"


# -- command line ----------------------------------------------------------------------


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``balance``, ``topup``, ``adjust``, ``refund``, ``ledger`` and ``spend``."""

    def config(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", metavar="FILE", help="default: the embedded demo")

    def period(parser: argparse.ArgumentParser) -> None:
        help_ = "ISO date or time (UTC if no offset)"
        parser.add_argument("--since", type=parse_time, help=f"from (inclusive): {help_}")
        parser.add_argument("--until", type=parse_time, help=f"to (exclusive): {help_}")

    balance = commands.add_parser("balance", help="billed accounts' balances and credit")
    balance.add_argument("account", metavar="ACCOUNT", nargs="?", help="default: every one")
    config(balance)
    balance.add_argument("--csv", action="store_true", help="CSV on standard output")
    balance.set_defaults(
        handler=lambda a: show_balance(a.config, a.account, as_csv=a.csv),
    )

    top = commands.add_parser("topup", help="credit an account (a ledger entry)")
    top.add_argument("account", metavar="ACCOUNT")
    top.add_argument("amount", metavar="AMOUNT", help="positive, e.g. 25 or 12.50")
    top.add_argument("--note", default="", metavar="TEXT", help="kept as the reference")
    config(top)
    top.set_defaults(handler=lambda a: topup(a.config, a.account, a.amount, note=a.note))

    adj = commands.add_parser("adjust", help="correct a balance, up or down (needs --note)")
    adj.add_argument("account", metavar="ACCOUNT")
    adj.add_argument("amount", metavar="AMOUNT", help="signed, e.g. 5 or -5 (a debit)")
    adj.add_argument("--note", metavar="TEXT", help="why (required): kept as the reference")
    config(adj)
    adj.set_defaults(handler=lambda a: adjust(a.config, a.account, a.amount, note=a.note))

    ref = commands.add_parser("refund", help="give back all or part of a call's debit")
    ref.add_argument("account", metavar="ACCOUNT")
    ref.add_argument("call_id", metavar="CALL_ID")
    ref.add_argument("amount", metavar="AMOUNT", nargs="?", help="default: all that is left")
    config(ref)
    ref.set_defaults(handler=lambda a: refund(a.config, a.account, a.call_id, a.amount))

    book = commands.add_parser("ledger", help="an account's ledger entries, oldest first")
    book.add_argument("account", metavar="ACCOUNT")
    config(book)
    period(book)
    book.add_argument("--csv", action="store_true", help="CSV on standard output")
    book.set_defaults(
        handler=lambda a: list_ledger(
            a.config, a.account, since=a.since, until=a.until, as_csv=a.csv
        )
    )

    spend = commands.add_parser("spend", help="per-carrier answered calls, minutes and buy cost")
    config(spend)
    spend.add_argument("--gateway", metavar="ID", help="one gateway (default: every one)")
    period(spend)
    spend.add_argument("--csv", action="store_true", help="CSV on standard output")
    spend.set_defaults(
        handler=lambda a: show_spend(
            a.config, gateway_id=a.gateway, since=a.since, until=a.until, as_csv=a.csv
        )
    )
