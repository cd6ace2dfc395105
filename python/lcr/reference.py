"""The executable specification of ``lcr``: the same public API as the Rust core, in plain
Python, written for reading rather than speed.

Where this module and the Rust core disagree, one of them has a bug; the hypothesis tests in
``tests/lcr`` generate decks, routing plans, numbers, times and durations and hold the core to
this module. Semantics, in brief:

* Numbers are ASCII digit strings; one leading ``+`` is ignored; anything else is an error.
* Money is integers of ``10**-precision`` currency units (``Decimal`` at the edge). A call
  costs ``connect_fee + rate * billed / 60``, the per-minute part rounded once per call by
  the deck's rule (default: up).
* A rate is in force at ``t`` when ``effective_from <= t < effective_to``; among a prefix's
  versions in force, the newest ``effective_from`` wins. The lookup is the longest prefix
  with a rate in force.
* Routing takes the best route that applies, filters its targets (disabled, excluded,
  unpriced, no rate, above max_rate, below min_margin, below_margin_at; each rejection
  recorded) and orders the rest by the route's strategy; ``carry_through`` falls back to
  the next applying route when none is usable.
* A route applies when its prefix starts the number, its ``caller_prefix`` starts the
  caller's digits (a route without one applies to any caller, also to none) and, if it has
  windows, the instant falls in one of them (``lcr.windows``: local time in the window's
  zone). **Which route wins**, among those that apply: the longest prefix; on a tie the
  longest ``caller_prefix``; on a tie a route with windows (a time rule overrides the
  default); then table order. A route that does not apply is skipped as if absent, also by
  ``carry_through``. Two routes with the same prefix, caller_prefix and windows are an error.
* Strategies: ``lcr`` cheapest own rate first (ties: priority, gateway); ``priority`` lowest
  priority, then highest weight, then gateway; ``weight`` priority tiers, lowest first, each
  tier a weighted draw from a SplitMix64 seeded by the call (weight 0 last in its tier).
* True-cost margins: when ``sell`` (a sell ``Rate``) is given and the route has margin
  durations (its own, else the table's; ``acd`` > 0 is added to them), a target is rejected
  ``below_margin_at`` at the first duration ``d`` where ``sell.cost(d) - buy.cost(d) <
  min_margin * d / 60`` (min_margin: the route's, the table's, else 0), each cost with its
  deck's increments, connect fee and rounding, compared exactly on the 1e-9 scale; the buy
  cost is not capped at 64 bits. A target without a buy deck is then ``unpriced``.
"""

from __future__ import annotations

import calendar
import csv
import datetime as _dt
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from . import _explain
from ._rows import FIELDS, row_fields
from .errors import DeckError, LcrError, NoRateError
from .plan import RouteEntry, Target
from .windows import TimeWindow

__all__ = [
    "Candidate",
    "Rate",
    "RateDeck",
    "Rejection",
    "RouteEntry",
    "RouteResult",
    "RouteTable",
    "Target",
    "TimeWindow",
]

MAX_PRECISION = 9
MAX_PREFIX_DIGITS = 32
OPEN_START = -(2**63)
OPEN_END = 2**63 - 1
I64_MAX = 2**63 - 1
DEFAULT_INCREMENT = 60
MAX_INCREMENT = 86_400
ROUNDINGS = ("up", "down", "half_up")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ASCII_DIGITS = re.compile(r"[0-9]*")
#: The whitespace trimmed around deck values: ASCII only, as Rust's ``str::trim_ascii``.
_WS = " \t\n\x0c\r"
_INCREMENT = re.compile(r"\+?[0-9]+")


# --- numbers, money and time -----------------------------------------------------------------


def digits(number: str) -> str:
    """The digits of a dialed number: one leading ``+`` dropped, anything else refused."""
    body = number[1:] if number.startswith("+") else number
    offset = len(number) - len(body)
    for i, ch in enumerate(body):
        if not "0" <= ch <= "9":
            raise LcrError(
                f"invalid number {number!r}: non-digit character {ch!r} at position {i + offset}"
            )
    return body


def parse_amount(text: str, precision: int) -> int:
    """A plain non-negative decimal as integer sub-units; raises ValueError with the reason."""
    text = text.strip(_WS)
    if text.startswith("-"):
        raise ValueError("must not be negative")
    if text.startswith("+"):
        text = text[1:]
    int_part, _, frac_part = text.partition(".")
    if (
        (not int_part and not frac_part)
        or not _ASCII_DIGITS.fullmatch(int_part)
        or not _ASCII_DIGITS.fullmatch(frac_part)
    ):
        raise ValueError("not a decimal number")
    frac = frac_part.rstrip("0")
    if len(frac) > precision:
        raise ValueError(f"more than {precision} decimal places (the deck's precision)")
    value = int(int_part + frac + "0" * (precision - len(frac)) or "0")
    if value > I64_MAX:
        raise ValueError("too large")
    return value


def format_amount(units: int, precision: int) -> str:
    sign = "-" if units < 0 else ""
    units = abs(units)
    if precision == 0:
        return f"{sign}{units}"
    scale = 10**precision
    return f"{sign}{units // scale}.{units % scale:0{precision}d}"


def to_decimal(units: int, precision: int) -> Decimal:
    return Decimal(format_amount(units, precision))


