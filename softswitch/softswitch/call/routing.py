"""The route stage: which gateways could carry this number, in which order, and why not the others.

The account's routing plan is an ``lcr.RouteTable`` (built once per snapshot). ``lcr`` finds
the longest matching route prefix, rejects targets with reasons (``disabled``, ``no_rate``,
``above_max_rate``, ``below_min_margin``, ...) and orders the rest by the route's strategy.

* The sell rate comes from the account's deck at ``at``. An account with a deck but no rate
  for the number is refused (``no_rate``): the switch does not carry calls it cannot bill.
  An account without a deck is not rated (no sell cost, no margin filter).
* ``seed=call_id`` makes ``weight`` routing random across calls but repeatable for one call
  (a retransmitted INVITE, ``softswitch route --seed``).
* No candidate left is ``no_route``; the refusal's ``detail`` carries the explanation.
* A plan with caller-ID routes (``cli = "required"`` / ``"absent"``) has a table for calls
  with a caller-ID and one for calls without (``snapshot.Snapshot.table``); ``cli`` says
  which this call is (``call.cli.Identity.present``, after the account's ``cli`` rules).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import lcr

from ..config import Account
from .refusal import EndReason, Refusal, refuse
from .snapshot import Snapshot

__all__ = ["RoutePlan", "route_call"]


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The ordered candidates (``lcr.Candidate``: gateway, rate, deck...) and rejections."""

    number: str
    candidates: tuple[lcr.Candidate, ...]
    rejected: tuple[tuple[str, str], ...]
    sell_rate: Decimal | None
    prefix: str | None
    result: lcr.RouteResult
    #: The account's deck rate for the number (connect fee, increments): what billing holds.
    sell: lcr.Rate | None = None
    #: Gateways the select stage moved to the end for poor live quality, with why
    #: (``call.quality``); ``candidates`` is already in the demoted order.
    demoted: tuple[tuple[str, str], ...] = ()

    @property
    def explain(self) -> str:
        """``lcr``'s explanation, made on demand: the switch routes every call, an operator
        reads a few explanations."""
        return self.result.explain()

    @property
    def gateway_ids(self) -> tuple[str, ...]:
        return tuple(c.gateway for c in self.candidates)


def route_call(
    snapshot: Snapshot,
    account: Account,
    number: str,
    now: dt.datetime,
    call_id: str | int,
    *,
    cli: bool = True,
) -> RoutePlan | Refusal:
    """Ask ``lcr`` for the account's routing plan's answer for ``number`` at ``now``.

    ``number`` is normalised (digits only); ``now`` is wall-clock time (rates are dated);
    ``cli``: whether the call has a caller-ID.
    """
    table = snapshot.table(account.routing_plan, cli=cli)
    if table is None:  # load_config checks this; a hand-built Config may not have
        return refuse(EndReason.NO_ROUTE, f"routing plan {account.routing_plan!r} has no routes")
    sell_rate: Decimal | None = None
    sell: lcr.Rate | None = None
    try:
        if account.rate_deck is not None:
            rate = snapshot.decks[account.rate_deck].lookup(number, now)
            if rate is None:
                return refuse(
                    EndReason.NO_RATE, f"deck {account.rate_deck!r} has no rate for {number}"
                )
            sell_rate, sell = rate.rate, rate
        result = table.route(number, now, call_id, sell_rate=sell_rate)
    except lcr.LcrError as e:
        return refuse(EndReason.INVALID_NUMBER, str(e))
    rejected = tuple((r.gateway, r.reason) for r in result.rejected)
    if not result.candidates:
        which = ""
        if snapshot.has_cli_routes(account.routing_plan):
            which = " (a call with a caller-ID)" if cli else " (a call without a caller-ID)"
        detail = f"plan {account.routing_plan!r}{which}: " + (
            ", ".join(f"{g}: {why}" for g, why in rejected) or f"no route matches {number}"
        )
        return refuse(EndReason.NO_ROUTE, detail)
    return RoutePlan(
        number=number,
        candidates=result.candidates,
        rejected=rejected,
        sell_rate=sell_rate,
        prefix=result.prefix,
        result=result,
        sell=sell,
    )
