"""The switch's schedule for reference-cycle collections: on growth, logged."""

from __future__ import annotations

import gc
import logging

import pytest

from softswitch.proxy.collector import quiet_collector, restore_collector


class _Leaf:
    """No free list (unlike lists and tuples): each one is a counted allocation."""


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_a_pass_runs_only_when_live_objects_grew_by_the_threshold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = (gc.get_threshold(), gc.isenabled())
    caplog.set_level(logging.INFO, logger="softswitch.proxy.collector")
    try:
        quiet_collector(20_000)
        assert gc.isenabled()
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_freeze_count() > 0
        # Churn: a million objects made and freed, never more than a few alive at once.
        for _ in range(1_000_000 // 4):
            (_Leaf(), _Leaf(), _Leaf(), _Leaf())
        assert gc.get_count()[0] < 20_000
        assert "cycle collection" not in caplog.text
        # Growth: cycles that only a collection can free, more than the threshold.
        for _ in range(25_000):
            _Node()
        assert "cycle collection: generation 0" in caplog.text
        assert "unreachable objects" in caplog.text
    finally:
        restore_collector()
    assert (gc.get_threshold(), gc.isenabled()) == before
    gc.unfreeze()


def test_two_users_restore_when_both_stopped() -> None:
    gc.disable()
    try:
        quiet_collector(50_000)
        quiet_collector(50_000)
        restore_collector()
        assert gc.isenabled()  # one still running
        assert gc.get_threshold()[0] == 50_000
        restore_collector()
        assert not gc.isenabled()  # as it was before the first
        restore_collector()  # unpaired: no-op
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        quiet_collector(0)
