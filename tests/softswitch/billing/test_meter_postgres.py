"""The credit meter on PostgreSQL: balances loaded from the shared ledger, top-ups booked by
an operator (or another node) counted at the next read, in commit order, the meter's own
run's debits not counted twice, and the read before a refusal admitting a call that a top-up
just paid for. Against the session's real server (``postgres_tool``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal

import psycopg
import pytest

import lcr
from postgres_tool import Postgres, postgres
from softswitch.billing import ledger
from softswitch.billing.credit import Terms
from softswitch.billing.ledger import Booking
from softswitch.billing.meter import CreditMeter
from softswitch.billing.money import to_nanos
from softswitch.store.migrations import migrate
from softswitch.store.opening import open_cdr_store
from softswitch.store.postgres_connect import Row, connect

__all__ = ["postgres"]

Connection = psycopg.Connection[Row]
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def n(text: str) -> int:
    return to_nanos(Decimal(text))


def topup(account: str, amount: str) -> Booking:
    return Booking(account, "topup", n(amount), "op", NOW)


def uk_rate() -> lcr.Rate:
    """0.60 a minute, per second: the first second costs 0.01."""
    deck = lcr.RateDeck.from_rows([("44", "UK", "0.600000", "0", 1, 1)], precision=6)
    found = deck.lookup("447911123456")
    assert found is not None
    return found


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    url = postgres.database()
    migrate(url)
    return url


@pytest.fixture
def operator(pg_url: str) -> Iterator[Connection]:
    with connect(pg_url) as conn:
        yield conn


def with_meter(pg_url: str, body: Callable[[CreditMeter, str], Awaitable[None]]) -> None:
    """A meter on ``pg_url`` for a real store's run, accounts ``acme`` and ``zero`` prepaid;
    ``body(meter, run_id)`` runs on an event loop; everything is closed afterwards."""

    async def main() -> None:
        store = open_cdr_store(pg_url)
        meter = CreditMeter(store, pg_url, store.run_id, sync_interval=30)
        meter.book.configure({"acme": Terms("prepaid"), "zero": Terms("prepaid")})
        try:
            await asyncio.to_thread(meter.load)
            await body(meter, store.run_id)
        finally:
            await meter.close()
            store.close()

    asyncio.run(main())


def test_balances_and_topups_are_read_from_postgres(pg_url: str, operator: Connection) -> None:
    ledger.book(operator, topup("acme", "0.50"))

    async def body(meter: CreditMeter, run_id: str) -> None:
        assert meter.book.balance("acme") == n("0.50")
        # The run's own debit, as its CDR writer appends it: the book settled it already.
        with operator.transaction():
            ledger.append(operator, [Booking("acme", "call", -n("0.10"), "c1", NOW)], run_id)
        ledger.book(operator, topup("acme", "1.00"))
        await meter.refresh()
        assert meter.book.balance("acme") == n("1.50")
        await meter.refresh()
        assert meter.book.balance("acme") == n("1.50")  # nothing counted twice

    with_meter(pg_url, body)
    assert ledger.balances(operator)[0] == {"acme": n("1.40")}


def test_a_topup_committed_after_a_newer_row_reaches_the_meter(
    pg_url: str, operator: Connection
) -> None:
    """Two writers: the top-up takes the smaller id and commits last."""

    async def body(meter: CreditMeter, run_id: str) -> None:
        with connect(pg_url) as slow:
            with slow.transaction():
                ledger.append(slow, [topup("acme", "2.00")], None)
                ledger.book(operator, topup("zero", "0.30"))
                await meter.refresh()
                assert meter.book.balance("zero") == n("0.30")
                assert meter.book.balance("acme") == 0
            await meter.refresh()
        assert meter.book.balance("acme") == n("2.00")
        assert meter.book.balance("zero") == n("0.30")
        first, second = ledger.entries(operator, "acme") + ledger.entries(operator, "zero")
        assert first.id < second.id

    with_meter(pg_url, body)


def test_a_call_about_to_be_refused_reads_the_ledger_first(
    pg_url: str, operator: Connection
) -> None:
    async def body(meter: CreditMeter, run_id: str) -> None:
        rate = uk_rate()
        assert not meter.admit("k1", "zero", rate, 60)
        ledger.book(operator, topup("zero", "1.00"))
        assert meter.admit("k2", "zero", rate, 60)  # no sync in between: the read before
        assert meter.book.balance("zero") == n("1.00")
        meter.release("k2")

    with_meter(pg_url, body)


def test_the_loop_never_opens_a_connection_the_periodic_read_does(
    pg_url: str, operator: Connection
) -> None:
    async def body(meter: CreditMeter, run_id: str) -> None:
        rate = uk_rate()
        meter._drop_connection()  # as after a lost connection
        ledger.book(operator, topup("zero", "1.00"))
        assert not meter.admit("k1", "zero", rate, 60)  # not read: no connection
        await meter.refresh()  # the worker thread connects again
        assert meter.admit("k2", "zero", rate, 60)
        meter.release("k2")

    with_meter(pg_url, body)
