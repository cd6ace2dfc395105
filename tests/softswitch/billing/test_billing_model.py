"""The bound of docs/billing.md, checked on one account over random interleavings of calls,
time, top-ups, adjustments and crashes, with the real store and ledger underneath.

The machine plays the switch. ``CreditBook`` decides; what ``CreditMeter`` and ``Pipeline``
do with its decisions is done here, in simulated time (integer milliseconds from ``T0``; the
book gets seconds as floats, exact at that resolution). A decision's ``at`` is a timer: due
timers fire in time order (``book.check(key, at)``), a cut due now hangs the call up now (once
the decisions are applied, as the meter's ``call_later(0, _cut)``), and every decision is
queued to the store as a ``Reservation``, but the answering call's: as ``Pipeline.answered``
does, its first slice goes into its ``CallStart`` (``billed_until``, ``reserved``). The store
is a real ``CdrStore`` on a file in ``tmp_path``. A call's end queues ``enqueue(cdr, debit)``
with ``billsec`` and ``sell_cost`` exactly as ``proxy.accounting.billed_duration`` bills them
(capped at ``max_duration`` and at the seconds the credit covers, ``billed_cap``). Top-ups
and adjustments are booked by an operator (``ledger.book`` on its own connection) and reach
the book through ``ledger.changes_since`` as the meter reads it: a top-up at the next sync
(a ``wait`` or ``top_up`` flag) or when an admission would be refused (``CreditMeter.admit``
re-reads), an adjustment at once. A negative adjustment only takes credit that is free at
that moment (``book.available`` after a sync): an operator can take away more, and then the
calls in progress are not stopped by it (they keep what they hold, docs/billing.md), so the
bound is not the switch's to keep in that case.

Crashes. The writer thread commits what is queued within milliseconds, so what a kill -9
leaves uncommitted is what was queued in its last instant. The machine keeps the items
queued at the current instant in ``pending`` and hands them to the store when time moves on;
a crash (now, or in the instant of the next timer: just after a cut) hands over a drawn
prefix of ``pending`` and loses the rest: the writer commits in queue order, so a kill -9
loses a suffix. The old store is then closed, so that its thread commits what it was handed
and stops, and its run is made to look as a kill -9 leaves it: ``close`` took it out of
``_LIVE_RUNS``; ``stopped_at`` is set back to NULL and ``heartbeat_at``, which its writer
stamped with the real clock, is set explicitly to the simulated crash time, or a drawn 1 or
6 ms later (the writer stamps a heartbeat after committing a batch: what was queued during
that commit is not in it), never past the next timer. A new ``CdrStore`` and a new
``CreditBook`` then start as the switch does: ``recover(rater)`` with the same deck, then
``book.load(ledger.balances(...))``. Each call left open must come back billed exactly to
that heartbeat, capped at its ``max_duration`` and at its last reservation committed.

Checked after every step: each ledger row carries the running sum; the ledger (plus the
debits still queued, less the top-ups not yet synced) equals the book's balance; no row, and
not the book, is ever below ``-credit_limit``, and the holds never exceed the credit; each
call is debited no more than it held; every ``call`` row has its CDR with that sell cost,
none is debited twice, and the debits sum to the CDRs' sell costs to the nano-unit; exactly
the calls that ended (by their CDR or by recovery) are debited, across crashes, but for a
call whose start mark a crash lost in its very answer instant (no CDR then, docs/cdr.md);
``open_calls`` holds the calls up with their latest reservation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import math
import sqlite3
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import lcr
from softswitch.billing import ledger
from softswitch.billing.credit import CreditBook, Decision, Terms
from softswitch.billing.money import to_nanos
from softswitch.cdr import CallStart, CdrAttempt, CdrRecord, CdrStore, Reservation

ACCT = "acme"
NUMBER = "447911123456"
DECK_ID = "sell"
#: Far in the past of the real clock: a heartbeat set to a simulated time is always stale.
T0 = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
#: Never a real-clock heartbeat during a run (a crash sets the simulated one).
HEARTBEAT = 3600.0


def at_ms(ms: int) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


@dataclasses.dataclass
class Call:
    key: str
    cap: int
    invite_ms: int
    answer_ms: int | None = None
    extent: int | None = None  # billed_cap: the seconds its credit covers
    start_lost: bool = False  # its call start was queued in a crash's last instant, lost


@st.composite
def decks(draw: st.DrawFn) -> tuple[lcr.Rate, int]:
    """One rate of a random deck, and the deck's precision."""
    precision = draw(st.sampled_from([0, 2, 4, 6]))
    unit = Decimal(1).scaleb(-precision)
    per_minute = draw(st.integers(0, 300 * 10**precision)) * unit
    fee = draw(st.integers(0, 5 * 10**precision) | st.just(0)) * unit
    initial = draw(st.sampled_from([1, 6, 30, 60]))
    subsequent = draw(st.sampled_from([1, 6, 60]))
    rounding = draw(st.sampled_from(["up", "down", "half_up"]))
    deck = lcr.RateDeck.from_rows(
        [("44", "UK", per_minute, fee, initial, subsequent)],
        precision=precision,
        rounding=rounding,
    )
    found = deck.lookup(NUMBER)
    assert found is not None
    return found, precision


