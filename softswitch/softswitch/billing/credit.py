"""The credit book: balances, the credit each call holds, and when each call must stop.

Pure bookkeeping, no I/O and no clock of its own (every method takes ``now``, wall-clock
seconds): ``billing.meter`` runs it on the event loop and keeps the store in step, and the
property tests drive it directly. Amounts are nano-units (``billing.money``).

The rules (docs/billing.md says them for operators):

* available = balance + credit_limit - what the account's calls hold.
* Admission: a call is let in only if the available credit covers its first billing
  increment and connect fee (the deck's ``cost(1)``); it holds that much while it rings.
* Answer, then slice by slice: before the credit a call holds runs out, it takes the next
  slice (``slice`` seconds, rounded up to the deck's increments) from the available credit.
* When a slice cannot be had, the account's answered calls are cut together: the latest
  moment T (wall clock) such that all of them, each billed its whole seconds up to T, cost
  no more than the account's credit. Each call's cut is its own whole second at T, moved up
  to the end of its billing increment (a 60/60 call is cut on the minute: the minute is
  paid for anyway). A top-up before the cut lets the call go on: the cut re-checks.
* A call never bills beyond the seconds its credit covers (``Hold.extent``): that is the cap
  ``billed_duration`` applies, so what every call of an account is debited never exceeds the
  credit it held, and the holds never exceed the credit there was. The one exception is a
  call whose rate changes between its INVITE and its answer (an effective date falls in
  between) and whose new connect fee alone exceeds what it can hold: it is cut at once and
  still pays that connect fee.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

from .money import format_amount, to_nanos

__all__ = ["CreditBook", "Decision", "Hold", "Tariff", "Terms"]

logger = logging.getLogger("softswitch.billing")


class Tariff(Protocol):
    """What the book needs of a rate: ``lcr.Rate`` (Rust or reference) is one."""

    def cost(self, duration_s: int) -> Decimal: ...

    def billed_seconds(self, duration_s: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Terms:
    """An account's billing terms from ``[[accounts]]`` (nano-units)."""

    mode: Literal["prepaid", "postpaid"]
    credit_limit: int = 0
    low_balance: int | None = None
    precision: int = 6


@dataclass(eq=False, slots=True)
class Hold:
    """The credit one call holds. ``extent`` is the seconds of call it covers once answered
    (the cap on what the call bills); ``cut`` says the call stops there."""

    key: Hashable
    account_id: str
    tariff: Tariff
    cap: int
    reserved: int = 0
    answered_at: float | None = None
    extent: int = 0
    cut: bool = False
    _costs: dict[int, int] = field(default_factory=dict)

    def cost(self, seconds: int) -> int:
        """Nano-units for ``seconds`` of call (connect fee included), memoised per call."""
        units = self._costs.get(seconds)
        if units is None:
            units = self._costs[seconds] = to_nanos(self.tariff.cost(seconds))
        return units

    def boundary(self, seconds: int) -> int:
        """``seconds`` moved up to the end of its billing increment, never past the cap."""
        return min(self.cap, self.tariff.billed_seconds(seconds)) if seconds > 0 else 0


@dataclass(frozen=True, slots=True)
class Decision:
    """What the meter must do for one call: look again (``cut`` False) or hang up (``cut``
    True) at wall-clock ``at``; ``at`` None: nothing until the call ends (its extent is its
    cap, ``max_duration`` ends it)."""

    key: Hashable
    at: float | None
    cut: bool
    extent: int
    reserved: int


@dataclass(slots=True)
class _Account:
    balance: int = 0
    reserved: int = 0
    holds: dict[Hashable, Hold] = field(default_factory=dict)
    low: bool = False


