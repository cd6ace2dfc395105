"""lcr benchmarks, side by side on the same generated data (run: see the README).

Figures are printed by pytest-benchmark; nothing here asserts a timing.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lcr
import lcr.reference
from deckgen import numbers, prefixes, write_deck

DECK_ROWS = int(os.environ.get("LCR_BENCH_ROWS", "1000000"))
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def deck_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_deck(tmp_path_factory.mktemp("decks") / "deck.csv", DECK_ROWS)


@pytest.fixture(scope="session")
def deck(deck_file: Path) -> lcr.RateDeck:
    return lcr.RateDeck.from_csv(deck_file)


@pytest.fixture(scope="session")
def sample_numbers() -> list[str]:
    return numbers(prefixes(DECK_ROWS), 1_000_000)


@pytest.fixture(scope="session")
def reference_deck(deck_file: Path) -> lcr.reference.RateDeck:
    return lcr.reference.RateDeck.from_csv(deck_file)


@pytest.fixture(scope="session")
def plain_dict(deck_file: Path) -> dict[str, str]:
    out = {}
    with deck_file.open() as handle:
        next(handle)
        for line in handle:
            prefix, _, rate, *_ = line.split(",")
            out[prefix] = rate
    return out


def cycle(items: list[str]) -> Callable[[], str]:
    state = {"i": 0}

    def next_item() -> str:
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]

    return next_item


@pytest.mark.benchmark(group="single lookup")
def test_lookup_rust(benchmark: Any, deck: lcr.RateDeck, sample_numbers: list[str]) -> None:
    nxt = cycle(sample_numbers)
    benchmark(lambda: deck.lookup(nxt(), AT))


@pytest.mark.benchmark(group="single lookup")
def test_lookup_rust_now(benchmark: Any, deck: lcr.RateDeck, sample_numbers: list[str]) -> None:
    """``at`` left out (now): the softswitch's call, and the dict probe's terms."""
    nxt = cycle(sample_numbers)
    benchmark(lambda: deck.lookup(nxt()))


@pytest.mark.benchmark(group="single lookup")
def test_lookup_dict_probe(
    benchmark: Any, plain_dict: dict[str, str], sample_numbers: list[str]
) -> None:
    nxt = cycle(sample_numbers)

    def probe() -> str | None:
        number = nxt()
        for k in range(len(number), 0, -1):
            hit = plain_dict.get(number[:k])
            if hit is not None:
                return hit
        return None

    benchmark(probe)


@pytest.mark.benchmark(group="single lookup")
def test_lookup_reference(
    benchmark: Any, reference_deck: lcr.reference.RateDeck, sample_numbers: list[str]
) -> None:
    nxt = cycle(sample_numbers)
    benchmark(lambda: reference_deck.lookup(nxt(), AT))


LOOP = 1000


def fresh_chunks(items: list[str]) -> Callable[[], tuple[tuple[list[str]], dict[str, Any]]]:
    """Each round a new slice of ``LOOP`` numbers, so no round finds the last one's in cache."""
    state = {"i": 0}

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        start = state["i"]
        state["i"] = (start + LOOP) % (len(items) - LOOP)
        return (items[start : start + LOOP],), {}

    return setup


@pytest.mark.benchmark(group=f"single lookups, {LOOP} per round (time / {LOOP} = one lookup)")
def test_lookup_rust_loop(benchmark: Any, deck: lcr.RateDeck, sample_numbers: list[str]) -> None:
    """The per-call harness above costs about as much as a lookup; a plain loop does not."""
    lookup = deck.lookup

    def run(numbers: list[str]) -> None:
        for number in numbers:
            lookup(number)

    benchmark.pedantic(run, setup=fresh_chunks(sample_numbers), rounds=300, warmup_rounds=5)


@pytest.mark.benchmark(group=f"single lookups, {LOOP} per round (time / {LOOP} = one lookup)")
def test_lookup_dict_probe_loop(
    benchmark: Any, plain_dict: dict[str, str], sample_numbers: list[str]
) -> None:
    get = plain_dict.get

    def run(numbers: list[str]) -> None:
        for number in numbers:
            for k in range(len(number), 0, -1):
                if get(number[:k]) is not None:
                    break

    benchmark.pedantic(run, setup=fresh_chunks(sample_numbers), rounds=300, warmup_rounds=5)


@pytest.mark.benchmark(group="batch 1M numbers")
def test_lookup_many_1m(benchmark: Any, deck: lcr.RateDeck, sample_numbers: list[str]) -> None:
    result = benchmark.pedantic(deck.lookup_many, args=(sample_numbers, AT), rounds=5)
    assert len(result) == len(sample_numbers)


@pytest.mark.benchmark(group="batch 1M numbers")
def test_cost_many_1m(benchmark: Any, deck: lcr.RateDeck, sample_numbers: list[str]) -> None:
    durations = [(i * 7) % 600 for i in range(len(sample_numbers))]
    benchmark.pedantic(deck.cost_many, args=(sample_numbers, durations, AT), rounds=3)


@pytest.mark.benchmark(group="route, 5 carriers, lcr")
def test_route_5_carriers(
    benchmark: Any, tmp_path_factory: pytest.TempPathFactory, sample_numbers: list[str]
) -> None:
    folder = tmp_path_factory.mktemp("carriers")
    decks = {
        f"c{i}": lcr.RateDeck.from_csv(write_deck(folder / f"c{i}.csv", 200_000, seed=7 + i))
        for i in range(5)
    }
    table = lcr.RouteTable(
        [lcr.RouteEntry("", [lcr.Target(f"gw{i}", deck=f"c{i}") for i in range(5)])], decks
    )
    nxt = cycle(sample_numbers)
    benchmark(lambda: table.route(nxt(), AT, 1))


@pytest.mark.benchmark(group="load 1M-row CSV")
def test_load_csv(benchmark: Any, deck_file: Path) -> None:
    loaded = benchmark.pedantic(lcr.RateDeck.from_csv, args=(deck_file,), rounds=3)
    assert len(loaded) == DECK_ROWS


def test_memory_per_rate(deck_file: Path) -> None:
    """Resident memory per loaded rate, measured in a fresh process (printed, not asserted)."""
    code = (
        "import gc, resource, sys, lcr\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "gc.collect(); before = rss()\n"
        f"deck = lcr.RateDeck.from_csv({str(deck_file)!r})\n"
        "gc.collect(); after = rss()\n"
        "print(len(deck), after - before, deck.memory_bytes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows, rss, own = (int(x) for x in out.stdout.split())
    line = (
        f"\nmemory: {rows} rates, resident +{rss / 1e6:.1f} MB = {rss / rows:.1f} B/rate "
        f"(deck structures {own / rows:.1f} B/rate)"
    )
    print(line)
    sys.stderr.write(line + "\n")
    gc.collect()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