#: What the switch queues to the store's writer: a call start, a reservation, a CDR and debit.
Queued = CallStart | Reservation | tuple[CdrRecord, ledger.Booking]

#: An amount as (coarse, fine): ``coarse`` fiftieths of a minute's cost (two minutes at
#: most) plus ``fine`` units of the deck's last decimal place (``BillingModel.amount``).
amounts = st.tuples(st.integers(0, 100), st.integers(0, 50))


class BillingModel(RuleBasedStateMachine):
    """One billed account, one switch at a time (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.exits = contextlib.ExitStack()
        self.keys = itertools.count()
        self.now = 0  # ms since T0
        self.calls: dict[str, Call] = {}
        self.timers: dict[str, int] = {}  # key -> ms of its check (the meter's timer)
        self.ends: dict[str, int] = {}  # key -> ms of its max_duration
        self.pending: list[Queued] = []  # queued in the current instant, not yet committed
        self.answered: dict[str, Call] = {}  # every call ever answered, across crashes
        # what the writer was handed: the open marks, the seconds each covers and its hold
        self.marks: dict[str, tuple[int, int]] = {}

    # -- set-up ------------------------------------------------------------------------

    @initialize(
        deck=decks(),
        postpaid=st.booleans(),
        limit=amounts,
        low=st.none() | amounts,
        opening=amounts,
        slice=st.sampled_from([1, 2, 6, 30, 60]),
    )
    def start(
        self,
        deck: tuple[lcr.Rate, int],
        postpaid: bool,
        limit: tuple[int, int],
        low: tuple[int, int] | None,
        opening: tuple[int, int],
        slice: int,
    ) -> None:
        self.rate, precision = deck
        self.unit = 10 ** (9 - precision)  # nano-units of the deck's last place
        # Scale credit to the price of a call: a unit step is too fine on a 0-decimal deck.
        minute = max(to_nanos(self.rate.cost(60)), self.unit)
        self.scale = max(1, minute // (50 * self.unit))
        self.terms = Terms(
            mode="postpaid" if postpaid else "prepaid",
            credit_limit=self.amount(limit) if postpaid else 0,
            low_balance=None if low is None else self.amount(low),
            precision=precision,
        )
        self.limit = self.terms.credit_limit
        self.slice = slice
        self.db = self.directory / "switch.sqlite"
        self.store = CdrStore(self.db, heartbeat_interval=HEARTBEAT)
        self.operator = self.exits.enter_context(ledger.connect(self.db))
        if self.amount(opening):
            self._book_operator("topup", self.amount(opening))
        self._new_book()

    def amount(self, drawn: tuple[int, int]) -> int:
        coarse, fine = drawn
        return (coarse * self.scale + fine) * self.unit

    def _new_book(self) -> None:
        self.book = CreditBook({ACCT: self.terms}, slice=self.slice)
        sums, self.last_id = ledger.balances(self.operator)
        self.book.load(sums)

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
        self.exits.close()

    # -- what the meter's sync and an operator do ----------------------------------------

    def _book_operator(self, kind: str, amount: int) -> None:
        ledger.book(self.operator, ledger.Booking(ACCT, kind, amount, "op", at_ms(self.now)))

    def _sync(self) -> None:
        changes, self.last_id = ledger.changes_since(self.operator, self.last_id, self.store.run_id)
        self.book.apply(changes)

    # -- time ----------------------------------------------------------------------------

    def _tick(self, to: int) -> None:
        """Time moves on: the writer has committed what was queued before."""
        assert to >= self.now
        if to > self.now:
            self._hand_over(len(self.pending))
            self.now = to

    def _hand_over(self, count: int) -> None:
        for item in self.pending[:count]:
            if isinstance(item, CallStart):
                self.store.open_call(item)
                assert item.billed_until is not None
                self.marks[item.cdr.call_id] = (item.billed_until, item.reserved)
            elif isinstance(item, Reservation):
                self.store.reserve(item)
                if item.call_id in self.marks:  # else its CDR closed it: the update is void
                    self.marks[item.call_id] = (item.billed_until, item.reserved)
            else:
                self.store.enqueue(*item)
                del self.marks[item[0].call_id]
        self.pending = []

    def _next_event(self) -> tuple[int, str, str] | None:
        events = [(ms, 0, key, "check") for key, ms in self.timers.items()]
        events += [(ms, 1, key, "cap") for key, ms in self.ends.items()]
        if not events:
            return None
        ms, _, key, kind = min(events)
        return ms, key, kind

    def _advance(self, to: int) -> None:
        while (event := self._next_event()) is not None and event[0] <= to:
            ms, key, kind = event
            self._tick(ms)
            if kind == "check":
                del self.timers[key]
                self._cut(self._apply(self.book.check(key, ms / 1000)))
            else:
                self._end(key, "max_duration", "switch")
        self._tick(to)

    def _apply(self, decisions: list[Decision], recorded: str | None = None) -> list[str]:
        """``CreditMeter._apply``: billed cap, reservation (but for ``recorded``, the call
        whose start mark carries it) and timer per decision; returns the calls to hang up
        now (the meter's ``call_later(0, _cut)``: once its caller is done)."""
        cuts = []
        for d in decisions:
            call = self.calls[str(d.key)]
            assert call.answer_ms is not None
            call.extent = d.extent
            if call.key != recorded:
                reservation = Reservation(call.key, at_ms(call.answer_ms), d.extent, d.reserved)
                self.pending.append(reservation)
            self.timers.pop(call.key, None)
            if d.at is None:
                assert d.extent >= call.cap, d
                continue
            due = round(d.at * 1000)
            if d.cut and due <= self.now + 1:
                cuts.append(call.key)
            else:
                self.timers[call.key] = max(due, self.now)
        return cuts

    def _cut(self, keys: list[str]) -> None:
        """The engine's BYE for each call the credit no longer covers: the call ends now."""
        for key in keys:
            self._end(key, "credit_exhausted", "switch")

    # -- a call's life ---------------------------------------------------------------------

    def _end(self, key: str, reason: str, side: str) -> None:
        """``Pipeline.account`` of an answered call: the CDR and its debit, queued."""
        call = self.calls.pop(key)
        self.timers.pop(key, None)
        self.ends.pop(key, None)
        assert call.answer_ms is not None
        assert call.extent is not None
        # proxy.accounting.billed_duration, on the same floats the switch would have
        answer, end = call.answer_ms / 1000, self.now / 1000
        duration = max(0.0, round(end - answer, 3))
        duration = min(duration, round(float(call.cap), 3))
        duration = min(duration, round(float(call.extent), 3))
        billsec = math.ceil(duration)
        cost = self.rate.cost(billsec)
        amount = to_nanos(cost)
        hold = self.book.hold(key)
        assert hold is not None
        assert amount <= hold.reserved, (
            f"{key} billed {billsec} s ({amount}) beyond its hold {hold.reserved}"
        )
        self.book.settle(key, amount)
        record = self._cdr(call, end=self.now, reason=reason, side=side)
        record = dataclasses.replace(record, duration=duration, billsec=billsec, sell_cost=cost)
        debit = ledger.Booking(ACCT, "call", -amount, key, at_ms(self.now))
        self.pending.append((record, debit))

    def _cdr(self, call: Call, *, end: int, reason: str, side: str) -> CdrRecord:
        assert call.answer_ms is not None
        return CdrRecord(
            call_id=call.key,
            account_id=ACCT,
            source="192.0.2.10:5060",
            caller="alice",
            callee_dialed=NUMBER,
            callee_normalised=NUMBER,
            invite_at=at_ms(call.invite_ms),
            answer_at=at_ms(call.answer_ms),
            end_at=at_ms(end),
            end_reason=reason,
            status=200,
            q850=41 if reason == "system_failure" else 16,
            hangup_side=side,
            attempts=(CdrAttempt("gw", 200, "answered", at_ms(call.invite_ms)),),
        )

    def _ringing(self) -> list[Call]:
        return [c for c in self.calls.values() if c.answer_ms is None]

    def _up(self) -> list[Call]:
        return [c for c in self.calls.values() if c.answer_ms is not None]

    # -- rules -------------------------------------------------------------------------

    @rule(cap=st.sampled_from([3600, 600, 90, 61, 30, 5, 1]), answer=st.booleans())
    def invite(self, cap: int, answer: bool) -> None:
        """``Pipeline`` admission: the book, then (as ``CreditMeter.admit``) a re-read;
        ``answer``: the gateway answers in the same instant."""
        key = f"call-{next(self.keys)}"
        first = to_nanos(self.rate.cost(1))
        available = self.book.available(ACCT)
        admitted = self.book.admit(key, ACCT, self.rate, cap)
        assert admitted == (first <= available)
        if not admitted:
            self._sync()
            admitted = self.book.admit(key, ACCT, self.rate, cap)
        if admitted:
            self.calls[key] = Call(key, cap, self.now)
            if answer:
                self._answer(self.calls[key])

    @precondition(lambda self: self._ringing())
    @rule(pick=st.integers(0, 50))
    def answer(self, pick: int) -> None:
        ringing = self._ringing()
        self._answer(ringing[pick % len(ringing)])

    def _answer(self, call: Call) -> None:
        """``Pipeline.answered``: the meter's first slice, then the call start carrying it."""
        call.answer_ms = self.now
        self.answered[call.key] = call
        decisions = self.book.answer(call.key, self.now / 1000, self.rate)
        cuts = self._apply(decisions, recorded=call.key)
        (covered,) = [d for d in decisions if d.key == call.key]
        start = self._cdr(call, end=self.now, reason="system_failure", side="switch")
        self.pending.append(
            CallStart(
                start,
                sell_deck=DECK_ID,
                max_duration=float(call.cap),
                billed_account=ACCT,
                billed_until=covered.extent,
                reserved=covered.reserved,
            )
        )
        self.ends[call.key] = self.now + call.cap * 1000
        self._cut(cuts)

    @precondition(lambda self: self._ringing())
    @rule(pick=st.integers(0, 50))
    def abandon(self, pick: int) -> None:
        ringing = self._ringing()
        call = ringing[pick % len(ringing)]
        del self.calls[call.key]
        self.book.release(call.key)

    @precondition(lambda self: self._up())
    @rule(pick=st.integers(0, 50))
    def hang_up(self, pick: int) -> None:
        up = self._up()
        self._end(up[pick % len(up)].key, "normal_clearing", "caller")

    @rule(
        seconds=st.integers(0, 300),
        ms=st.sampled_from([0, 0, 1, 250, 499, 500, 999]),
        sync=st.booleans(),
    )
    def wait(self, seconds: int, ms: int, sync: bool) -> None:
        """Time passes; the meter's ledger sync (every ``sync_interval``) ran first or not."""
        if sync:
            self._sync()
        self._advance(self.now + seconds * 1000 + ms)

    @precondition(lambda self: self.timers or self.ends)
    @rule()
    def next_timer(self) -> None:
        """Time passes up to the next timer, included: what follows happens in its instant
        (a crash just after a cut, a top-up just before a cut check)."""
        upcoming = self._next_event()
        assert upcoming is not None
        self._advance(upcoming[0])

    @rule(amount=amounts, sync=st.booleans())
    def top_up(self, amount: tuple[int, int], sync: bool) -> None:
        if self.amount(amount) == 0:
            return
        self._book_operator("topup", self.amount(amount))
        if sync:
            self._sync()

    @rule(share=st.integers(1, 100), positive=st.booleans())
    def adjust(self, share: int, positive: bool) -> None:
        """An operator's adjustment, synced at once; a negative one takes at most the credit
        that is free now (see the module docstring)."""
        self._sync()
        if positive:
            amount = share * self.scale * self.unit
        else:
            free = self.book.available(ACCT)
            amount = -((free * share // 100) // self.unit * self.unit)
            if amount == 0:
                return
        self._book_operator("adjustment", amount)
        self._sync()

    @precondition(lambda self: self._up() or self.pending)
    @rule(
        at_next_timer=st.booleans(),
        kept=st.integers(0, 20) | st.just(10**6),
        late=st.sampled_from([0, 1, 6]),
    )
    def crash(self, at_next_timer: bool, kept: int, late: int) -> None:
        """kill -9 now, or in the instant of the next timer (just after a cut, say): the
        first ``kept`` items queued in that instant were committed, and the writer's last
        heartbeat is ``late`` ms after it (the writer stamps the time it writes, after
        committing a batch: items queued during that commit are not in it), never past the
        next timer (the event loop was still up to then)."""
        if at_next_timer and (upcoming := self._next_event()) is not None:
            self._advance(upcoming[0])
        upcoming = self._next_event()
        if upcoming is not None:
            late = min(late, upcoming[0] - self.now - 1)
        lost = self.pending[kept:]
        self._hand_over(kept)
        for item in lost:
            if isinstance(item, CallStart):
                self.answered[item.cdr.call_id].start_lost = True
        self.now += late
        old = self.store
        old.close()  # commits what it was handed; its run leaves _LIVE_RUNS
        with contextlib.closing(sqlite3.connect(self.db)) as conn, conn:
            conn.execute(
                "UPDATE switch_runs SET stopped_at = NULL, heartbeat_at = ? WHERE run_id = ?",
                (at_ms(self.now).isoformat(timespec="microseconds"), old.run_id),
            )
        self.store = CdrStore(self.db, heartbeat_interval=HEARTBEAT)
        (run,) = self.store.recover(self._rater)
        assert run.run_id == old.run_id
        assert run.heartbeat_at == at_ms(self.now)
        assert run.calls == len(self.marks)
        # each open mark became its CDR: billed to the heartbeat, never past the call's
        # max_duration nor the seconds its durable reservation covers
        recovered = {r.call_id: r for r in self.store.query() if r.call_id in self.marks}
        assert set(recovered) == set(self.marks)
        for key, (covered, _) in self.marks.items():
            call, record = self.answered[key], recovered[key]
            assert call.answer_ms is not None
            end = max(self.now, call.answer_ms)
            end = min(end, call.answer_ms + 1000 * call.cap, call.answer_ms + 1000 * covered)
            billsec = math.ceil((end - call.answer_ms) / 1000)
            assert (record.end_reason, record.end_at) == ("system_failure", at_ms(end))
            assert (record.billsec, record.sell_cost) == (billsec, self.rate.cost(billsec))
        self.marks.clear()
        self.calls.clear()
        self.timers.clear()
        self.ends.clear()
        self._new_book()

    def _rater(self, deck: str | None, number: str, start: dt.datetime, billsec: int) -> Decimal:
        assert (deck, number) == (DECK_ID, NUMBER)
        return self.rate.cost(billsec)

    # -- checks ------------------------------------------------------------------------

    def _committed(self) -> tuple[list[ledger.LedgerEntry], dict[str, CdrRecord]]:
        assert self.store.flush(timeout=30)
        rows = ledger.entries(self.operator, ACCT)
        cdrs: dict[str, CdrRecord] = {}
        for record in self.store.query():
            assert record.call_id not in cdrs, f"two CDRs for {record.call_id}"
            cdrs[record.call_id] = record
        return rows, cdrs

    @invariant()
    def the_ledger_is_the_balance_and_keeps_the_bound(self) -> None:
        if not hasattr(self, "store"):
            return
        rows, cdrs = self._committed()
        running = 0
        for row in rows:
            running += row.amount
            assert row.balance_after == running, row
            assert row.balance_after >= -self.limit, (
                f"ledger row {row.id} ({row.kind} {row.amount}) leaves {row.balance_after}"
                f" below -credit_limit {-self.limit}"
            )
        queued = sum(item[1].amount for item in self.pending if isinstance(item, tuple))
        unsynced, _ = ledger.changes_since(self.operator, self.last_id, self.store.run_id)
        assert running + queued == self.book.balance(ACCT) + sum(a for _, a in unsynced)
        assert self.book.balance(ACCT) >= -self.limit
        assert self.book.available(ACCT) >= 0, "the holds exceed the credit"
        held = sum(h.reserved for key in self.calls if (h := self.book.hold(key)) is not None)
        assert held == self.book.reserved(ACCT)
        # every call debit has its CDR, with that cost; none twice; sums exact
        debits: dict[str, int] = {}
        for row in rows:
            if row.kind != "call":
                continue
            assert row.reference not in debits, f"{row.reference} debited twice"
            debits[row.reference] = row.amount
            record = cdrs.get(row.reference)
            assert record is not None, f"debit of {row.reference} without its CDR"
            assert record.sell_cost is not None
            assert record.sell_cost == self.rate.cost(record.billsec or 0)
            assert -row.amount == to_nanos(record.sell_cost)
        assert set(debits) == set(cdrs)
        # exactly the calls that ended (by their CDR or by recovery) are debited: not one
        # still up, nor one whose CDR is still queued, nor one whose start a crash lost
        queued_cdrs = {item[0].call_id for item in self.pending if isinstance(item, tuple)}
        ended = {
            key
            for key, call in self.answered.items()
            if key not in self.calls and key not in queued_cdrs and not call.start_lost
        }
        assert set(debits) == ended
        # the open marks are what the writer was handed, each with its latest reservation
        marks = self.operator.execute("SELECT call_id, billed_until, reserved FROM open_calls")
        assert {key: (until, held) for key, until, held in marks} == self.marks
        held_open = sum(held for _, held in self.marks.values())
        assert ledger.reserved(self.operator) == ({ACCT: held_open} if self.marks else {})
        total = sum((r.sell_cost or Decimal(0) for r in cdrs.values()), Decimal(0))
        assert -sum(debits.values()) == to_nanos(total)


def _examples() -> int:
    """A third of the profile's examples (``ci``: 50): each one runs a real store."""
    return max(10, settings.default.max_examples // 3)


def test_the_bound_holds_across_calls_top_ups_and_crashes(tmp_path: Path) -> None:
    runs = itertools.count()

    def machine() -> BillingModel:
        directory = tmp_path / f"run{next(runs)}"
        directory.mkdir()
        return BillingModel(directory)

    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=_examples(),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
