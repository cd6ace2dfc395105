"""Single and batch lookups on the real E.164 prefixes of ``phonenumbers`` (see realdeck.py),
side by side with what a Python user would otherwise write: a dict probe, a marisa-trie and
numpy's ``searchsorted`` per prefix length.

Needs the ``bench`` extra (``pip install -e ".[test,bench]"``). Figures are printed by
pytest-benchmark and by ``test_real_side_by_side``, which times every contender in turns
within one run (the machine is shared and drifts, so only ratios within one run compare);
nothing here asserts a timing. The assertions check that the contenders agree.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lcr

pytest.importorskip("phonenumbers", reason="the real-prefix deck needs the bench extra")
marisa_trie = pytest.importorskip("marisa_trie", reason="needs the bench extra")
np = pytest.importorskip("numpy", reason="needs the bench extra")

from realdeck import numbers, real_prefixes, write_deck  # noqa: E402

NUMBERS = int(os.environ.get("LCR_BENCH_REAL_NUMBERS", "1000000"))
#: Turns of the side-by-side comparison; the figures are the medians over them.
TURNS = int(os.environ.get("LCR_BENCH_TURNS", "7"))
#: Numbers per turn for the single-lookup contenders.
SINGLE = 100_000
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
LOOP = 1000


@pytest.fixture(scope="session")
def real_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_deck(tmp_path_factory.mktemp("real") / "real.csv")


@pytest.fixture(scope="session")
def real_deck(real_file: Path) -> lcr.RateDeck:
    return lcr.RateDeck.from_csv(real_file)


@pytest.fixture(scope="session")
def real_numbers() -> list[str]:
    return numbers(real_prefixes(), NUMBERS)


@pytest.fixture(scope="session")
def rate_of(real_file: Path) -> dict[str, str]:
    """Prefix -> rate text, as a Python user would load the CSV."""
    out = {}
    with real_file.open() as handle:
        next(handle)
        for line in handle:
            prefix, _, rate, *_ = line.split(",")
            out[prefix] = rate
    return out


def dict_probe(rate_of: dict[str, str]) -> Callable[[str], tuple[str, str] | None]:
    """The longest prefix by slicing, longest first: the loop a Python user writes."""
    get = rate_of.get

    def probe(number: str) -> tuple[str, str] | None:
        for k in range(len(number), 0, -1):
            rate = get(number[:k])
            if rate is not None:
                return number[:k], rate
        return None

    return probe


def marisa_probe(rate_of: dict[str, str]) -> Callable[[str], tuple[str, str] | None]:
    """marisa-trie's prefix walk (the faster of its two prefix calls), rates by key id."""
    trie = marisa_trie.Trie(list(rate_of))
    rates = [""] * len(trie)
    for prefix, rate in rate_of.items():
        rates[trie[prefix]] = rate
    walk = trie.iter_prefixes_with_ids

    def probe(number: str) -> tuple[str, str] | None:
        last = None
        for last in walk(number):  # noqa: B007 - the longest comes last
            pass
        return None if last is None else (last[0], rates[last[1]])

    return probe


class SortedByLength:
    """numpy: the prefixes of each length as a sorted int64 array; a batch of numbers is
    cut to each length and found with ``searchsorted``, longest length winning."""

    def __init__(self, rate_of: dict[str, str]) -> None:
        by_length: dict[int, list[tuple[int, int]]] = {}
        self.rates = list(rate_of.values())
        for i, prefix in enumerate(rate_of):
            by_length.setdefault(len(prefix), []).append((int(prefix), i))
        self.tables = {}
        for length, pairs in sorted(by_length.items()):
            pairs.sort()
            keys = np.array([k for k, _ in pairs], dtype=np.int64)
            ids = np.array([i for _, i in pairs], dtype=np.int64)
            self.tables[length] = (keys, ids)

    def lookup_many(self, dialled: list[str]) -> Any:
        """The rate id of each number (-1: none)."""
        values = np.array(dialled, dtype=np.int64)
        lengths = np.array([len(n) for n in dialled], dtype=np.int64)
        found = np.full(len(dialled), -1, dtype=np.int64)
        for length, (keys, ids) in self.tables.items():  # shortest first: longer overwrite
            cut = lengths - length
            usable = cut >= 0
            heads = values // (10 ** np.where(usable, cut, 0))
            at = np.minimum(np.searchsorted(keys, heads), len(keys) - 1)
            hit = usable & (keys[at] == heads)
            found[hit] = ids[at[hit]]
        return found


def fresh_chunks(items: list[str]) -> Callable[[], tuple[tuple[list[str]], dict[str, Any]]]:
    """Each round a new slice of ``LOOP`` numbers, so no round finds the last one's in cache."""
    state = {"i": 0}

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        start = state["i"]
        state["i"] = (start + LOOP) % (len(items) - LOOP)
        return (items[start : start + LOOP],), {}

    return setup


def loop_of(lookup: Callable[[str], object]) -> Callable[[list[str]], None]:
    def run(dialled: list[str]) -> None:
        for number in dialled:
            lookup(number)

    return run


GROUP = f"real deck: single lookups, {LOOP} per round (time / {LOOP} = one lookup)"


@pytest.mark.benchmark(group=GROUP)
def test_real_lookup(benchmark: Any, real_deck: lcr.RateDeck, real_numbers: list[str]) -> None:
    """``at`` left out (now): the softswitch's call."""
    benchmark.pedantic(
        loop_of(real_deck.lookup), setup=fresh_chunks(real_numbers), rounds=300, warmup_rounds=5
    )


