"""``lcr.RouteTable``: the Rust core's routing table, with route time windows evaluated here.

The core has no time-zone database, so this thin class numbers the distinct windows of the
table's routes, asks :class:`lcr.windows.WindowClock` which are active at a call's instant
(once per distinct minute) and hands the ids to the core. Every ``route()`` and
``route_many()`` is still one call into the core; a table without windows forwards its
arguments untouched. The semantics are ``lcr.reference.RouteTable``'s.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Protocol

from . import _core
from .errors import LcrError
from .plan import RouteEntry
from .windows import TimeWindow, WindowClock

__all__ = ["RouteTable"]


class SellRate(Protocol):
    """A sell rate for true-cost margins: ``lcr.Rate`` or ``lcr.reference.Rate``."""

    def cost(self, duration_s: int, /) -> Decimal: ...


class RouteTable:
    """An immutable routing plan: route entries over carriers' decks (see ``lcr.reference``).

    ``route()`` takes the caller's number (``caller``) for caller-prefix routes, and a sell
    ``Rate`` (``sell``, with an optional ``acd``) for true-cost margins. ``route_many()``
    takes ``seeds`` and ``callers`` one per number, and ``at``, ``sell`` and ``acd`` either
    one for the whole batch or one per number.
    """

    __slots__ = ("_clock", "_core", "_entries")

    def __init__(
        self,
        entries: Iterable[RouteEntry],
        decks: Mapping[str, _core.RateDeck] | None = None,
        *,
        min_margin: Decimal | str | int | None = None,
        margin_duration: Iterable[int] = (),
    ) -> None:
        self._entries = tuple(entries)
        ids: dict[tuple[int, int, int, str], int] = {}
        windows: list[TimeWindow] = []
        window_ids: list[list[int]] = []
        for entry in self._entries:
            own = []
            for window in entry.windows:
                if not isinstance(window, TimeWindow):
                    raise LcrError(
                        f"route prefix {entry.prefix!r}: windows must be lcr.TimeWindow, "
                        f"not {type(window).__name__}"
                    )
                if window.key not in ids:
                    ids[window.key] = len(windows)
                    windows.append(window)
                own.append(ids[window.key])
            window_ids.append(own)
        self._core = _core.RouteTable(
            self._entries,
            dict(decks) if decks is not None else None,
            min_margin=min_margin,
            margin_duration=tuple(margin_duration),
            window_ids=window_ids if windows else None,
        )
        self._clock = WindowClock(windows) if windows else None

    def route(
        self,
        number: str,
        at: _dt.datetime | None = None,
        seed: int | str | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | str | int | None = None,
        caller: str | None = None,
        sell: SellRate | None = None,
        acd: int | None = None,
    ) -> _core.RouteResult:
        """Orders the carriers for ``number`` at ``at`` (None = now)."""
        if self._clock is None:
            return self._core.route(
                number,
                at,
                seed,
                exclude=exclude,
                sell_rate=sell_rate,
                caller=caller,
                sell=sell,
                acd=acd,
            )
        moment = _dt.datetime.now(_dt.UTC) if at is None else at
        return self._core.route(
            number,
            moment,
            seed,
            exclude=exclude,
            sell_rate=sell_rate,
            caller=caller,
            sell=sell,
            acd=acd,
            active=self._clock.active(moment),
        )

    def route_many(
        self,
        numbers: Iterable[str],
        at: _dt.datetime | Iterable[_dt.datetime] | None = None,
        seeds: Iterable[int | str] | None = None,
        *,
        exclude: Iterable[str] | None = None,
        sell_rate: Decimal | str | int | None = None,
        callers: Iterable[str | None] | None = None,
        sell: SellRate | Iterable[SellRate | None] | None = None,
        acd: int | Iterable[int | None] | None = None,
    ) -> list[_core.RouteResult]:
        """``route()`` for each number, in one call into the core (the GIL released)."""
        if self._clock is None:
            return self._core.route_many(
                numbers,
                at,
                seeds,
                exclude=exclude,
                sell_rate=sell_rate,
                callers=callers,
                sell=sell,
                acd=acd,
            )
        clock = self._clock
        if at is None or isinstance(at, _dt.datetime):
            moment = _dt.datetime.now(_dt.UTC) if at is None else at
            return self._core.route_many(
                numbers,
                moment,
                seeds,
                exclude=exclude,
                sell_rate=sell_rate,
                callers=callers,
                sell=sell,
                acd=acd,
                active=[clock.active(moment)],
            )
        # None means now, as everywhere else: one "now" for the whole batch.
        now = _dt.datetime.now(_dt.UTC)
        moments = [now if m is None else m for m in at]
        states: dict[frozenset[int], int] = {}
        state_of = [states.setdefault(clock.active(m), len(states)) for m in moments]
        numbers = list(numbers)
        if len(moments) != len(numbers):
            raise LcrError(f"{len(numbers)} numbers but {len(moments)} moments in at")
        return self._core.route_many(
            numbers,
            moments,
            seeds,
            exclude=exclude,
            sell_rate=sell_rate,
            callers=callers,
            sell=sell,
            acd=acd,
            active=list(states),
            active_of=state_of,
        )

    @property
    def deck_names(self) -> list[str]:
        return self._core.deck_names

    @property
    def entries(self) -> tuple[RouteEntry, ...]:
        """The routes as given, in table order (``RouteResult.route`` indexes this)."""
        return self._entries

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        return repr(self._core)
