"""Hypothesis holds the Rust core to ``lcr.reference``, and both to the invariants.

Decks, routing plans, numbers, times, durations and seeds are generated over a small digit
alphabet so that prefixes overlap, versions collide and every filter fires often.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lcr
import lcr.reference as ref
from lcr import RouteEntry, Target

UTC = dt.UTC
MOMENTS = [dt.datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4)]
digits = st.text(alphabet="1234", max_size=5)
numbers = st.builds(
    lambda plus, d: ("+" if plus else "") + d, st.booleans(), st.text("1234", max_size=8)
)
moments = st.sampled_from(MOMENTS) | st.builds(
    lambda m, s: m + dt.timedelta(seconds=s), st.sampled_from(MOMENTS), st.integers(-2, 2)
)
money = st.builds(lambda u, e: Decimal(u).scaleb(-e), st.integers(0, 10**7), st.integers(0, 6))
good_row = st.tuples(
    digits,
    st.sampled_from(["A", "B", " C "]),
    money,
    st.none() | money,
    st.none() | st.integers(1, 90),
    st.none() | st.integers(1, 90),
    st.none() | st.sampled_from(MOMENTS[:3]),
    st.none() | st.sampled_from(MOMENTS[1:]),
)
bad_row = st.tuples(
    st.sampled_from(["1", "2x", "+3", ""]),
    st.just("X"),
    st.sampled_from(["0.1", "-1", "abc", "0.0000001", "1e5", ""]),
    st.sampled_from(["", "0", "x"]),
    st.sampled_from(["", "0", "7", "+5", "99999"]),
    st.just(""),
    st.sampled_from(["", "2026-02-30", "2026-01-01T10:00Z", "2026-01-01 10:00:00+01:00"]),
    st.sampled_from(["", "2026-01-01"]),
)
rows = st.lists(good_row | bad_row, max_size=25)


def rate_view(rate: Any) -> tuple[object, ...] | None:
    if rate is None:
        return None
    return (
        rate.prefix,
        rate.destination,
        rate.rate,
        rate.connect_fee,
        rate.initial_increment,
        rate.subsequent_increment,
        rate.effective_from,
        rate.effective_to,
    )


def error_view(deck: Any) -> list[tuple[int, str | None, str]]:
    return [(e.line, e.column, e.reason) for e in deck.errors]


def build(impl: Any, data: list[tuple[object, ...]]) -> Any:
    try:
        return impl.RateDeck.from_rows(data, strict=False)
    except lcr.LcrError as e:
        return e


@given(rows, st.lists(numbers, max_size=10), moments, st.integers(0, 400))
def test_decks_agree(
    data: list[tuple[object, ...]], nums: list[str], at: dt.datetime, d: int
) -> None:
    fast, slow = build(lcr, data), build(ref, data)
    assert type(fast).__name__ == type(slow).__name__
    if isinstance(slow, Exception):
        assert str(fast) == str(slow)
        return
    assert error_view(fast) == error_view(slow)
    assert [rate_view(r) for r in fast.rows()] == [rate_view(r) for r in slow.rows()]
    assert (len(fast), fast.prefix_count) == (len(slow), slow.prefix_count)
    for n in nums:
        expected = slow.lookup(n, at)
        assert rate_view(fast.lookup(n, at)) == rate_view(expected)
        if expected is not None:
            assert fast.cost(n, d, at) == slow.cost(n, d, at) == expected.cost(d)
    assert [rate_view(r) for r in fast.lookup_many(nums, at)] == [
        rate_view(r) for r in slow.lookup_many(nums, at)
    ]
    durations = [d + i for i in range(len(nums))]
    assert fast.cost_many(nums, durations, at) == slow.cost_many(nums, durations, at)


@given(rows, numbers, moments)
def test_longest_prefix_in_force_wins(
    data: list[tuple[object, ...]], n: str, at: dt.datetime
) -> None:
    deck = build(ref, data)
    if isinstance(deck, Exception):
        return
    found = deck.lookup(n, at)
    body = n.lstrip("+")
    in_force = [
        r.prefix
        for r in deck.rows()
        if body.startswith(r.prefix)
        and (r.effective_from is None or r.effective_from <= at)
        and (r.effective_to is None or at < r.effective_to)
    ]
    if found is None:
        assert in_force == []
    else:
        assert len(found.prefix) == max(len(p) for p in in_force)


@given(good_row, st.integers(0, 10_000), st.integers(0, 10_000))
def test_cost_is_monotone_and_billing_never_short(row: tuple[object, ...], a: int, b: int) -> None:
    deck = lcr.RateDeck.from_rows([row], strict=False)
    assume(len(deck) == 1)  # a generated window may be empty (effective_to <= effective_from)
    rate = deck.rows()[0]
    short, long = sorted((a, b))
    assert rate.cost(short) <= rate.cost(long)
    assert rate.billed_seconds(long) >= long
    assert rate.billed_seconds(short) <= rate.billed_seconds(long)


GATEWAYS = ["g1", "g2", "g3", "g4", "g5"]
targets = st.lists(
    st.builds(
        Target,
        st.sampled_from(GATEWAYS),
        priority=st.integers(-2, 2),
        weight=st.integers(0, 5),
        deck=st.none() | st.sampled_from(["d0", "d1", "d2"]),
        enabled=st.booleans(),
    ),
    max_size=5,
    unique_by=lambda t: t.gateway,
)
entries = st.lists(
    st.builds(
        RouteEntry,
        digits,
        targets,
        strategy=st.sampled_from(["lcr", "priority", "weight"]),
        carry_through=st.booleans(),
        max_rate=st.none() | money,
        min_margin=st.none() | money | st.builds(lambda m: -m, money),
    ),
    max_size=6,
    unique_by=lambda e: e.prefix,
)
deck_rows = st.lists(good_row, max_size=12)


def candidate_view(result: Any) -> tuple[object, ...]:
    return (
        result.number,
        result.prefix,
        result.strategy,
        [
            (
                c.gateway,
                c.rate,
                c.priority,
                c.weight,
                c.deck,
                c.rate_prefix,
                c.destination,
                c.route_prefix,
            )
            for c in result.candidates
        ],
        [(r.gateway, r.reason, r.rate, r.route_prefix) for r in result.rejected],
        result.explain(),
    )


@given(
    entries,
    st.lists(deck_rows, min_size=3, max_size=3),
    st.lists(numbers, min_size=1, max_size=6),
    moments,
    st.integers(0, 2**64 - 1) | st.text(max_size=8),
    st.lists(st.sampled_from(GATEWAYS), max_size=2),
    st.none() | money,
    st.none() | money,
)
def test_routing_agrees(
    plan: list[RouteEntry],
    deck_data: list[list[tuple[object, ...]]],
    nums: list[str],
    at: dt.datetime,
    seed: int | str,
    exclude: list[str],
    sell: Decimal | None,
    floor: Decimal | None,
) -> None:
    def table(impl: Any) -> Any:
        decks = {
            f"d{i}": impl.RateDeck.from_rows(rows, strict=False) for i, rows in enumerate(deck_data)
        }
        return impl.RouteTable(plan, decks, min_margin=floor)

    fast, slow = table(lcr), table(ref)
    for n in nums:
        expected = slow.route(n, at, seed, exclude=exclude, sell_rate=sell)
        got = fast.route(n, at, seed, exclude=exclude, sell_rate=sell)
        assert candidate_view(got) == candidate_view(expected)
        chosen = {c.gateway for c in expected.candidates}
        rejected_here = {r.gateway for r in expected.rejected if r.route_prefix == expected.prefix}
        assert not chosen & rejected_here
        assert not chosen & set(exclude)
        assert len(chosen) == len(expected.candidates)
    seeds = [seed] * len(nums)
    assert [candidate_view(r) for r in fast.route_many(nums, at, seeds, exclude=exclude)] == [
        candidate_view(r) for r in slow.route_many(nums, at, seeds, exclude=exclude)
    ]


# --- CSV files: quoting, line ends, blank lines, BOM, text grammars ---------------------------

cell = st.sampled_from(
    ["44", "+447", "4a", "", " 1 ", "0.01", ".5", "1.", "+2", "-1", "1e3", "0.0000001", "007",
     "60", "+6", "0", "2026-01-01", "2026-01-01T10:00Z", "2026-02-01 00:00:00+01:00",
     "2026-01-01t10:00:00.5z", "2026-13-01", "UK", "U,K", 'say "hi"', "two\nlines"]
)  # fmt: skip
csv_rows = st.lists(st.lists(cell, min_size=0, max_size=8), max_size=12)
HEADER_FIELDS = (
    "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,"
    "effective_from,effective_to"
)


def csv_text(rows: list[list[str]], newline: str, blank_every: int, bom: bool) -> str:
    def quote(value: str) -> str:
        if any(c in value for c in ',"\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    lines = [HEADER_FIELDS]
    for i, row in enumerate(rows):
        if blank_every and i % blank_every == 0:
            lines.append("")
        lines.append(",".join(quote(v) for v in row))
    return ("\ufeff" if bom else "") + newline.join(lines) + newline


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    csv_rows,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.integers(0, 3),
    st.booleans(),
    st.sampled_from([(6, "up"), (2, "down"), (9, "half_up"), (0, "up")]),
)
def test_csv_decks_agree(
    tmp_path_factory: Any,
    rows: list[list[str]],
    newline: str,
    blank_every: int,
    bom: bool,
    options: tuple[int, str],
) -> None:
    precision, rounding = options
    path = tmp_path_factory.mktemp("csv") / "deck.csv"
    path.write_bytes(csv_text(rows, newline, blank_every, bom).encode())

    def load(impl: Any, strict: bool) -> Any:
        try:
            return impl.RateDeck.from_csv(
                path, strict=strict, precision=precision, rounding=rounding
            )
        except lcr.DeckError as e:
            return (e.line, e.column, e.reason)

    for strict in (True, False):
        fast, slow = load(lcr, strict), load(ref, strict)
        if isinstance(slow, tuple):
            assert fast == slow
            continue
        assert error_view(fast) == error_view(slow)
        assert [rate_view(r) for r in fast.rows()] == [rate_view(r) for r in slow.rows()]
        for r in slow.rows():
            for d in (0, 1, 59, 61, 3601):
                assert fast.cost(r.prefix, d, MOMENTS[1]) == slow.cost(r.prefix, d, MOMENTS[1])
