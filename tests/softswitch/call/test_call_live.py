"""Runtime counters: concurrent calls, sliding CPS window, gateway health, auth blocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.call.live import LiveState


def test_account_max_calls_and_release() -> None:
    live = LiveState()
    assert live.account_admit("a", 0.0, max_calls=2) is None
    assert live.account_admit("a", 0.0, max_calls=2) is None
    assert live.account_admit("a", 0.0, max_calls=2) == "max_calls"
    assert live.account_calls("a") == 2
    live.account_release("a")
    assert live.account_admit("a", 0.0, max_calls=2) is None
    assert live.account_admit("b", 0.0, max_calls=2) is None  # per account


def test_account_cps_is_a_sliding_one_second_window() -> None:
    live = LiveState()
    assert live.account_admit("a", 10.0, max_cps=2) is None
    assert live.account_admit("a", 10.5, max_cps=2) is None
    assert live.account_admit("a", 10.9, max_cps=2) == "max_cps"
    assert live.account_rate("a", 10.9) == 2
    assert live.account_admit("a", 11.0, max_cps=2) is None  # the 10.0 one left the window
    assert live.account_admit("a", 11.2, max_cps=2) == "max_cps"
    # A refused call does not count, so the rate falls back as admissions age.
    assert live.account_rate("a", 12.1) == 0


def test_release_more_than_admitted_is_a_bug() -> None:
    live = LiveState()
    with pytest.raises(RuntimeError):
        live.account_release("a")
    with pytest.raises(RuntimeError):
        live.gateway_release("g")


def test_gateway_capacity_cps_and_room_check_does_not_count() -> None:
    live = LiveState()
    assert live.gateway_has_room("g", 0.0, capacity=1) is None
    assert live.gateway_admit("g", 0.0, capacity=1) is None
    assert live.gateway_has_room("g", 0.0, capacity=1) == "capacity"
    assert live.gateway_admit("g", 0.0, capacity=1) == "capacity"
    live.gateway_release("g")
    assert live.gateway_calls("g") == 0
    assert live.gateway_admit("g", 0.1, capacity=1, max_cps=1) == "max_cps"
    assert live.gateway_admit("g", 1.0, capacity=1, max_cps=1) is None


def test_gateway_up_until_marked_down() -> None:
    live = LiveState()
    assert live.gateway_is_up("g")
    live.mark_gateway("g", up=False)
    assert not live.gateway_is_up("g")
    live.mark_gateway("g", up=True)
    assert live.gateway_is_up("g")


def test_auth_failures_block_within_window_then_expire() -> None:
    live = LiveState()
    assert not live.note_auth_failure("1.2.3.4", 0.0, limit=3, window=10, block_for=60)
    assert not live.note_auth_failure("1.2.3.4", 20.0, limit=3, window=10, block_for=60)
    assert not live.note_auth_failure("1.2.3.4", 21.0, limit=3, window=10, block_for=60)
    assert not live.is_blocked("1.2.3.4", 21.0)  # the first failure left the window
    assert live.note_auth_failure("1.2.3.4", 22.0, limit=3, window=10, block_for=60)
    assert live.is_blocked("1.2.3.4", 22.0)
    assert live.is_blocked("1.2.3.4", 81.9)
    assert not live.is_blocked("1.2.3.4", 82.0)
    assert not live.is_blocked("5.6.7.8", 22.0)


def test_success_forgives_failures_and_operator_can_unblock() -> None:
    live = LiveState()
    for t in (0.0, 1.0):
        live.note_auth_failure("ip", t, limit=3)
    live.note_auth_success("ip")
    assert not live.note_auth_failure("ip", 2.0, limit=3)
    for t in (3.0, 4.0):
        live.note_auth_failure("ip", t, limit=3)
    assert live.is_blocked("ip", 4.0)
    live.unblock("ip")
    assert not live.is_blocked("ip", 4.0)


def test_memory_of_failures_is_bounded() -> None:
    live = LiveState()
    for i in range(10_000):
        live.note_auth_failure(f"10.{i // 256}.{i % 256}.1", float(i), limit=5, window=1.0)
    assert len(live._auth) <= 4097


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.7), min_size=1, max_size=60),
    limit=st.integers(min_value=1, max_value=5),
)
def test_cps_never_admits_more_than_the_limit_in_any_second(gaps: list[float], limit: int) -> None:
    live = LiveState()
    now = 0.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        if live.account_admit("a", now, max_cps=limit) is None:
            admitted.append(now)
    for t in admitted:
        assert sum(1 for u in admitted if t - 1.0 < u <= t) <= limit
