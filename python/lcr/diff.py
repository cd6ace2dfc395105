"""What a new rate deck changes, compared with the deck it replaces (``lcr diff``).

Operators receive a carrier's new deck weekly and want to see what it does before it goes
live. A deck can hold several effective-dated rows per prefix, so "the rate of a prefix" needs
a rule; this module's rule is:

* **Prices are compared at one moment**, ``at`` (default: now). For each prefix, the row in
  force at ``at`` in each deck (``effective_from <= at < effective_to``, the newest
  ``effective_from`` winning, as a lookup does) gives the kinds ``added`` (in force only in
  the new deck), ``removed`` (only in the old), ``rate_up`` / ``rate_down`` (with the exact
  percentage), ``increment`` (e.g. 60/60 -> 1/1), ``connect_fee`` and ``destination``
  (renamed). A prefix can show several kinds at once.
* **Everything else about a prefix's dated rows is a** ``dates`` **change**: an in-force
  row's effective dates moved, or a row not in force at ``at`` (a scheduled increase, an
  expired version) was added, dropped or re-priced. The entry shows both decks' full
  schedules for that prefix.

Together the kinds account for every difference: the diff is empty exactly when both decks
hold the same rows (compared as values, so ``0.01`` equals ``0.010000``). To preview a deck
that goes live on a date, compare at that date (``at=...``, ``lcr diff --at``);
``DeckDiff.next_start`` names the first moment after ``at`` at which a changed prefix's
rows start, the natural next ``at`` to look at.

Speed: rows identical in both decks are discarded first by the rows' own equality and hash
(in Rust for ``lcr.RateDeck``), so only the prefixes that differ are read into Python
values. Money stays ``Decimal``; percentages are exact fractions, rounded only for display.
"""

from __future__ import annotations

import csv
import datetime as _dt
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import Literal, Protocol, TextIO

__all__ = [
    "COLUMNS",
    "KINDS",
    "Change",
    "DeckDiff",
    "Kind",
    "Version",
    "diff",
    "percent_text",
    "table_lines",
    "write_csv",
]

Kind = Literal[
    "added",
    "removed",
    "rate_up",
    "rate_down",
    "increment",
    "connect_fee",
    "destination",
    "dates",
]
#: The kinds of change, in the order they are listed.
KINDS: tuple[Kind, ...] = (
    "added",
    "removed",
    "rate_up",
    "rate_down",
    "increment",
    "connect_fee",
    "destination",
    "dates",
)
#: The columns of the table and of the CSV output.
COLUMNS = ("change", "prefix", "destination", "old", "new", "percent")