@pytest.mark.benchmark(group=GROUP)
def test_real_dict_probe(benchmark: Any, rate_of: dict[str, str], real_numbers: list[str]) -> None:
    benchmark.pedantic(
        loop_of(dict_probe(rate_of)), setup=fresh_chunks(real_numbers), rounds=300, warmup_rounds=5
    )


@pytest.mark.benchmark(group=GROUP)
def test_real_marisa(benchmark: Any, rate_of: dict[str, str], real_numbers: list[str]) -> None:
    benchmark.pedantic(
        loop_of(marisa_probe(rate_of)),
        setup=fresh_chunks(real_numbers),
        rounds=300,
        warmup_rounds=5,
    )


@pytest.mark.benchmark(group="real deck: batch of all numbers")
def test_real_lookup_many(benchmark: Any, real_deck: lcr.RateDeck, real_numbers: list[str]) -> None:
    result = benchmark.pedantic(real_deck.lookup_many, args=(real_numbers,), rounds=5)
    assert len(result) == len(real_numbers)


@pytest.mark.benchmark(group="real deck: batch of all numbers")
def test_real_numpy_searchsorted(
    benchmark: Any, rate_of: dict[str, str], real_numbers: list[str]
) -> None:
    table = SortedByLength(rate_of)
    result = benchmark.pedantic(table.lookup_many, args=(real_numbers,), rounds=3)
    assert len(result) == len(real_numbers)


def test_contenders_agree(
    real_deck: lcr.RateDeck, rate_of: dict[str, str], real_numbers: list[str]
) -> None:
    """The same longest prefix and rate from every contender, and some numbers match none."""
    sample = real_numbers[:20_000]
    by_dict = list(map(dict_probe(rate_of), sample))
    by_marisa = list(map(marisa_probe(rate_of), sample))
    by_deck = [real_deck.lookup(n, AT) for n in sample]
    batch = real_deck.lookup_many(sample, AT)
    table = SortedByLength(rate_of)
    by_numpy = table.lookup_many(sample)
    assert by_dict == by_marisa
    for i, (expected, rate) in enumerate(zip(by_dict, by_deck, strict=True)):
        assert (None if rate is None else (rate.prefix, str(rate.rate))) == (
            None if expected is None else (expected[0], f"{expected[1]}0")
        ), sample[i]
        assert batch[i] == rate
        assert (None if by_numpy[i] < 0 else table.rates[by_numpy[i]]) == (
            None if expected is None else expected[1]
        )
    matched = sum(found is not None for found in by_dict)
    assert 0.9 * len(sample) < matched < len(sample)


def test_real_side_by_side(
    real_deck: lcr.RateDeck, rate_of: dict[str, str], real_numbers: list[str]
) -> None:
    """Every contender in turns, ``TURNS`` times, and where a single lookup's time goes.

    The stages are told apart by calls that stop early: an empty number (the call, its
    arguments and, with ``at`` left out, the clock; with ``at``, its conversion), a number
    with an unassigned country code (and the probes, finding nothing; all in cache, as it is
    the same number) and a dialled number (and the cache misses of its probes, and the
    `Rate` made).
    """
    lookup = real_deck.lookup

    def with_at(dialled: list[str]) -> None:
        for number in dialled:
            lookup(number, AT)

    unassigned = ["2101234567"] * SINGLE
    empty = [""] * SINGLE
    singles: dict[str, tuple[Callable[[list[str]], None], list[str] | None]] = {
        "deck.lookup(number)": (loop_of(lookup), None),
        "deck.lookup(number, at)": (with_at, None),
        "dict probe": (loop_of(dict_probe(rate_of)), None),
        "marisa-trie": (loop_of(marisa_probe(rate_of)), None),
        "stage: lookup('') (call + clock)": (loop_of(lookup), empty),
        "stage: lookup('', at) (call, at)": (with_at, empty),
        "stage: lookup(unassigned) (+ probes)": (loop_of(lookup), unassigned),
    }
    table = SortedByLength(rate_of)
    times: dict[str, list[float]] = {name: [] for name in singles}
    times["deck.lookup_many (all)"] = []
    times["numpy searchsorted (all)"] = []
    for turn in range(TURNS):
        start = (turn * SINGLE) % max(1, len(real_numbers) - SINGLE)
        chunk = real_numbers[start : start + SINGLE]
        for name, (run, fixed) in singles.items():
            dialled = fixed if fixed is not None else chunk
            began = time.perf_counter()
            run(dialled)
            times[name].append((time.perf_counter() - began) / len(dialled))
        for name, batch in (
            ("deck.lookup_many (all)", real_deck.lookup_many),
            ("numpy searchsorted (all)", table.lookup_many),
        ):
            began = time.perf_counter()
            batch(real_numbers)
            times[name].append((time.perf_counter() - began) / len(real_numbers))
    lines = [
        f"\nreal deck: {len(real_deck)} prefixes, {len(real_numbers)} numbers, {TURNS} turns",
        f"{'contender':42} {'median':>9} {'min':>9} {'max':>9} {'M/s':>6}",
    ]
    for name, seconds in times.items():
        median = statistics.median(seconds)
        lines.append(
            f"{name:42} {median * 1e9:7.0f}ns {min(seconds) * 1e9:7.0f}ns "
            f"{max(seconds) * 1e9:7.0f}ns {1e-6 / median:6.2f}"
        )
    deck_times = times["deck.lookup(number)"]
    for rival in ("dict probe", "marisa-trie"):
        ratios = [r / d for r, d in zip(times[rival], deck_times, strict=True)]
        lines.append(
            f"{rival} / deck.lookup, per turn: median {statistics.median(ratios):.1f}x "
            f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x)"
        )
    print("\n".join(lines))
    assert all(len(seconds) == TURNS for seconds in times.values())
