"""The select stage: skip disabled, probed-down, full and over-CPS gateways; claim one at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from softswitch.call.live import LiveState
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.select import admit_gateway, select_gateways
from softswitch.call.snapshot import Snapshot

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _plan(snapshot: Snapshot, number: str = "441234") -> RoutePlan:
    plan = route_call(snapshot, snapshot.accounts["tech1"], number, AT, "c")
    assert isinstance(plan, RoutePlan)
    return plan


def test_all_usable_in_plan_order(snapshot: Snapshot) -> None:
    usable, skipped = select_gateways(snapshot, _plan(snapshot), LiveState(), 0.0)
    assert [g.id for g in usable] == ["gwb", "gwa"]
    assert skipped == []


def test_down_full_and_over_cps_are_skipped_with_reasons(snapshot: Snapshot) -> None:
    live = LiveState()
    plan = _plan(snapshot)
    live.mark_gateway("gwb", up=False)
    usable, skipped = select_gateways(snapshot, plan, live, 0.0)
    assert [g.id for g in usable] == ["gwa"]
    assert skipped == [("gwb", "down")]

    assert admit_gateway(snapshot.gateways["gwa"], live, 0.0) is None  # capacity 1
    usable, skipped = select_gateways(snapshot, plan, live, 0.0)
    assert usable == []
    assert skipped == [("gwb", "down"), ("gwa", "capacity")]
    assert admit_gateway(snapshot.gateways["gwa"], live, 0.0) == "capacity"
    live.gateway_release("gwa")

    live.mark_gateway("gwb", up=True)
    assert admit_gateway(snapshot.gateways["gwb"], live, 0.0) is None  # max_cps 1
    live.gateway_release("gwb")
    usable, skipped = select_gateways(snapshot, plan, live, 0.5)
    assert [g.id for g in usable] == ["gwa"]
    assert skipped == [("gwb", "max_cps")]
    usable, _ = select_gateways(snapshot, plan, live, 1.5)
    assert [g.id for g in usable] == ["gwb", "gwa"]


def test_disabled_gateway_never_admitted(snapshot: Snapshot) -> None:
    assert admit_gateway(snapshot.gateways["gwc"], LiveState(), 0.0) == "disabled"


def test_counters_survive_a_reload(
    snapshot: Snapshot, make_snapshot: Callable[..., Snapshot]
) -> None:
    live = LiveState()
    assert admit_gateway(snapshot.gateways["gwa"], live, 0.0) is None
    reloaded = make_snapshot({"capacity = 1": "capacity = 2"})
    assert admit_gateway(reloaded.gateways["gwa"], live, 0.0) is None
    assert admit_gateway(reloaded.gateways["gwa"], live, 0.0) == "capacity"
