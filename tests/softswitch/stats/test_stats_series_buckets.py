"""A series remembers the buckets of its last event (``Series.current``): every event must
land where ``Ring.at`` would put it, whatever the clock does (steps inside a bucket, across
buckets of one ring or of all, a wrap of a whole ring, a step backwards)."""

from __future__ import annotations

import random

import pytest

from softswitch.stats.aggregate import Bucket
from softswitch.stats.series import Series
from softswitch.stats.windows import WINDOWS


class Uncached(Series):
    """The rings asked every time, as before the series kept its buckets."""

    __slots__ = ()

    def current(self, now: float) -> tuple[Bucket, ...]:
        return tuple(ring.at(now) for ring in self.rings)


def _state(series: Series) -> list[object]:
    return [[None if b is None else repr(b) for b in ring.slots] for ring in series.rings] + [
        series.calls,
        series.second,
        series.count,
        series.before,
        series.before_count,
    ]


@pytest.mark.parametrize("seed", range(10))
def test_events_land_in_the_buckets_the_rings_give(seed: int) -> None:
    rng = random.Random(seed)
    cached, plain = Series(), Uncached()
    now = 1000.0 + rng.random() * 10
    for i in range(1500):
        step = rng.choice([0.0, 0.001, 0.3, 1.0, 4.99, 5.0, 59.9, 60.0, 300.0, 899.0, 901.0,
                           86_400.0, -0.5, -5.0, -70.0, -400.0])  # fmt: skip
        now = max(0.0, now + step * rng.random() if rng.random() < 0.5 else now + step)
        kind = rng.randrange(4)
        for series in (cached, plain):
            if kind == 0:
                series.start(now)
            elif kind == 1:
                series.release(now)
            elif kind == 2:
                series.refused(now, 503, "limit_exceeded")
            else:
                series.outcome(
                    now,
                    answered=True,
                    ner=True,
                    seizures=1,
                    duration_ms=1200,
                    pdd_ms=850,
                    status=200,
                    reason="normal_clearing",
                    level=2,
                    cps=3,
                )
        assert _state(cached) == _state(plain)
        if i % 25:
            continue
        for window in WINDOWS.values():
            assert cached.summary("switch", "all", window, now) == plain.summary(
                "switch", "all", window, now
            )


def test_a_late_arrival_counts_in_its_own_second_and_keeps_the_current_one() -> None:
    """Another worker's events reach the primary in batches, a few milliseconds late: one of
    the second before, arriving after the primary's own events of the new second, counts
    in its second and does not throw away the new second's count (a review found the last
    whole second's CPS read as 1-3 at 300 calls/s with four workers)."""
    series = Series()
    for _ in range(5):
        series.start(10.1)
    for _ in range(3):
        series.start(11.002)  # the primary's own events of second 11
    series.start(10.998)  # a worker's event of second 10, in a batch that came late
    series.start(9.5)  # older still: not counted as any second's arrival
    assert series.cps(11.5) == 6  # second 10: five, and the late one
    assert series.cps(12.5) == 3  # second 11: untouched
    assert series.calls == 10  # every start still raised the level
