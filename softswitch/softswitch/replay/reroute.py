"""Re-route and re-rate a batch of recorded calls with a snapshot, as the switch would have.

Per call, the stages the switch runs before a gateway is tried, with the same rules:

* the account of the CDR (a CDR of an account no longer configured is refused
  ``unknown_account``), its dialed number as normalised then (``callee_normalised``; a call
  refused before normalisation is normalised again here, tech prefix stripped), its
  caller-ID: the CDR's ``caller_id``, the one the switch routed on (``call.cli``:
  ``P-Asserted-Identity`` first, anonymity and ``Privacy`` honoured, the account's ``cli``
  rules applied; "" none), which the plan's caller-ID routes look at. A CDR without it (written
  before it was recorded, or refused before routing) falls back to its ``caller``, the
  ``From`` user, with the account's ``cli`` rules (:func:`caller_number`): that misses a
  ``P-Asserted-Identity``, ``Privacy`` and an ``anonymous.invalid`` host;
* the account's ``enabled`` and ``allow``/``deny`` prefix lists, as the switch's limits stage
  checks them before routing (``call.limits.check_destination``: ``account_disabled``,
  ``forbidden_destination``); the counting limits (``max_calls``, ``max_cps``) are live
  state and are not replayed;
* the sell rate from the account's deck at the INVITE time (none in a deck: ``no_rate``);
* the account's routing plan at the INVITE time, seeded with the Call-ID (so ``weight``
  routing picks what the switch picked for that call), its first candidate being the
  gateway the call would go to (no candidate: ``no_route`` with ``lcr``'s reasons).

An answered call is then costed for its billed seconds at its answer time: the sell side
with the account's deck, the buy side with the deck of the first candidate. That assumes
the first gateway answers for as long as the recorded one did; a call the replay refuses
earns and costs nothing. Unanswered calls are re-routed (their first gateway may change)
but carry no money. The live state of the switch (gateways down or full, alarms, quality
demotion) is not replayed: it is not in the CDRs.

Everything per call that ``lcr`` can do in a batch goes through its batch calls
(``lookup_many``, ``route_many``, ``cost_many``), one per account and deck and batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import lcr

from ..call.cli import Identity, Party, is_number, rewrite
from ..call.limits import check_destination
from ..call.normalise import normalise
from ..call.refusal import EndReason, Refusal
from ..call.routing import rejection_reason
from ..call.snapshot import Snapshot
from ..config import Account
from .source import Recorded

__all__ = ["UNKNOWN", "Outcomes", "caller_number", "replay_batch"]

#: The destination of a call without a sell rate nor a route prefix to name it by.
UNKNOWN = "(unknown)"


@dataclass(slots=True)
class Outcomes:
    """What the replay makes of a batch of recorded calls: one list per field, a call's
    values at its position in the batch (columns: no object per call, at millions of calls).

    ``destination``: the sell deck's destination name (else the route prefix, else the
    recorded one, else :data:`UNKNOWN`); ``gateway``: the first gateway the call would be
    sent to (None: refused, ``refusal`` saying why, as ``end_reason: detail``);
    ``sell_cost`` and ``buy_cost``: the costs of an answered call that still routes (None
    otherwise, or when a deck has no rate then).
    """

    destination: list[str]
    gateway: list[str | None]
    refusal: list[str | None]
    sell_cost: list[Decimal | None]
    buy_cost: list[Decimal | None]

    @classmethod
    def of_size(cls, n: int) -> Outcomes:
        return cls([UNKNOWN] * n, [None] * n, [None] * n, [None] * n, [None] * n)

    def refuse(self, i: int, destination: str, why: str) -> None:
        self.destination[i] = destination
        self.refusal[i] = why


def caller_number(account: Account, caller: str) -> str | None:
    """The caller-ID a call from ``caller`` (a CDR's ``caller``: the ``From`` user, or a
    ``tel:`` URI as text) has after the account's rules, None when it has none
    (``softswitch.call.cli``: a number, not anonymous). The fallback for CDRs without
    ``caller_id``."""
    if caller[:4].lower() == "tel:":
        caller = caller[4:].partition(";")[0]
    if not account.cli:
        return caller if is_number(caller) else None
    return rewrite(Identity(Party(caller, caller.lower() == "anonymous")), account.cli).number


def _moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def replay_batch(snapshot: Snapshot, rows: Sequence[Recorded]) -> Outcomes:
    """The outcome of each of ``rows``, by position."""
    out = Outcomes.of_size(len(rows))
    numbers: list[str] = [""] * len(rows)
    callers: list[str | None] = [None] * len(rows)
    groups: dict[tuple[str, bool], list[int]] = {}
    accounts = snapshot.accounts
    # The accounts whose calls ``check_destination`` can refuse: the others skip the call.
    screened = {a.id for a in accounts.values() if not a.enabled or a.deny or a.allow}
    for i, row in enumerate(rows):
        account = accounts.get(row.account_id) if row.account_id is not None else None
        if account is None:
            why = f"{row.account_id!r} is not an account of the configuration"
            out.refuse(i, row.route_prefix or UNKNOWN, f"unknown_account: {why}")
            continue
        number = row.callee_normalised or _normalised(account, row.callee_dialed)
        if isinstance(number, Refusal):
            out.refuse(i, row.route_prefix or UNKNOWN, f"{number.end_reason}: {number.detail}")
            continue
        refused = check_destination(account, number) if account.id in screened else None
        if refused is not None:
            out.refuse(i, row.route_prefix or UNKNOWN, f"{refused.end_reason}: {refused.detail}")
            continue
        numbers[i] = number
        recorded = row.caller_id  # "" none; None not recorded: the From user, as it was
        caller = caller_number(account, row.caller) if recorded is None else recorded or None
        callers[i] = caller
        groups.setdefault((account.id, caller is not None), []).append(i)
    for (account_id, present), indexes in groups.items():
        account = accounts[account_id]
        _Group(snapshot, account, present, rows, indexes, numbers, callers).fill(out, indexes)
    return out


def _normalised(account: Account, dialed: str) -> str | Refusal:
    """A refused call's number as the switch normalises it (tech prefix stripped first)."""
    if account.tech_prefix and dialed.startswith(account.tech_prefix):
        dialed = dialed[len(account.tech_prefix) :]
    return normalise(account, dialed)


