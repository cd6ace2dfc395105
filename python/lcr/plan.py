"""Routing plan definitions: what an operator writes down, before any table is built.

Plain frozen dataclasses shared by both implementations; a ``RouteTable`` validates them
when it is built (strategy names, digit prefixes, deck references, duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from .windows import TimeWindow

__all__ = ["RouteEntry", "Strategy", "Target", "TimeWindow"]

Strategy = Literal["lcr", "priority", "weight"]


@dataclass(frozen=True, slots=True)
class Target:
    """A gateway a route may use. Lower ``priority`` is preferred; ``weight`` 0 = last resort.

    ``deck`` names the carrier's buy deck in the table's ``decks`` mapping.
    """

    gateway: str
    priority: int = 0
    weight: int = 1
    deck: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A route prefix and how to order its targets.

    ``carry_through``: when none of the targets is usable, fall back to the next matching
    route (see ``lcr.reference`` for the order) instead of stopping. ``max_rate`` is a
    ceiling on a carrier's rate per minute; ``min_margin`` a floor on sell rate minus buy
    rate per minute (it overrides the table's).

    ``caller_prefix`` (digits, "" = any caller) limits the route to callers whose number
    starts with it; ``windows`` (none = always) to the instants inside one of them.
    ``margin_duration`` (seconds; none = the table's) are the call lengths at which the
    true cost, increments and connect fees included, must leave ``min_margin`` per minute
    when a sell ``Rate`` is given to ``route()``.
    """

    prefix: str
    targets: tuple[Target, ...] = field(default=())
    strategy: Strategy = "lcr"
    carry_through: bool = False
    max_rate: Decimal | None = None
    min_margin: Decimal | None = None
    caller_prefix: str = ""
    windows: tuple[TimeWindow, ...] = field(default=())
    margin_duration: tuple[int, ...] = field(default=())

    def __init__(
        self,
        prefix: str,
        targets: Iterable[Target] = (),
        strategy: Strategy = "lcr",
        carry_through: bool = False,
        max_rate: Decimal | None = None,
        min_margin: Decimal | None = None,
        caller_prefix: str = "",
        windows: Iterable[TimeWindow] = (),
        margin_duration: Iterable[int] = (),
    ) -> None:
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "targets", tuple(targets))
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "carry_through", carry_through)
        object.__setattr__(self, "max_rate", max_rate)
        object.__setattr__(self, "min_margin", min_margin)
        object.__setattr__(self, "caller_prefix", caller_prefix)
        object.__setattr__(self, "windows", tuple(windows))
        object.__setattr__(self, "margin_duration", tuple(margin_duration))