def divide(numerator: int, denominator: int, rounding: str) -> int:
    """``numerator / denominator`` (both non-negative) rounded by the named rule."""
    quotient, remainder = divmod(numerator, denominator)
    if rounding == "down":
        return quotient
    if rounding == "up":
        return quotient + (remainder != 0)
    return quotient + (remainder * 2 >= denominator)


def billed_seconds(duration: int, initial: int, subsequent: int) -> int:
    if duration == 0:
        return 0
    if duration <= initial:
        return initial
    return initial + -(-(duration - initial) // subsequent) * subsequent


def nano(value: object, what: str) -> int:
    """A Decimal/int/str amount (possibly negative) on the 1e-9 scale."""
    if isinstance(value, float):
        raise LcrError(f"{what}: floats are refused for money; use Decimal or str")
    text = value if isinstance(value, str) else format(value, "f")
    stripped = text.strip(_WS)
    negative = stripped.startswith("-")
    try:
        units = parse_amount(stripped[1:] if negative else stripped, MAX_PRECISION)
    except ValueError as e:
        raise LcrError(f"{what}: {e}: {text!r}") from None
    return -units if negative else units


def _days_from_civil(year: int, month: int, day: int) -> int:
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _number(text: str) -> int | None:
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    return int(text)


EARLIEST = -62_135_596_800  # 0001-01-01T00:00:00Z
LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z


def parse_timestamp(text: str) -> int | None:
    """ISO 8601 date or date-time to epoch seconds; no offset means UTC; None if invalid
    or outside years 1 to 9999 once taken to UTC (what datetime can show)."""
    seconds = _parse_any(text)
    return seconds if seconds is not None and EARLIEST <= seconds <= LATEST else None


def _parse_any(text: str) -> int | None:
    s = text.strip(_WS)
    if len(s) < 10 or s[4] != "-" or s[7] != "-":
        return None
    year, month, day = _number(s[0:4]), _number(s[5:7]), _number(s[8:10])
    if year is None or month is None or day is None:
        return None
    if not 1 <= month <= 12 or day == 0 or day > _days_in_month(year, month):
        return None
    seconds = _days_from_civil(year, month, day) * 86_400
    rest = s[10:]
    if not rest:
        return seconds
    if rest[0] not in "Tt " or len(rest) < 6 or rest[3] != ":":
        return None
    hour, minute, second = _number(rest[1:3]), _number(rest[4:6]), 0
    if hour is None or minute is None:
        return None
    i = 6
    if len(rest) >= 9 and rest[6] == ":":
        parsed = _number(rest[7:9])
        if parsed is None:
            return None
        second, i = parsed, 9
        if i < len(rest) and rest[i] in ".,":
            i += 1
            start = i
            while i < len(rest) and "0" <= rest[i] <= "9":
                i += 1
            if i == start:
                return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    seconds += hour * 3600 + minute * 60 + second
    zone = rest[i:]
    if zone in ("", "Z", "z"):
        return seconds
    match = re.fullmatch(r"([+-])([0-9]{2}):?([0-9]{2})", zone)
    if match is None or (len(zone) == 5 and ":" in zone):
        return None
    oh, om = int(match[2]), int(match[3])
    if oh > 23 or om > 59:
        return None
    offset = oh * 3600 + om * 60
    return seconds - offset if match[1] == "+" else seconds + offset


def seconds_at(at: _dt.datetime | None) -> int:
    """``at`` as epoch seconds: aware datetimes as given, naive ones as UTC, None as now."""
    if at is None:
        return math.floor(_dt.datetime.now(_dt.UTC).timestamp())
    if not isinstance(at, _dt.datetime):
        raise TypeError(f"at must be a datetime or None, not {type(at).__name__}")
    # Exact integer arithmetic: a naive datetime's utctimetuple() is taken as UTC.
    return calendar.timegm(at.utctimetuple())


def _datetime(seconds: int) -> _dt.datetime | None:
    if seconds in (OPEN_START, OPEN_END):
        return None
    return _EPOCH + _dt.timedelta(seconds=seconds)


def _duplicates(
    parsed: list[tuple[str, int, _Tariff]], path: str, labels: Mapping[str, str]
) -> list[DeckError]:
    """Rows repeating an earlier row's prefix and effective_from, by line."""
    first_line: dict[tuple[str, int], int] = {}
    for prefix, line, tariff in sorted(parsed, key=lambda p: p[1]):
        first_line.setdefault((prefix, tariff.effective_from), line)
    return sorted(
        (
            DeckError(
                path,
                line,
                labels.get("prefix", "prefix"),
                f"duplicate of line {first_line[(prefix, tariff.effective_from)]}: "
                f'same prefix "{prefix}" and effective_from',
            )
            for prefix, line, tariff in parsed
            if first_line[(prefix, tariff.effective_from)] != line
        ),
        key=lambda e: e.line,
    )


class _LineCount:
    """Iterates a file's lines, keeping the count where an error handler can read it."""

    def __init__(self, handle: Iterable[str], count: list[int]) -> None:
        self._lines = iter(handle)
        self._count = count

    def __iter__(self) -> _LineCount:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._count[0] += 1
        return line


def _moments(at: _dt.datetime | Iterable[_dt.datetime] | None, count: int) -> list[int]:
    """One moment for a whole batch, or one per number (re-rating CDRs at their start times)."""
    if at is None or isinstance(at, _dt.datetime):
        return [seconds_at(at)] * count
    moments = [seconds_at(a) for a in at]
    if len(moments) != count:
        raise LcrError(f"{count} numbers but {len(moments)} moments in at")
    return moments


# --- rates and decks --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tariff:
    destination: str
    rate: int
    connect_fee: int
    initial_increment: int
    subsequent_increment: int
    effective_from: int
    effective_to: int

    def in_force(self, at: int) -> bool:
        return self.effective_from <= at < self.effective_to


class Rate:
    """One deck rate as matched for a number; amounts are ``Decimal`` at the deck precision."""

    __slots__ = ("_precision", "_rounding", "_tariff", "prefix")

    def __init__(self, prefix: str, tariff: _Tariff, precision: int, rounding: str) -> None:
        self.prefix = prefix
        self._tariff = tariff
        self._precision = precision
        self._rounding = rounding

    @property
    def destination(self) -> str:
        return self._tariff.destination

    @property
    def rate(self) -> Decimal:
        return to_decimal(self._tariff.rate, self._precision)

    @property
    def connect_fee(self) -> Decimal:
        return to_decimal(self._tariff.connect_fee, self._precision)

    @property
    def initial_increment(self) -> int:
        return self._tariff.initial_increment

    @property
    def subsequent_increment(self) -> int:
        return self._tariff.subsequent_increment

    @property
    def effective_from(self) -> _dt.datetime | None:
        return _datetime(self._tariff.effective_from)

    @property
    def effective_to(self) -> _dt.datetime | None:
        return _datetime(self._tariff.effective_to)

    @property
    def precision(self) -> int:
        return self._precision

    def billed_seconds(self, duration_s: int) -> int:
        if duration_s < 0:
            raise LcrError(f"duration_s must be >= 0, got {duration_s}")
        t = self._tariff
        return billed_seconds(duration_s, t.initial_increment, t.subsequent_increment)

    def _cost_units(self, duration_s: int) -> int:
        billed = self.billed_seconds(duration_s)
        per_minute = divide(self._tariff.rate * billed, 60, self._rounding)
        units = self._tariff.connect_fee + per_minute
        if units > I64_MAX:
            raise LcrError("cost too large to represent")
        return units

    def cost(self, duration_s: int) -> Decimal:
        return to_decimal(self._cost_units(duration_s), self._precision)

    def _key(self) -> tuple[object, ...]:
        return (self.prefix, self._tariff, self._precision)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rate) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Rate(prefix={self.prefix!r}, destination={self.destination!r}, "
            f"rate={self.rate!r}, connect_fee={self.connect_fee!r}, "
            f"initial_increment={self.initial_increment}, "
            f"subsequent_increment={self.subsequent_increment}, "
            f"effective_from={self.effective_from!r}, effective_to={self.effective_to!r})"
        )