class _Group:
    """The calls of one batch from one account, with or without a caller-ID: one routing
    table, one sell deck."""

    def __init__(
        self,
        snapshot: Snapshot,
        account: Account,
        present: bool,
        rows: Sequence[Recorded],
        indexes: list[int],
        numbers: list[str],
        callers: list[str | None],
    ) -> None:
        self.snapshot = snapshot
        self.account = account
        self.table = snapshot.table(account.routing_plan, cli=present)
        self.rows = [rows[i] for i in indexes]
        self.numbers = [numbers[i] for i in indexes]
        self.callers = [callers[i] for i in indexes]
        self.invites = [_moment(r.invite_at) for r in self.rows]
        self.sell_deck = (
            snapshot.decks[account.rate_deck] if account.rate_deck is not None else None
        )

    def fill(self, out: Outcomes, indexes: list[int]) -> None:
        """Write the group's outcomes into ``out`` (the group's call ``k`` is the batch's
        call ``indexes[k]``)."""
        n = len(self.rows)
        # A list: each item of a ``RateBatch`` is made anew on every access.
        sells: list[lcr.Rate | None] = (
            list(self.sell_deck.lookup_many(self.numbers, self.invites))
            if self.sell_deck is not None
            else [None] * n
        )
        firsts: list[lcr.Candidate | None] = [None] * n
        prefixes: list[str | None] = [None] * n
        refusals: list[str | None] = [None] * n
        if self.sell_deck is None:
            routable = list(range(n))
        else:
            routable = []
            for k, sell in enumerate(sells):
                if sell is not None:
                    routable.append(k)
                else:
                    refusals[k] = (
                        f"{EndReason.NO_RATE}: deck {self.account.rate_deck!r} has no rate"
                        f" for {self.numbers[k]}"
                    )
        results = self._route(routable, sells)
        for k, result in zip(routable, results, strict=True):
            prefixes[k] = result.prefix
            candidates = result.candidates
            if candidates:
                firsts[k] = candidates[0]
            else:
                refusals[k] = f"{EndReason.NO_ROUTE}: " + (
                    ", ".join(f"{r.gateway}: {rejection_reason(r)}" for r in result.rejected)
                    or f"no route matches {self.numbers[k]}"
                )
        answered = [
            k for k in range(n) if firsts[k] is not None and self.rows[k].answer_at is not None
        ]
        sell_costs, buy_costs = self._costs(answered, firsts)
        rows = self.rows
        destinations, gateways = out.destination, out.gateway
        for k, (i, sell, first) in enumerate(zip(indexes, sells, firsts, strict=True)):
            destinations[i] = (
                sell.destination
                if sell is not None
                else prefixes[k] or rows[k].route_prefix or UNKNOWN
            )
            if first is not None:
                gateways[i] = first.gateway
            out.refusal[i] = refusals[k]
            out.sell_cost[i] = sell_costs[k]
            out.buy_cost[i] = buy_costs[k]

    def _route(
        self, routable: list[int], sells: Sequence[lcr.Rate | None]
    ) -> list[lcr.RouteResult]:
        """``lcr``'s answers for the ``routable`` calls, in order: each at its INVITE time,
        with its caller and its sell rate (``sell``: true-cost margins at the routes'
        ``margin_duration``; ``sell_rate``: the per-minute ``min_margin``)."""
        table = self.table
        if table is None:
            return [_NO_TABLE] * len(routable)
        if not routable:
            return []
        if not any(e.min_margin is not None for e in table.entries):
            # No per-minute margin to check: one batch, whatever the sell rates.
            return self._route_part(table, routable, sells, None)
        # ``route_many`` takes one per-minute sell rate per batch: a batch per sell rate.
        by_rate: dict[Decimal | None, list[int]] = {}
        for k in routable:
            sell = sells[k]
            by_rate.setdefault(None if sell is None else sell.rate, []).append(k)
        found: dict[int, lcr.RouteResult] = {}
        for sell_rate, ks in by_rate.items():
            found.update(zip(ks, self._route_part(table, ks, sells, sell_rate), strict=True))
        return [found[k] for k in routable]

    def _route_part(
        self,
        table: lcr.RouteTable,
        ks: list[int],
        sells: Sequence[lcr.Rate | None],
        sell_rate: Decimal | None,
    ) -> list[lcr.RouteResult]:
        return table.route_many(
            [self.numbers[k] for k in ks],
            [self.invites[k] for k in ks],
            [self.rows[k].call_id for k in ks],
            sell_rate=sell_rate,
            callers=[self.callers[k] for k in ks],
            sell=[sells[k] for k in ks],
        )

    def _costs(
        self, answered: list[int], firsts: list[lcr.Candidate | None]
    ) -> tuple[list[Decimal | None], list[Decimal | None]]:
        """(sell cost, buy cost) of each call, by position: None but for the answered calls
        that still route (and have a rate at their answer time)."""
        n = len(self.rows)
        sell_costs: list[Decimal | None] = [None] * n
        buy_costs: list[Decimal | None] = [None] * n
        if not answered:
            return sell_costs, buy_costs
        rows, numbers = self.rows, self.numbers
        starts = {k: _moment(rows[k].answer_at or "") for k in answered}
        if self.sell_deck is not None:
            costs = self.sell_deck.cost_many(
                [numbers[k] for k in answered],
                [rows[k].billsec for k in answered],
                [starts[k] for k in answered],
            )
            for k, cost in zip(answered, costs, strict=True):
                sell_costs[k] = cost
        by_deck: dict[str, list[int]] = {}
        for k in answered:
            first = firsts[k]
            if first is not None and first.deck is not None:
                by_deck.setdefault(first.deck, []).append(k)
        for deck_id, ks in by_deck.items():
            costs = self.snapshot.decks[deck_id].cost_many(
                [numbers[k] for k in ks], [rows[k].billsec for k in ks], [starts[k] for k in ks]
            )
            for k, cost in zip(ks, costs, strict=True):
                buy_costs[k] = cost
        return sell_costs, buy_costs


_NO_TABLE = lcr.RouteTable([]).route("0")
