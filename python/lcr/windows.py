"""Time-of-day and day-of-week windows for routes, evaluated in an IANA time zone.

A window is judged on the local wall-clock time of an instant: the instant is converted to
the window's zone with ``zoneinfo`` (the tz data Python ships, or the ``tzdata`` package),
and its weekday and ``HH:MM`` are compared with the window's days and times. Converting an
instant never lands in a daylight-saving gap nor is ambiguous, so DST is exact:

* spring forward: local times in the gap (02:00-02:59 when clocks jump to 03:00) never
  occur, so a boundary inside the gap takes effect at the transition itself. A window
  starting at 02:30 opens at the instant the clock shows 03:00; one ending at 02:30 closes
  at that same instant.
* fall back: the repeated hour occurs twice, and a window covering it is open both times
  (``01:00-02:00`` lasts two real hours that night).

``start < end`` is a window within each listed day; ``start > end`` crosses midnight and
belongs to the day it starts on (``fri 22:00-06:00`` is Friday 22:00 to Saturday 06:00).
``end = "24:00"`` is the end of the day. The Rust core has no tz database: ``lcr.RouteTable``
evaluates the windows here (once per distinct minute, see :class:`WindowClock`) and passes
the ids of the active ones into the core.
"""

from __future__ import annotations

import datetime as _dt
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import LcrError

__all__ = ["TimeWindow", "WindowClock", "active_ids"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = 0b111_1111
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_MINUTES_PER_DAY = 24 * 60


def _day(name: str, text: str) -> int:
    try:
        return DAY_NAMES.index(name.strip().lower())
    except ValueError:
        raise LcrError(
            f"TimeWindow days: {name.strip()!r} in {text!r} is not a day "
            f"(use {', '.join(DAY_NAMES)}, ranges such as 'mon-fri', or '*')"
        ) from None


def parse_days(text: str) -> int:
    """A bit mask of weekdays (bit 0 = Monday) from ``"mon-fri"``, ``"sat,sun"``, ``"*"``.

    A range may wrap the week: ``"fri-mon"`` is Friday, Saturday, Sunday and Monday.
    """
    if not isinstance(text, str):
        raise LcrError(f"TimeWindow days must be a string, not {type(text).__name__}")
    if text.strip() == "*":
        return ALL_DAYS
    mask = 0
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not first.strip():
            raise LcrError(f"TimeWindow days: empty item in {text!r}")
        a = _day(first, text)
        b = _day(last, text) if dash else a
        for offset in range((b - a) % 7 + 1):
            mask |= 1 << ((a + offset) % 7)
    return mask


def parse_clock(text: str, what: str, *, allow_24: bool) -> int:
    """Minutes after local midnight of ``"HH:MM"``; ``"24:00"`` only where ``allow_24``."""
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise LcrError(f"TimeWindow {what}: expected HH:MM, got {text!r}")
    hours, minutes = int(match[1]), int(match[2])
    if hours == 24 and minutes == 0 and allow_24:
        return _MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        limit = "00:00..24:00" if allow_24 else "00:00..23:59"
        raise LcrError(f"TimeWindow {what}: {text!r} is not a time of day ({limit})")
    return hours * 60 + minutes


def parse_zone(text: str) -> zoneinfo.ZoneInfo:
    if not isinstance(text, str) or not text:
        raise LcrError(f"TimeWindow tz: expected an IANA zone name such as 'UTC', got {text!r}")
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise LcrError(f"TimeWindow tz: unknown time zone {text!r}") from None


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """When a route applies: on ``days``, from ``start`` to ``end`` local time in ``tz``.

    Bad days, times or zones raise ``LcrError`` naming the field, when the window is made.
    """

    days: str = "mon-sun"
    start: str = "00:00"
    end: str = "24:00"
    tz: str = "UTC"
    _mask: int = field(init=False, repr=False, compare=False)
    _start: int = field(init=False, repr=False, compare=False)
    _end: int = field(init=False, repr=False, compare=False)
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mask = parse_days(self.days)
        start = parse_clock(self.start, "start", allow_24=False)
        end = parse_clock(self.end, "end", allow_24=True)
        if start == end:
            raise LcrError(
                f"TimeWindow end: {self.end!r} equals start; a window needs start < end, "
                "or start > end to cross midnight"
            )
        object.__setattr__(self, "_mask", mask)
        object.__setattr__(self, "_start", start)
        object.__setattr__(self, "_end", end)
        object.__setattr__(self, "_zone", parse_zone(self.tz))

    @property
    def key(self) -> tuple[int, int, int, str]:
        """What the window means (days as a mask, minutes, zone): equal keys, same window."""
        return self._mask, self._start, self._end, self._zone.key

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return self._zone

    def contains(self, at: _dt.datetime) -> bool:
        """Whether the instant ``at`` (naive = UTC) falls in the window."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=_dt.UTC)
        local = at.astimezone(self._zone)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self._start < self._end:
            return bool(self._mask >> day & 1) and self._start <= minute < self._end
        # Crossing midnight: the evening of a listed day, or the morning after one.
        return (bool(self._mask >> day & 1) and minute >= self._start) or (
            bool(self._mask >> ((day - 1) % 7) & 1) and minute < self._end
        )


def active_ids(windows: Sequence[TimeWindow], at: _dt.datetime) -> frozenset[int]:
    """The positions in ``windows`` of the windows that contain ``at``."""
    return frozenset(i for i, w in enumerate(windows) if w.contains(at))


def _check_at(at: object) -> _dt.datetime:
    if not isinstance(at, _dt.datetime):
        raise TypeError(f"at must be a datetime or None, not {type(at).__name__}")
    return at if at.tzinfo is not None else at.replace(tzinfo=_dt.UTC)


class WindowClock:
    """The active windows of a table at an instant, remembered per UTC minute.

    Windows open and close on whole local minutes, so while every zone's UTC offset is the
    same whole number of minutes at the start and the end of a UTC minute, every instant in
    that minute sees the same windows. A minute where that does not hold (an old local-mean-
    time offset with seconds) is evaluated exactly for each instant and not remembered.
    """

    __slots__ = ("_cache", "_windows", "_zones")

    #: Minutes remembered; a replay of a day's CDRs needs 1440.
    LIMIT = 4096

    def __init__(self, windows: Sequence[TimeWindow]) -> None:
        self._windows = tuple(windows)
        self._zones = tuple({w.zone.key: w.zone for w in self._windows}.values())
        self._cache: dict[int, frozenset[int]] = {}

    def _steady(self, minute_start: _dt.datetime) -> bool:
        end = minute_start + _dt.timedelta(seconds=59)
        for zone in self._zones:
            first, last = (
                minute_start.astimezone(zone).utcoffset(),
                end.astimezone(zone).utcoffset(),
            )
            if first != last or first is None or first.total_seconds() % 60:
                return False
        return True

    def active(self, at: object) -> frozenset[int]:
        """The ids of the windows containing ``at`` (a datetime; naive = UTC)."""
        moment = _check_at(at)
        seconds = (moment - _EPOCH) // _dt.timedelta(seconds=1)
        minute = seconds // 60
        found = self._cache.get(minute)
        if found is not None:
            return found
        start = _EPOCH + _dt.timedelta(minutes=minute)
        if not self._steady(start):
            return active_ids(self._windows, moment)
        found = active_ids(self._windows, start)
        if len(self._cache) >= self.LIMIT:
            self._cache.clear()
        self._cache[minute] = found
        return found


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