def _increment(text: str) -> int:
    text = text.strip(_WS)
    if not text:
        return DEFAULT_INCREMENT
    value = int(text) if _INCREMENT.fullmatch(text) else 0
    if not 1 <= value <= MAX_INCREMENT:
        raise ValueError(f"expected whole seconds from 1 to {MAX_INCREMENT}, got {text!r}")
    return value


def _date(text: str, open_value: int) -> int:
    text = text.strip(_WS)
    if not text:
        return open_value
    parsed = parse_timestamp(text)
    if parsed is None:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}")
    return parsed


def _parse_row(fields: Sequence[str], precision: int) -> tuple[str, _Tariff]:
    """The prefix and tariff of one row; raises ``(field, reason)`` as a ValueError."""
    prefix_text, destination, rate, fee, initial, subsequent, start, end = fields

    def fail(field: str, reason: str) -> ValueError:
        return ValueError(field, reason)

    prefix_text = prefix_text.strip(_WS)
    try:
        prefix = digits(prefix_text)
    except LcrError:
        body = prefix_text[1:] if prefix_text.startswith("+") else prefix_text
        offset = len(prefix_text) - len(body)
        pos, ch = next((i, c) for i, c in enumerate(body) if not "0" <= c <= "9")
        raise fail("prefix", f"not a digit string: {ch!r} at position {pos + offset}") from None

    if len(prefix) > MAX_PREFIX_DIGITS:
        raise fail("prefix", f"longer than {MAX_PREFIX_DIGITS} digits")

    def amount(field: str, text: str, default_zero: bool) -> int:
        if default_zero and not text.strip(_WS):
            return 0
        try:
            return parse_amount(text, precision)
        except ValueError as e:
            raise fail(field, f"{e}: {text.strip(_WS)!r}") from None

    values: dict[str, int] = {}
    values["rate"] = amount("rate", rate, False)
    values["connect_fee"] = amount("connect_fee", fee, True)
    for field, text in (("initial_increment", initial), ("subsequent_increment", subsequent)):
        try:
            values[field] = _increment(text)
        except ValueError as e:
            raise fail(field, str(e)) from None
    for field, text, open_value in (
        ("effective_from", start, OPEN_START),
        ("effective_to", end, OPEN_END),
    ):
        try:
            values[field] = _date(text, open_value)
        except ValueError as e:
            raise fail(field, str(e)) from None
    if values["effective_to"] <= values["effective_from"]:
        raise fail("effective_to", "must be later than effective_from")
    return prefix, _Tariff(destination=destination.strip(_WS), **values)


