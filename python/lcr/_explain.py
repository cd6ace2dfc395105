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


class _Rejection(Protocol):
    @property
    def gateway(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def rate(self) -> Decimal | None: ...
    @property
    def route_prefix(self) -> str: ...


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


REASONS = {
    "disabled": "gateway disabled",
    "excluded": "excluded by the caller",
    "no_rate": "carrier has no rate in force for this number",
    "above_max_rate": "carrier rate above the route's max_rate",
    "below_min_margin": "margin (sell - buy) below min_margin",
}


def render(result: _Result) -> str:
    """Multi-line text: the matched route, the candidates in order, the rejected targets."""
    if result.prefix is None:
        return f"number {result.number}: no route matches\n"
    lines = [
        f"number {result.number}: route prefix {result.prefix!r} "
        f"(strategy {result.strategy}), {len(result.candidates)} candidate(s)"
    ]
    for i, c in enumerate(result.candidates, 1):
        rate = "no rate" if c.rate is None else f"rate {c.rate} ({c.rate_prefix} {c.destination})"
        lines.append(
            f"  {i}. {c.gateway:<16} {rate}  priority {c.priority} weight {c.weight}"
            + (f"  [route {c.route_prefix!r}]" if c.route_prefix != result.prefix else "")
        )
    if result.rejected:
        lines.append("  rejected:")
        for r in result.rejected:
            rate = "" if r.rate is None else f" (rate {r.rate})"
            why = REASONS.get(r.reason, r.reason)
            lines.append(
                f"    - {r.gateway:<16} {r.reason}: {why}{rate} [route {r.route_prefix!r}]"
            )
    return "\n".join(lines) + "\n"
