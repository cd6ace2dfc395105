"""The human-readable "explain" of a routing decision, one renderer for both implementations.

Operators read this to answer "why did this call go to carrier X (and not Y)?"; it shows the
route that matched, the candidates in order with their rates, and every excluded gateway
with its reason.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

__all__ = ["render"]


class _Candidate(Protocol):
    @property
    def gateway(self) -> str: ...
    @property
    def rate(self) -> Decimal | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def rate_prefix(self) -> str | None: ...
    @property
    def destination(self) -> str | None: ...
    @property
    def route_prefix(self) -> str: ...
    @property
    def deck(self) -> str | None: ...
    @property
    def route(self) -> int: ...


class _Rejection(Protocol):
    @property
    def gateway(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def rate(self) -> Decimal | None: ...
    @property
    def route_prefix(self) -> str: ...
    @property
    def route(self) -> int: ...
    @property
    def duration(self) -> int | None: ...


class _Result(Protocol):
    @property
    def number(self) -> str: ...
    @property
    def prefix(self) -> str | None: ...
    @property
    def strategy(self) -> str | None: ...
    @property
    def candidates(self) -> tuple[_Candidate, ...]: ...
    @property
    def rejected(self) -> tuple[_Rejection, ...]: ...
    @property
    def caller_prefix(self) -> str | None: ...
    @property
    def route(self) -> int | None: ...


REASONS = {
    "disabled": "gateway disabled",
    "excluded": "excluded by the caller",
    "no_rate": "carrier has no rate in force for this number",
    "above_max_rate": "carrier rate above the route's max_rate",
    "below_min_margin": "margin (sell - buy) below min_margin",
    "below_margin_at": "true margin (sell cost - buy cost) below min_margin for a call of",
    "unpriced": "no buy deck: the margin cannot be checked",
}


def _route(prefix: str, route: int) -> str:
    return f"[route {prefix!r} #{route}]"


def render(result: _Result) -> str:
    """Multi-line text: the matched route, the candidates in order, the rejected targets."""
    if result.prefix is None:
        return f"number {result.number}: no route matches\n"
    caller = f" caller_prefix {result.caller_prefix!r}" if result.caller_prefix else ""
    lines = [
        f"number {result.number}: route prefix {result.prefix!r}{caller} "
        f"(#{result.route}, strategy {result.strategy}), {len(result.candidates)} candidate(s)"
    ]
    for i, c in enumerate(result.candidates, 1):
        if c.rate is not None:
            rate = f"rate {c.rate} ({c.rate_prefix} {c.destination})"
        else:
            rate = "not priced (no buy deck)" if c.deck is None else "no rate"
        lines.append(
            f"  {i}. {c.gateway:<16} {rate}  priority {c.priority} weight {c.weight}"
            + (f"  {_route(c.route_prefix, c.route)}" if c.route != result.route else "")
        )
    if result.rejected:
        lines.append("  rejected:")
        for r in result.rejected:
            rate = "" if r.rate is None else f" (rate {r.rate})"
            why = REASONS.get(r.reason, r.reason)
            if r.duration is not None:
                why += f" {r.duration} s"
            lines.append(
                f"    - {r.gateway:<16} {r.reason}: {why}{rate} {_route(r.route_prefix, r.route)}"
            )
    return "\n".join(lines) + "\n"
