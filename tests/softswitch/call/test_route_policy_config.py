"""Routes by caller, by time of day, with per-route weights and true-cost margins: the
``[[routes]]`` keys ``caller_prefix``, ``time``, ``margin_duration`` and gateway tables, from
the configuration file through ``build_snapshot`` to ``route_call``."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from softswitch.call.refusal import EndReason, Refusal
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.config import ConfigError, load_config

HEADER = "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
BASE = """
[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "a"
file = "a.csv"

[[rate_decks]]
id = "b"
file = "b.csv"

[[rate_decks]]
id = "c"
file = "c.csv"

[[accounts]]
id = "cust"
ips = ["10.0.0.1"]
rate_deck = "sell"
routing_plan = "p"

[[gateways]]
id = "a"
address = "192.0.2.1:5060"
rate_deck = "a"

[[gateways]]
id = "b"
address = "192.0.2.2:5060"
rate_deck = "b"

[[gateways]]
id = "c"
address = "192.0.2.3:5060"
rate_deck = "c"
priority = 5
"""
# A Monday 09:00 in London (GMT in December) and the Saturday before it.
MONDAY = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
SATURDAY = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)


def snapshot_of(tmp_path: Path, routes: str) -> Snapshot:
    (tmp_path / "sell.csv").write_text(HEADER + "44,United Kingdom,0.020,0,60,60\n")
    (tmp_path / "a.csv").write_text(HEADER + "44,United Kingdom,0.010,0,1,1\n")
    (tmp_path / "b.csv").write_text(HEADER + "44,United Kingdom,0.012,0,1,1\n")
    # Cheaper per minute than the margin floor needs, but a connect fee of 0.02.
    (tmp_path / "c.csv").write_text(HEADER + "44,United Kingdom,0.005,0.020,1,1\n")
    path = tmp_path / "switch.toml"
    path.write_text(BASE + routes)
    return build_snapshot(load_config(path))


def plan_of(snapshot: Snapshot, at: dt.datetime = MONDAY, **kw: object) -> RoutePlan:
    plan = route_call(snapshot, snapshot.accounts["cust"], "447911123456", at, "call-1", **kw)  # type: ignore[arg-type]
    assert isinstance(plan, RoutePlan), plan
    return plan


def test_caller_prefix_routes_by_the_callers_number(tmp_path: Path) -> None:
    snapshot = snapshot_of(
        tmp_path,
        """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["a"]

[[routes]]
plan = "p"
prefix = "44"
caller_prefix = "4420"
gateways = ["b"]
""",
    )
    assert plan_of(snapshot, caller="442079460000").gateway_ids == ("b",)
    assert plan_of(snapshot, caller="441632960000").gateway_ids == ("a",)
    assert plan_of(snapshot, caller=None).gateway_ids == ("a",)


def test_time_windows_pick_the_route_in_the_window_zone(tmp_path: Path) -> None:
    snapshot = snapshot_of(
        tmp_path,
        """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["a"]

[[routes]]
plan = "p"
prefix = "44"
gateways = ["b"]
time = [{ days = "mon-fri", from = "08:00", to = "18:00", tz = "Europe/London" }]
""",
    )
    assert plan_of(snapshot, MONDAY).gateway_ids == ("b",)
    assert plan_of(snapshot, MONDAY.replace(hour=18)).gateway_ids == ("a",)
    assert plan_of(snapshot, SATURDAY).gateway_ids == ("a",)


def test_gateway_tables_set_the_routes_own_priority_and_weight(tmp_path: Path) -> None:
    snapshot = snapshot_of(
        tmp_path,
        """
[[routes]]
plan = "p"
prefix = "44"
strategy = "weight"
gateways = [{ id = "a", weight = 70 }, { id = "b", weight = 30 }, { id = "c", priority = 2 }]
""",
    )
    table = snapshot.table("p")
    assert table is not None
    targets = {t.gateway: (t.priority, t.weight) for t in table.entries[0].targets}
    # c keeps its own weight (1), a and b their own priority (0).
    assert targets == {"a": (0, 70), "b": (0, 30), "c": (2, 1)}
    firsts: Counter[str] = Counter()
    for n in range(400):
        plan = route_call(snapshot, snapshot.accounts["cust"], "447911123456", MONDAY, f"call-{n}")
        assert isinstance(plan, RoutePlan)
        assert plan.gateway_ids[2] == "c"  # tier 2: only when both a and b fail
        firsts[plan.gateway_ids[0]] += 1
    assert set(firsts) == {"a", "b"}
    assert firsts["a"] > firsts["b"]


def test_margin_duration_rejects_a_carrier_whose_connect_fee_loses_money(
    tmp_path: Path,
) -> None:
    routes = """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["c", "a"]
min_margin = 0.005
"""
    # Per minute c leaves 0.020 - 0.005 = 0.015 >= 0.005: it passes, and is cheapest.
    assert plan_of(snapshot_of(tmp_path, routes)).gateway_ids == ("c", "a")
    # A 60 s call costs 0.020 + 0.005 = 0.025 on c, sold for 0.020: a loss.
    snapshot = snapshot_of(tmp_path, routes + "margin_duration = [60]\n")
    plan = plan_of(snapshot)
    assert plan.gateway_ids == ("a",)
    assert plan.rejected == (("c", "below_margin_at 60s"),)
    only_c = routes.replace('["c", "a"]', '["c"]') + "margin_duration = [60]\n"
    refused = route_call(
        snapshot_of(tmp_path, only_c), snapshot.accounts["cust"], "447911123456", MONDAY, "x"
    )
    assert isinstance(refused, Refusal)
    assert refused.end_reason is EndReason.NO_ROUTE
    assert "c: below_margin_at 60s" in refused.detail


def test_acd_adds_the_route_prefixes_live_acd(tmp_path: Path) -> None:
    # Sold per whole minute: at 61 s the customer pays 2 minutes (0.040) and c costs
    # 0.020 + 0.005 * 61/60 (0.025084): fine. At 30 s, 0.020 against 0.0225: a loss.
    routes = """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["c"]
margin_duration = [61, "acd"]
"""
    snapshot = snapshot_of(tmp_path, routes)
    asked: list[str] = []

    def acd(prefix: str) -> int | None:
        asked.append(prefix)
        return 30

    assert plan_of(snapshot).gateway_ids == ("c",)
    account = snapshot.accounts["cust"]
    refused = route_call(snapshot, account, "447911123456", MONDAY, "x", acd=acd)
    assert isinstance(refused, Refusal)
    assert "c: below_margin_at 30s" in refused.detail
    assert asked == ["44"]
    assert plan_of(snapshot, acd=lambda prefix: None).gateway_ids == ("c",)


def test_acd_is_asked_only_for_the_route_that_lists_it_not_an_equal_one(tmp_path: Path) -> None:
    # Plan q's route is field for field plan p's without "acd": the same lcr entry by value.
    routes = """
[[accounts]]
id = "other"
ips = ["10.0.0.2"]
rate_deck = "sell"
routing_plan = "q"

[[routes]]
plan = "p"
prefix = "44"
gateways = ["c"]
margin_duration = [61, "acd"]

[[routes]]
plan = "q"
prefix = "44"
gateways = ["c"]
margin_duration = [61]
"""
    snapshot = snapshot_of(tmp_path, routes)
    asked: list[str] = []

    def acd(prefix: str) -> int | None:
        asked.append(prefix)
        return 30

    other = snapshot.accounts["other"]
    plan = route_call(snapshot, other, "447911123456", MONDAY, "x", acd=acd)
    assert isinstance(plan, RoutePlan), plan
    assert plan.gateway_ids == ("c",)
    assert asked == []
    refused = route_call(snapshot, snapshot.accounts["cust"], "447911123456", MONDAY, "x", acd=acd)
    assert isinstance(refused, Refusal)
    assert asked == ["44"]


def test_acd_follows_the_cli_view_of_the_route_that_lists_it(tmp_path: Path) -> None:
    # Index 0 of the view for calls with a caller-ID is the "acd" route; index 0 of the
    # view without one is the equal route (cli = "absent") that does not list it.
    routes = """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["c"]
cli = "required"
margin_duration = [61, "acd"]

[[routes]]
plan = "p"
prefix = "44"
gateways = ["c"]
cli = "absent"
margin_duration = [61]
"""
    snapshot = snapshot_of(tmp_path, routes)
    asked: list[str] = []

    def acd(prefix: str) -> int | None:
        asked.append(prefix)
        return 30

    account = snapshot.accounts["cust"]
    plan = route_call(snapshot, account, "447911123456", MONDAY, "x", cli=False, acd=acd)
    assert isinstance(plan, RoutePlan), plan
    assert asked == []
    refused = route_call(snapshot, account, "447911123456", MONDAY, "x", cli=True, acd=acd)
    assert isinstance(refused, Refusal)
    assert asked == ["44"]


def test_routes_without_the_new_keys_build_the_same_entries(tmp_path: Path) -> None:
    snapshot = snapshot_of(
        tmp_path,
        """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["a", "c"]
""",
    )
    table = snapshot.table("p")
    assert table is not None
    (entry,) = table.entries
    assert (entry.caller_prefix, entry.windows, entry.margin_duration) == ("", (), ())
    assert [(t.gateway, t.priority, t.weight) for t in entry.targets] == [
        ("a", 0, 1),
        ("c", 5, 1),
    ]
    assert not snapshot.acd_routes


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        (
            'time = [{ days = "mon-fri", from = "08:00", to = "18:00", tz = "Mars/Base" }]',
            "routes[0].time[0].tz: unknown time zone 'Mars/Base'",
        ),
        ('time = [{ days = "mon-fry" }]', "routes[0].time[0].days: 'fry' in 'mon-fry'"),
        ('time = [{ from = "8am" }]', "routes[0].time[0].from: expected HH:MM, got '8am'"),
        ('time = [{ from = "09:00", to = "09:00" }]', "routes[0].time[0].to: equals from"),
        ('caller_prefix = "+44"', "routes[0].caller_prefix: must be digits only"),
        ("margin_duration = [0]", "routes[0].margin_duration[0]: must be between 1 and 86400"),
        ('margin_duration = ["acd"]', 'routes[0].margin_duration: "acd" is added'),
        (
            'cli = "absent"\ncaller_prefix = "4420"',
            "routes[0].caller_prefix: '4420' can never match: cli = \"absent\"",
        ),
    ],
)
def test_bad_policy_keys_name_the_route_and_field(
    tmp_path: Path, routes: str, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        snapshot_of(
            tmp_path, f'[[routes]]\nplan = "p"\nprefix = "44"\ngateways = ["a"]\n{routes}\n'
        )
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("gateways", "message"),
    [
        ('[{ id = "a", wieght = 70 }]', "routes[0].gateways[0].wieght: unknown key"),
        ('[{ id = "a", weight = -1 }]', "routes[0].gateways[0].weight: must be >= 0, got -1"),
        ("[{ weight = 2 }]", "routes[0].gateways[0].id: is required"),
        ('["a", { id = "a" }]', "routes[0].gateways[1]: gateway 'a' listed twice"),
        ('[{ id = "zz" }]', "routes[0].gateways[0]: no [[gateways]] with id 'zz'"),
    ],
)
def test_bad_gateway_tables_name_the_entry(tmp_path: Path, gateways: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        snapshot_of(tmp_path, f'[[routes]]\nplan = "p"\nprefix = "44"\ngateways = {gateways}\n')
    assert message in str(e.value)


def test_one_prefix_several_times_when_caller_or_time_differ(tmp_path: Path) -> None:
    route = '[[routes]]\nplan = "p"\nprefix = "44"\ngateways = ["a"]\n'
    window = 'time = [{ days = "sat-sun" }]\n'
    snapshot_of(tmp_path, route + route + 'caller_prefix = "33"\n' + route + window)
    with pytest.raises(ConfigError) as e:
        snapshot_of(tmp_path, route + window + route + window)
    assert (
        "routes[1].prefix: plan 'p' already has prefix '44' (routes[0])"
        " with the same caller_prefix and time"
    ) in str(e.value)


def test_softswitch_route_takes_the_caller_and_the_time(tmp_path: Path) -> None:
    import io

    from softswitch.commands import parse_time, show_route

    snapshot_of(
        tmp_path,
        """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["a"]

[[routes]]
plan = "p"
prefix = "44"
caller_prefix = "4420"
gateways = ["b"]
time = [{ days = "mon-fri", from = "08:00", to = "18:00", tz = "Europe/London" }]
""",
    )
    config = str(tmp_path / "switch.toml")

    def first(at: str, caller: str) -> str:
        out = io.StringIO()
        assert (
            show_route(config, "cust", "447911123456", at=parse_time(at), cli=caller, out=out) == 0
        )
        lines = out.getvalue().splitlines()
        return lines[lines.index("gateways in order:") + 1].split()[1]

    assert first("2026-12-07T09:00+00:00", "442079460000") == "b"
    assert first("2026-12-05T09:00+00:00", "442079460000") == "a"  # a Saturday
    assert first("2026-12-07T09:00+00:00", "441632960000") == "a"


def test_live_acd_reads_the_route_prefixes_statistics(tmp_path: Path) -> None:
    """Two answered calls on prefix 44 (30 s and 41 s) make its ACD 35.5 s, routed as
    36 s; a prefix without answered calls has none. With the route's fixed 61 s alone c
    passes; the ACD makes it fail at 36 s."""
    from softswitch.call.routing import live_acd
    from softswitch.stats import CallEnded, CallStarted, Statistics

    stats = Statistics()
    for seconds in (30, 41):
        stats.call_started(CallStarted("cust", "UK", "44"), 100.0)
        ended = CallEnded("cust", "UK", "44", 200, "normal_clearing", True, True, seconds * 1000, 1)
        stats.call_ended(ended, 100.0 + seconds)
    acd = live_acd(stats, 200.0)
    assert acd("44") == 36
    assert acd("49") is None
    snapshot = snapshot_of(
        tmp_path,
        '[[routes]]\nplan = "p"\nprefix = "44"\ngateways = ["c"]\nmargin_duration = [61, "acd"]\n',
    )
    assert plan_of(snapshot, acd=live_acd(Statistics(), 200.0)).gateway_ids == ("c",)
    refused = route_call(snapshot, snapshot.accounts["cust"], "447911123456", MONDAY, "x", acd=acd)
    assert isinstance(refused, Refusal)
    assert "c: below_margin_at 36s" in refused.detail


def test_the_route_explanation_uses_the_live_acd_of_the_running_switch(tmp_path: Path) -> None:
    """``softswitch route --live`` (the API's ``explain_route`` with the switch's statistics)
    routes as the switch does: with the route prefix's live ACD (30 s: c loses money)."""
    from softswitch.commands import explain_route
    from softswitch.stats.events import CallEnded
    from softswitch.stats.statistics import Statistics

    routes = """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["c"]
margin_duration = [61, "acd"]
"""
    snapshot = snapshot_of(tmp_path, routes)
    account = snapshot.accounts["cust"]
    stats = Statistics()
    ended = CallEnded(
        "cust", "United Kingdom", "44", 200, "normal_clearing", True, True, 30_000, 900
    )
    stats.call_ended(ended, 100.0)
    offline = explain_route(snapshot, account, "447911123456", at=MONDAY)
    assert offline.routed
    live = explain_route(snapshot, account, "447911123456", at=MONDAY, stats=stats, now=101.0)
    assert not live.routed
    assert live.refusal is not None
    assert "c: below_margin_at 30s" in live.refusal.detail
    assert "below_margin_at" in live.explain


def test_route_live_refuses_a_caller_id_naming_the_option_typed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from softswitch.commands import add_subcommands, dispatch

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    for flag in ("--caller", "--cli"):
        args = parser.parse_args(["route", "--live", "--account", "x", flag, "4420", "44"])
        assert dispatch(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} is for the offline route, not --live")


@pytest.mark.parametrize(
    ("zone", "alias"), [("UTC", "Etc/UTC"), ("Europe/London", "GB"), ("UTC", "Etc/Zulu")]
)
def test_a_zones_alias_is_the_same_window(tmp_path: Path, zone: str, alias: str) -> None:
    routes = f"""
[[routes]]
plan = "p"
prefix = "44"
gateways = ["a"]
time = [{{ days = "sat,sun", tz = "{zone}" }}]

[[routes]]
plan = "p"
prefix = "44"
gateways = ["b"]
time = [{{ days = "sat-sun", tz = "{alias}" }}]
"""
    with pytest.raises(ConfigError) as e:
        snapshot_of(tmp_path, routes)
    assert "routes[1].prefix: plan 'p' already has prefix '44' (routes[0])" in str(e.value)


def test_zones_with_other_tz_data_are_other_windows(tmp_path: Path) -> None:
    """Another zone's data (Europe/Paris is not UTC): two routes, lcr picks by the time."""
    snapshot = snapshot_of(
        tmp_path,
        """
[[routes]]
plan = "p"
prefix = "44"
gateways = ["a"]
time = [{ days = "mon-fri", tz = "UTC" }]

[[routes]]
plan = "p"
prefix = "44"
gateways = ["b"]
time = [{ days = "mon-fri", tz = "Europe/Paris" }]
""",
    )
    table = snapshot.table("p")
    assert table is not None
    assert len(table.entries) == 2
