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

What the book holds (reservations) is this process's own. Several processes sharing one
ledger would each admit against the balance they read, not against each other's calls in
progress; so with several workers, or with ``[server] shared_state``, ``shared``
(``billing.holds.CreditHolds``: ``workers.credit.WorkerCredit`` in the workers' shared
memory, ``cluster.credit.SharedCredit`` in Redis, which wins when both are set since its
counters span every worker of every node) holds every reservation on the account's counter
too, whose limit is the balance read here plus the credit limit. The first hold is asked
for in the admission's async step (``admit_across``: refused, the call is refused
``insufficient_balance``; Redis down, it is refused 503: credit fails closed); each later
slice in a task of its own, which cuts the call, as a local ``credit_exhausted``, when the
other processes' calls hold the rest. The call's end gives it all back. Each process reads
the others' debits from the ledger (each worker is a run of its own, and only a run's own
rows are skipped), at every ``sync_interval`` and before a refusal. The workers' counter
answers at once, so its first hold is taken in ``admit`` itself; and an answered call's
debit stays held there until the CDR writer reports it committed (``_commit_kept``; a
debit whose write failed stays held), while a worker reads the ledger before a hold that
debits released since its last read could change (``_hold_now``): between workers every
hold is checked against a balance that shows every debit whose hold is gone. A read that
cannot happen refuses a new call but not a slice: the call goes on with what its own book
holds and asks again at its next timer (as with Redis down), so for that slice the
processes together may exceed the credit by one slice. A worker started after a dead one
takes over the credit its predecessor held (only that: not its own calls') once its
start-up recovery has debited the dead run's calls (``recover_then_take_over``). A starting
process counts as unsettled only dead runs' open calls (``load``): a live run's are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import psycopg

from softswitch.call.refusal import EndReason, Refusal, refuse
from softswitch.cdr import CdrSink, Reservation
from softswitch.store.postgres_connect import connect as connect_postgres
from softswitch.store.postgres_connect import is_postgres_url
from softswitch.store.recovery import run_is_alive

from ..cancelling import cancel_and_wait
from . import ledger
from .credit import CreditBook, Decision, Tariff, Terms
from .holds import CreditHolds, ImmediateCreditHolds, later_released
from .money import format_amount, to_nanos

if TYPE_CHECKING:
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
        #: Several workers or ``[server] shared_state``: every hold also counted across
        #: processes (None: not); ``across`` names them in refusals ("nodes", "workers").
        self.shared: CreditHolds | None = None
        self.across = "nodes"
        #: An immediate ``shared`` (workers): per account, its ``released`` when this
        #: process last read the ledger (every debit let go by then is in our balance).
        self._released_seen: dict[str, int] = {}
        self._marks: dict[str, int] = {}
        #: Ended calls' debits kept held until the CDR writer commits them, and its task.
        self._kept: list[_Kept] = []
        self._committing: asyncio.Task[None] | None = None
        #: Debits whose write failed (not in the ledger): held for good, never let go.
        self.unwritten = 0
        #: The retried start-up recovery before a dead predecessor's credit is taken over.
        self._taking_over: asyncio.Task[None] | None = None
        #: Per account, what dead runs' calls recovery has not settled yet hold (``load``),
        #: read again with the ledger's rows while there are any (``_read_locked``), and
        #: the last such reading for the loop to apply (None: none since).
        self._unsettled: dict[str, int] = {}
        self._unsettled_read: dict[str, int] | None = None
        #: A read on the loop waited ``LOOP_WAIT`` in vain, and no read has ended since:
        #: the next ones do not wait (the loop blocks at most once per stuck read).
        self._stuck = False
        self._slicing: set[asyncio.Task[None]] = set()

    def share_credit(self, holds: CreditHolds, across: str) -> None:
        """Count every hold on ``holds`` too, whose processes ``across`` names."""
        self.shared = holds
        self.across = across

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
        shared = self.shared
        # Taken before the read: every debit let go by then is in the balances read.
        marks = shared.released(list(self.book.terms)) if _immediate(shared) else {}
        with self._lock:
            conn = self._connection()
            sums, self._position = ledger.balances(conn)
            # Only dead runs' calls that recovery could not settle: still theirs, not
            # available. A live run's (a sibling worker's, another node's) are its own.
            unsettled = ledger.reserved(conn, _dead_runs())
        self._released_seen.update(marks)
        self._unsettled = unsettled
        if unsettled:
            logger.error(
                "calls of a dead run are not settled yet; their credit stays held: %s",
                ", ".join(f"{a} {self.amount_text(a, v)}" for a, v in sorted(unsettled.items())),
            )
        self.book.load(sums, unsettled)

    async def recover_then_take_over(self, recover: Callable[[], object], retry: float) -> None:
        """Start-up recovery (``recover``: the dead runs' calls closed and debited), then,
        across workers, the credit this worker's dead predecessor held taken over
        (``take_over``: let go and counted as released only once its debits are in the
        ledger). Recovery failed: logged, and retried every ``retry`` seconds in a task
        until it succeeds; the predecessor's credit stays held meanwhile (fail closed), and
        the calls this worker takes meanwhile hold theirs beside it: the late take-over
        lets go only what the predecessor left."""
        shared = self.shared
        holder = shared if _immediate(shared) else None
        if await self._recover_once(recover, holder, loud=True):
            return
        self._taking_over = asyncio.get_running_loop().create_task(
            self._recover_until_done(recover, holder, retry)
        )

    async def _recover_once(
        self, recover: Callable[[], object], holder: ImmediateCreditHolds | None, *, loud: bool
    ) -> bool:
        try:
            await asyncio.to_thread(recover)
        except Exception as e:
            if loud:  # once: the retries fail alike while the database is down
                logger.exception(
                    "closing the calls of a dead run failed; retried (its credit stays"
                    " held meanwhile)"
                )
            else:
                logger.debug("closing the calls of a dead run failed again: %s", e)
            return False
        if holder is not None:
            let_go = holder.take_over()
            if let_go:
                logger.info("credit a dead worker held let go: %d nano-units", let_go)
        return True

    async def _recover_until_done(
        self, recover: Callable[[], object], holder: ImmediateCreditHolds | None, retry: float
    ) -> None:
        while True:
            await asyncio.sleep(retry)
            if await self._recover_once(recover, holder, loud=False):
                logger.warning("the calls of a dead run are closed: recovery retried and done")
                return

    def start(self) -> None:
        """Read the ledger every ``sync_interval`` seconds from now on."""
        if self.database is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._slicing):
            task.cancel()  # the hold itself is shielded: SharedCredit.settle waits for it
        if self._committing is not None:
            self._committing.cancel()
        if self._taking_over is not None:
            self._taking_over.cancel()
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

    def _read_on_loop(self, *, wait: bool = True) -> bool:
        """The read before a refusal (or before a hold across workers that debits let go
        since the last read could change), on the event loop: it waits at most
        ``LOOP_WAIT`` seconds for a read in progress (not at all without ``wait``, nor after
        a wait in vain until some read has ended: the loop blocks at most once per stuck
        read), and on PostgreSQL reads only on a connection that is open (the next periodic
        read reconnects). Whether it read."""
        patient = wait and not self._stuck
        if not self._lock.acquire(timeout=LOOP_WAIT if patient else 0):
            self._stuck = self._stuck or patient
            logger.warning("ledger not read before a credit decision: a read is in progress")
            return False
        try:
            if self._open() is None and is_postgres_url(self.database):
                logger.warning("ledger not read before a credit decision: not connected")
                return False
            self._read_locked(self._connection())
            return True
        finally:
            self._lock.release()

    def _read_locked(self, conn: Any) -> None:
        shared = self.shared
        # Taken before the read: every debit let go by then is committed, so in what it reads.
        marks = shared.released(list(self.book.terms)) if _immediate(shared) else {}
        try:
            changes, self._position = ledger.changes_since(conn, self._position, self.run_id)
        except psycopg.OperationalError:
            self._drop_connection()  # lost: the next read connects again
            raise
        self._pending += changes
        self._stuck = False
        if self._unsettled:
            # After the rows: a recovery committed in between is then counted twice for a
            # moment (its debits and its calls), never not at all.
            self._unsettled_read = ledger.reserved(conn, _dead_runs())
        for account_id, mark in marks.items():
            earlier = self._marks.get(account_id)
            self._marks[account_id] = mark if earlier is None else later_released(mark, earlier)

    def _apply_pending(self) -> None:
        with self._lock:
            changes, self._pending = self._pending, []
            marks, self._marks = self._marks, {}
            unsettled, self._unsettled_read = self._unsettled_read, None
        self.book.apply(changes)
        if unsettled is not None:
            self.book.unsettled_now(self._unsettled, unsettled)
            self._unsettled = unsettled
        for account_id, mark in marks.items():
            seen = self._released_seen.get(account_id)
            self._released_seen[account_id] = mark if seen is None else later_released(mark, seen)

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
        """The account's available credit as a decimal at its deck's precision; with a
        counter across workers, what their calls together leave when that is less."""
        available = self.book.available(account_id)
        shared = self.shared
        if _immediate(shared):
            left = self.book.funds(account_id) - shared.account_held(account_id)
            if left < available:
                shown = self.amount_text(account_id, max(0, left))
                return f"{shown} (the rest held by calls across {self.across})"
        return self.amount_text(account_id, available)

    def amount_text(self, account_id: str, units: int) -> str:
        """``units`` nano-units as a decimal at the account deck's precision."""
        terms = self.book.terms.get(account_id)
        return format_amount(units, terms.precision if terms else 9)

    def admit(self, key: Hashable, account_id: str, tariff: Tariff, cap: int) -> bool:
        """Hold the call's first increment, or False: not enough credit, even after reading
        the ledger for a top-up booked a moment ago. With a counter that answers at once
        (several workers) the hold is taken there too, against every worker's calls."""
        if self._admit(key, account_id, tariff, cap):
            return True
        if self.database is None or not self._read_for_refusal():
            return False
        return self._admit(key, account_id, tariff, cap)

    def _read_for_refusal(self) -> bool:
        """The read before a refusal, applied; whether it read. Not read, nothing is
        applied either: the rows a read in progress takes wait for the loop's next
        ``_apply_pending`` (applying now would wait for that read's lock)."""
        try:
            read = self._read_on_loop()
        except (sqlite3.Error, psycopg.Error) as e:
            logger.error("reading the ledger for a top-up failed: %s", e)
            return False
        if read:
            self._apply_pending()
        return read

    def _admit(self, key: Hashable, account_id: str, tariff: Tariff, cap: int) -> bool:
        if not self.book.admit(key, account_id, tariff, cap):
            return False
        shared, hold = self.shared, self.book.hold(key)
        if not _immediate(shared) or hold is None:
            return True  # Redis's is asked in the async step (admit_across)
        if self._hold_now(shared, key, account_id, hold.reserved, wait=True):
            return True  # not read (None): refused, as a new call fails closed
        self.book.release(key)
        shared.release(key)
        return False

    def _hold_now(
        self,
        shared: ImmediateCreditHolds,
        key: Hashable,
        account_id: str,
        amount: int,
        *,
        wait: bool,
    ) -> bool | None:
        """A hold across workers, on a balance that shows every debit they let go: when
        those released since our last ledger read could make the difference, the ledger is
        read first (on the loop: one indexed read of the newest rows; at most once per
        release that matters; ``wait``: for a read in progress, ``_read_on_loop``). True
        held, False refused (the credit is spent), None not decided: the ledger could not
        be read (a read in progress, not connected, a database error), nothing held."""
        for _ in range(3):
            seen = self._released_seen.get(account_id, 0)
            funds = self.book.funds(account_id)
            verdict, released = shared.hold_checked(key, account_id, amount, funds, seen)
            if verdict is not None:
                return verdict
            if self.database is None:
                return shared.hold_now(key, account_id, amount, funds)
            try:
                read = self._read_on_loop(wait=wait)
            except (sqlite3.Error, psycopg.Error) as e:
                logger.error("reading the ledger for debits across workers failed: %s", e)
                read = False
            if not read:
                return None
            self._apply_pending()
            seen_now = self._released_seen.get(account_id)
            self._released_seen[account_id] = (
                released if seen_now is None else later_released(released, seen_now)
            )
        return None

    async def admit_across(self, key: Hashable) -> Refusal | None:
        """With ``shared``: the call's first hold (taken by :meth:`admit`) on the account's
        counter across nodes; None when held (or nothing to hold), else the refusal:
        ``insufficient_balance`` when every node's calls hold the rest of the credit, even
        after reading the ledger for a top-up, 503 when Redis does not answer."""
        shared, hold = self.shared, self.book.hold(key)
        if shared is None or hold is None or hold.reserved <= shared.claimed(key):
            return None  # nothing to hold, or held at admission (``admit``)
        account_id, need = hold.account_id, hold.reserved
        funds = self.book.funds(account_id)
        verdict = await shared.hold(key, account_id, need, funds)
        if verdict is False and self.database is not None and self.book.hold(key) is hold:
            self._read_for_refusal()
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
            f"credit {self.amount_text(account_id, funds)} is held by calls across"
            f" {self.across}: it does not cover the first increment"
            f" ({self.amount_text(account_id, need)})",
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
        shared = self.shared
        hold = self.book.hold(key)
        if hold is None or call.answer_at is None:
            if shared is not None:
                shared.release(key)
            if hold is not None:
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
        if _immediate(shared):
            # Held across workers until the CDR writer commits the debit (the others read
            # their balances from the ledger): then let go (``_commit_kept``).
            kept = shared.keep(key, amount)
            if kept:
                self._kept.append(_Kept(hold.account_id, kept, call.call_id))
                if self._committing is None or self._committing.done():
                    loop = asyncio.get_running_loop()
                    self._committing = loop.create_task(self._commit_kept(shared))
        elif shared is not None:
            shared.release(key)
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
        self, shared: CreditHolds, key: Hashable, account_id: str, more: int
    ) -> None:
        """Refused (the other processes' calls hold the rest of the credit), the call is cut
        now, as when its own credit runs out. Not decided (Redis down; across workers the
        ledger not read, without waiting for a read in progress), it goes on with what it
        holds, and the slice is asked for again at its next timer. A call that ended before
        this task's first step asks for nothing: its end gave back what it held, and a hold
        taken now would never be given back."""
        if key not in self._calls:
            return
        if _immediate(shared):
            verdict = self._hold_now(shared, key, account_id, more, wait=False)
        else:
            verdict = await shared.hold(key, account_id, more, self.book.funds(account_id))
        if verdict is False and key in self._calls:
            logger.info(
                "account %s: credit held across %s does not cover the next slice",
                account_id,
                self.across,
                extra={"account_id": account_id, "event": f"credit_cut_across_{self.across}"},
            )
            handle = self._timers.pop(key, None)
            if handle is not None:
                handle.cancel()
            self._cut(key)

    async def _commit_kept(self, shared: ImmediateCreditHolds) -> None:
        """Let go of the debits kept held once the CDR writer has committed them (its
        ``flush_debits``, in a worker thread: the debits were queued before this task ran).
        Not committed in time (the database is stuck), they stay held and it waits again. A
        debit whose write failed (the writer logged its record) is not in the ledger: its
        credit stays held for good (``unwritten``), never counted as released."""
        while self._kept:
            batch, self._kept = self._kept, []
            try:
                failed = await asyncio.to_thread(_flush_debits, self.store, 30.0)
            except Exception:
                logger.exception("waiting for the CDR writer failed")
                failed = None
            if failed is None:
                logger.warning(
                    "%d debits not committed within 30 s: their credit stays held across workers",
                    len(batch),
                )
                self._kept = batch + self._kept
                await asyncio.sleep(1.0)
                continue
            if failed:
                # A failed write of a debit queued after the batch was taken is also
                # reported now: its entry is in ``_kept`` already (``ended`` precedes the
                # enqueue).
                lost = [k for k in (*batch, *self._kept) if (k.account_id, k.call_id) in failed]
                for k in lost:
                    self.unwritten += k.amount
                    logger.error(
                        "account %s: the debit of call %s was not written: its %s stay"
                        " held across workers until this worker restarts",
                        k.account_id,
                        k.call_id,
                        self.amount_text(k.account_id, k.amount),
                        extra={"call_id": k.call_id},
                    )
                batch = [k for k in batch if k not in lost]
                self._kept = [k for k in self._kept if k not in lost]
            shared.committed([(k.account_id, k.amount) for k in batch])

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