def _options(precision: int, rounding: str) -> None:
    if not 0 <= precision <= MAX_PRECISION:
        raise LcrError(f"precision must be 0..={MAX_PRECISION}, got {precision}")
    if rounding not in ROUNDINGS:
        raise LcrError(f"rounding must be 'up', 'down' or 'half_up', got {rounding!r}")


class RateDeck:
    """An immutable, effective-dated rate deck with longest-prefix lookup."""

    def __init__(
        self,
        versions: dict[str, list[_Tariff]],
        *,
        precision: int,
        rounding: str,
        errors: list[DeckError],
        path: str | None,
    ) -> None:
        self._versions = versions
        self._precision = precision
        self._rounding = rounding
        self._errors = errors
        self._path = path

    # -- building --

    @classmethod
    def _build(
        cls,
        rows: Iterable[tuple[int, Sequence[str]]],
        *,
        path: str,
        labels: Mapping[str, str],
        strict: bool,
        precision: int,
        rounding: str,
    ) -> RateDeck:
        _options(precision, rounding)
        errors: list[DeckError] = []
        parsed: list[tuple[str, int, _Tariff]] = []
        for line, fields in rows:
            try:
                prefix, tariff = _parse_row(fields, precision)
            except ValueError as e:
                field, reason = e.args
                error = DeckError(path, line, labels.get(field, field), reason)
                if strict:
                    # The file's first bad row, whichever kind: an earlier duplicate wins.
                    earlier = _duplicates(parsed, path, labels)
                    if earlier and earlier[0].line < line:
                        raise earlier[0] from None
                    raise error from None
                errors.append(error)
                continue
            parsed.append((prefix, line, tariff))
        parsed.sort(key=lambda p: (p[0], -p[2].effective_from, p[1]))
        versions: dict[str, list[_Tariff]] = {}
        kept: set[tuple[str, int]] = set()
        for prefix, _, tariff in parsed:
            key = (prefix, tariff.effective_from)
            if key not in kept:
                kept.add(key)
                versions.setdefault(prefix, []).append(tariff)
        duplicates = _duplicates(parsed, path, labels)
        if strict and duplicates:
            raise duplicates[0]
        errors.extend(duplicates)
        errors.sort(key=lambda e: e.line)
        return cls(versions, precision=precision, rounding=rounding, errors=errors, path=path)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, object] | Sequence[object]],
        *,
        strict: bool = True,
        precision: int = 6,
        rounding: str = "up",
    ) -> RateDeck:
        texts = [(i, row_fields(row, i)) for i, row in enumerate(rows, 1)]
        deck = cls._build(
            texts, path="<rows>", labels={}, strict=strict, precision=precision, rounding=rounding
        )
        deck._path = None
        return deck

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        columns: Mapping[str, str | int] | None = None,
        strict: bool = True,
        precision: int = 6,
        rounding: str = "up",
        delimiter: str = ",",
        has_header: bool = True,
        progress: Callable[[int, int, int], object] | None = None,
    ) -> RateDeck:
        name = os.fspath(path)
        _options(precision, rounding)
        for key, value in (columns or {}).items():
            if key not in FIELDS:
                raise LcrError(f"columns: unknown field {key!r}")
            if isinstance(value, int) and value < 0:
                raise LcrError(f"columns: {key!r} index must be >= 0")
        if len(delimiter) != 1 or not delimiter.isascii():
            raise LcrError(f"delimiter must be one ASCII character, got {delimiter!r}")
        try:
            # Closed by the `with` below; opened here so a missing file is a DeckError.
            handle = open(name, newline="", encoding="utf-8-sig", errors="surrogateescape")  # noqa: SIM115
        except OSError as e:
            raise DeckError(name, 0, None, f"cannot open: {e}") from None
        reader_lines = [0]
        try:
            with handle:
                reader = csv.reader(_LineCount(handle, reader_lines), delimiter=delimiter)
                header: list[str] | None = None
                if has_header:
                    first = next(reader, None)
                    while first == []:  # blank lines before the header, as the Rust reader skips
                        first = next(reader, None)
                    if first is None:
                        raise DeckError(name, 1, None, "empty file: expected a header line")
                    header = [h.strip(_WS) for h in first]
                positions: dict[str, int | None] = {}
                labels: dict[str, str] = {}
                for i, field in enumerate(FIELDS):
                    chosen = (columns or {}).get(field)
                    if isinstance(chosen, int):
                        positions[field] = chosen
                        label = header[chosen] if header and chosen < len(header) else None
                        labels[field] = label or f"#{chosen + 1}"
                    elif isinstance(chosen, str):
                        if header is None:
                            raise DeckError(
                                name,
                                0,
                                chosen,
                                "columns are mapped by name but the file has no header",
                            )
                        if chosen not in header:
                            raise DeckError(
                                name,
                                1,
                                chosen,
                                f"column {chosen!r} (mapped to {field}) is not in the header",
                            )
                        positions[field], labels[field] = header.index(chosen), chosen
                    elif header is not None:
                        positions[field] = header.index(field) if field in header else None
                        labels[field] = field
                    else:
                        positions[field], labels[field] = i, f"#{i + 1}"
                    if positions[field] is None and field in ("prefix", "rate"):
                        raise DeckError(
                            name, 1, field, f"required column {field!r} is missing from the header"
                        )

                def rows() -> Iterable[tuple[int, list[str]]]:
                    # csv.reader counts the lines read so far: a record starts one past the
                    # previous record's end. Blank lines are skipped, as the Rust reader does.
                    previous_end = reader.line_num
                    for record in reader:
                        start, previous_end = previous_end + 1, reader.line_num
                        if not record:
                            continue
                        fields = []
                        for field in FIELDS:
                            p = positions[field]
                            text = record[p] if p is not None and p < len(record) else ""
                            if any("\udc80" <= ch <= "\udcff" for ch in text):
                                raise_or_keep = DeckError(
                                    name, start, labels[field], "not valid UTF-8"
                                )
                                if strict:
                                    raise raise_or_keep
                                undecodable.append(raise_or_keep)
                                break
                            fields.append(text)
                        else:
                            yield start, fields

                undecodable: list[DeckError] = []
                deck = cls._build(
                    rows(),
                    path=name,
                    labels=labels,
                    strict=strict,
                    precision=precision,
                    rounding=rounding,
                )
        except csv.Error as e:
            raise DeckError(name, reader_lines[0], None, f"unreadable CSV: {e}") from None
        if undecodable:
            deck._errors = sorted(deck._errors + undecodable, key=lambda e: e.line)
        if progress is not None:
            size = os.path.getsize(name)
            progress(len(deck), size, size)
        return deck

    # -- querying --

    def _find(self, number: str, at: int) -> tuple[str, _Tariff] | None:
        for k in range(len(number), -1, -1):
            for tariff in self._versions.get(number[:k], ()):
                if tariff.in_force(at):
                    return number[:k], tariff
        return None

    def _rate(self, found: tuple[str, _Tariff] | None) -> Rate | None:
        if found is None:
            return None
        return Rate(found[0], found[1], self._precision, self._rounding)

    def lookup(self, number: str, at: _dt.datetime | None = None) -> Rate | None:
        return self._rate(self._find(digits(number), seconds_at(at)))

    def cost(self, number: str, duration_s: int, at: _dt.datetime | None = None) -> Decimal:
        if duration_s < 0:
            raise LcrError(f"duration_s must be >= 0, got {duration_s}")
        rate = self.lookup(number, at)
        if rate is None:
            raise NoRateError(f"no rate in force for {number!r}")
        return rate.cost(duration_s)

    def lookup_many(
        self,
        numbers: Iterable[str],
        at: _dt.datetime | Iterable[_dt.datetime] | None = None,
    ) -> list[Rate | None]:
        numbers = list(numbers)
        moments = _moments(at, len(numbers))
        out = []
        for i, number in enumerate(numbers):
            if not isinstance(number, str):
                raise TypeError(f"numbers[{i}] is not a str")
            try:
                d = digits(number)
            except LcrError as e:
                raise LcrError(f"numbers[{i}]: {e}") from None
            out.append(self._rate(self._find(d, moments[i])))
        return out

    def cost_many(
        self,
        numbers: Iterable[str],
        durations: Iterable[int],
        at: _dt.datetime | Iterable[_dt.datetime] | None = None,
    ) -> list[Decimal | None]:
        rates = self.lookup_many(numbers, at)
        seconds = list(durations)
        for i, d in enumerate(seconds):
            if d < 0:
                raise LcrError(f"durations[{i}] must be >= 0, got {d}")
        if len(seconds) != len(rates):
            raise LcrError(f"{len(rates)} numbers but {len(seconds)} durations")
        return [None if r is None else r.cost(d) for r, d in zip(rates, seconds, strict=True)]

    def rows(self) -> list[Rate]:
        return [
            Rate(prefix, tariff, self._precision, self._rounding)
            for prefix in sorted(self._versions)
            for tariff in self._versions[prefix]
        ]

    @property
    def errors(self) -> list[DeckError]:
        return list(self._errors)

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def precision(self) -> int:
        return self._precision

    @property
    def rounding(self) -> str:
        return self._rounding

    @property
    def prefix_count(self) -> int:
        return len(self._versions)

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())

    def __repr__(self) -> str:
        where = f" from {self._path!r}" if self._path else ""
        return f"<RateDeck {len(self)} rows, {self.prefix_count} prefixes{where}>"


