"""Strangers' refusals are counters, and each source gets at most one log line per interval."""

from __future__ import annotations

import logging

import pytest

from softswitch.security.refusals import RefusalCounters

LOGGER = "softswitch.test.refusals"


def test_one_line_per_source_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    counters = RefusalCounters(60.0, logging.getLogger(LOGGER))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for i in range(1000):
            counters.note("192.0.2.7", "unknown_source", i * 0.05)  # 50 s of a flood
        assert len(caplog.records) == 1
        counters.note("192.0.2.7", "scanner", 61.0)
        assert len(caplog.records) == 2
    second = caplog.records[1].getMessage()
    # The second line sums what was refused since the first one.
    assert "1000 request(s) from 192.0.2.7" in second
    assert "scanner=1" in second
    assert "unknown_source=999" in second
    assert counters.by_source() == {"192.0.2.7": {"unknown_source": 1000, "scanner": 1}}
    assert counters.totals == {"unknown_source": 1000, "scanner": 1}


def test_each_source_has_its_own_interval(caplog: pytest.LogCaptureFixture) -> None:
    counters = RefusalCounters(60.0, logging.getLogger(LOGGER))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        counters.note("a", "unknown_source", 0.0)
        counters.note("b", "unknown_source", 0.0)
        counters.note("a", "unknown_source", 1.0)
    assert [r.getMessage().split(" from ")[1].split(" ")[0] for r in caplog.records] == ["a", "b"]


def test_spoofed_sources_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    counters = RefusalCounters(60.0, logging.getLogger(LOGGER), max_sources=100)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for i in range(10_000):
            counters.note(f"src{i}", "unknown_source", 1.0)
    assert len(counters) == 100
    assert counters.totals["unknown_source"] == 10_000
    # 100 sources, then one line for all the others in this interval.
    assert len(caplog.records) == 101
    assert "other sources" in caplog.records[-1].getMessage()


def test_a_full_table_is_swept_at_most_once_an_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a spoofed flood every source is recent: sweeping on each new one would cost a
    pass over the whole table per packet."""
    counters = RefusalCounters(60.0, logging.getLogger(LOGGER), max_sources=100)
    sweeps = 0
    real = counters._sweep

    def counting(now: float) -> None:
        nonlocal sweeps
        sweeps += 1
        real(now)

    monkeypatch.setattr(counters, "_sweep", counting)
    for i in range(20_000):
        counters.note(f"src{i}", "unknown_source", 1.0 + i * 1e-4)  # 2 s of a flood
    assert sweeps == 1
    assert counters.totals["unknown_source"] == 20_000