@dataclass(frozen=True, slots=True)
class _Kept:
    """An ended call's debit kept held across workers until it is committed."""

    account_id: str
    amount: int
    call_id: str


def _dead_runs() -> Callable[[Mapping[str, Any]], bool]:
    """Whether a ``switch_runs`` row is a dead run, seen from this host now."""
    host, now = socket.gethostname(), dt.datetime.now(dt.UTC)
    return lambda run: not run_is_alive(run, now, host)


def _flush_debits(store: CdrSink, timeout: float) -> set[tuple[str, str]] | None:
    """Wait until the CDR writer has committed everything queued so far: the (account,
    call id) of the debits among it whose write failed; None on timeout. A sink that
    cannot tell (``flush`` only: not the switch's stores) reports none failed."""
    flush_debits = getattr(store, "flush_debits", None)
    if flush_debits is None:
        return set() if store.flush(timeout) else None
    failed: list[ledger.Booking] | None = flush_debits(timeout)
    if failed is None:
        return None
    return {(b.account_id, b.reference) for b in failed}


def _immediate(shared: CreditHolds | None) -> TypeGuard[ImmediateCreditHolds]:
    """Whether ``shared`` answers at once (the workers' shared memory, not Redis): an
    attribute read, not a protocol check, as it is asked a few times per billed call."""
    return getattr(shared, "answers_at_once", False) is True