# --- routing ------------------------------------------------------------------------------------


class _SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFF_FFFF_FFFF_FFFF

    def next(self) -> int:
        mask = 0xFFFF_FFFF_FFFF_FFFF
        self.state = (self.state + 0x9E37_79B9_7F4A_7C15) & mask
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & mask
        return z ^ (z >> 31)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF2_9CE4_8422_2325
    for b in data:
        h = ((h ^ b) * 0x0000_0100_0000_01B3) & 0xFFFF_FFFF_FFFF_FFFF
    return h


def seed_value(seed: int | str | None) -> int:
    if seed is None:
        return random.getrandbits(64)
    if isinstance(seed, str):
        return fnv1a64(seed.encode())
    if isinstance(seed, int):
        return seed & 0xFFFF_FFFF_FFFF_FFFF
    raise TypeError("seed must be an int, a str or None")


@runtime_checkable
class _Cost(Protocol):
    """A sell rate for true-cost margins: ``lcr.Rate`` or ``lcr.reference.Rate``."""

    def cost(self, duration_s: int, /) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    gateway: str
    priority: int
    weight: int
    deck: str | None
    rate_prefix: str | None
    destination: str | None
    route_prefix: str
    rate: Decimal | None
    route: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    gateway: str
    reason: str
    route_prefix: str
    rate: Decimal | None
    route: int = 0
    duration: int | None = None


