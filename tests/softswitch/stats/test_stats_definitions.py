"""The definitions (docs/statistics.md) and the PDD bins, value by value."""

from __future__ import annotations

import pytest

from softswitch.stats.definitions import is_answer, ms, ner_success
from softswitch.stats.histogram import OVERFLOW_BIN, bin_upper_ms, pdd_bin, percentile_ms


@pytest.mark.parametrize(
    ("status", "rang", "success"),
    [
        (200, False, True),
        (202, False, True),
        (486, False, True),  # user busy
        (600, False, True),  # busy everywhere
        (603, False, True),  # declined
        (480, False, True),  # no answer (temporarily unavailable)
        (408, True, True),  # no answer after the callee was alerted
        (408, False, False),  # nobody was alerted: the network failed
        (487, True, True),  # the caller gave up while it rang
        (487, False, False),  # the caller gave up before any 18x
        (404, True, False),
        (503, True, False),
        (500, False, False),
        (403, False, False),
        (None, True, False),  # no final status at all (timeout, transport error)
    ],
)
def test_ner_success(status: int | None, rang: bool, success: bool) -> None:
    assert ner_success(status, rang) is success


def test_answers_are_2xx() -> None:
    assert [is_answer(s) for s in (None, 180, 199, 200, 299, 300, 486)] == [
        False, False, False, True, True, False, False,
    ]  # fmt: skip


def test_milliseconds_round_to_nearest() -> None:
    assert [ms(x) for x in (0.0, 1.2344, 1.2346, 61.0, 0.0005)] == [0, 1234, 1235, 61000, 0]


@pytest.mark.parametrize(
    ("value", "index", "upper"),
    [
        (-5, 0, 10),
        (0, 0, 10),
        (9, 0, 10),
        (10, 1, 20),  # a bin is [lower, upper)
        (999, 99, 1000),
        (1000, 100, 1100),
        (1099, 100, 1100),
        (9999, 189, 10_000),
        (10_000, 190, 11_000),
        (59_999, 239, 60_000),
        (60_000, OVERFLOW_BIN, None),
        (3_600_000, OVERFLOW_BIN, None),
    ],
)
def test_bins(value: int, index: int, upper: int | None) -> None:
    assert pdd_bin(value) == index
    assert bin_upper_ms(index) == upper


def test_every_bin_edge_is_the_next_bins_lower_edge() -> None:
    for index in range(OVERFLOW_BIN):
        upper = bin_upper_ms(index)
        assert upper is not None
        assert pdd_bin(upper - 1) == index
        assert pdd_bin(upper) == index + 1


def bins_of(values: list[int]) -> dict[int, int]:
    bins: dict[int, int] = {}
    for v in values:
        bins[pdd_bin(v)] = bins.get(pdd_bin(v), 0) + 1
    return bins


@pytest.mark.parametrize(
    ("values", "p95"),
    [
        ([], None),
        ([123], 123),  # rank 1; bin [120, 130) capped by the max 123
        # 20 values: rank ceil(19.0) = 19, the 19th is 190 ms: bin [190, 200) -> 200
        ([10 * i for i in range(1, 21)], 200),
        # 21 values: rank ceil(19.95) = 20: 200 ms, bin [200, 210) -> 210
        ([10 * i for i in range(1, 22)], 210),
        # a slow tail: 19 at 100 ms and 1 at 2.5 s: rank 19 is 100 ms -> 110
        ([100] * 19 + [2500], 110),
        # 18 at 100 ms and 2 at 2.5 s: rank 19 lands in [2500, 2600) -> capped 2500
        ([100] * 18 + [2500] * 2, 2500),
        # beyond 60 s the overflow bin answers the largest value
        ([100] * 18 + [61_000, 75_000], 75_000),
    ],
)
def test_p95_rule(values: list[int], p95: int | None) -> None:
    assert percentile_ms(bins_of(values), len(values), max(values, default=0)) == p95
