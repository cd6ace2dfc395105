"""Hypothesis holds the Rust core's routing policy to ``lcr.reference``, and both to a
brute-force oracle of which route wins.

Plans mix caller prefixes, time windows in zones with DST, half-hour offsets and old
local-mean-time offsets, priority tiers and margin durations; moments cluster around the
windows' edges and DST transitions so every rule fires often.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import lcr
import lcr.reference as ref
from lcr import RouteEntry, Target, TimeWindow

UTC = dt.UTC
WINDOWS = [
    TimeWindow("mon-fri", "08:00", "18:00", "Europe/London"),
    TimeWindow("fri", "22:00", "06:00", "America/New_York"),
    TimeWindow("sun", "01:30", "02:30", "Europe/London"),  # in the spring gap, the fall fold
    TimeWindow("*", "00:00", "12:00", "Asia/Kolkata"),  # +05:30, and +05:53:28 before 1880
    TimeWindow("sat,sun"),
    TimeWindow("mon-wed,fri", "23:59", "00:01", "Australia/Lord_Howe"),  # 30-minute DST
    TimeWindow(),  # always
]
BASES = [
    dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # London springs forward
    dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # London falls back
    dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York springs forward
    dt.datetime(2026, 3, 7, 3, 0, tzinfo=UTC),  # Friday 22:00 in New York
    dt.datetime(2026, 1, 2, 8, 0, tzinfo=UTC),  # a Friday morning in London
    dt.datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe falls back half an hour
    dt.datetime(1850, 1, 1, 6, 6, tzinfo=UTC),  # Kolkata local mean time: 11:59:28 local
]
moments = st.builds(
    lambda base, minutes, seconds: base + dt.timedelta(minutes=minutes, seconds=seconds),
    st.sampled_from(BASES),
    st.integers(-2, 2) | st.integers(-200, 200),
    st.integers(0, 59),
)
# Few prefixes and caller prefixes, so that routes tie and the tie-breaks decide.
digits = st.sampled_from(["", "1", "12", "2"])
callers = st.none() | st.text(alphabet="123", max_size=4)
money = st.builds(lambda u, e: Decimal(u).scaleb(-e), st.integers(0, 10**5), st.integers(0, 6))
GATEWAYS = ["g1", "g2", "g3", "g4"]
targets = st.lists(
    st.builds(
        Target,
        st.sampled_from(GATEWAYS),
        priority=st.integers(0, 2),
        weight=st.integers(0, 4),
        deck=st.none() | st.sampled_from(["d0", "d1"]),
        enabled=st.booleans(),
    ),
    max_size=4,
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
        caller_prefix=st.sampled_from(["", "1", "12", "+3"]),
        windows=st.lists(st.sampled_from(WINDOWS), max_size=2),
        margin_duration=st.lists(st.sampled_from([1, 6, 30, 61, 600]), max_size=2),
    ),
    max_size=7,
    unique_by=lambda e: (
        e.prefix,
        e.caller_prefix.lstrip("+"),
        frozenset(w.key for w in e.windows),
    ),
)
deck_row = st.tuples(
    st.text(alphabet="12", max_size=3),
    st.just("X"),
    money,
    st.none() | money,
    st.none() | st.integers(1, 90),
    st.none() | st.integers(1, 90),
)
deck_spec = st.tuples(
    st.lists(deck_row, max_size=6),
    st.sampled_from([0, 2, 6, 9]),
    st.sampled_from(["up", "down", "half_up"]),
)


def view(result: Any) -> tuple[object, ...]:
    return (
        result.number,
        result.prefix,
        result.caller_prefix,
        result.route,
        result.strategy,
        [(c.gateway, c.rate, c.rate_prefix, c.route_prefix, c.route) for c in result.candidates],
        [(r.gateway, r.reason, r.rate, r.route, r.duration) for r in result.rejected],
        result.explain(),
    )


def build(impl: Any, plan: list[RouteEntry], specs: list[Any], **kwargs: Any) -> Any:
    decks = {
        f"d{i}": impl.RateDeck.from_rows(rows, strict=False, precision=p, rounding=r)
        for i, (rows, p, r) in enumerate(specs)
    }
    return impl.RouteTable(plan, decks, **kwargs)


@given(
    entries,
    st.lists(deck_spec, min_size=3, max_size=3),
    st.lists(st.tuples(st.text("12", max_size=5), callers, moments), min_size=1, max_size=5),
    st.integers(0, 2**64 - 1),
    st.none() | money,
    st.lists(st.sampled_from([6, 60]), max_size=2),
    st.none() | st.integers(0, 700),
)
def test_policy_agrees(
    plan: list[RouteEntry],
    specs: list[Any],
    calls: list[tuple[str, str | None, dt.datetime]],
    seed: int,
    floor: Decimal | None,
    default_durations: list[int],
    acd: int | None,
) -> None:
    kwargs = {"min_margin": floor, "margin_duration": default_durations}
    fast, slow = build(lcr, plan, specs[:2], **kwargs), build(ref, plan, specs[:2], **kwargs)
    sell_deck = ref.RateDeck.from_rows(specs[2][0], strict=False, precision=specs[2][1])
    sells = [sell_deck.lookup(number, at) for number, _, at in calls]
    for (number, caller, at), sell in zip(calls, sells, strict=True):
        expected = slow.route(number, at, seed, caller=caller, sell=sell, acd=acd)
        assert view(fast.route(number, at, seed, caller=caller, sell=sell, acd=acd)) == view(
            expected
        )
    numbers = [c[0] for c in calls]
    args: dict[str, Any] = {
        "callers": [c[1] for c in calls],
        "sell": sells,
        "acd": [acd] * len(calls),
    }
    many_at = [c[2] for c in calls]
    seeds = [seed] * len(calls)
    assert [view(r) for r in fast.route_many(numbers, many_at, seeds, **args)] == [
        view(r) for r in slow.route_many(numbers, many_at, seeds, **args)
    ]
    one_at = calls[0][2]
    assert [view(r) for r in fast.route_many(numbers, one_at, seeds, **args)] == [
        view(r) for r in slow.route_many(numbers, one_at, seeds, **args)
    ]


def oracle(plan: list[RouteEntry], number: str, caller: str | None, at: dt.datetime) -> int | None:
    """Which route is chosen, straight from the rule: filter, sort, fall through."""
    applying = [
        i
        for i, e in enumerate(plan)
        if number.startswith(e.prefix)
        and (caller or "").startswith(e.caller_prefix.lstrip("+"))
        and (not e.windows or any(w.contains(at) for w in e.windows))
    ]
    applying.sort(
        key=lambda i: (
            -len(plan[i].prefix),
            -len(plan[i].caller_prefix.lstrip("+")),
            not plan[i].windows,
            i,
        )
    )
    chosen = None
    for i in applying:
        chosen = i
        if any(t.enabled for t in plan[i].targets) or not plan[i].carry_through:
            break
    return chosen


simple_targets = st.lists(st.builds(Target, st.sampled_from(GATEWAYS), enabled=st.booleans()),
                          max_size=2, unique_by=lambda t: t.gateway)  # fmt: skip
simple_entries = st.lists(
    st.builds(
        RouteEntry,
        digits,
        simple_targets,
        carry_through=st.booleans(),
        caller_prefix=st.sampled_from(["", "1", "12", "+3"]),
        windows=st.lists(st.sampled_from(WINDOWS), max_size=2),
    ),
    max_size=8,
    unique_by=lambda e: (
        e.prefix,
        e.caller_prefix.lstrip("+"),
        frozenset(w.key for w in e.windows),
    ),
)


@given(simple_entries, st.text("12", max_size=4), callers, moments)
def test_which_route_wins(
    plan: list[RouteEntry], number: str, caller: str | None, at: dt.datetime
) -> None:
    chosen = oracle(plan, number, caller, at)
    for impl in (lcr, ref):
        result = impl.RouteTable(plan).route(number, at, 1, caller=caller)
        assert result.route == chosen
        if chosen is not None:
            assert result.prefix == plan[chosen].prefix
            usable = [t.gateway for t in plan[chosen].targets if t.enabled]
            assert sorted(c.gateway for c in result.candidates) == sorted(usable)
            assert all(c.route == chosen for c in result.candidates)
        else:
            assert result.candidates == ()