@dataclass(frozen=True, slots=True)
class RouteResult:
    number: str
    prefix: str | None
    strategy: str | None
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]
    caller_prefix: str | None = None
    route: int | None = None

    def explain(self) -> str:
        return _explain.render(self)


@dataclass(frozen=True, slots=True)
class _Priced:
    rate: Rate
    nano: int


#: The longest call a margin is checked at: one day.
MAX_MARGIN_DURATION = 86_400


def margin_durations(values: Iterable[int], what: str) -> tuple[int, ...]:
    """Call lengths for true-cost margins: whole seconds, 1..=86400."""
    out = tuple(values)
    for d in out:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_MARGIN_DURATION:
            raise LcrError(
                f"{what}: margin_duration must be whole seconds 1..={MAX_MARGIN_DURATION}, "
                f"got {d!r}"
            )
    return out


def acd_seconds(acd: int | None, what: str = "acd") -> int:
    """The caller's average call duration, added to the margin durations when > 0."""
    if acd is None:
        return 0
    if isinstance(acd, bool) or not isinstance(acd, int) or not 0 <= acd <= MAX_MARGIN_DURATION:
        raise LcrError(f"{what} must be whole seconds 0..={MAX_MARGIN_DURATION}, got {acd!r}")
    return acd


def _exact_cost(rate: Rate, duration: int) -> int:
    """A call's cost on the 1e-9 scale, uncapped: connect fee + per-minute part, rounded."""
    t = rate._tariff
    billed = billed_seconds(duration, t.initial_increment, t.subsequent_increment)
    units = t.connect_fee + divide(t.rate * billed, 60, rate._rounding)
    scale: int = 10 ** (MAX_PRECISION - rate.precision)
    return units * scale


@dataclass(frozen=True, slots=True)
class _Route:
    """A route as built: its digits, limits on the 1e-9 scale and its place in the table."""

    index: int
    entry: RouteEntry
    prefix: str
    caller_prefix: str
    windows: tuple[TimeWindow, ...]
    max_rate: int | None
    min_margin: int | None
    margin_duration: tuple[int, ...]

    def rank(self) -> tuple[int, int, bool, int]:
        """Which route wins: longest prefix, longest caller_prefix, windowed, table order."""
        return -len(self.prefix), -len(self.caller_prefix), not self.windows, self.index

    def applies(self, caller: str, at: _dt.datetime) -> bool:
        if not caller.startswith(self.caller_prefix):
            return False
        return not self.windows or any(w.contains(at) for w in self.windows)


@dataclass(frozen=True, slots=True)
class _Call:
    """One routing question, with its arguments checked and converted."""

    number: str
    at: _dt.datetime
    moment: int
    seed: int
    exclude: frozenset[str]
    sell_rate: int | None
    caller: str
    sell: dict[int, int] | None
    acd: int


