"""One time bucket's aggregates, and a window's sum of them as a JSON-ready summary.

A :class:`Bucket` holds what happened in one slice of time for one series (an account, a
gateway, ...): counts, sums in whole milliseconds (integers, so sums never drift), sparse
histograms and tallies, and the highest concurrency and CPS seen in it. A window is the sum
of its live buckets (:func:`summarise`): counts and sums add, peaks take the maximum, so
nothing ever has to be subtracted when a bucket slides out.

Dictionaries are created on first use: most buckets of most series never see a failure, and
a busy switch holds hundreds of thousands of buckets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypedDict

from .histogram import percentile_ms

__all__ = ["Bucket", "Failures", "Level", "PddSummary", "Summary", "summarise"]


@dataclass(slots=True)
class Bucket:
    """What one series saw during one time bucket (``number``: its index on the clock)."""

    number: int
    attempts: int = 0
    answered: int = 0
    ner: int = 0
    seizures: int = 0
    duration_ms: int = 0
    pdd_count: int = 0
    pdd_ms: int = 0
    pdd_max_ms: int = 0
    pdd_bins: dict[int, int] | None = None
    by_status: dict[int, int] | None = None
    by_reason: dict[str, int] | None = None
    peak_calls: int = 0
    peak_cps: int = 0

    def reset(self, number: int) -> None:
        """Reuse the bucket for a later slice of time (the ring's slot came round again)."""
        self.number = number
        self.attempts = self.answered = self.ner = self.seizures = 0
        self.duration_ms = self.pdd_count = self.pdd_ms = self.pdd_max_ms = 0
        self.pdd_bins = self.by_status = self.by_reason = None
        self.peak_calls = self.peak_cps = 0


class PddSummary(TypedDict):
    """Post-dial delay over the window, in seconds (None when no call rang or answered)."""

    count: int
    avg: float | None
    p95: float | None
    max: float | None


class Failures(TypedDict):
    """Unanswered attempts by SIP status (as a string: JSON keys are strings) and by reason."""

    status: dict[str, int]
    reason: dict[str, int]


class Level(TypedDict):
    """A level now and its highest in the window (concurrent calls, calls per second)."""

    current: int
    peak: int


class Summary(TypedDict):
    """``Statistics.query``'s answer: one series over one window, ready for ``json.dumps``.

    Ratios are exact fractions as floats; seconds are rounded to the millisecond; a ratio or
    average with nothing to divide by is None (JSON null), never NaN.
    """

    dimension: str
    key: str
    window: str
    seconds: int
    attempts: int
    answered: int
    asr: float | None
    ner_successes: int
    ner: float | None
    seizures: int
    acd: float | None
    duration: float
    pdd: PddSummary
    failures: Failures
    concurrent: Level
    cps: Level


def _seconds(ms: int) -> float:
    return ms / 1000


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarise(
    buckets: Iterable[Bucket],
    *,
    dimension: str,
    key: str,
    window: str,
    seconds: int,
    calls_now: int,
    cps_now: int,
) -> Summary:
    """The window's sum of ``buckets``, with the series' current concurrency and CPS (which
    also bound the window's peaks from below: a level held now is held in the window)."""
    attempts = answered = ner = seizures = duration_ms = 0
    pdd_count = pdd_ms = pdd_max_ms = 0
    peak_calls, peak_cps = calls_now, cps_now
    bins: dict[int, int] = {}
    by_status: dict[int, int] = {}
    by_reason: dict[str, int] = {}
    for b in buckets:
        attempts += b.attempts
        answered += b.answered
        ner += b.ner
        seizures += b.seizures
        duration_ms += b.duration_ms
        pdd_count += b.pdd_count
        pdd_ms += b.pdd_ms
        pdd_max_ms = max(pdd_max_ms, b.pdd_max_ms)
        peak_calls = max(peak_calls, b.peak_calls)
        peak_cps = max(peak_cps, b.peak_cps)
        if b.pdd_bins:
            for index, n in b.pdd_bins.items():
                bins[index] = bins.get(index, 0) + n
        if b.by_status:
            for status, n in b.by_status.items():
                by_status[status] = by_status.get(status, 0) + n
        if b.by_reason:
            for reason, n in b.by_reason.items():
                by_reason[reason] = by_reason.get(reason, 0) + n
    p95 = percentile_ms(bins, pdd_count, pdd_max_ms)
    return {
        "dimension": dimension,
        "key": key,
        "window": window,
        "seconds": seconds,
        "attempts": attempts,
        "answered": answered,
        "asr": _ratio(answered, attempts),
        "ner_successes": ner,
        "ner": _ratio(ner, attempts),
        "seizures": seizures,
        "acd": round(duration_ms / answered / 1000, 3) if answered else None,
        "duration": _seconds(duration_ms),
        "pdd": {
            "count": pdd_count,
            "avg": round(pdd_ms / pdd_count / 1000, 3) if pdd_count else None,
            "p95": None if p95 is None else _seconds(p95),
            "max": _seconds(pdd_max_ms) if pdd_count else None,
        },
        "failures": {
            "status": {str(s): by_status[s] for s in sorted(by_status)},
            "reason": {r: by_reason[r] for r in sorted(by_reason)},
        },
        "concurrent": {"current": calls_now, "peak": peak_calls},
        "cps": {"current": cps_now, "peak": peak_cps},
    }
