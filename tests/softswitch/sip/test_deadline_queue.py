"""The transaction layer's deadline queue: lanes per duration, exact order always."""

from __future__ import annotations

import heapq

from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.deadline_queue import DeadlineQueue


def test_lanes_come_out_in_deadline_order_across_durations() -> None:
    q: DeadlineQueue[str] = DeadlineQueue()
    q.push(0.5, 0.5, "A@0")  # started at 0
    q.push(32.0, 32.0, "B@0")
    q.push(5.1, 5.0, "K@0.1")
    q.push(0.7, 0.5, "E@0.2")
    q.push(32.2, 32.0, "F@0.2")
    assert len(q) == 5
    assert q.peek() == (0.5, "A@0")
    assert q.pop_due(1.0) == [(0.5, "A@0"), (0.7, "E@0.2")]
    assert q.pop_due(1.0) == []
    assert q.peek() == (5.1, "K@0.1")
    assert q.pop_due(40.0) == [(5.1, "K@0.1"), (32.0, "B@0"), (32.2, "F@0.2")]
    assert q.peek() is None
    assert len(q) == 0


def test_a_deadline_out_of_its_lanes_order_still_comes_out_in_order() -> None:
    q: DeadlineQueue[str] = DeadlineQueue()
    q.push(10.5, 0.5, "late start")
    q.push(3.5, 0.5, "clock went back")  # behind the lane's tail
    q.push(10.5, 0.5, "tie, pushed after")
    assert q.peek() == (3.5, "clock went back")
    q.drop_earliest()
    assert q.peek() == (10.5, "late start")
    assert q.pop_due(10.5) == [(10.5, "late start"), (10.5, "tie, pushed after")]


def test_equal_deadlines_keep_push_order_across_lanes() -> None:
    q: DeadlineQueue[int] = DeadlineQueue()
    q.push(4.0, 4.0, 1)
    q.push(4.0, 2.0, 2)
    q.push(4.0, 1.0, 3)
    assert q.pop_due(4.0) == [(4.0, 1), (4.0, 2), (4.0, 3)]


# Operations on a queue and on a heap side by side: push (start time, duration), pop what
# is due at a time, drop the earliest. Times may go backwards; durations may collide.
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.integers(min_value=0, max_value=200),
            st.sampled_from([0.5, 0.5 + 1e-9, 1.0, 4.0, 5.0, 32.0]),
        ),
        st.tuples(st.just("pop"), st.integers(min_value=0, max_value=300), st.just(0.0)),
        st.tuples(st.just("drop"), st.just(0), st.just(0.0)),
    ),
    max_size=80,
)


@given(_ops)
def test_same_order_as_a_heap(ops: list[tuple[str, int, float]]) -> None:
    q: DeadlineQueue[int] = DeadlineQueue()
    heap: list[tuple[float, int]] = []
    for i, (op, t, duration) in enumerate(ops):
        if op == "push":
            deadline = t / 10 + duration
            q.push(deadline, duration, i)
            heapq.heappush(heap, (deadline, i))
        elif op == "pop":
            expected = []
            while heap and heap[0][0] <= t:
                expected.append(heapq.heappop(heap))
            assert q.pop_due(t) == expected
        else:
            q.drop_earliest()
            if heap:
                heapq.heappop(heap)
        assert q.peek() == (heap[0] if heap else None)
        assert len(q) == len(heap)