class RouteTable:
    """An immutable routing plan over carriers' decks."""

    def __init__(
        self,
        entries: Iterable[RouteEntry],
        decks: Mapping[str, RateDeck] | None = None,
        *,
        min_margin: Decimal | None = None,
        margin_duration: Iterable[int] = (),
    ) -> None:
        self._decks = dict(decks or {})
        for name, deck in self._decks.items():
            if not isinstance(deck, RateDeck):
                raise LcrError(f"decks[{name}] is not an lcr.RateDeck")
        self._routes: list[_Route] = []
        by_prefix: dict[str, list[_Route]] = {}
        seen: set[tuple[str, str, frozenset[object]]] = set()
        for index, entry in enumerate(entries):
            route = self._build(index, entry)
            key = (route.prefix, route.caller_prefix, frozenset(w.key for w in route.windows))
            if key in seen:
                raise LcrError(_twice(route.prefix, route.caller_prefix, bool(route.windows)))
            seen.add(key)
            self._routes.append(route)
            by_prefix.setdefault(route.prefix, []).append(route)
        self._by_prefix = {p: sorted(rs, key=_Route.rank) for p, rs in by_prefix.items()}
        self._min_margin = None if min_margin is None else nano(min_margin, "min_margin")
        self._margin_duration = margin_durations(margin_duration, "RouteTable")
        self._all_durations = set(self._margin_duration).union(
            *(r.margin_duration for r in self._routes)
        )

    def _build(self, index: int, entry: RouteEntry) -> _Route:
        try:
            prefix = digits(entry.prefix)
        except LcrError:
            raise LcrError(f"route prefix {entry.prefix!r} is not a digit string") from None
        if len(prefix) > MAX_PREFIX_DIGITS:
            raise LcrError(f"route prefix '{prefix}' is longer than {MAX_PREFIX_DIGITS} digits")
        try:
            caller_prefix = digits(entry.caller_prefix)
        except (LcrError, TypeError):
            raise LcrError(
                f"route prefix '{prefix}': caller_prefix {entry.caller_prefix!r} "
                "is not a digit string"
            ) from None
        if len(caller_prefix) > MAX_PREFIX_DIGITS:
            raise LcrError(
                f"route prefix '{prefix}': caller_prefix is longer than {MAX_PREFIX_DIGITS} digits"
            )
        if entry.strategy not in ("lcr", "priority", "weight"):
            raise LcrError(
                f"strategy must be 'lcr', 'priority' or 'weight', got {entry.strategy!r}"
            )
        for window in entry.windows:
            if not isinstance(window, TimeWindow):
                raise LcrError(
                    f"route prefix '{prefix}': windows must be lcr.TimeWindow, "
                    f"not {type(window).__name__}"
                )
        for target in entry.targets:
            if target.deck is not None and target.deck not in self._decks:
                raise LcrError(f"gateway {target.gateway!r} refers to unknown deck {target.deck!r}")
            if not 0 <= target.weight <= 0xFFFF_FFFF:
                raise LcrError(f"gateway {target.gateway!r}: weight must be 0..=4294967295")
        gateways = [t.gateway for t in entry.targets]
        if len(set(gateways)) != len(gateways):
            twice = next(g for g in gateways if gateways.count(g) > 1)
            raise LcrError(f"route prefix {prefix!r} lists gateway {twice!r} twice")
        return _Route(
            index=index,
            entry=entry,
            prefix=prefix,
            caller_prefix=caller_prefix,
            windows=tuple(entry.windows),
            max_rate=None if entry.max_rate is None else nano(entry.max_rate, "max_rate"),
            min_margin=None if entry.min_margin is None else nano(entry.min_margin, "min_margin"),
            margin_duration=margin_durations(entry.margin_duration, f"route prefix '{prefix}'"),
        )

    def _matching(self, call: _Call) -> list[_Route]:
        """The routes that apply to the call, best first (see the module docstring)."""
        out = []
        for k in range(len(call.number), -1, -1):
            out += [
                r
                for r in self._by_prefix.get(call.number[:k], ())
                if r.applies(call.caller, call.at)
            ]
        return out

    def _durations(self, route: _Route, acd: int) -> tuple[int, ...]:
        durations = route.margin_duration or self._margin_duration
        if durations and acd and acd not in durations:
            durations = (*durations, acd)
        return durations

    def _check(
        self, route: _Route, target: Target, call: _Call
    ) -> tuple[str | None, _Priced | None, int | None]:
        if not target.enabled:
            return "disabled", None, None
        if target.gateway in call.exclude:
            return "excluded", None, None
        durations = self._durations(route, call.acd) if call.sell is not None else ()
        if target.deck is None:
            return ("unpriced" if durations else None), None, None
        deck = self._decks[target.deck]
        found = deck._find(call.number, call.moment)
        if found is None:
            return "no_rate", None, None
        rate = deck._rate(found)
        assert rate is not None
        priced = _Priced(rate, found[1].rate * 10 ** (MAX_PRECISION - deck.precision))
        if route.max_rate is not None and priced.nano > route.max_rate:
            return "above_max_rate", priced, None
        floor = route.min_margin if route.min_margin is not None else self._min_margin
        if (
            floor is not None
            and call.sell_rate is not None
            and call.sell_rate - priced.nano < floor
        ):
            return "below_min_margin", priced, None
        if durations:
            assert call.sell is not None
            per_minute = floor or 0
            for d in durations:
                # sell(d) - buy(d) < floor * d / 60, kept in integers.
                if (call.sell[d] - _exact_cost(rate, d)) * 60 < per_minute * d:
                    return "below_margin_at", priced, d
        return None, priced, None

    def _route(self, call: _Call) -> RouteResult:
        chosen: _Route | None = None
        candidates: list[tuple[Target, _Priced | None]] = []
        rejected: list[Rejection] = []
        for route in self._matching(call):
            chosen = route
            usable = []
            for target in route.entry.targets:
                reason, priced, duration = self._check(route, target, call)
                if reason is None:
                    usable.append((target, priced))
                else:
                    rate = None if priced is None else priced.rate.rate
                    rejected.append(
                        Rejection(target.gateway, reason, route.prefix, rate, route.index, duration)
                    )
            if usable:
                candidates = _order(route.entry, usable, call.seed)
                break
            if not route.entry.carry_through:
                break
        return RouteResult(
            number=call.number,
            prefix=None if chosen is None else chosen.prefix,
            strategy=None if chosen is None else chosen.entry.strategy,
            candidates=tuple(
                Candidate(
                    gateway=t.gateway,
                    priority=t.priority,
                    weight=t.weight,
                    deck=t.deck,
                    rate_prefix=None if p is None else p.rate.prefix,
                    destination=None if p is None else p.rate.destination,
                    route_prefix="" if chosen is None else chosen.prefix,
                    rate=None if p is None else p.rate.rate,
                    route=0 if chosen is None else chosen.index,
                )
                for t, p in candidates
            ),
            rejected=tuple(rejected),
            caller_prefix=None if chosen is None else chosen.caller_prefix,
            route=None if chosen is None else chosen.index,
        )

    def _sell_costs(self, sell: _Cost | None, acd: int) -> dict[int, int] | None:
        """The sell rate's cost at every margin duration of the table (and the acd)."""
        if sell is None:
            return None
        wanted = sorted(self._all_durations | ({acd} if acd else set()))
        return {d: nano(sell.cost(d), "sell") for d in wanted}

    def route(
        self,
        number: str,
        at: _dt.datetime | None = None,
        seed: int | str | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | None = None,
        caller: str | None = None,
        sell: _Cost | None = None,
        acd: int | None = None,
    ) -> RouteResult:
        moment = _instant(at)
        number = digits(number)
        acd_s = acd_seconds(acd)
        return self._route(
            _Call(
                number=number,
                at=moment,
                moment=seconds_at(moment),
                seed=seed_value(seed),
                exclude=frozenset(exclude or ()),
                sell_rate=None if sell_rate is None else nano(sell_rate, "sell_rate"),
                caller=_caller(caller, "caller"),
                sell=self._sell_costs(sell, acd_s),
                acd=acd_s,
            )
        )

    def route_many(
        self,
        numbers: Iterable[str],
        at: _dt.datetime | Iterable[_dt.datetime] | None = None,
        seeds: Iterable[int | str] | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | None = None,
        callers: Iterable[str | None] | None = None,
        sell: _Cost | Iterable[_Cost | None] | None = None,
        acd: int | Iterable[int | None] | None = None,
    ) -> list[RouteResult]:
        numbers = list(numbers)
        count = len(numbers)
        sell_nano = None if sell_rate is None else nano(sell_rate, "sell_rate")
        seed_list = _each(seeds, count, "seeds")
        if at is None or isinstance(at, _dt.datetime):
            moments = [_instant(at)] * count
        else:
            moments = [_instant(a) for a in at]
            if len(moments) != count:
                raise LcrError(f"{count} numbers but {len(moments)} moments in at")
        caller_list = _each(callers, count, "callers")
        sell_list: list[Any] = (
            [sell] * count
            if sell is None or isinstance(sell, _Cost)
            else _listed(sell, count, "sell")
        )
        acd_list: list[Any] = (
            [acd] * count if acd is None or isinstance(acd, int) else _listed(acd, count, "acd")
        )
        excluded = frozenset(exclude or ())
        out = []
        for i, number in enumerate(numbers):
            try:
                d = digits(number)
            except LcrError as e:
                raise LcrError(f"numbers[{i}]: {e}") from None
            acd_s = acd_seconds(acd_list[i], "acd" if isinstance(acd, int) else f"acd[{i}]")
            out.append(
                self._route(
                    _Call(
                        number=d,
                        at=moments[i],
                        moment=seconds_at(moments[i]),
                        seed=seed_value(None if seed_list is None else seed_list[i]),
                        exclude=excluded,
                        sell_rate=sell_nano,
                        caller=_caller(
                            None if caller_list is None else caller_list[i], f"callers[{i}]"
                        ),
                        sell=self._sell_costs(sell_list[i], acd_s),
                        acd=acd_s,
                    )
                )
            )
        return out

    @property
    def deck_names(self) -> list[str]:
        return list(self._decks)

    @property
    def entries(self) -> tuple[RouteEntry, ...]:
        """The routes as given, in table order (``RouteResult.route`` indexes this)."""
        return tuple(r.entry for r in self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"<RouteTable {len(self._routes)} routes over {len(self._decks)} decks>"


def _twice(prefix: str, caller_prefix: str, windowed: bool) -> str:
    where = f" for caller_prefix '{caller_prefix}'" if caller_prefix else ""
    when = " with the same windows" if windowed else ""
    return f"route prefix '{prefix}' is defined twice{where}{when}"


def _instant(at: _dt.datetime | None) -> _dt.datetime:
    """``at`` checked, or now; naive datetimes are UTC."""
    if at is None:
        return _dt.datetime.now(_dt.UTC)
    if not isinstance(at, _dt.datetime):
        raise TypeError(f"at must be a datetime or None, not {type(at).__name__}")
    return at


def _caller(caller: str | None, what: str) -> str:
    """The caller's digits ("" for no caller): only routes without caller_prefix match it."""
    if caller is None:
        return ""
    try:
        return digits(caller)
    except LcrError as e:
        raise LcrError(f"{what}: {e}") from None


def _listed(values: Iterable[Any], count: int, what: str) -> list[Any]:
    out = list(values)
    if len(out) != count:
        raise LcrError(f"{count} numbers but {len(out)} {what}")
    return out


def _each(values: Iterable[Any] | None, count: int, what: str) -> list[Any] | None:
    if values is None:
        return None
    out = list(values)
    if len(out) != count:
        raise LcrError(f"{count} numbers but {len(out)} {what}")
    return out


def _order(
    entry: RouteEntry, usable: list[tuple[Target, _Priced | None]], seed: int
) -> list[tuple[Target, _Priced | None]]:
    def by_priority(item: tuple[Target, Any]) -> tuple[int, str]:
        return item[0].priority, item[0].gateway

    if entry.strategy == "lcr":
        return sorted(
            usable,
            key=lambda i: (i[1] is None, 0 if i[1] is None else i[1].nano, *by_priority(i)),
        )
    if entry.strategy == "priority":
        return sorted(usable, key=lambda i: (i[0].priority, -i[0].weight, i[0].gateway))
    # "weight": priority tiers, lowest first; inside a tier a weighted draw, weight 0 last.
    # One generator runs through all tiers, so a single tier is exactly the plain draw.
    rng = _SplitMix64(seed)
    ordered = []
    for priority in sorted({t.priority for t, _ in usable}):
        tier = [i for i in usable if i[0].priority == priority]
        weighted = [i for i in tier if i[0].weight > 0]
        zero = sorted((i for i in tier if i[0].weight == 0), key=by_priority)
        while weighted:
            total = sum(i[0].weight for i in weighted)
            pick = rng.next() % total
            chosen = len(weighted) - 1
            for n, item in enumerate(weighted):
                if pick < item[0].weight:
                    chosen = n
                    break
                pick -= item[0].weight
            ordered.append(weighted.pop(chosen))
        ordered += zero
    return ordered
