"""The credit book at work in the switch: its timers, the store kept in step, top-ups seen.

``Pipeline`` asks the meter at three points of a billed call: ``admit`` (hold the first
increment, or refuse), ``answered`` (take the first slice; from then on a timer per call asks
the book for the next slice or for the cut) and ``ended`` (settle: the debit that goes to the
ledger with the CDR). Nothing here waits for the database on the signalling path: each new
reservation is queued to the CDR writer (``CdrStore.reserve``), and the ledger is read
every ``sync_interval`` seconds in a worker thread for what operators booked meanwhile. The
one exception is a call about to be refused for credit: the ledger is read first (one
indexed read of the rows after the last one seen), so a top-up committed before the INVITE
always counts. Such refusals are bounded by the account's ``max_cps``, checked before.

The database is the store's: a SQLite file or a PostgreSQL URL (``store.postgres_connect``),
read through ``billing.ledger``, which reads PostgreSQL's changes in commit order. On
PostgreSQL the read before a refusal uses the meter's connection only if it is open: the
event loop never waits for a new connection (a server that is down refuses the connection
at the periodic read, in its worker thread, which reconnects), nor longer than ``LOOP_WAIT``
for that thread's read in progress; the one query it makes is a network round trip.

What the book holds (reservations) is this process's own: several nodes (or workers)
sharing one ledger each admit against the balance they read, not against each other's calls
in progress (docs/billing.md) -- unless ``[server] shared_state`` is set: then ``shared``
(``cluster.credit.SharedCredit``) holds every reservation on the account's counter in Redis
too, whose limit is the balance read here plus the credit limit. The first hold is asked
for in the admission's async step (``admit_across``: refused, the call is refused
``insufficient_balance``; Redis down, it is refused 503: credit fails closed); each later
slice in a task of its own, which cuts the call, as a local ``credit_exhausted``, when the
other nodes' calls hold the rest. The call's end gives it all back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from softswitch.call.refusal import EndReason, Refusal, refuse
from softswitch.cdr import CdrSink, Reservation
from softswitch.store.postgres_connect import connect as connect_postgres
from softswitch.store.postgres_connect import is_postgres_url

from . import ledger
from .credit import CreditBook, Decision, Tariff, Terms
from .money import format_amount, to_nanos

if TYPE_CHECKING:
    from softswitch.cluster.credit import SharedCredit
    from softswitch.config import Config
    from softswitch.proxy.calls import Call

__all__ = ["CreditMeter", "terms_of"]

logger = logging.getLogger("softswitch.billing")

#: Seconds the read before a refusal waits for the worker thread's read in progress.
LOOP_WAIT = 1.0


def terms_of(config: Config) -> dict[str, Terms]:
    """The billed accounts' terms, in nano-units at their decks' precision."""
    precision = {d.id: d.precision for d in config.rate_decks}
    terms = {}
    for a in config.accounts:
        if not a.billed:
            continue
        terms[a.id] = Terms(
            mode="postpaid" if a.billing == "postpaid" else "prepaid",
            credit_limit=to_nanos(a.credit_limit or Decimal(0)),
            low_balance=None if a.low_balance is None else to_nanos(a.low_balance),
            precision=precision.get(a.rate_deck or "", 6),
        )
    return terms


class CreditMeter:
    """One switch's metering of its billed accounts (see the module docstring).

    ``hang_up(call, reason)`` is the engine's: set it before calls come in. ``database`` is
    the store's (a SQLite file or a ``postgresql://`` URL), read for balances and top-ups;
    ``run_id`` the store's run, whose own ledger rows the book has already counted.
    """

    def __init__(
        self,
        store: CdrSink,
        database: Path | str | None,
        run_id: str | None,
        *,
        slice: int = 60,
        sync_interval: float = 1.0,
    ) -> None:
        self.book = CreditBook(slice=slice)
        self.store = store
        self.database = database
        self.run_id = run_id
        self.sync_interval = sync_interval
        self.hang_up: Callable[[Call, EndReason], object] | None = None
        self._calls: dict[Hashable, Call] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        #: A ``sqlite3.Connection`` or a psycopg one (``billing.ledger`` reads either).
        self._conn: Any = None
        self._lock = threading.Lock()
        self._position = ledger.Position()
        self._pending: list[tuple[str, int]] = []
        #: (billed_until, reserved) last queued per call: unchanged ones are not re-queued.
        self._recorded: dict[Hashable, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        #: ``[server] shared_state``: every hold also counted across nodes (None: not).
        self.shared: SharedCredit | None = None
        self._slicing: set[asyncio.Task[None]] = set()

    # -- configuration, balances, top-ups -----------------------------------------------

    def configure(self, config: Config) -> None:
        self.book.configure(terms_of(config))
        self.book.slice = config.billing.slice
        self.book.lead = min(2.0, config.billing.slice / 2)
        self.sync_interval = config.billing.sync_interval

    def load(self) -> None:
        """The balances from the ledger (blocking: at start, in a worker thread)."""
        if self.database is None:
            return
        with self._lock:
            conn = self._connection()
            sums, self._position = ledger.balances(conn)
            # Left open by a dead run only if recovery failed: still theirs, not available.
            unsettled = ledger.reserved(conn)
        if unsettled:
            logger.error(
                "calls of a dead run are not settled yet; their credit stays held: %s",
                ", ".join(f"{a} {self.amount_text(a, v)}" for a, v in sorted(unsettled.items())),
            )
        self.book.load(sums, unsettled)

    def start(self) -> None:
        """Read the ledger every ``sync_interval`` seconds from now on."""
        if self.database is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._slicing):
            task.cancel()  # the hold itself is shielded: SharedCredit.settle waits for it
        with self._lock:
            self._drop_connection()

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                await self.refresh()
            except Exception:  # the task must outlive any one failed read
                logger.exception("reading the ledger for top-ups failed; retried")

    async def refresh(self) -> None:
        """Count what was booked in the ledger since the last read (a worker thread reads)."""
        if self.database is not None:
            await asyncio.to_thread(self._read_changes)
            self._apply_pending()

    def _read_changes(self) -> None:
        """Read the new rows into ``_pending`` (any thread). The loop applies them
        (``_apply_pending``): rows read by the worker thread are not lost to a read made
        on the loop meanwhile, which finds nothing new past ``_position``. A connection is
        opened before the lock is taken: the loop's read never waits for one."""
        if self._open() is None:
            fresh = self._connect()
            with self._lock:
                if self._open() is None:
                    self._conn = fresh
                else:
                    fresh.close()
        with self._lock:
            self._read_locked(self._connection())

    def _read_on_loop(self) -> None:
        """The read before a refusal, on the event loop: it waits at most ``LOOP_WAIT``
        seconds for a read in progress, and on PostgreSQL reads only on a connection that
        is open (the next periodic read reconnects)."""
        if not self._lock.acquire(timeout=LOOP_WAIT):
            logger.warning("ledger not read before a credit refusal: a read is in progress")
            return
        try:
            if self._open() is None and is_postgres_url(self.database):
                logger.warning("ledger not read before a credit refusal: not connected")
                return
            self._read_locked(self._connection())
        finally:
            self._lock.release()

    def _read_locked(self, conn: Any) -> None:
        try:
            changes, self._position = ledger.changes_since(conn, self._position, self.run_id)
        except psycopg.OperationalError:
            self._drop_connection()  # lost: the next read connects again
            raise
        self._pending += changes

    def _apply_pending(self) -> None:
        with self._lock:
            changes, self._pending = self._pending, []
        self.book.apply(changes)

    def _open(self) -> Any:
        """The meter's connection if it is open, else None."""
        conn = self._conn
        return None if conn is None or getattr(conn, "closed", False) else conn

    def _connect(self) -> Any:
        assert self.database is not None
        if is_postgres_url(self.database):
            return connect_postgres(str(self.database), application="softswitch meter")
        conn = sqlite3.connect(self.database, timeout=30.0, check_same_thread=False)
        conn.isolation_level = None
        conn.row_factory = sqlite3.Row
        return conn

    def _connection(self) -> Any:
        """The meter's connection (the caller holds ``_lock``), opened if need be: a
        ``sqlite3.Connection`` or a psycopg one, as ``billing.ledger`` reads either."""
        conn = self._open()
        if conn is None:
            conn = self._conn = self._connect()
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error, psycopg.Error):
                self._conn.close()
            self._conn = None

    # -- a call --------------------------------------------------------------------------

    def billed(self, account_id: str) -> bool:
        return self.book.billed(account_id)

    def available_text(self, account_id: str) -> str:
        """The account's available credit as a decimal at its deck's precision."""
        return self.amount_text(account_id, self.book.available(account_id))

    def amount_text(self, account_id: str, units: int) -> str:
        """``units`` nano-units as a decimal at the account deck's precision."""
        terms = self.book.terms.get(account_id)
        return format_amount(units, terms.precision if terms else 9)

    def admit(self, key: Hashable, account_id: str, tariff: Tariff, cap: int) -> bool:
        """Hold the call's first increment, or False: not enough credit, even after reading
        the ledger for a top-up booked a moment ago."""
        if self.book.admit(key, account_id, tariff, cap):
            return True
        if self.database is None:
            return False
        try:
            self._read_on_loop()
        except (sqlite3.Error, psycopg.Error) as e:
            logger.error("reading the ledger for a top-up failed: %s", e)
        self._apply_pending()
        return self.book.admit(key, account_id, tariff, cap)

    async def admit_across(self, key: Hashable) -> Refusal | None:
        """With ``shared``: the call's first hold (taken by :meth:`admit`) on the account's
        counter across nodes; None when held (or nothing to hold), else the refusal:
        ``insufficient_balance`` when every node's calls hold the rest of the credit, even
        after reading the ledger for a top-up, 503 when Redis does not answer."""
        shared, hold = self.shared, self.book.hold(key)
        if shared is None or hold is None or not hold.reserved:
            return None
        account_id, need = hold.account_id, hold.reserved
        funds = self.book.funds(account_id)
        verdict = await shared.hold(key, account_id, need, funds)
        if verdict is False and self.database is not None and self.book.hold(key) is hold:
            try:
                self._read_on_loop()
            except (sqlite3.Error, psycopg.Error) as e:
                logger.error("reading the ledger for a top-up failed: %s", e)
            self._apply_pending()
            if self.book.funds(account_id) > funds:
                verdict = await shared.hold(key, account_id, need, self.book.funds(account_id))
        if verdict:
            return None
        if verdict is None:
            return refuse(
                EndReason.INTERNAL_ERROR,
                "credit cannot be checked across nodes: shared state (Redis) unavailable;"
                " billed calls are refused until it answers",
                status=503,
            )
        return refuse(
            EndReason.INSUFFICIENT_BALANCE,
            f"credit {self.amount_text(account_id, funds)} is held by calls across nodes:"
            f" it does not cover the first increment ({self.amount_text(account_id, need)})",
        )

    def release(self, key: Hashable) -> None:
        """A held call that never reached a gateway's answer: its hold goes back."""
        self.book.release(key)
        if self.shared is not None:
            self.shared.release(key)

    def answered(self, key: Hashable, call: Call, tariff: Tariff | None) -> Decision | None:
        """The call is up: its first slice, and the timer that takes the next. Returns the
        slice (None: not metered), which the caller writes with the call's start mark, so
        that the mark never exists without the seconds its credit covers."""
        if self.book.hold(key) is None:
            return None
        self._calls[key] = call
        decisions = self.book.answer(key, call.answer_at or time.time(), tariff)
        self._apply(decisions, recorded=key)
        return next((d for d in decisions if d.key == key), None)

    def ended(
        self, key: Hashable, call: Call, sell_cost: Decimal | None, billsec: int
    ) -> ledger.Booking | None:
        """The call is over: the debit to write with its CDR (None: nothing to debit, the
        call was not answered or not billed), and its hold released.

        ``sell_cost`` is the CDR's; when costing failed (None) the call is debited at the
        rate it was metered with for its ``billsec``, and the caller puts that cost in the
        CDR: a bug in costing must not make a call free, nor the CDR and ledger disagree."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._calls.pop(key, None)
        self._recorded.pop(key, None)
        if self.shared is not None:
            self.shared.release(key)
        hold = self.book.hold(key)
        if hold is None:
            return None
        if call.answer_at is None:
            self.book.release(key)
            return None
        if sell_cost is not None:
            amount = to_nanos(sell_cost)
        else:
            amount = hold.cost(billsec)
            logger.error(
                "answered call of billed account %s has no sell cost: debited %s at its"
                " metered rate",
                hold.account_id,
                self.amount_text(hold.account_id, amount),
                extra={"call_id": call.call_id},
            )
        self.book.settle(key, amount)
        end = call.end_at if call.end_at is not None else time.time()
        at = dt.datetime.fromtimestamp(end, dt.UTC)
        return ledger.Booking(hold.account_id, "call", -amount, call.call_id, at)

    # -- timers ------------------------------------------------------------------------

    def _apply(self, decisions: list[Decision], recorded: Hashable = None) -> None:
        """Carry out the book's decisions; ``recorded``: the call whose reservation its
        caller writes itself (with its start mark)."""
        loop = asyncio.get_running_loop()
        now = time.time()
        for d in decisions:
            call = self._calls.get(d.key)
            if call is None:
                continue
            call.billed_cap = float(d.extent)
            state = (d.extent, d.reserved)
            changed = self._recorded.get(d.key) != state
            self._recorded[d.key] = state
            if call.answer_at is not None and d.key != recorded and changed:
                self.store.reserve(
                    Reservation(
                        call.call_id,
                        dt.datetime.fromtimestamp(call.answer_at, dt.UTC),
                        d.extent,
                        d.reserved,
                    )
                )
            if self.shared is not None:
                self._share_slice(d.key)
            old = self._timers.pop(d.key, None)
            if old is not None:
                old.cancel()
            if d.at is None:
                continue
            if d.cut and d.at <= now + 0.001:
                # Not from inside the caller's stack: at the answer the 2xx must reach the
                # caller before the switch's BYE does.
                self._timers[d.key] = loop.call_later(0, self._cut, d.key)
                continue
            self._timers[d.key] = loop.call_later(max(0.0, d.at - now), self._fire, d.key)

    def _share_slice(self, key: Hashable) -> None:
        """What the call's hold grew by (a slice), asked for across nodes in a task."""
        shared, hold = self.shared, self.book.hold(key)
        if shared is None or hold is None:
            return
        more = hold.reserved - shared.claimed(key)
        if more <= 0:
            return
        task = asyncio.get_running_loop().create_task(
            self._hold_slice(shared, key, hold.account_id, more)
        )
        self._slicing.add(task)
        task.add_done_callback(self._slicing.discard)

    async def _hold_slice(
        self, shared: SharedCredit, key: Hashable, account_id: str, more: int
    ) -> None:
        """Refused (the other nodes' calls hold the rest of the credit), the call is cut now,
        as when its own credit runs out; Redis down, it goes on with its local hold."""
        verdict = await shared.hold(key, account_id, more, self.book.funds(account_id))
        if verdict is False and key in self._calls:
            logger.info(
                "account %s: credit held across nodes does not cover the next slice",
                account_id,
                extra={"account_id": account_id, "event": "credit_cut_across_nodes"},
            )
            handle = self._timers.pop(key, None)
            if handle is not None:
                handle.cancel()
            self._cut(key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        if key not in self._calls:
            return
        self._apply(self.book.check(key, time.time()))

    def _cut(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        call = self._calls.get(key)
        if call is None or self.hang_up is None:
            return
        logger.info(
            "call_id=%s credit exhausted after %s s: BYE to both sides",
            call.call_id,
            int(call.billed_cap or 0),
            extra={"call_id": call.call_id},
        )
        self.hang_up(call, EndReason.CREDIT_EXHAUSTED)

    def holds(self) -> Mapping[Hashable, Call]:
        """The answered billed calls being metered (for tests and the management view)."""
        return dict(self._calls)
