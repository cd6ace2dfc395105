"""What a replay found: per destination and gateway, the calls' figures before and after,
and the calls whose first gateway would change.

"Before" is the CDRs as recorded: the gateway that answered (an unanswered call: the first
one tried; none: ``(refused)``), the recorded billed seconds, sell and buy costs. "After" is
the replay's (``reroute``): the first gateway it routes to, the same billed seconds for an
answered call that still routes, the re-rated costs. A call keeps its destination on both
sides, so a call that moves from one gateway to another shows on two rows of the same
destination. Money is summed as ``Decimal``, exactly; minutes are shown to two decimals
(billed seconds / 60, rounded half up) for reading only.

A call the switch refused for its live state (the account's call or CPS limit, its
balance, no gateway up, a shutdown...: :data:`LIVE_REFUSALS`) and that the replay routes did
not change because of the decks: the replay has no live state. Such calls are counted apart
(``live_refused``), so "changed" counts only what the candidate decks (and configuration)
change.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TextIO

from ..call.refusal import EndReason
from .reroute import Outcomes
from .source import Recorded

__all__ = ["COLUMNS", "LIVE_REFUSALS", "REFUSED", "Change", "Figures", "Report"]

#: End reasons of calls refused before any gateway for what the replay does not replay:
#: the switch's live state (counters, balances, gateway state, an operator's action) or the
#: request itself. The refusals the replay does reproduce (``invalid_number``,
#: ``forbidden_destination``, ``no_rate``, ``no_route``) are not among them.
LIVE_REFUSALS = frozenset(
    str(reason)
    for reason in (
        EndReason.AUTH_FAILED,
        EndReason.ACCOUNT_DISABLED,
        EndReason.LIMIT_EXCEEDED,
        EndReason.INSUFFICIENT_BALANCE,
        EndReason.NO_GATEWAY,
        EndReason.LOOP_DETECTED,
        EndReason.TOO_MANY_HOPS,
        EndReason.INVALID_REQUEST,
        EndReason.MESSAGE_TOO_LARGE,
        EndReason.SYSTEM_SHUTDOWN,
        EndReason.INTERNAL_ERROR,
        EndReason.MEDIA_UNAVAILABLE,
        EndReason.CODEC_MISMATCH,
    )
)

#: The gateway column of calls that reach none.
REFUSED = "(refused)"
#: The columns of the table and of the CSV output.
COLUMNS = (
    "destination",
    "gateway",
    "calls_before",
    "minutes_before",
    "revenue_before",
    "cost_before",
    "margin_before",
    "calls_after",
    "minutes_after",
    "revenue_after",
    "cost_after",
    "margin_after",
)
_CENT = Decimal("0.01")
_ZERO = Decimal(0)


@dataclass(slots=True)
class Figures:
    """Calls, billed seconds and money of one row on one side."""

    calls: int = 0
    seconds: int = 0
    revenue: Decimal = _ZERO
    cost: Decimal = _ZERO

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def minutes(self) -> Decimal:
        """Billed minutes, to two decimals (display only: ``seconds`` is exact)."""
        return (Decimal(self.seconds) / 60).quantize(_CENT, rounding=ROUND_HALF_UP)

    def add(self, other: Figures) -> None:
        self.calls += other.calls
        self.seconds += other.seconds
        self.revenue += other.revenue
        self.cost += other.cost

    def cells(self) -> tuple[str, str, str, str, str]:
        return (
            str(self.calls),
            str(self.minutes),
            str(self.revenue),
            str(self.cost),
            str(self.margin),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """A call whose first gateway the replay changes (``after`` None: refused, ``why``)."""

    call_id: str
    invite_at: str
    account_id: str | None
    number: str
    before: str | None
    before_end: str
    after: str | None
    why: str | None

    def line(self) -> str:
        was = self.before or f"{REFUSED} {self.before_end}"
        now = self.after or f"{REFUSED} {self.why}"
        return (
            f"{self.invite_at[:19]}Z  {self.call_id}  {self.account_id or '-'}  {self.number}"
            f"  {was} -> {now}"
        )


@dataclass(slots=True)
class Report:
    """The running totals of a replay; :meth:`add` one batch at a time."""

    sample_size: int = 20
    rows: dict[tuple[str, str], tuple[Figures, Figures]] = field(default_factory=dict)
    calls: int = 0
    #: Calls routed to another first gateway (or routed where they were refused).
    moved: int = 0
    #: Calls the switch sent to a gateway that the replay refuses.
    refused: int = 0
    #: Answered calls the replay routes but cannot price (a deck without a rate then).
    unpriced: int = 0
    #: Calls the switch refused for its live state (:data:`LIVE_REFUSALS`) that the replay
    #: routes: not changes made by the decks.
    live_refused: int = 0
    sample: list[Change] = field(default_factory=list)

    def add(self, rows: Sequence[Recorded], outcomes: Outcomes) -> None:
        table = self.rows
        columns = zip(
            rows,
            outcomes.destination,
            outcomes.gateway,
            outcomes.refusal,
            outcomes.sell_cost,
            outcomes.buy_cost,
            strict=True,
        )
        for row, destination, now, refusal, sell_cost, buy_cost in columns:
            answered = row.answer_at is not None
            was = row.gateway_id if answered and row.gateway_id else row.first_gateway
            before = table.get((destination, was or REFUSED))
            if before is None:
                before = table[(destination, was or REFUSED)] = (Figures(), Figures())
            after = table.get((destination, now or REFUSED))
            if after is None:
                after = table[(destination, now or REFUSED)] = (Figures(), Figures())
            side = before[0]
            side.calls += 1
            if answered:
                side.seconds += row.billsec
                if row.sell_cost:
                    side.revenue += Decimal(row.sell_cost)
                if row.buy_cost:
                    side.cost += Decimal(row.buy_cost)
            side = after[1]
            side.calls += 1
            if answered and now is not None:
                side.seconds += row.billsec
                if sell_cost is not None:
                    side.revenue += sell_cost
                if buy_cost is not None:
                    side.cost += buy_cost
                else:
                    self.unpriced += 1
            if now != row.first_gateway:
                if row.first_gateway is None and row.end_reason in LIVE_REFUSALS:
                    self.live_refused += 1
                    continue
                if now is None:
                    self.refused += 1
                else:
                    self.moved += 1
                if len(self.sample) < self.sample_size:
                    self.sample.append(
                        Change(
                            row.call_id,
                            row.invite_at,
                            row.account_id,
                            row.callee_normalised or row.callee_dialed,
                            row.first_gateway,
                            row.end_reason,
                            now,
                            refusal,
                        )
                    )
        self.calls += len(rows)

    def totals(self) -> tuple[Figures, Figures]:
        before, after = Figures(), Figures()
        for b, a in self.rows.values():
            before.add(b)
            after.add(a)
        return before, after

    def cells(self) -> Iterator[tuple[str, ...]]:
        """The rows as the text of :data:`COLUMNS`, by destination then gateway."""
        for (destination, gateway), (before, after) in sorted(self.rows.items()):
            yield (destination, gateway, *before.cells(), *after.cells())

    def table_lines(self) -> Iterator[str]:
        """An aligned table: text columns left, figures right, a total line last."""
        before, after = self.totals()
        total = ("total", "", *before.cells(), *after.cells())
        rows = [COLUMNS, *self.cells(), total]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            cells = [
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            yield "  ".join(cells).rstrip()

    def write_csv(self, stream: TextIO) -> None:
        """The rows as CSV with a header of :data:`COLUMNS` (no total line)."""
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(self.cells())

    def summary_lines(self) -> Iterator[str]:
        """The counts, the margin's change and the sample of changed calls."""
        before, after = self.totals()
        yield (
            f"{self.calls:,} calls replayed: {self.moved:,} to a different first gateway,"
            f" {self.refused:,} refused"
            + (f", {self.unpriced:,} answered calls not priced" if self.unpriced else "")
        )
        if self.live_refused:
            yield (
                f"{self.live_refused:,} calls the switch refused for its live state (limits,"
                " balance, no gateway up...) would route: not counted as changed"
            )
        yield f"margin {before.margin} -> {after.margin} ({after.margin - before.margin:+})"
        if self.sample:
            yield f"first {len(self.sample)} changed calls (before -> after):"
            for change in self.sample:
                yield "  " + change.line()
