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
from typing import TYPE_CHECKING

from softswitch.call.refusal import EndReason
from softswitch.cdr import CdrSink, Reservation

from . import ledger
from .credit import CreditBook, Decision, Tariff, Terms
from .money import format_amount, to_nanos

if TYPE_CHECKING:
    from softswitch.config import Config
    from softswitch.proxy.calls import Call

__all__ = ["CreditMeter", "terms_of"]

logger = logging.getLogger("softswitch.billing")


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
    the store's file, read for balances and top-ups; ``run_id`` the store's run, whose own
    ledger rows the book has already counted.
    """

    def __init__(
        self,
        store: CdrSink,
        database: Path | None,
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
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._last_id = 0
        self._pending: list[tuple[str, int]] = []
        #: (billed_until, reserved) last queued per call: unchanged ones are not re-queued.
        self._recorded: dict[Hashable, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

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
            sums, self._last_id = ledger.balances(conn)
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
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
        on the loop meanwhile, which finds nothing new past ``_last_id``."""
        with self._lock:
            changes, self._last_id = ledger.changes_since(
                self._connection(), self._last_id, self.run_id
            )
            self._pending += changes

    def _apply_pending(self) -> None:
        with self._lock:
            changes, self._pending = self._pending, []
        self.book.apply(changes)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            assert self.database is not None
            conn = sqlite3.connect(self.database, timeout=30.0, check_same_thread=False)
            conn.isolation_level = None
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

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
            self._read_changes()
        except sqlite3.Error as e:
            logger.error("reading the ledger for a top-up failed: %s", e)
        self._apply_pending()
        return self.book.admit(key, account_id, tariff, cap)

    def release(self, key: Hashable) -> None:
        """A held call that never reached a gateway's answer: its hold goes back."""
        self.book.release(key)

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
