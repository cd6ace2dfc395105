"""Sliding windows as rings of time buckets: constant work per event, bounded memory.

A window of ``width * count`` seconds is ``count`` buckets of ``width`` seconds, aligned on
the clock: bucket number ``n = floor(now / width)`` covers ``[n * width, (n + 1) * width)``.
The window at ``now`` is the current bucket and the ``count - 1`` before it, so it slides in
steps of one bucket and covers between ``(count - 1) * width`` and ``count * width`` seconds
of the past. An event at time ``t`` counts in the window at ``now`` exactly while
``floor(now / width) - floor(t / width) < count``.

    window   bucket   buckets   an event leaves the window after
    5m       5 s      60        295-300 s
    15m      60 s     15        14-15 min (the newest 15 buckets of the 1h ring)
    1h       60 s     60        59-60 min
    24h      15 min   96        23 h 45 min - 24 h

A window whose buckets are as wide as a longer window's (15m: the hour's 60 s buckets) keeps
no ring of its own: it reads the newest ``count`` buckets of that ring. So it costs nothing
per event; only the rings in :data:`RINGS` are written to.

The ring has one slot per bucket (``n % count``), made on first use. A slot holding an older
bucket is reset when its turn comes round again; a query skips slots older than the window.
Nothing is ever subtracted, so a window can never go negative or drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .aggregate import Bucket

__all__ = ["RINGS", "WINDOWS", "Ring", "Window", "ring_of"]


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window's name (as queried), bucket width (seconds) and bucket count."""

    name: str
    width: int
    count: int

    @property
    def seconds(self) -> int:
        return self.width * self.count


#: The windows every series keeps a ring for, in the order of ``Series.rings``.
RINGS: Final[tuple[Window, ...]] = (
    Window("5m", 5, 60),
    Window("1h", 60, 60),
    Window("24h", 900, 96),
)

#: Every window that can be queried, by name, shortest first: the rings' and those read
#: from a longer ring's newest buckets.
WINDOWS: Final[dict[str, Window]] = {
    w.name: w for w in (RINGS[0], Window("15m", 60, 15), RINGS[1], RINGS[2])
}


def ring_of(window: Window) -> int:
    """The index in :data:`RINGS` of the ring a window is read from: the first with buckets
    of the window's width and at least as many of them."""
    for index, ring in enumerate(RINGS):
        if ring.width == window.width and ring.count >= window.count:
            return index
    raise ValueError(f"no ring holds window {window.name!r}")


class Ring:
    """One series' buckets for one window."""

    __slots__ = ("count", "slots", "width")

    def __init__(self, window: Window) -> None:
        self.width = window.width
        self.count = window.count
        self.slots: list[Bucket | None] = [None] * window.count

    def at(self, now: float) -> Bucket:
        """The bucket ``now`` falls in, to be written to.

        An event older than what its slot already holds (only a clock run backwards could
        send one) lies outside the window: it goes to a throwaway bucket.
        """
        number = int(now // self.width)
        index = number % self.count
        bucket = self.slots[index]
        if bucket is None:
            bucket = self.slots[index] = Bucket(number)
        elif bucket.number != number:
            if bucket.number > number:
                return Bucket(number)
            bucket.reset(number)
        return bucket

    def live(self, now: float, count: int | None = None) -> Iterator[Bucket]:
        """The buckets inside the window at ``now``: the ring's, or the newest ``count``
        buckets (a shorter window read from this ring)."""
        newest = int(now // self.width)
        oldest = newest - (self.count if count is None else count) + 1
        for bucket in self.slots:
            if bucket is not None and oldest <= bucket.number <= newest:
                yield bucket

    def idle(self, now: float) -> bool:
        """No bucket inside the window at ``now``."""
        return next(self.live(now), None) is None
