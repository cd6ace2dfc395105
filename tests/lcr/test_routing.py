"""Route tables through the public API, for the Rust core and the reference alike."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from types import ModuleType

import pytest

import lcr
from lcr import RouteEntry, Target

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def decks(impl: ModuleType) -> dict[str, lcr.RateDeck]:
    return {
        "a": impl.RateDeck.from_rows([("44", "UK", "0.010"), ("447", "UK Mobile", "0.080")]),
        "b": impl.RateDeck.from_rows([("44", "UK", "0.020"), ("447", "UK Mobile", "0.050")]),
        "c": impl.RateDeck.from_rows([("1", "US", "0.001")]),
    }


def gateways(result: lcr.RouteResult) -> list[str]:
    return [c.gateway for c in result.candidates]


def test_lcr_uses_each_carriers_own_longest_match(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [RouteEntry("4", [Target("a", deck="a"), Target("b", deck="b"), Target("c", deck="c")])],
        decks(impl),
    )
    fixed = table.route("+4420123", AT)
    assert gateways(fixed) == ["a", "b"]
    assert [c.rate for c in fixed.candidates] == [Decimal("0.01"), Decimal("0.02")]
    mobile = table.route("447912345", AT)
    assert gateways(mobile) == ["b", "a"]
    assert (mobile.candidates[0].rate_prefix, mobile.candidates[0].destination) == (
        "447",
        "UK Mobile",
    )
    assert [(r.gateway, r.reason) for r in mobile.rejected] == [("c", "no_rate")]
    assert (mobile.prefix, mobile.strategy, mobile.number) == ("4", "lcr", "447912345")


def test_lcr_ties_break_by_priority_then_gateway(impl: ModuleType) -> None:
    same = impl.RateDeck.from_rows([("4", "X", "0.01")])
    table = impl.RouteTable(
        [
            RouteEntry(
                "4",
                [
                    Target("z", priority=1, deck="d"),
                    Target("y", priority=2, deck="d"),
                    Target("x", priority=1, deck="d"),
                    Target("no-deck"),
                ],
            )
        ],
        {"d": same},
    )
    assert gateways(table.route("4", AT)) == ["x", "z", "y", "no-deck"]


def test_priority_strategy(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [
            RouteEntry(
                "",
                [Target("a", priority=2), Target("b", priority=1, weight=1), Target("c", 1, 5)],
                strategy="priority",
            )
        ]
    )
    assert gateways(table.route("123", AT)) == ["c", "b", "a"]


def test_filters_are_recorded_with_reasons(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [
            RouteEntry(
                "44",
                [
                    Target("a", deck="a"),
                    Target("b", deck="b"),
                    Target("off", enabled=False),
                    Target("c", deck="c"),
                    Target("x"),
                ],
                max_rate=Decimal("0.06"),
                min_margin=Decimal("0.015"),
            )
        ],
        decks(impl),
    )
    result = table.route("447900", AT, exclude=["x"], sell_rate=Decimal("0.07"))
    assert gateways(result) == ["b"]
    assert [(r.gateway, r.reason, r.rate) for r in result.rejected] == [
        ("a", "above_max_rate", Decimal("0.08")),
        ("off", "disabled", None),
        ("c", "no_rate", None),
        ("x", "excluded", None),
    ]
    squeezed = table.route("447900", AT, exclude=["x"], sell_rate=Decimal("0.06"))
    assert [(r.gateway, r.reason) for r in squeezed.rejected][:2] == [
        ("a", "above_max_rate"),
        ("b", "below_min_margin"),
    ]
    assert squeezed.candidates == ()
    text = squeezed.explain()
    assert "below_min_margin" in text
    assert "route prefix '44'" in text


def test_carry_through_falls_back_to_shorter_routes(impl: ModuleType) -> None:
    entries = [
        RouteEntry("447", [Target("off", enabled=False)], carry_through=True),
        RouteEntry("44", [Target("b", deck="b")]),
        RouteEntry("4", [Target("a", deck="a")]),
    ]
    table = impl.RouteTable(entries, decks(impl))
    result = table.route("447912", AT)
    assert (result.prefix, gateways(result)) == ("44", ["b"])
    assert [(r.gateway, r.route_prefix) for r in result.rejected] == [("off", "447")]
    stop = impl.RouteTable(
        [RouteEntry("447", [Target("off", enabled=False)]), *entries[1:]], decks(impl)
    )
    stopped = stop.route("447912", AT)
    assert (stopped.prefix, stopped.candidates) == ("447", ())
    nothing = table.route("33", AT)
    assert (nothing.prefix, nothing.candidates, nothing.rejected) == (None, (), ())
    assert "no route matches" in nothing.explain()


def test_weighted_order_is_reproducible_and_converges(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [
            RouteEntry(
                "",
                [
                    Target("a", weight=60),
                    Target("b", weight=30),
                    Target("c", weight=10),
                    Target("spare", weight=0),
                ],
                strategy="weight",
            )
        ]
    )
    assert gateways(table.route("1", AT, "call-id-1@host")) == gateways(
        table.route("1", AT, "call-id-1@host")
    )
    firsts = Counter(gateways(table.route("1", AT, seed))[0] for seed in range(6000))
    for gateway, share in [("a", 0.6), ("b", 0.3), ("c", 0.1)]:
        assert abs(firsts[gateway] / 6000 - share) < 0.03, firsts
    assert all(gateways(table.route("1", AT, s))[-1] == "spare" for s in range(50))


def test_route_many_matches_route(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [RouteEntry("4", [Target("a", deck="a"), Target("b", deck="b")], strategy="weight")],
        decks(impl),
    )
    numbers = ["4420", "447912", "33"]
    seeds = [1, "two", 3]
    many = table.route_many(numbers, AT, seeds)
    assert [gateways(r) for r in many] == [
        gateways(table.route(n, AT, s)) for n, s in zip(numbers, seeds, strict=True)
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([RouteEntry("1"), RouteEntry("1")], "defined twice"),
        ([RouteEntry("1", [Target("a"), Target("a")])], "twice"),
        ([RouteEntry("1x")], "not a digit string"),
        ([RouteEntry("1", strategy="cheapest")], "strategy must be"),  # type: ignore[arg-type]
        ([RouteEntry("1", [Target("a", deck="missing")])], "unknown deck"),
    ],
)
def test_bad_plans_are_refused(impl: ModuleType, entries: list[RouteEntry], message: str) -> None:
    with pytest.raises(lcr.LcrError, match=message):
        impl.RouteTable(entries, {})


def test_money_limits_refuse_floats_and_route_many_checks_margin(impl: ModuleType) -> None:
    with pytest.raises(lcr.LcrError, match="floats are refused"):
        impl.RouteTable([RouteEntry("4", [Target("a", deck="a")], max_rate=0.05)], decks(impl))  # type: ignore[arg-type]
    table = impl.RouteTable(
        [RouteEntry("4", [Target("a", deck="a")], min_margin=Decimal("0.01"))], decks(impl)
    )
    [result] = table.route_many(["4420"], AT, [1], sell_rate=Decimal("0.015"))
    assert [(r.gateway, r.reason) for r in result.rejected] == [("a", "below_min_margin")]