class Row(Protocol):
    """What the diff reads of a deck row: ``lcr.Rate`` and ``lcr.reference.Rate`` both fit."""

    @property
    def prefix(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def rate(self) -> Decimal: ...
    @property
    def connect_fee(self) -> Decimal: ...
    @property
    def initial_increment(self) -> int: ...
    @property
    def subsequent_increment(self) -> int: ...
    @property
    def effective_from(self) -> _dt.datetime | None: ...
    @property
    def effective_to(self) -> _dt.datetime | None: ...


class Deck(Protocol):
    """A deck to compare: ``lcr.RateDeck`` or ``lcr.reference.RateDeck``."""

    def rows(self) -> Sequence[Row]: ...


@dataclass(frozen=True, slots=True)
class Version:
    """One dated row of a prefix, as plain values (amounts compare by value)."""

    destination: str
    rate: Decimal
    connect_fee: Decimal
    initial_increment: int
    subsequent_increment: int
    effective_from: _dt.datetime | None
    effective_to: _dt.datetime | None

    @classmethod
    def of(cls, row: Row) -> Version:
        return cls(
            destination=row.destination,
            rate=row.rate,
            connect_fee=row.connect_fee,
            initial_increment=row.initial_increment,
            subsequent_increment=row.subsequent_increment,
            effective_from=row.effective_from,
            effective_to=row.effective_to,
        )

    def in_force(self, at: _dt.datetime) -> bool:
        starts = self.effective_from is None or self.effective_from <= at
        return starts and (self.effective_to is None or at < self.effective_to)

    @property
    def increments(self) -> str:
        return f"{self.initial_increment}/{self.subsequent_increment}"

    def priced_like(self, other: Version) -> Version:
        """This row's dates with ``other``'s price and destination."""
        return replace(other, effective_from=self.effective_from, effective_to=self.effective_to)

    def schedule_text(self) -> str:
        """``FROM..TO RATE`` with open ends left empty, e.g. ``2026-01-08.. 0.012000``."""
        return f"{_moment(self.effective_from)}..{_moment(self.effective_to)} {self.rate}"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference for one prefix.

    ``old`` and ``new`` are the rows in force at the diff's moment (price kinds; ``None`` on
    the side where nothing is in force). ``old_versions`` and ``new_versions`` are all of the
    prefix's rows in each deck, filled for ``dates`` changes only.
    """

    kind: Kind
    prefix: str
    old: Version | None = None
    new: Version | None = None
    old_versions: tuple[Version, ...] = ()
    new_versions: tuple[Version, ...] = ()

    @property
    def destination(self) -> str:
        for side in (self.new, self.old, *self.new_versions[::-1], *self.old_versions[::-1]):
            if side is not None:
                return side.destination
        return ""

    @property
    def percent(self) -> Fraction | None:
        """The exact relative rate change in percent (``rate_up``/``rate_down`` from non-zero)."""
        if self.kind not in ("rate_up", "rate_down") or self.old is None or self.new is None:
            return None
        if not self.old.rate:
            return None
        return (Fraction(self.new.rate) - Fraction(self.old.rate)) * 100 / Fraction(self.old.rate)

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """The change as the text of :data:`COLUMNS`."""
        old, new = self.old, self.new
        if self.kind == "dates":
            before = "; ".join(v.schedule_text() for v in self.old_versions)
            after = "; ".join(v.schedule_text() for v in self.new_versions)
        elif self.kind == "increment" and old and new:
            before, after = old.increments, new.increments
        elif self.kind == "connect_fee" and old and new:
            before, after = str(old.connect_fee), str(new.connect_fee)
        elif self.kind == "destination" and old and new:
            before, after = old.destination, new.destination
        else:
            before = "" if old is None else str(old.rate)
            after = "" if new is None else str(new.rate)
        percent = self.percent
        shown = "" if percent is None else percent_text(percent)
        return (self.kind, self.prefix, self.destination, before, after, shown)


@dataclass(frozen=True, slots=True)
class DeckDiff:
    """The changes from one deck to another, listed by kind (in :data:`KINDS` order), then
    by prefix."""

    at: _dt.datetime
    changes: tuple[Change, ...]
    old_rows: int
    new_rows: int
    #: The earliest ``effective_from`` after ``at`` among the changed prefixes' rows.
    next_start: _dt.datetime | None

    def __bool__(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[Kind, int]:
        tally = Counter(c.kind for c in self.changes)
        return {kind: tally[kind] for kind in KINDS}

    def only(self, kinds: Iterable[Kind]) -> DeckDiff:
        """The same diff keeping the changes of ``kinds`` only."""
        keep = frozenset(kinds)
        return replace(self, changes=tuple(c for c in self.changes if c.kind in keep))

    def summary(self) -> str:
        """One line: the count of each kind, the decks' sizes and the moment compared."""
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts().items() if n)
        return (
            f"{counts or 'no differences'} "
            f"({self.old_rows:,} -> {self.new_rows:,} rows; prices in force at {_moment(self.at)})"
        )


def diff(old: Deck, new: Deck, at: _dt.datetime | None = None) -> DeckDiff:
    """The changes that ``new`` makes to ``old``, prices compared at ``at`` (default now;
    a naive time is UTC). See the module docstring for the rule."""
    moment = _dt.datetime.now(_dt.UTC) if at is None else at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    old_rows, new_rows = old.rows(), new.rows()
    # Rows present in only one deck; the identical rest never becomes Python values.
    differing = set(old_rows).symmetric_difference(new_rows)
    touched = {row.prefix for row in differing}
    before, after = _versions(old_rows, touched), _versions(new_rows, touched)
    changes: list[Change] = []
    for prefix in touched:
        changes.extend(_compare(prefix, before.get(prefix, ()), after.get(prefix, ()), moment))
    changes.sort(key=lambda c: (_ORDER[c.kind], c.prefix))
    starts = [
        v.effective_from
        for versions in (*before.values(), *after.values())
        for v in versions
        if v.effective_from is not None and v.effective_from > moment
    ]
    return DeckDiff(
        at=moment,
        changes=tuple(changes),
        old_rows=len(old_rows),
        new_rows=len(new_rows),
        next_start=min(starts, default=None),
    )


