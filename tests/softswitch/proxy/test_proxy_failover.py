"""Which answers move a call to the next carrier, and what the caller hears at the end."""

from __future__ import annotations

import pytest

from softswitch.proxy.failover import best_final_status, should_fail_over


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 580])
def test_default_set_fails_over(status: int) -> None:
    assert should_fail_over(status, None)


@pytest.mark.parametrize("status", [486, 487, 600, 404, 403, 480, 603, 200, 180])
def test_default_set_does_not_fail_over(status: int) -> None:
    assert not should_fail_over(status, None)


def test_gateway_set_is_honoured_but_never_for_busy_or_cancelled() -> None:
    codes = frozenset({404, 486, 487, 600, 503})
    assert should_fail_over(404, codes)
    assert not should_fail_over(500, codes)
    for status in (486, 487, 600):
        assert not should_fail_over(status, codes)


def test_lone_503_becomes_500() -> None:
    assert best_final_status([503]) == 500
    assert best_final_status([503, 503]) == 500


def test_lowest_class_wins_and_6xx_beats_everything() -> None:
    assert best_final_status([503, 404]) == 404
    assert best_final_status([503, 502]) == 502
    assert best_final_status([404, 603, 503]) == 603
    # our own 408 (a gateway timed out) is the weakest 4xx
    assert best_final_status([408, 480]) == 480


def test_nothing_received_is_a_timeout() -> None:
    assert best_final_status([]) == 408
