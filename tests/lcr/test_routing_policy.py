"""Routing policy through the public API, for the Rust core and the reference alike: priority
tiers in weighted splits, caller-number routes, time windows (and DST), which route wins,
per-number times in ``route_many`` and true-cost margins."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

import lcr
import lcr.reference as ref
from lcr import RouteEntry, Target, TimeWindow

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # a Monday
UTC = dt.UTC


def gateways(result: Any) -> list[str]:
    return [c.gateway for c in result.candidates]


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- 1. priority tiers with weighted splits ---------------------------------------------------


def tiers(impl: ModuleType) -> Any:
    return impl.RouteTable(
        [
            RouteEntry(
                "",
                [Target("C", priority=2), Target("A", 1, 70), Target("B", 1, 30)],
                strategy="weight",
            )
        ]
    )


def test_weighted_split_inside_the_first_tier(impl: ModuleType) -> None:
    table = tiers(impl)
    calls = 100_000
    results = table.route_many(["1"] * calls, AT, range(calls))
    firsts = Counter(gateways(r)[0] for r in results)
    assert firsts["C"] == 0, firsts
    assert abs(firsts["A"] / calls - 0.70) < 0.01, firsts
    assert abs(firsts["B"] / calls - 0.30) < 0.01, firsts
    assert all(gateways(r)[2] == "C" for r in results[:1000])


def test_the_next_tier_takes_over_when_the_first_is_not_usable(impl: ModuleType) -> None:
    table = tiers(impl)
    assert gateways(table.route("1", AT, 7, exclude=["A"])) == ["B", "C"]
    assert gateways(table.route("1", AT, 7, exclude=["A", "B"])) == ["C"]


def test_weight_zero_is_last_within_its_tier(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [
            RouteEntry(
                "",
                [Target("spare1", 1, 0), Target("a", 1, 5), Target("spare2", 2, 0)],
                strategy="weight",
            )
        ]
    )
    for seed in range(20):
        assert gateways(table.route("1", AT, seed)) == ["a", "spare1", "spare2"]


def plain_weighted_order(targets: list[Target], seed: int) -> list[str]:
    """The weighted order before tiers existed (one draw over all targets, weight 0 last by
    priority then gateway): one priority everywhere must still give exactly this."""
    rng = ref._SplitMix64(seed)
    weighted = [t for t in targets if t.weight > 0]
    zero = sorted((t for t in targets if t.weight == 0), key=lambda t: (t.priority, t.gateway))
    ordered = []
    while weighted:
        pick = rng.next() % sum(t.weight for t in weighted)
        chosen = len(weighted) - 1
        for n, t in enumerate(weighted):
            if pick < t.weight:
                chosen = n
                break
            pick -= t.weight
        ordered.append(weighted.pop(chosen))
    return [t.gateway for t in ordered + zero]


def test_one_tier_keeps_the_plain_weighted_order(impl: ModuleType) -> None:
    targets = [Target(g, 3, w) for g, w in [("x", 4), ("y", 0), ("z", 1), ("w", 9), ("v", 0)]]
    table = impl.RouteTable([RouteEntry("", targets, strategy="weight")])
    for seed in [*range(200), 2**64 - 1]:
        assert gateways(table.route("5", AT, seed)) == plain_weighted_order(targets, seed)


# --- 2. caller-number routes ------------------------------------------------------------------


def caller_table(impl: ModuleType) -> Any:
    return impl.RouteTable(
        [
            RouteEntry("44", [Target("default")]),
            RouteEntry("44", [Target("from-fr")], caller_prefix="+33"),
            RouteEntry("44", [Target("from-paris")], caller_prefix="331"),
            RouteEntry("4", [Target("short-from-paris")], caller_prefix="3312"),
        ]
    )


@pytest.mark.parametrize(
    ("caller", "expected", "caller_prefix"),
    [
        (None, "default", ""),
        ("", "default", ""),
        ("4930", "default", ""),
        ("+33612", "from-fr", "33"),
        ("33123", "from-paris", "331"),  # the longest caller_prefix of the longest prefix
        ("3", "default", ""),
    ],
)
def test_caller_prefix_routes(
    impl: ModuleType, caller: str | None, expected: str, caller_prefix: str
) -> None:
    result = caller_table(impl).route("4420", AT, caller=caller)
    assert (gateways(result), result.prefix, result.caller_prefix) == (
        [expected],
        "44",
        caller_prefix,
    )


def test_a_shorter_prefix_is_used_only_where_it_is_the_longest_that_applies(
    impl: ModuleType,
) -> None:
    table = caller_table(impl)
    assert gateways(table.route("4920", AT, caller="33129")) == ["short-from-paris"]
    assert table.route("4920", AT, caller="339").prefix is None
    many = table.route_many(["4420", "4920", "4420"], AT, [1, 2, 3], callers=["33", "3312", None])
    assert [gateways(r) for r in many] == [["from-fr"], ["short-from-paris"], ["default"]]
    with pytest.raises(lcr.LcrError, match="3 numbers but 2 callers"):
        table.route_many(["1", "2", "3"], AT, callers=["1", "2"])


def test_carry_through_skips_routes_that_do_not_apply(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [
            RouteEntry(
                "44", [Target("off", enabled=False)], caller_prefix="33", carry_through=True
            ),
            RouteEntry("44", [Target("other")], caller_prefix="49"),
            RouteEntry("44", [Target("default")]),
        ]
    )
    result = table.route("4420", AT, caller="331")
    assert (gateways(result), result.route, result.caller_prefix) == (["default"], 2, "")
    assert [(r.gateway, r.reason, r.route) for r in result.rejected] == [("off", "disabled", 0)]
    assert "#0" in result.explain()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([RouteEntry("1", caller_prefix="3"), RouteEntry("1", caller_prefix="+3")], "for caller"),
        ([RouteEntry("1", caller_prefix="3x")], "caller_prefix '3x' is not a digit string"),
        (
            [
                RouteEntry("1", windows=[TimeWindow("sat")]),
                RouteEntry("1", windows=[TimeWindow("sat")]),
            ],
            "defined twice with the same windows",
        ),
        (
            [RouteEntry("1", margin_duration=[0])],
            r"route prefix '1': margin_duration must be whole seconds 1..=86400, got 0",
        ),
    ],
)
def test_bad_policy_plans_are_refused(
    impl: ModuleType, entries: list[RouteEntry], message: str
) -> None:
    with pytest.raises(lcr.LcrError, match=message):
        impl.RouteTable(entries)


def test_same_prefix_routes_differing_only_in_windows_are_allowed(impl: ModuleType) -> None:
    table = impl.RouteTable(
        [
            RouteEntry("1", [Target("day")], windows=[TimeWindow(start="08:00", end="20:00")]),
            RouteEntry("1", [Target("night")], windows=[TimeWindow(start="20:00", end="08:00")]),
        ]
    )
    assert len(table) == 2
    assert gateways(table.route("1", utc("2026-06-01T09:00"))) == ["day"]
    assert gateways(table.route("1", utc("2026-06-01T21:00"))) == ["night"]


def test_a_bad_caller_is_an_error_naming_it(impl: ModuleType) -> None:
    table = caller_table(impl)
    with pytest.raises(lcr.LcrError, match="caller: invalid number"):
        table.route("4420", AT, caller="33a")
    with pytest.raises(lcr.LcrError, match=r"callers\[1\]: invalid number"):
        table.route_many(["4420", "4420"], AT, callers=["33", "x"])


# --- 3. time windows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": "funday"}, "TimeWindow days: 'funday'"),
        ({"days": "mon-"}, "TimeWindow days"),
        ({"days": ""}, "TimeWindow days: empty item"),
        ({"days": "mon,,fri"}, "TimeWindow days: empty item"),
        ({"start": "25:00"}, "TimeWindow start: '25:00' is not a time of day"),
        ({"start": "24:00"}, "TimeWindow start"),
        ({"start": "8h"}, "TimeWindow start: expected HH:MM"),
        ({"end": "24:01"}, "TimeWindow end"),
        ({"end": "12:60"}, "TimeWindow end"),
        ({"start": "10:00", "end": "10:00"}, "TimeWindow end: '10:00' equals start"),
        ({"tz": "Mars/Olympus_Mons"}, "TimeWindow tz: unknown time zone 'Mars/Olympus_Mons'"),
        ({"tz": "../etc/passwd"}, "TimeWindow tz: unknown time zone"),
        ({"tz": ""}, "TimeWindow tz"),
    ],
)
def test_bad_windows_name_the_field(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(lcr.LcrError, match=message):
        TimeWindow(**kwargs)


@pytest.mark.parametrize(
    ("days", "mask"),
    [
        ("mon-sun", 0b1111111),
        ("*", 0b1111111),
        ("mon-fri", 0b0011111),
        ("sat,sun", 0b1100000),
        ("mon-wed,fri", 0b0010111),
        ("Fri-Mon", 0b1110001),
        (" tue ", 0b0000010),
    ],
)
def test_day_lists(days: str, mask: int) -> None:
    assert TimeWindow(days).key[0] == mask
    assert TimeWindow(days) == TimeWindow(days)


@pytest.mark.parametrize(
    ("instant", "inside"),
    [
        ("2026-06-05T20:59", False),  # Friday 21:59 BST
        ("2026-06-05T21:00", True),  # Friday 22:00 BST
        ("2026-06-06T04:59", True),  # Saturday 05:59 BST: the Friday window, after midnight
        ("2026-06-06T05:00", False),  # Saturday 06:00
        ("2026-06-06T21:30", False),  # Saturday 22:30: Saturday is not listed
        ("2026-06-04T22:00", False),  # Thursday 23:00
        ("2026-06-05T02:00", False),  # Friday 03:00: Thursday's night is not listed
    ],
)
def test_a_window_crossing_midnight_belongs_to_the_day_it_starts(
    instant: str, inside: bool
) -> None:
    window = TimeWindow("fri", "22:00", "06:00", "Europe/London")
    assert window.contains(utc(instant)) is inside


@pytest.mark.parametrize(
    ("window", "instant", "inside"),
    [
        # Europe/London springs forward on 2026-03-29 at 01:00 UTC: 01:00 GMT -> 02:00 BST.
        (("sun", "01:30", "03:00"), "2026-03-29T00:59:59", False),  # 00:59:59 GMT
        (("sun", "01:30", "03:00"), "2026-03-29T01:00", True),  # 02:00 BST: opens at the jump
        (("sun", "00:30", "01:30"), "2026-03-29T00:59", True),
        (("sun", "00:30", "01:30"), "2026-03-29T01:00", False),  # closes at the jump
        (("sun", "01:15", "01:45"), "2026-03-29T01:00", False),  # wholly in the gap: never
        (("sun", "01:15", "01:45"), "2026-03-29T00:59", False),
        # It falls back on 2026-10-25 at 01:00 UTC: 02:00 BST -> 01:00 GMT; 01:xx twice.
        (("sun", "01:00", "02:00"), "2026-10-24T23:59", False),  # 00:59 BST
        (("sun", "01:00", "02:00"), "2026-10-25T00:00", True),  # 01:00 BST
        (("sun", "01:00", "02:00"), "2026-10-25T01:30", True),  # 01:30 GMT, the second pass
        (("sun", "01:00", "02:00"), "2026-10-25T02:00", False),  # 02:00 GMT
    ],
)
def test_dst_is_exact(window: tuple[str, str, str], instant: str, inside: bool) -> None:
    assert TimeWindow(*window, tz="Europe/London").contains(utc(instant)) is inside


def test_naive_and_offset_datetimes_are_instants() -> None:
    window = TimeWindow("mon", "09:00", "10:00", "Asia/Kolkata")  # UTC+05:30
    assert window.contains(dt.datetime(2026, 6, 1, 3, 30))  # naive = UTC
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert not window.contains(dt.datetime(2026, 6, 1, 3, 29))
    assert window.contains(dt.datetime(2026, 6, 1, 6, 29, tzinfo=plus_two))  # 09:59 IST
    assert not window.contains(dt.datetime(2026, 6, 1, 6, 30, tzinfo=plus_two))


def window_table(impl: ModuleType) -> Any:
    night = TimeWindow("mon-fri", "20:00", "08:00", "Europe/Paris")
    weekend = TimeWindow("sat,sun", tz="Europe/Paris")
    return impl.RouteTable(
        [
            RouteEntry("33", [Target("day")]),
            RouteEntry("33", [Target("cheap")], windows=[night, weekend]),
            RouteEntry("3", [Target("short-night")], windows=[night]),
            RouteEntry(
                "336", [Target("off", enabled=False)], windows=[weekend], carry_through=True
            ),
        ]
    )


@pytest.mark.parametrize(
    ("number", "instant", "expected", "route"),
    [
        ("331", "2026-06-01T09:00", "day", 0),  # Monday 11:00 Paris
        ("331", "2026-06-01T18:00", "cheap", 1),  # Monday 20:00 Paris: a time rule wins
        ("331", "2026-06-06T09:00", "cheap", 1),  # Saturday
        ("34", "2026-06-01T18:00", "short-night", 2),
        ("3361", "2026-06-06T09:00", "cheap", 1),  # weekend route unusable: carry through
        ("3361", "2026-06-01T09:00", "day", 0),  # weekday: the 336 route does not apply
    ],
)
def test_windowed_routes(
    impl: ModuleType, number: str, instant: str, expected: str, route: int
) -> None:
    result = window_table(impl).route(number, utc(instant))
    assert (gateways(result), result.route) == ([expected], route)


def test_windows_follow_now_when_at_is_none(impl: ModuleType) -> None:
    always = TimeWindow("*", "00:00", "24:00")
    table = impl.RouteTable([RouteEntry("", [Target("any")], windows=[always])])
    assert gateways(table.route("1")) == ["any"]
    assert [gateways(r) for r in table.route_many(["1", "2"])] == [["any"], ["any"]]


def test_windows_must_be_time_windows(impl: ModuleType) -> None:
    with pytest.raises(lcr.LcrError, match=r"windows must be lcr\.TimeWindow"):
        impl.RouteTable([RouteEntry("1", windows=[{"days": "mon"}])])  # type: ignore[list-item]


def test_the_core_table_needs_window_ids_for_windows() -> None:
    with pytest.raises(lcr.LcrError, match="window_ids"):
        lcr._core.RouteTable([RouteEntry("1", windows=[TimeWindow("mon")])])
    core = lcr._core.RouteTable(
        [RouteEntry("1", [Target("a")], windows=[TimeWindow()])], window_ids=[[5]]
    )
    assert core.route("1", AT).prefix is None
    assert gateways(core.route("1", AT, active=[5])) == ["a"]
    assert [
        gateways(r) for r in core.route_many(["1", "1"], AT, active=[[], [5]], active_of=[1, 0])
    ] == [["a"], []]


def test_window_states_are_remembered_per_minute_only_where_exact() -> None:
    from lcr.windows import WindowClock

    # Before 1941 Asia/Kolkata kept local mean time (+05:53:28): a UTC minute straddles two
    # local minutes, so those instants are judged one by one and not remembered.
    window = TimeWindow("*", "06:00", "07:00", "Asia/Kolkata")
    clock = WindowClock([window])
    start = dt.datetime(1850, 1, 1, 0, 6, 0, tzinfo=UTC)  # 05:59:28 local
    assert clock.active(start) == frozenset()
    assert clock.active(start + dt.timedelta(seconds=40)) == frozenset({0})  # 06:00:08
    modern = utc("2026-06-01T00:30")  # 06:00 IST
    assert clock.active(modern + dt.timedelta(seconds=59)) == frozenset({0})
    assert clock.active(modern) == frozenset({0})
    with pytest.raises(TypeError, match="at must be a datetime"):
        clock.active("2026-06-01")


# --- 4. route_many with one time per number -------------------------------------------------


def test_route_many_takes_one_time_per_number(impl: ModuleType) -> None:
    table = window_table(impl)
    numbers = ["331", "331", "34", "3361", "331"]
    moments = [utc(t) for t in ["2026-06-01T09:00", "2026-06-01T18:00", "2026-06-01T18:00",
                                "2026-06-06T09:00", "2026-06-01T09:00"]]  # fmt: skip
    many = table.route_many(numbers, iter(moments), range(5))
    assert [gateways(r) for r in many] == [
        gateways(table.route(n, m, s))
        for s, (n, m) in enumerate(zip(numbers, moments, strict=True))
    ]
    assert [gateways(r) for r in many] == [["day"], ["cheap"], ["short-night"], ["cheap"], ["day"]]
    with pytest.raises(lcr.LcrError, match="5 numbers but 2 moments in at"):
        table.route_many(numbers, moments[:2])


def test_route_many_times_also_pick_deck_versions(impl: ModuleType) -> None:
    deck = impl.RateDeck.from_rows(
        [("1", "US", "0.01", None, None, None, None, "2026-03-01"),
         ("1", "US", "0.02", None, None, None, "2026-03-01", None)]
    )  # fmt: skip
    table = impl.RouteTable([RouteEntry("", [Target("a", deck="d")])], {"d": deck})
    many = table.route_many(["1", "1"], [utc("2026-02-01T00:00"), utc("2026-04-01T00:00")])
    assert [r.candidates[0].rate for r in many] == [Decimal("0.01"), Decimal("0.02")]


# --- 5. true-cost margins ---------------------------------------------------------------------


def margin_decks(impl: ModuleType) -> tuple[dict[str, Any], Any]:
    buy = impl.RateDeck.from_rows([("44", "UK", "0.010", "0.05", 60, 60)])  # 60/60, 0.05 fee
    cheap = impl.RateDeck.from_rows([("44", "UK", "0.004", "0", 1, 1)], precision=9)
    sell = impl.RateDeck.from_rows([("44", "UK", "0.0200", "0", 1, 1)], precision=4)
    return {"buy": buy, "cheap": cheap}, sell.lookup("4420", AT)


def test_true_cost_margin_rejects_at_the_first_failing_duration(impl: ModuleType) -> None:
    decks, sell = margin_decks(impl)
    table = impl.RouteTable(
        [
            RouteEntry(
                "44",
                [Target("b", deck="buy"), Target("c", deck="cheap")],
                margin_duration=[30, 300],
            )
        ],
        decks,
    )
    result = table.route("4420", AT, sell=sell)
    # At 30 s: sell 0.01, buy 0.05 + 0.01 (a whole minute billed) = 0.06: a loss.
    assert gateways(result) == ["c"]
    [rejected] = result.rejected
    assert (rejected.gateway, rejected.reason, rejected.duration, rejected.rate) == (
        "b",
        "below_margin_at",
        30,
        Decimal("0.01"),
    )
    assert "below_margin_at" in result.explain()
    assert "30 s" in result.explain()
    # Without a sell rate there is nothing to compare: no check.
    assert gateways(table.route("4420", AT)) == ["c", "b"]


def test_margin_floor_is_per_minute_of_the_duration(impl: ModuleType) -> None:
    decks, sell = margin_decks(impl)

    def first(min_margin: str | None, acd: int | None = None) -> list[str]:
        table = impl.RouteTable(
            [RouteEntry("44", [Target("b", deck="buy")], margin_duration=[600])],
            decks,
            min_margin=None if min_margin is None else Decimal(min_margin),
        )
        return gateways(table.route("4420", AT, sell=sell, acd=acd))

    # At 600 s: sell 0.20, buy 0.05 + 0.10 = 0.15; margin 0.05 over ten minutes.
    assert first(None) == ["b"]  # no floor: no loss allowed, and there is none
    assert first("0.005") == ["b"]  # 0.005 * 10 = 0.05: exactly enough
    assert first("0.005000001") == []
    assert first(None, acd=30) == []  # the acd is checked too: a loss at 30 s
    assert first(None, acd=0) == ["b"]


def test_table_margin_duration_is_the_default(impl: ModuleType) -> None:
    decks, sell = margin_decks(impl)
    table = impl.RouteTable(
        [
            RouteEntry("44", [Target("b", deck="buy")]),
            RouteEntry("4", [Target("b", deck="buy")], margin_duration=[600]),
        ],
        decks,
        margin_duration=[30],
    )
    assert table.route("4420", AT, sell=sell).rejected[0].duration == 30
    no_durations = impl.RouteTable([RouteEntry("44", [Target("b", deck="buy")])], decks)
    assert gateways(no_durations.route("4420", AT, sell=sell, acd=30)) == ["b"]


def test_targets_without_a_deck_are_flagged(impl: ModuleType) -> None:
    decks, sell = margin_decks(impl)
    table = impl.RouteTable(
        [RouteEntry("44", [Target("nodeck"), Target("c", deck="cheap")], margin_duration=[60])],
        decks,
    )
    checked = table.route("4420", AT, sell=sell)
    assert gateways(checked) == ["c"]
    assert [(r.gateway, r.reason, r.duration) for r in checked.rejected] == [
        ("nodeck", "unpriced", None)
    ]
    unchecked = table.route("4420", AT)
    assert gateways(unchecked) == ["c", "nodeck"]
    assert "not priced" in unchecked.explain()


def test_route_many_takes_one_sell_rate_and_acd_per_number(impl: ModuleType) -> None:
    decks, sell = margin_decks(impl)
    table = impl.RouteTable(
        [RouteEntry("44", [Target("b", deck="buy")], margin_duration=[600])], decks
    )
    many = table.route_many(
        ["4420"] * 4, AT, [1] * 4, sell=[sell, None, sell, sell], acd=[None, 30, 30, 0]
    )
    assert [gateways(r) for r in many] == [["b"], ["b"], [], ["b"]]
    assert [gateways(r) for r in table.route_many(["4420"] * 2, AT, sell=sell, acd=30)] == [[], []]
    with pytest.raises(lcr.LcrError, match="2 numbers but 1 sell"):
        table.route_many(["4420"] * 2, AT, sell=[sell])
    with pytest.raises(lcr.LcrError, match=r"acd\[1\] must be whole seconds"):
        table.route_many(["4420"] * 2, AT, acd=[1, -1])
    with pytest.raises(lcr.LcrError, match="acd must be whole seconds"):
        table.route("4420", AT, acd=-5)


def test_either_implementations_rate_serves_as_sell(impl: ModuleType) -> None:
    decks, _ = margin_decks(impl)
    table = impl.RouteTable(
        [RouteEntry("44", [Target("b", deck="buy")], margin_duration=[30])], decks
    )
    for other in (lcr, ref):
        _, sell = margin_decks(other)
        assert table.route("4420", AT, sell=sell).rejected[0].reason == "below_margin_at"


def test_windows_in_local_mean_time_are_judged_to_the_second(impl: ModuleType) -> None:
    noon = TimeWindow("*", "00:00", "12:00", "Asia/Kolkata")  # +05:53:28 in 1850
    table = impl.RouteTable([RouteEntry("", [Target("morning")], windows=[noon])])
    before = dt.datetime(1850, 1, 1, 6, 6, 0, tzinfo=UTC)  # 11:59:28 local
    after = before + dt.timedelta(seconds=40)  # 12:00:08 local, the same UTC minute
    assert gateways(table.route("1", before)) == ["morning"]
    assert gateways(table.route("1", after)) == []
    assert [gateways(r) for r in table.route_many(["1", "1"], [before, after])] == [["morning"], []]


def test_route_many_per_number_times_may_be_none_for_now(impl: ModuleType) -> None:
    """None in a list of times means now, as a single ``at=None`` does (a table with windows
    once refused it: its window clock read None as a bad type)."""
    table = window_table(impl)
    now = dt.datetime.now(dt.UTC)
    many = table.route_many(["331", "331"], [None, now], range(2))
    assert [gateways(r) for r in many] == [gateways(table.route("331", now, 1))] * 2


def test_core_window_ids_are_bounded() -> None:
    """The core sizes a bit set by the active window ids it is given: ids no entry carries
    are dropped (``active=[2**31]`` once allocated 256 MB), and entries' ids are bounded."""
    from lcr import _core

    table = _core.RouteTable([RouteEntry("44", [Target("a")])], window_ids=[[0]])
    assert [c.gateway for c in table.route("441", active=[2**31, 0]).candidates] == ["a"]
    assert table.route("441", active=[2**31]).candidates == ()
    with pytest.raises(lcr.LcrError, match="window id 2097152 is not below"):
        _core.RouteTable([RouteEntry("44", [Target("a")])], window_ids=[[2**21]])


def test_many_caller_routes_on_one_prefix_build(impl: ModuleType) -> None:
    """Duplicates are found by key, not by scanning the prefix's routes (20k caller routes
    on one prefix took seconds to build)."""
    entries = [
        RouteEntry("44", [Target("a")], caller_prefix=str(100_000 + i)) for i in range(20_000)
    ]
    table = impl.RouteTable(entries)
    assert table.route("441", caller="100123").route == 123
    with pytest.raises(lcr.LcrError, match="defined twice"):
        impl.RouteTable([*entries, RouteEntry("44", [Target("b")], caller_prefix="119999")])
