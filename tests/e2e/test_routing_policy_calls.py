"""Routing policy end to end: SIPp as the customer and the carriers, ``softswitch run``
between, routes chosen by the caller's number, by the time of day, by a weighted split
with a fallback tier, and by the true cost of a call of a given length.

``Net.write_config`` writes one route for prefix ``44``; the routes under test are more
``[[routes]]`` tables (``tail``) with longer prefixes, which win (the longest prefix), so
the first route only catches what no test dials.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from callflow_harness import LOCAL, Sipp
from callflow_net import Account, Carrier, Net, attempts, ok

pytestmark = pytest.mark.e2e

NO_IDENTITY = "Subject: no identity headers"


def route(prefix: str, gateways: str, *lines: str) -> str:
    return "\n".join(
        ["[[routes]]", 'plan = "default"', f'prefix = "{prefix}"', f"gateways = {gateways}", *lines]
    )


def call(net: Net, number: str, caller: str, *, label: str) -> Sipp:
    """A customer calling ``number`` from ``caller`` (its From user), waiting for the BYE."""
    fill = {"CALLER_URI": f"sip:{caller}@{LOCAL}", "IDENTITY_HEADERS": NO_IDENTITY}
    return net.customer("uac_cli_wait_bye", number=number, fill=fill, label=label)


def test_caller_prefix_sends_one_callers_calls_to_another_carrier(net: Net) -> None:
    """Prefix 4412 for everyone to gw_a; for callers starting 4420 to gw_b."""
    gw_a, gw_b = Carrier("gw_a"), Carrier("gw_b")
    tail = "\n".join(
        [
            route("4412", '["gw_a"]'),
            route("4412", '["gw_b"]', 'caller_prefix = "4420"'),
        ]
    )
    net.start_switch([gw_a, gw_b], [Account()], tail=tail)
    on_a = net.carrier(gw_a, "uas_answer_bye", args=["-d", "200"])
    on_b = net.carrier(gw_b, "uas_answer_bye", args=["-d", "200"])
    ok(net, call(net, "441234567", "442079460000", label="london"))
    ok(net, call(net, "441234567", "441632960000", label="elsewhere"))
    ok(net, on_a, on_b)
    london, elsewhere = net.cdrs(2)
    assert (london["caller"], attempts(london)) == ("442079460000", [("gw_b", 200, "answered")])
    assert (elsewhere["caller"], attempts(elsewhere)) == (
        "441632960000",
        [("gw_a", 200, "answered")],
    )


def _window(start: dt.datetime, hours: int) -> str:
    """A window of ``hours`` from ``start`` (local, every day) in ``start``'s zone."""
    end = start + dt.timedelta(hours=hours)
    zone = str(start.tzinfo)
    return (
        f'time = [{{ days = "mon-sun", from = "{start:%H:%M}", to = "{end:%H:%M}",'
        f' tz = "{zone}" }}]'
    )


def test_time_windows_pick_the_carrier_of_the_window_holding_now(net: Net) -> None:
    """In Tokyo time: prefix 4412 has a window from an hour ago to two hours ahead (to
    gw_a), prefix 4413 one from three to five hours ahead (to gw_a as well); both fall
    back to gw_b outside their window. A call to 4412 goes to gw_a, one to 4413 to gw_b."""
    now = dt.datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo")).replace(second=0, microsecond=0)
    holding = _window(now - dt.timedelta(hours=1), 3)
    later = _window(now + dt.timedelta(hours=3), 2)
    gw_a, gw_b = Carrier("gw_a"), Carrier("gw_b")
    tail = "\n".join(
        [
            route("4412", '["gw_b"]'),
            route("4412", '["gw_a"]', holding),
            route("4413", '["gw_b"]'),
            route("4413", '["gw_a"]', later),
        ]
    )
    net.start_switch([gw_a, gw_b], [Account()], tail=tail)
    on_a = net.carrier(gw_a, "uas_answer_bye", args=["-d", "200"])
    on_b = net.carrier(gw_b, "uas_answer_bye", args=["-d", "200"])
    ok(net, call(net, "441234567", "441632960000", label="in_window"))
    ok(net, call(net, "441334567", "441632960000", label="out_of_window"))
    ok(net, on_a, on_b)
    in_window, out_of_window = net.cdrs(2)
    assert attempts(in_window) == [("gw_a", 200, "answered")], net.explain()
    assert attempts(out_of_window) == [("gw_b", 200, "answered")], net.explain()


