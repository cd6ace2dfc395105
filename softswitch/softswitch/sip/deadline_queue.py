"""Many deadlines, most of them started with one of a few fixed durations.

A proxy's transaction timers are nearly all the RFC 3261 constants: T1 (Timers A, E, G),
64*T1 (B, F, H, J), T4 (K, I). Deadlines started with the same duration come due in the
order they were started, because the clock only moves forward, so each duration's
deadlines form a first-in first-out queue (a *lane*) without any sorting. Pushing and
popping touch only the two ends of a deque; finding the earliest entry compares the heads
of the few lanes (one per duration in use, about eight) and is cached between changes.

A binary heap, which this replaces, held one entry per started timer: a hundred and fifty
thousand at a thousand calls a second, and every pop walked seventeen levels of tuples
scattered in memory. Profiled under that load it was the largest single cost of the
switch's timer handling.

A deadline that would break its lane's order (a clock that moved backwards, a test's
arbitrary times) goes to a small heap instead, so the order of :meth:`pop_due` is always
exact: by deadline, then by push order.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections import deque
from typing import Generic, TypeAlias, TypeVar

__all__ = ["DeadlineQueue"]

P = TypeVar("P")

#: (deadline, push number, payload): the push number orders equal deadlines.
_Entry: TypeAlias = tuple[float, int, P]
#: Where entries wait: a lane, or the fallback heap.
_Holder: TypeAlias = deque[_Entry[P]] | list[_Entry[P]]

#: Durations closer than this share a lane (a deadline minus the time it was started is
#: not always bit-identical for the same duration).
_LANE_GRAIN = 1e-6


class DeadlineQueue(Generic[P]):
    """Deadlines with a payload each; earliest first, ties in push order.

    Nothing is ever removed early: a caller whose timer was stopped leaves its entry in,
    and skips it when it comes out (lazy deletion, as with a heap).
    """

    __slots__ = ("_head", "_known", "_lanes", "_late", "_seq")

    def __init__(self) -> None:
        self._lanes: dict[int, deque[_Entry[P]]] = {}
        self._late: list[_Entry[P]] = []
        self._seq = itertools.count()
        # The container holding the earliest entry, valid while ``_known``.
        self._head: _Holder[P] | None = None
        self._known = True

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values()) + len(self._late)

    def push(self, deadline: float, duration: float, payload: P) -> None:
        """Add ``payload`` due at ``deadline``, started ``duration`` seconds before it."""
        key = round(duration / _LANE_GRAIN)
        entry = (deadline, next(self._seq), payload)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque((entry,))
            home: _Holder[P] = lane
        elif not lane or lane[-1][0] <= deadline:
            lane.append(entry)
            home = lane
        else:
            heapq.heappush(self._late, entry)
            home = self._late
        if self._known:
            head = self._head
            # An entry is pushed after every entry already in, so it comes first only by
            # an earlier deadline.
            if head is None or deadline < head[0][0]:
                self._head = home

    def _find_head(self) -> _Holder[P] | None:
        if self._known:
            return self._head
        best: _Holder[P] | None = None
        best_entry: _Entry[P] | None = None
        for lane in self._lanes.values():
            if lane:
                entry = lane[0]
                if best_entry is None or _before(entry, best_entry):
                    best, best_entry = lane, entry
        late = self._late
        if late and (best_entry is None or _before(late[0], best_entry)):
            best = late
        self._head, self._known = best, True
        return best

    def peek(self) -> tuple[float, P] | None:
        """The earliest entry, left in place."""
        head = self._find_head()
        if head is None:
            return None
        deadline, _, payload = head[0]
        return deadline, payload

    def drop_earliest(self) -> None:
        """Remove the entry :meth:`peek` returns (no-op when empty)."""
        head = self._find_head()
        if head is None:
            return
        self._known = False
        if head is self._late:
            heapq.heappop(self._late)
        else:
            assert isinstance(head, deque)
            head.popleft()

    def pop_due(self, now: float) -> list[tuple[float, P]]:
        """Remove and return every entry due at ``now`` (deadline <= now), earliest first."""
        due: list[_Entry[P]] = []
        self._known = False
        for lane in self._lanes.values():
            while lane and lane[0][0] <= now:
                due.append(lane.popleft())
        late = self._late
        while late and late[0][0] <= now:
            due.append(heapq.heappop(late))
        if len(due) > 1:
            due.sort(key=_ORDER)
        return [(deadline, payload) for deadline, _, payload in due]


def _before(a: _Entry[object], b: _Entry[object]) -> bool:
    return a[0] < b[0] or (a[0] == b[0] and a[1] < b[1])


_ORDER = operator.itemgetter(0, 1)
