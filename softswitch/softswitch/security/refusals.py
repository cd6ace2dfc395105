"""Requests refused to strangers: counters per source and reason, not rows and not lines.

A refused request from a source no account matches is nobody's call: writing it as a CDR
row, or logging it line by line, would let a flood fill the disk and drown the log at the
attacker's rate. Each refusal is counted here instead, per source and reason, and a source
gets at most one log line per ``interval`` seconds, summing what it was refused since its
last line. Totals per reason are kept for the life of the process (the metrics' source).

Memory is bounded under spoofed floods: at most ``max_sources`` sources are tracked one by
one; sources quiet for longer than an interval are dropped first, and past that the rest
are counted in ``totals`` (and logged once per interval as ``other sources``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["RefusalCounters"]

#: Sources tracked one by one before new ones only reach the totals.
DEFAULT_MAX_SOURCES = 10_000
_OTHERS = "other sources"


@dataclass(slots=True)
class _Source:
    """One source's refusals: all of them, and those not yet in a log line."""

    total: Counter[str] = field(default_factory=Counter)
    pending: Counter[str] = field(default_factory=Counter)
    next_log: float = float("-inf")
    last_seen: float = 0.0


class RefusalCounters:
    """Counts refusals; logs each source at most once per ``interval`` seconds."""

    def __init__(
        self,
        interval: float,
        logger: logging.Logger,
        *,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ) -> None:
        self.interval = interval
        self.logger = logger
        self.max_sources = max_sources
        #: Refusals per reason since start, every source included.
        self.totals: Counter[str] = Counter()
        self._sources: dict[str, _Source] = {}
        self._others = _Source()
        #: A full table is swept at most once an interval: under a spoofed flood every
        #: source is recent, and sweeping on every new one would cost O(n) per packet.
        self._next_sweep = float("-inf")

    def note(self, source: str, reason: str, now: float) -> None:
        """One request from ``source`` refused for ``reason`` at ``now`` (monotonic)."""
        self.totals[reason] += 1
        entry = self._sources.get(source)
        if entry is None:
            if len(self._sources) >= self.max_sources and now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + self.interval
            if len(self._sources) >= self.max_sources:
                entry, source = self._others, _OTHERS
            else:
                entry = self._sources[source] = _Source()
        entry.total[reason] += 1
        entry.pending[reason] += 1
        entry.last_seen = now
        if now >= entry.next_log:
            self._log(source, entry, now)

    def by_source(self) -> dict[str, dict[str, int]]:
        """Refusals per tracked source and reason (sources over the cap are not listed)."""
        return {ip: dict(e.total) for ip, e in self._sources.items()}

    def __len__(self) -> int:
        return len(self._sources)

    def _log(self, source: str, entry: _Source, now: float) -> None:
        if self.logger.isEnabledFor(logging.WARNING):
            counts = ", ".join(f"{reason}={n}" for reason, n in sorted(entry.pending.items()))
            self.logger.warning(
                "refused %d request(s) from %s (%s); next report in %gs at the earliest",
                sum(entry.pending.values()),
                source,
                counts,
                self.interval,
                extra={"peer": source, "refused": dict(entry.pending)},
            )
        entry.pending.clear()
        entry.next_log = now + self.interval

    def _sweep(self, now: float) -> None:
        horizon = now - self.interval
        self._sources = {k: v for k, v in self._sources.items() if v.last_seen > horizon}
