"""The switch's schedule for reference-cycle collections: on growth, logged."""

from __future__ import annotations

import gc
import logging

import pytest

from softswitch.proxy.collector import quiet_collector, restore_collector


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_a_pass_runs_only_when_live_objects_grew_by_the_threshold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = gc.get_threshold()
    caplog.set_level(logging.INFO, logger="softswitch.proxy.collector")
    try:
        quiet_collector(20_000)
        assert gc.isenabled()
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_freeze_count() > 0
        # Churn: a million objects made and freed, never more than a few alive at once.
        for _ in range(1_000_000 // 4):
            [[], [], [], []]  # noqa: B018
        assert "cycle collection" not in caplog.text
        # Growth: cycles that only a collection can free, more than the threshold.
        for _ in range(25_000):
            _Node()
        assert "cycle collection: generation 0" in caplog.text
        assert "unreachable objects" in caplog.text
    finally:
        restore_collector()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        quiet_collector(0)
