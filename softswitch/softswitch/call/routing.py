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
* ``caller`` (that caller-ID's number) picks among routes by ``caller_prefix``; ``lcr``
  picks among routes by their ``time`` windows at ``now``.
* The account's rate (``sell``) also goes to ``lcr`` for the true-cost margin check of the
  routes with ``margin_duration``: a carrier whose call of that length would leave less
  than ``min_margin`` per minute (connect fees and increments counted) is rejected
  ``below_margin_at``. A route that lists ``"acd"`` adds the live ACD of its prefix
  (``acd``: a look-up by route prefix, :func:`live_acd`); the call is routed again with it
  when the route it matched wants it, so routes without ``"acd"`` cost one ``lcr`` call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import lcr

from ..config import MAX_MARGIN_DURATION, Account
from .refusal import EndReason, Refusal, refuse
from .snapshot import Snapshot

__all__ = [
    "ACD_WINDOW",
    "PrefixStats",
    "RoutePlan",
    "live_acd",
    "rejection_reason",
    "route_call",
]


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


#: The statistics window the live ACD of ``margin_duration = [..., "acd"]`` is read over.
ACD_WINDOW = "1h"


class PrefixStats(Protocol):
    """What :func:`live_acd` reads of the statistics (``softswitch.stats.Statistics``)."""

    def query(self, dimension: str, key: str, window: str, now: float) -> Mapping[str, Any]: ...


def live_acd(stats: PrefixStats, now: float) -> Callable[[str], int | None]:
    """The ACD (whole seconds, at least 1) of a route prefix over :data:`ACD_WINDOW` at
    ``now`` (the statistics' monotonic clock); None while it has answered no call."""

    def acd(prefix: str) -> int | None:
        value = stats.query("prefix", prefix, ACD_WINDOW, now).get("acd")
        if not isinstance(value, int | float) or value <= 0:
            return None
        return max(1, min(MAX_MARGIN_DURATION, round(value)))

    return acd


def rejection_reason(rejection: lcr.Rejection) -> str:
    """``lcr``'s reason, with the call length a true-cost margin failed at
    (``below_margin_at 60s``)."""
    if rejection.duration is None:
        return rejection.reason
    return f"{rejection.reason} {rejection.duration}s"


def route_call(
    snapshot: Snapshot,
    account: Account,
    number: str,
    now: dt.datetime,
    call_id: str | int,
    *,
    cli: bool = True,
    caller: str | None = None,
    acd: Callable[[str], int | None] | None = None,
) -> RoutePlan | Refusal:
    """Ask ``lcr`` for the account's routing plan's answer for ``number`` at ``now``.

    ``number`` is normalised (digits only); ``now`` is wall-clock time (rates are dated,
    routes may have time windows); ``cli``: whether the call has a caller-ID, ``caller``
    its number (for ``caller_prefix`` routes); ``acd``: the live ACD of a route prefix, for
    routes with ``"acd"`` in ``margin_duration`` (None: not used).
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
        result = table.route(number, now, call_id, sell_rate=sell_rate, caller=caller, sell=sell)
        if (
            acd is not None
            and result.prefix is not None
            and snapshot.uses_acd(account.routing_plan, result, cli=cli)
        ):
            seconds = acd(result.prefix)
            if seconds is not None:
                result = table.route(
                    number,
                    now,
                    call_id,
                    sell_rate=sell_rate,
                    caller=caller,
                    sell=sell,
                    acd=seconds,
                )
    except lcr.LcrError as e:
        return refuse(EndReason.INVALID_NUMBER, str(e))
    rejected = tuple((r.gateway, rejection_reason(r)) for r in result.rejected)
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
