"""The route stage: lcr order by the carriers' rates, rejections with reasons, refusals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from softswitch.call.refusal import EndReason, Refusal
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.snapshot import Snapshot

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_lcr_order_follows_the_carriers_rates(snapshot: Snapshot) -> None:
    plan = route_call(snapshot, snapshot.accounts["ipcust"], "441234", AT, "c1")
    assert isinstance(plan, RoutePlan)
    assert plan.gateway_ids == ("gwb", "gwa")  # 0.04 before 0.05
    assert [c.rate for c in plan.candidates] == [Decimal("0.04"), Decimal("0.05")]
    assert plan.rejected == (("gwc", "disabled"),)
    assert plan.sell_rate == Decimal("0.10")
    assert plan.prefix == "44"
    assert "gwb" in plan.explain


def test_longer_prefix_changes_the_order(snapshot: Snapshot) -> None:
    plan = route_call(snapshot, snapshot.accounts["ipcust"], "447911", AT, "c1")
    assert isinstance(plan, RoutePlan)
    assert plan.gateway_ids == ("gwa", "gwb")  # mobile: 0.15 before 0.25
    assert plan.sell_rate == Decimal("0.20")


def test_max_rate_excludes_with_a_reason(snapshot: Snapshot) -> None:
    plan = route_call(snapshot, snapshot.accounts["ipcust"], "442071", AT, "c1")
    assert isinstance(plan, RoutePlan)
    assert plan.gateway_ids == ("gwb",)
    assert plan.rejected == (("gwa", "above_max_rate"),)


def test_priority_strategy(snapshot: Snapshot) -> None:
    plan = route_call(snapshot, snapshot.accounts["ipcust"], "1555", AT, "c1")
    assert isinstance(plan, RoutePlan)
    # gwb comes first by the route's order but its deck has no rate for 1: lcr rejects it.
    assert plan.gateway_ids == ("gwa",)
    assert plan.rejected == (("gwb", "no_rate"),)


def test_no_matching_route_is_no_route(snapshot: Snapshot) -> None:
    out = route_call(snapshot, snapshot.accounts["tech1"], "33123", AT, "c1")
    assert isinstance(out, Refusal)
    assert (out.status, out.end_reason, out.q850) == (404, EndReason.NO_ROUTE, 3)


def test_account_deck_without_a_rate_is_no_rate(snapshot: Snapshot) -> None:
    out = route_call(snapshot, snapshot.accounts["ipcust"], "33123", AT, "c1")
    assert isinstance(out, Refusal)
    assert out.end_reason == EndReason.NO_RATE
    assert "sell" in out.detail


def test_every_gateway_rejected_is_no_route_with_reasons(
    make_snapshot: Callable[..., Snapshot],
) -> None:
    snapshot = make_snapshot({"max_rate = 0.045": "max_rate = 0.01"})
    out = route_call(snapshot, snapshot.accounts["ipcust"], "442071", AT, "c1")
    assert isinstance(out, Refusal)
    assert out.end_reason == EndReason.NO_ROUTE
    assert "gwa: above_max_rate" in out.detail
    assert "gwb: above_max_rate" in out.detail


def test_min_margin_uses_the_accounts_sell_rate(make_snapshot: Callable[..., Snapshot]) -> None:
    snapshot = make_snapshot({"max_rate = 0.045": "min_margin = 0.055"})
    plan = route_call(snapshot, snapshot.accounts["ipcust"], "442071", AT, "c1")
    # sell 0.10: gwb (0.04) leaves 0.06, gwa (0.05) only 0.05.
    assert isinstance(plan, RoutePlan)
    assert plan.gateway_ids == ("gwb",)
    assert plan.rejected == (("gwa", "below_min_margin"),)


def test_weight_strategy_is_repeatable_per_call_id(make_snapshot: Callable[..., Snapshot]) -> None:
    route = 'gateways = ["gwa", "gwb", "gwc"]'
    snapshot = make_snapshot({route: route + '\nstrategy = "weight"'})
    orders = set()
    for i in range(40):
        a = route_call(snapshot, snapshot.accounts["tech1"], "441234", AT, f"call-{i}")
        b = route_call(snapshot, snapshot.accounts["tech1"], "441234", AT, f"call-{i}")
        assert isinstance(a, RoutePlan)
        assert isinstance(b, RoutePlan)
        assert a.gateway_ids == b.gateway_ids
        orders.add(a.gateway_ids)
    assert orders == {("gwa", "gwb"), ("gwb", "gwa")}