def test_a_weighted_tier_falls_to_the_second_tier_when_both_fail(net: Net) -> None:
    """gw_a and gw_b share 70/30 (tier 0), gw_c only when both fail (tier 2), written on
    one route. Both answer 503: the call is tried on both, then answered by gw_c."""
    gw_a, gw_b, gw_c = Carrier("gw_a"), Carrier("gw_b"), Carrier("gw_c")
    tiers = (
        '[{ id = "gw_a", weight = 70, priority = 0 }, { id = "gw_b", weight = 30, priority = 0 },'
        ' { id = "gw_c", priority = 2 }]'
    )
    net.start_switch(
        [gw_a, gw_b, gw_c], [Account()], tail=route("4412", tiers, 'strategy = "weight"')
    )
    fill = {"STATUS": "503 Service Unavailable"}
    bad_a = net.carrier(gw_a, "uas_reject", fill=fill)
    bad_b = net.carrier(gw_b, "uas_reject", fill=fill)
    good = net.carrier(gw_c, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "300"])
    ok(net, customer, bad_a, bad_b, good)
    (cdr,) = net.cdrs()
    tried = attempts(cdr)
    assert sorted(tried[:2]) == [("gw_a", 503, "failed"), ("gw_b", 503, "failed")], tried
    assert tried[2:] == [("gw_c", 200, "answered")]
    assert cdr["end_reason"] == "normal_clearing"


def test_margin_duration_rejects_a_carrier_whose_connect_fee_loses_money(net: Net) -> None:
    """Sold at 0.100 a minute per whole minute. gw_fee charges 0.010 a minute (the
    cheapest: the per-minute margin 0.090 passes min_margin 0.010) plus a 0.200 connect
    fee, so a 60 s call costs 0.210 against 0.100 sold. On prefix 4412 (margin_duration
    60 s) gw_fee is rejected ``below_margin_at`` and gw_plain carries the call; on 4413
    (the per-minute check alone) gw_fee, the cheapest, does."""
    net.sell = (
        "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
        "44,UK,0.100000,0,60,60\n"
    )
    header = "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
    fee = Carrier("gw_fee", deck=header + "44,UK,0.010000,0.200000,1,1\n")
    plain = Carrier("gw_plain", deck=header + "44,UK,0.020000,0,1,1\n")
    tail = "\n".join(
        [
            route("4412", '["gw_fee", "gw_plain"]', "min_margin = 0.01", "margin_duration = [60]"),
            route("4413", '["gw_fee", "gw_plain"]', "min_margin = 0.01"),
        ]
    )
    net.start_switch([fee, plain], [Account()], tail=tail)
    on_plain = net.carrier(plain, "uas_answer")
    on_fee = net.carrier(fee, "uas_answer")
    ok(net, net.customer("uac_call", number="441234567", args=["-d", "300"], label="true"))
    ok(net, net.customer("uac_call", number="441334567", args=["-d", "300"], label="minute"))
    ok(net, on_plain, on_fee)
    true_cost, per_minute = net.cdrs(2)
    assert attempts(true_cost) == [("gw_plain", 200, "answered")], net.explain()
    assert "gw_fee: below_margin_at 60s" in true_cost["detail"], true_cost["detail"]
    assert attempts(per_minute) == [("gw_fee", 200, "answered")], net.explain()
    assert "below" not in per_minute["detail"]
