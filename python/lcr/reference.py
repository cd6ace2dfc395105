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
* Routing takes the longest matching route prefix, filters its targets (disabled, excluded,
  no rate, above max_rate, below min_margin; each rejection recorded) and orders the rest by
  the route's strategy; ``carry_through`` falls back to shorter routes when none is usable.
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
from typing import Any

from . import _explain
from ._rows import FIELDS, row_fields
from .errors import DeckError, LcrError, NoRateError
from .plan import RouteEntry, Target

__all__ = [
    "Candidate",
    "Rate",
    "RateDeck",
    "Rejection",
    "RouteEntry",
    "RouteResult",
    "RouteTable",
    "Target",
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


@dataclass(frozen=True, slots=True)
class Rejection:
    gateway: str
    reason: str
    route_prefix: str
    rate: Decimal | None


@dataclass(frozen=True, slots=True)
class RouteResult:
    number: str
    prefix: str | None
    strategy: str | None
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]

    def explain(self) -> str:
        return _explain.render(self)


@dataclass(frozen=True, slots=True)
class _Priced:
    rate: Rate
    nano: int


class RouteTable:
    """An immutable routing plan over carriers' decks."""

    def __init__(
        self,
        entries: Iterable[RouteEntry],
        decks: Mapping[str, RateDeck] | None = None,
        *,
        min_margin: Decimal | None = None,
    ) -> None:
        self._decks = dict(decks or {})
        for name, deck in self._decks.items():
            if not isinstance(deck, RateDeck):
                raise LcrError(f"decks[{name}] is not an lcr.RateDeck")
        self._entries: dict[str, RouteEntry] = {}
        self._limits: dict[str, tuple[int | None, int | None]] = {}
        for entry in entries:
            try:
                prefix = digits(entry.prefix)
            except LcrError:
                raise LcrError(f"route prefix {entry.prefix!r} is not a digit string") from None
            if len(prefix) > MAX_PREFIX_DIGITS:
                raise LcrError(f"route prefix '{prefix}' is longer than {MAX_PREFIX_DIGITS} digits")
            if entry.strategy not in ("lcr", "priority", "weight"):
                raise LcrError(
                    f"strategy must be 'lcr', 'priority' or 'weight', got {entry.strategy!r}"
                )
            for target in entry.targets:
                if target.deck is not None and target.deck not in self._decks:
                    raise LcrError(
                        f"gateway {target.gateway!r} refers to unknown deck {target.deck!r}"
                    )
                if not 0 <= target.weight <= 0xFFFF_FFFF:
                    raise LcrError(f"gateway {target.gateway!r}: weight must be 0..=4294967295")
            if prefix in self._entries:
                raise LcrError(f"route prefix {prefix!r} is defined twice")
            gateways = [t.gateway for t in entry.targets]
            if len(set(gateways)) != len(gateways):
                twice = next(g for g in gateways if gateways.count(g) > 1)
                raise LcrError(f"route prefix {prefix!r} lists gateway {twice!r} twice")
            self._entries[prefix] = entry
            self._limits[prefix] = (
                None if entry.max_rate is None else nano(entry.max_rate, "max_rate"),
                None if entry.min_margin is None else nano(entry.min_margin, "min_margin"),
            )
        self._min_margin = None if min_margin is None else nano(min_margin, "min_margin")

    def _check(
        self,
        prefix: str,
        target: Target,
        number: str,
        at: int,
        exclude: frozenset[str],
        sell: int | None,
    ) -> tuple[str | None, _Priced | None]:
        if not target.enabled:
            return "disabled", None
        if target.gateway in exclude:
            return "excluded", None
        if target.deck is None:
            return None, None
        deck = self._decks[target.deck]
        found = deck._find(number, at)
        if found is None:
            return "no_rate", None
        rate = deck._rate(found)
        assert rate is not None
        priced = _Priced(rate, found[1].rate * 10 ** (MAX_PRECISION - deck.precision))
        max_rate, min_margin = self._limits[prefix]
        if max_rate is not None and priced.nano > max_rate:
            return "above_max_rate", priced
        floor = min_margin if min_margin is not None else self._min_margin
        if floor is not None and sell is not None and sell - priced.nano < floor:
            return "below_min_margin", priced
        return None, priced

    def _route(
        self, number: str, at: int, seed: int, exclude: frozenset[str], sell: int | None
    ) -> RouteResult:
        chosen: RouteEntry | None = None
        candidates: list[tuple[Target, _Priced | None]] = []
        rejected: list[Rejection] = []
        for k in range(len(number), -1, -1):
            entry = self._entries.get(number[:k])
            if entry is None:
                continue
            chosen = entry
            prefix = number[:k]
            usable = []
            for target in entry.targets:
                reason, priced = self._check(prefix, target, number, at, exclude, sell)
                if reason is None:
                    usable.append((target, priced))
                else:
                    rate = None if priced is None else priced.rate.rate
                    rejected.append(Rejection(target.gateway, reason, prefix, rate))
            if usable:
                candidates = _order(entry, usable, seed)
                break
            if not entry.carry_through:
                break
        prefix_text = None if chosen is None else digits(chosen.prefix)
        return RouteResult(
            number=number,
            prefix=prefix_text,
            strategy=None if chosen is None else chosen.strategy,
            candidates=tuple(
                Candidate(
                    gateway=t.gateway,
                    priority=t.priority,
                    weight=t.weight,
                    deck=t.deck,
                    rate_prefix=None if p is None else p.rate.prefix,
                    destination=None if p is None else p.rate.destination,
                    route_prefix=prefix_text or "",
                    rate=None if p is None else p.rate.rate,
                )
                for t, p in candidates
            ),
            rejected=tuple(rejected),
        )

    def route(
        self,
        number: str,
        at: _dt.datetime | None = None,
        seed: int | str | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | None = None,
    ) -> RouteResult:
        return self._route(
            digits(number),
            seconds_at(at),
            seed_value(seed),
            frozenset(exclude or ()),
            None if sell_rate is None else nano(sell_rate, "sell_rate"),
        )

    def route_many(
        self,
        numbers: Iterable[str],
        at: _dt.datetime | None = None,
        seeds: Iterable[int | str] | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | None = None,
    ) -> list[RouteResult]:
        numbers = list(numbers)
        sell = None if sell_rate is None else nano(sell_rate, "sell_rate")
        seed_list = [seed_value(s) for s in seeds] if seeds is not None else None
        if seed_list is not None and len(seed_list) != len(numbers):
            raise LcrError(f"{len(numbers)} numbers but {len(seed_list)} seeds")
        moment = seconds_at(at)
        excluded = frozenset(exclude or ())
        out = []
        for i, number in enumerate(numbers):
            try:
                d = digits(number)
            except LcrError as e:
                raise LcrError(f"numbers[{i}]: {e}") from None
            seed = seed_list[i] if seed_list is not None else seed_value(None)
            out.append(self._route(d, moment, seed, excluded, sell))
        return out

    @property
    def deck_names(self) -> list[str]:
        return list(self._decks)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<RouteTable {len(self._entries)} routes over {len(self._decks)} decks>"


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
    rng = _SplitMix64(seed)
    weighted = [i for i in usable if i[0].weight > 0]
    zero = sorted((i for i in usable if i[0].weight == 0), key=by_priority)
    ordered = []
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
    return ordered + zero