_ORDER = {kind: i for i, kind in enumerate(KINDS)}
_MIDNIGHT = _dt.time(0, 0)


def _versions(rows: Iterable[Row], prefixes: set[str]) -> dict[str, tuple[Version, ...]]:
    """The rows of ``prefixes`` as values, each prefix's sorted by effective_from."""
    found: dict[str, list[Version]] = {}
    for row in rows:
        prefix = row.prefix
        if prefix in prefixes:
            found.setdefault(prefix, []).append(Version.of(row))
    return {p: tuple(sorted(vs, key=_start_key)) for p, vs in found.items()}


def _start_key(version: Version) -> tuple[bool, _dt.datetime]:
    start = version.effective_from
    return (start is not None, start or _dt.datetime.min.replace(tzinfo=_dt.UTC))


def _in_force(versions: Sequence[Version], at: _dt.datetime) -> Version | None:
    """The row a lookup at ``at`` uses: in force, newest ``effective_from`` (sorted input)."""
    for version in reversed(versions):
        if version.in_force(at):
            return version
    return None


def _compare(
    prefix: str, olds: tuple[Version, ...], news: tuple[Version, ...], at: _dt.datetime
) -> list[Change]:
    if olds == news:
        return []  # rows that differed only in form (e.g. another precision)
    old, new = _in_force(olds, at), _in_force(news, at)
    out: list[Change] = []
    explained = list(olds)  # OLD's rows with the reported price changes applied
    if old is None and new is not None:
        out.append(Change("added", prefix, None, new))
        explained.append(new)
    elif old is not None and new is None:
        out.append(Change("removed", prefix, old, None))
        explained.remove(old)
    elif old is not None and new is not None:
        if new.rate != old.rate:
            out.append(Change("rate_up" if new.rate > old.rate else "rate_down", prefix, old, new))
        if new.increments != old.increments:
            out.append(Change("increment", prefix, old, new))
        if new.connect_fee != old.connect_fee:
            out.append(Change("connect_fee", prefix, old, new))
        if new.destination != old.destination:
            out.append(Change("destination", prefix, old, new))
        explained[explained.index(old)] = old.priced_like(new)
    if sorted(explained, key=_start_key) != list(news):
        out.append(Change("dates", prefix, old, new, olds, news))
    return out


def _moment(moment: _dt.datetime | None) -> str:
    """A date-time as a deck writes it: a UTC midnight as the date alone; open as empty."""
    if moment is None:
        return ""
    utc = moment.astimezone(_dt.UTC)
    if utc.time() == _MIDNIGHT:
        return utc.date().isoformat()
    return utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def percent_text(percent: Fraction) -> str:
    """A signed percentage rounded half away from zero to 2 places, e.g. ``+20.00%``; a
    change too small for that shows 2 significant digits (``+0.0010%``), never ``0.00%``."""
    places = 2
    while True:
        rounded = _round(percent, places)
        if rounded or not percent:
            break
        places += 1
    if places > 2:
        places += 1  # a second significant digit
        rounded = _round(percent, places)
    sign = "+" if percent > 0 else "-" if percent < 0 else ""
    return f"{sign}{abs(rounded):f}%"


def _round(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half away from zero to ``places`` decimals, exactly."""
    scaled = abs(value) * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    return Decimal(-whole if value < 0 else whole).scaleb(-places)


def table_lines(result: DeckDiff) -> Iterator[str]:
    """The changes as an aligned text table (no trailing summary)."""
    rows = [COLUMNS, *(c.cells() for c in result.changes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        yield "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()


def write_csv(result: DeckDiff, stream: TextIO) -> None:
    """The changes as CSV with a header of :data:`COLUMNS`."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(c.cells() for c in result.changes)