class CreditBook:
    """Every billed account's balance and holds; see the module docstring for the rules.

    ``slice`` is seconds of call taken per reservation, ``lead`` how long before a call's
    covered seconds run out it takes the next slice.
    """

    def __init__(self, terms: Mapping[str, Terms] | None = None, *, slice: int = 60) -> None:
        if slice < 1:
            raise ValueError("slice must be at least 1 second")
        self.slice = slice
        self.lead = min(2.0, slice / 2)
        self.terms: dict[str, Terms] = dict(terms or {})
        self._accounts: dict[str, _Account] = {}
        self._holds: dict[Hashable, Hold] = {}

    # -- balances ----------------------------------------------------------------------

    def configure(self, terms: Mapping[str, Terms]) -> None:
        """New terms (a reload): calls in progress keep their holds under the new terms."""
        self.terms = dict(terms)
        for account_id in self.terms:
            self._check_low(account_id, quiet=True)

    def load(self, balances: Mapping[str, int], unsettled: Mapping[str, int] | None = None) -> None:
        """The balances read from the ledger at start (replacing what the book had), and
        what calls left open by a dead run still hold (``unsettled``: nothing once recovery
        has settled them; if it failed, that credit stays held until recovery settles them:
        :meth:`unsettled_now`)."""
        for account_id, amount in balances.items():
            self._account(account_id).balance = amount
            self._check_low(account_id, quiet=True)
        for account_id, amount in (unsettled or {}).items():
            self._account(account_id).reserved += amount

    def unsettled_now(self, before: Mapping[str, int], now: Mapping[str, int]) -> None:
        """What dead runs' unsettled calls hold went from ``before`` (as given to
        :meth:`load` or here last) to ``now``: recovery settled some (their debits come
        with the ledger's rows), so their credit is no longer held twice."""
        for account_id in before.keys() | now.keys():
            delta = now.get(account_id, 0) - before.get(account_id, 0)
            if delta:
                self._account(account_id).reserved += delta

    def apply(self, changes: Iterable[tuple[str, int]]) -> None:
        """Ledger rows written by someone else (a top-up, an adjustment): counted now."""
        for account_id, amount in changes:
            self._account(account_id).balance += amount
            self._check_low(account_id)

    def billed(self, account_id: str) -> bool:
        return account_id in self.terms

    def balance(self, account_id: str) -> int:
        return self._account(account_id).balance

    def reserved(self, account_id: str) -> int:
        return self._account(account_id).reserved

    def funds(self, account_id: str) -> int:
        """Balance plus credit limit: what the account's calls may hold in all (before this
        process's reservations; with ``[server] shared_state`` the limit of the counter
        every node's reservations share)."""
        terms = self.terms.get(account_id)
        return self._account(account_id).balance + (terms.credit_limit if terms else 0)

    def available(self, account_id: str) -> int:
        acct = self._account(account_id)
        terms = self.terms.get(account_id)
        limit = terms.credit_limit if terms is not None else 0
        return acct.balance + limit - acct.reserved

    def hold(self, key: Hashable) -> Hold | None:
        return self._holds.get(key)

    # -- a call's life -----------------------------------------------------------------

    def admit(self, key: Hashable, account_id: str, tariff: Tariff, cap: int) -> bool:
        """Hold the first increment and connect fee for a new call, if the credit covers
        it; False (nothing held) when it does not. ``cap``: the call's max_duration."""
        hold = Hold(key, account_id, tariff, max(1, cap))
        need = hold.cost(1)
        if need > self.available(account_id):
            return False
        self._take(hold, need)
        self._holds[key] = hold
        self._account(account_id).holds[key] = hold
        return True

    def answer(self, key: Hashable, now: float, tariff: Tariff | None = None) -> list[Decision]:
        """The call is answered at ``now`` (rated from then on with ``tariff`` when given:
        the rate in force at the answer, as the CDR rates it); its first slice."""
        hold = self._holds[key]
        hold.answered_at = now
        if tariff is not None and tariff is not hold.tariff:
            hold.tariff = tariff
            hold._costs.clear()
        return self._extend(hold, now)

    def check(self, key: Hashable, now: float) -> list[Decision]:
        """The meter's timer for the call fired: the next slice, or the cut."""
        hold = self._holds.get(key)
        if hold is None or hold.answered_at is None:
            return []
        if hold.account_id not in self.terms:
            # No longer billed (a reload): the call goes on unmetered, as it would start now.
            hold.extent, hold.cut = hold.cap, False
            return [Decision(key, None, False, hold.extent, hold.reserved)]
        if hold.cut:
            decision = self._slice(hold, now)
            if decision is not None:
                return [decision]
            return [Decision(key, now, True, hold.extent, hold.reserved)]
        return self._extend(hold, now)

    def release(self, key: Hashable) -> None:
        """A call that was never answered ends: its hold goes back."""
        hold = self._holds.pop(key, None)
        if hold is not None:
            self._drop(hold)

    def settle(self, key: Hashable, amount: int) -> None:
        """An answered call ends: ``amount`` (its CDR's sell cost) is debited and its hold
        goes back, at once, as the store does in one transaction."""
        hold = self._holds.pop(key, None)
        if hold is None:
            return
        self._drop(hold)
        self._account(hold.account_id).balance -= amount
        self._check_low(hold.account_id)

    # -- slices and cuts ---------------------------------------------------------------

    def _extend(self, hold: Hold, now: float) -> list[Decision]:
        decision = self._slice(hold, now)
        if decision is not None:
            return [decision]
        return self._cut_together(hold.account_id, now)

    def _slice(self, hold: Hold, now: float) -> Decision | None:
        """Take the next slice for ``hold`` if the credit has it; None if not."""
        assert hold.answered_at is not None
        elapsed = max(0.0, now - hold.answered_at)
        target = hold.boundary(max(1, math.ceil(elapsed + self.slice)))
        target = max(target, hold.extent)
        need = hold.cost(target) - hold.reserved
        if need > self.available(hold.account_id):
            return None
        self._take(hold, max(0, need))
        hold.extent = target
        hold.cut = False
        at = None if target >= hold.cap else hold.answered_at + max(0.0, target - self.lead)
        return Decision(hold.key, at, False, hold.extent, hold.reserved)

    def _cut_together(self, account_id: str, now: float) -> list[Decision]:
        """The account's answered calls, each cut at its own second at the latest wall-clock
        T their total cost fits the account's credit (see the module docstring).

        What the calls cost together only changes when one of them enters a new second, at
        ``answered_at + n``. Whole seconds from ``now`` are searched first (the cost is
        monotonic in T), then the next second's crossings one by one, in time order: calls
        answered at different moments cross at different points of a second, and a credit
        that buys one more second for some of them but not all is used.
        """
        acct = self._account(account_id)
        answered = [h for h in acct.holds.values() if h.answered_at is not None]
        ringing = sum(h.reserved for h in acct.holds.values() if h.answered_at is None)
        terms = self.terms.get(account_id)
        budget = acct.balance + (terms.credit_limit if terms else 0) - ringing

        def seconds(h: Hold, at: float) -> int:
            assert h.answered_at is not None
            # The epsilon: ``answered_at + n - answered_at`` may come out a hair under n.
            return min(h.cap, max(0, math.floor(at - h.answered_at + 1e-6)))

        def spend(at: float) -> int:
            return sum(h.cost(h.boundary(seconds(h, at))) for h in answered)

        lo, hi = 0, max((h.cap for h in answered), default=0)
        if spend(now + hi) <= budget:
            lo = hi
        while lo < hi:  # the largest k with spend(now + k) <= budget (0 when none is)
            mid = (lo + hi + 1) // 2
            if spend(now + mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        cut_at = now + lo
        crossings = sorted(
            at
            for h in answered
            if h.answered_at is not None
            and (at := h.answered_at + seconds(h, cut_at) + 1) <= now + lo + 1
        )
        first, last = 0, len(crossings)  # the crossings that fit come first: bisect them
        while first < last:
            mid = (first + last) // 2
            if spend(crossings[mid]) <= budget:
                first = mid + 1
            else:
                last = mid
        if first:
            cut_at = crossings[first - 1]
        # Even the present may not fit: the loop ran late past some calls' covered seconds,
        # or an adjustment took credit away. No call then bills beyond what it holds.
        overdrawn = spend(cut_at) > budget
        decisions = []
        for h in answered:
            assert h.answered_at is not None
            # Overdrawn, each call keeps what it holds (and no more): cut at its end.
            t = h.extent if overdrawn else h.boundary(seconds(h, cut_at))
            self._take(h, h.cost(t) - h.reserved)
            h.extent = t
            h.cut = t < h.cap
            when = h.answered_at + t if h.cut else None
            decisions.append(Decision(h.key, when, h.cut, t, h.reserved))
        if decisions:
            logger.info(
                "account %s: credit runs out; %d calls cut at +%.3f s",
                account_id,
                len(decisions),
                cut_at - now,
                extra={"account_id": account_id, "event": "credit_cut"},
            )
        return decisions

    # -- internals ---------------------------------------------------------------------

    def _account(self, account_id: str) -> _Account:
        acct = self._accounts.get(account_id)
        if acct is None:
            acct = self._accounts[account_id] = _Account()
        return acct

    def _take(self, hold: Hold, amount: int) -> None:
        hold.reserved += amount
        self._account(hold.account_id).reserved += amount

    def _drop(self, hold: Hold) -> None:
        acct = self._account(hold.account_id)
        acct.reserved -= hold.reserved
        acct.holds.pop(hold.key, None)
        hold.reserved = 0

    def _check_low(self, account_id: str, *, quiet: bool = False) -> None:
        """One warning each time the balance falls below the account's ``low_balance`` (a
        debit or an adjustment takes it there; ``quiet``: a start or a reload only notes
        where it stands, so a restart does not repeat the warning)."""
        terms = self.terms.get(account_id)
        acct = self._account(account_id)
        if terms is None or terms.low_balance is None:
            acct.low = False
            return
        low = acct.balance < terms.low_balance
        if low and not acct.low and not quiet:
            logger.warning(
                "account %s: balance %s is below its low_balance %s",
                account_id,
                format_amount(acct.balance, terms.precision),
                format_amount(terms.low_balance, terms.precision),
                extra={"account_id": account_id, "event": "low_balance"},
            )
        acct.low = low
