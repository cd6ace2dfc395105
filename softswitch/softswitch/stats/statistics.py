"""``Statistics``: the switch's live statistics, fed by call events, read by ``query``.

Dimensions and their keys:

    switch        one key, ``"all"``: every call attempt that got a CDR
    account       the account id: its attempts, refused ones included
    gateway       the gateway id: its seizures (one per INVITE the switch sent it)
    destination   the sell deck's destination name for the number (see ``events``)
    prefix        the route prefix that matched (``RoutePlan.prefix``)

A call's outcome (attempt, answer, NER, ACD, PDD, failures) is counted once, when its CDR is
written, in the buckets of that moment; so is each of its gateway attempts. Concurrency and
CPS move when calls start and end (gateways: when seized and released). A refusal before
admission counts for the switch and, when it names one, its account; never for a gateway,
destination or prefix (none was chosen).

``now`` is one monotonic clock (the switch passes ``time.monotonic()``) in every call; the
object never reads a clock itself, so tests drive time by hand. It lives as long as the
process's ``Switch``, so a configuration reload keeps every counter. It runs on the event
loop only (no locks). Recording never raises: a bug in the statistics is logged and the call
goes on.

Keys come from the configuration and decks (accounts, gateways, destinations, prefixes), so
they are bounded; a series idle for a whole 24 h window is forgotten (checked hourly).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from .aggregate import Summary
from .definitions import ner_success
from .events import CallEnded, CallRefused, CallStarted
from .histogram import pdd_bin
from .series import Series
from .windows import WINDOWS, Window

if TYPE_CHECKING:
    from .prometheus import Metrics

__all__ = ["DIMENSIONS", "SWITCH_KEY", "Statistics"]

logger = logging.getLogger("softswitch.stats")

DIMENSIONS: Final = ("switch", "account", "gateway", "destination", "prefix")
#: The switch dimension's one key.
SWITCH_KEY: Final = "all"
#: Seconds between two sweeps for idle series.
PRUNE_EVERY: Final = 3600.0


class Statistics:
    """Windowed counters per dimension and key; ``metrics`` (Prometheus) gets every event
    too, so both read the same moments of the same calls."""

    def __init__(self, *, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._switch = Series()
        self._tables: dict[str, dict[str, Series]] = {d: {} for d in DIMENSIONS}
        self._tables["switch"][SWITCH_KEY] = self._switch
        self._accounts = self._tables["account"]
        self._gateways = self._tables["gateway"]
        self._destinations = self._tables["destination"]
        self._prefixes = self._tables["prefix"]
        self._next_prune: float | None = None

    # -- events ------------------------------------------------------------------------------

    def call_started(self, event: CallStarted, now: float) -> None:
        """An admitted call: one more attempt this second, one more call in progress."""
        try:
            for series in self._call_series(event.account, event.destination, event.prefix):
                series.start(now)
            if self.metrics is not None:
                self.metrics.call_started(event)
        except Exception:
            logger.exception("statistics: recording a call start failed")

    def call_ended(self, event: CallEnded, now: float) -> None:
        """An admitted call's CDR: its outcome, each gateway attempt's, one call fewer."""
        try:
            self._ended(event, now)
            if self.metrics is not None:
                self.metrics.call_ended(event)
        except Exception:
            logger.exception("statistics: recording a call end failed")

    def call_refused(self, event: CallRefused, now: float) -> None:
        """A refusal that got a CDR: an attempt and a failure of the switch and its account."""
        try:
            status, reason = event.status, event.end_reason
            self._switch.refused(now, status, reason)
            if event.account is not None:
                self._series(self._accounts, event.account).refused(now, status, reason)
            if self.metrics is not None:
                self.metrics.call_refused(event)
        except Exception:
            logger.exception("statistics: recording a refusal failed")

    def gateway_seized(self, gateway: str, now: float) -> None:
        """A gateway was claimed for an INVITE: a seizure this second, one channel busier."""
        try:
            self._series(self._gateways, gateway).start(now)
            if self.metrics is not None:
                self.metrics.gateway_seized(gateway)
        except Exception:
            logger.exception("statistics: recording a gateway seizure failed")

    def gateway_released(self, gateway: str, now: float) -> None:
        """The gateway's claim ended (its attempt failed, or the call ended)."""
        try:
            self._series(self._gateways, gateway).release(now)
            if self.metrics is not None:
                self.metrics.gateway_released(gateway)
        except Exception:
            logger.exception("statistics: recording a gateway release failed")

    def calls_lost(self, calls: Sequence[CallStarted], gateways: Sequence[str], now: float) -> None:
        """Calls in progress and gateway claims that will never end with an event (the
        worker that had them died): they leave the levels and gauges, with no outcome."""
        try:
            for event in calls:
                for series in self._call_series(event.account, event.destination, event.prefix):
                    series.down()
                if self.metrics is not None:
                    self.metrics.call_lost(event.account)
            for gateway in gateways:
                self._series(self._gateways, gateway).release(now)
                if self.metrics is not None:
                    self.metrics.gateway_released(gateway)
        except Exception:
            logger.exception("statistics: dropping lost calls failed")

    # -- reading -----------------------------------------------------------------------------

    def query(self, dimension: str, key: str, window: str, now: float) -> Summary:
        """One series over one window (``"5m"``, ``"15m"``, ``"1h"``, ``"24h"``) at ``now``.

        A key never seen (or forgotten) answers zeros. An unknown dimension or window is a
        ``ValueError`` (the caller's mistake, to be answered 400 by an API).
        """
        table = self._table(dimension)
        series = table.get(key) or _EMPTY
        return series.summary(dimension, key, _window(window), now)

    def answers(self, dimension: str, key: str, window: str, now: float) -> tuple[int, int]:
        """(attempts, answered) of one series over one window: ``query``'s two counts for an
        ASR, at a fraction of its cost (quality routing reads them for every candidate)."""
        series = self._table(dimension).get(key)
        return (0, 0) if series is None else series.answers(_window(window), now)

    def keys(self, dimension: str) -> list[str]:
        """The keys of ``dimension`` with counters, sorted."""
        return sorted(self._table(dimension))

    def prune(self, now: float) -> int:
        """Forget series with no call in progress and nothing in any window; how many."""
        dropped = 0
        for dimension, table in self._tables.items():
            if dimension == "switch":
                continue
            for key in [k for k, s in table.items() if s.idle(now)]:
                del table[key]
                dropped += 1
        return dropped

    # -- inside ------------------------------------------------------------------------------

    def _table(self, dimension: str) -> dict[str, Series]:
        table = self._tables.get(dimension)
        if table is None:
            raise ValueError(f"unknown dimension {dimension!r}; one of {', '.join(DIMENSIONS)}")
        return table

    @staticmethod
    def _series(table: dict[str, Series], key: str) -> Series:
        series = table.get(key)
        if series is None:
            series = table[key] = Series()
        return series

    def _call_series(
        self, account: str, destination: str | None, prefix: str | None
    ) -> list[Series]:
        series = [self._switch, self._series(self._accounts, account)]
        if destination is not None:
            series.append(self._series(self._destinations, destination))
        if prefix is not None:
            series.append(self._series(self._prefixes, prefix))
        return series

    def _ended(self, event: CallEnded, now: float) -> None:
        answered = event.answered
        ner = answered or ner_success(event.status, event.rang)
        seizures = len(event.attempts)
        duration_ms, pdd_ms = event.duration_ms, event.pdd_ms
        pdd_index = pdd_bin(pdd_ms) if pdd_ms is not None else 0
        status, reason = event.status, event.end_reason
        for series in self._call_series(event.account, event.destination, event.prefix):
            series.record(
                now,
                answered,
                ner,
                seizures,
                duration_ms,
                pdd_ms,
                pdd_index,
                status,
                reason,
                series.down(),
                0,
            )
        for attempt in event.attempts:
            gateway_status, outcome = attempt.status, attempt.outcome
            self._series(self._gateways, attempt.gateway).outcome(
                now,
                answered=outcome == "answered",
                ner=ner_success(gateway_status, attempt.rang),
                seizures=1,
                duration_ms=attempt.duration_ms,
                pdd_ms=attempt.pdd_ms,
                status=gateway_status,
                reason=outcome,
            )
        if self._next_prune is None:
            self._next_prune = now + PRUNE_EVERY
        elif now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            self.prune(now)


def _window(name: str) -> Window:
    spec = WINDOWS.get(name)
    if spec is None:
        raise ValueError(f"unknown window {name!r}; one of {', '.join(WINDOWS)}")
    return spec


#: What a key never seen answers: a series nothing is ever recorded in.
_EMPTY: Final = Series()
