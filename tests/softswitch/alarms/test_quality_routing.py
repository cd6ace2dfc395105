"""Quality routing (``[[routes]] quality``, ``softswitch.call.quality``): gateways of poor
live ASR move to the end of the candidates in their relative order, never out; the routing
trace, ``softswitch route`` and the pipeline's admission say so."""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import cast

import pytest
from alarms_support import attempts, config, write

from loopback_ports import free_port
from softswitch.call.live import LiveState
from softswitch.call.quality import demote
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrSink
from softswitch.commands import explain_route, live_route
from softswitch.config import ConfigError
from softswitch.proxy.accounting import routing_trace
from softswitch.proxy.calls import Admission
from softswitch.proxy.pipeline import CallContext, Pipeline
from softswitch.sip import Request, parse_message
from softswitch.sip.digest import DigestAuthenticator
from softswitch.stats import Statistics
from softswitch.transport import Flow, Transport

QUALITY = 'quality = { min_asr = 0.3, window = "15m", min_attempts = 20 }'
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
T0 = 10_000.0


def snapshot_of(tmp_path: Path, route: str = QUALITY, extra: str = "") -> Snapshot:
    return build_snapshot(config(tmp_path, extra, route=route))


def plan_of(snapshot: Snapshot) -> RoutePlan:
    plan = route_call(snapshot, snapshot.accounts["acme"], "441234", AT, "c")
    assert isinstance(plan, RoutePlan)
    return plan


def demoted(snapshot: Snapshot, stats: Statistics, now: float = T0) -> RoutePlan:
    return demote(snapshot, snapshot.accounts["acme"], plan_of(snapshot), stats, now)


def test_poor_gateways_go_last_in_their_order(tmp_path: Path) -> None:
    snapshot, stats = snapshot_of(tmp_path), Statistics()
    attempts(stats, "gw1", T0, answered=2, failed=18)  # ASR 0.10 over 20: demoted
    attempts(stats, "gw2", T0, answered=6, failed=14)  # 0.30 exactly: not below
    attempts(stats, "gw3", T0, answered=1, failed=19)  # 0.05: demoted, after gw1
    plan = demoted(snapshot, stats)
    assert plan.gateway_ids == ("gw2", "gw1", "gw3")
    assert plan.demoted == (
        ("gw1", "ASR 0.10 < 0.3 over 15m (2/20 answered)"),
        ("gw3", "ASR 0.05 < 0.3 over 15m (1/20 answered)"),
    )
    assert routing_trace(plan, [("gw2", "capacity")]) == (
        "route '44': gw2, gw1, gw3; demoted gw1: ASR 0.10 < 0.3 over 15m (2/20 answered),"
        " gw3: ASR 0.05 < 0.3 over 15m (1/20 answered); skipped gw2: capacity"
    )


def test_too_few_attempts_no_quality_or_all_poor_keep_the_order(tmp_path: Path) -> None:
    stats = Statistics()
    attempts(stats, "gw1", T0, failed=19)  # 19 < min_attempts: no evidence
    snapshot = snapshot_of(tmp_path)
    kept = demoted(snapshot, stats)
    assert (kept.gateway_ids, kept.demoted) == (("gw1", "gw2", "gw3"), ())
    # without quality on the route: the plan itself, whatever the figures
    attempts(stats, "gw1", T0, failed=1)
    (tmp_path / "plain").mkdir()
    plain = snapshot_of(tmp_path / "plain", route="")
    plan = plan_of(plain)
    assert demote(plain, plain.accounts["acme"], plan, stats, T0) is plan
    # every gateway poor: all demoted, none excluded, the order unchanged
    attempts(stats, "gw2", T0, failed=20)
    attempts(stats, "gw3", T0, failed=20)
    every = demoted(snapshot, stats)
    assert every.gateway_ids == ("gw1", "gw2", "gw3")
    assert [g for g, _ in every.demoted] == ["gw1", "gw2", "gw3"]
    # the window slides: 15 minutes later the evidence is gone
    assert demoted(snapshot, stats, T0 + 900).demoted == ()


def test_softswitch_route_names_the_quality_offline_and_applies_it_live(
    tmp_path: Path,
) -> None:
    snapshot, stats = snapshot_of(tmp_path), Statistics()
    account = snapshot.accounts["acme"]
    offline = explain_route(snapshot, account, "441234", at=AT)
    assert [g.gateway for g in offline.gateways] == ["gw1", "gw2", "gw3"]
    assert offline.lines()[-1] == (
        "quality: gateways with ASR below 0.3 over 15m (at least 20 attempts) go last; that"
        " depends on the running switch's live figures, not applied here (softswitch route"
        " --live asks the running switch)"
    )
    attempts(stats, "gw1", T0, failed=20)
    found = explain_route(snapshot, account, "441234", at=AT, stats=stats, now=T0)
    assert [g.gateway for g in found.gateways] == ["gw2", "gw3", "gw1"]
    assert found.lines()[-2:] == [
        "demoted to the end (quality: gateways with ASR below 0.3 over 15m (at least 20"
        " attempts) go last):",
        "  gw1              ASR 0.00 < 0.3 over 15m (0/20 answered)",
    ]
    live = LiveState()
    live.set_gateway_alarm("gw2", "gw_asr", True)
    found = explain_route(snapshot, account, "441234", at=AT, live=live, stats=stats, now=T0)
    assert [g.gateway for g in found.gateways] == ["gw3", "gw1"]
    assert ("gw2", "alarm gw_asr") in found.excluded


def invite() -> Request:
    text = (
        "INVITE sip:441234567@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@192.0.2.10>;tag=f\r\n"
        "To: <sip:x@127.0.0.1>\r\nCall-ID: q1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:1000@192.0.2.10>\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_the_pipeline_admits_with_the_demoted_order(tmp_path: Path) -> None:
    """The select stage of a real admission: the call's plan (what the engine hunts through
    and the CDR's detail reads) has the poor gateway last."""
    stats = Statistics()
    attempts(stats, "gw1", time.monotonic(), failed=20)  # the pipeline's clock
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    pipeline = Pipeline(
        snapshot_of(tmp_path), LiveState(), nonces, cast(CdrSink, object()), stats=stats
    )
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("192.0.2.10", 5060))
    admission = pipeline.admit(invite(), flow, AT.timestamp())
    assert isinstance(admission, Admission), admission
    context = cast(CallContext, admission.policy)
    assert context.plan.gateway_ids == ("gw2", "gw3", "gw1")
    assert routing_trace(context.plan, context.skipped).startswith(
        "route '44': gw2, gw3, gw1; demoted gw1: ASR 0.00 < 0.3"
    )


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        ("quality = { min_asr = 1.3 }", "routes[0].quality.min_asr: must be between 0 and 1"),
        ('quality = { window = "15m" }', "routes[0].quality.min_asr: is required"),
        ("quality = { min_asr = 0.3, min_attempts = 0 }", "routes[0].quality.min_attempts:"),
        ("quality = { min_asr = 0.3, minimum = 3 }", "routes[0].quality.minimum: unknown key"),
        ('quality = "high"', "routes[0].quality: must be a table"),
    ],
)
def test_a_bad_quality_is_named(tmp_path: Path, route: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        config(tmp_path, route=route)
    assert str(e.value).startswith(f"{tmp_path / 'switch.toml'}: {problem}")


def test_route_live_needs_the_management_api(tmp_path: Path) -> None:
    """``softswitch route --live`` asks the running switch; without one it says why."""
    off = write(tmp_path, '[management]\nlisten = "off"\n', route=QUALITY)
    out, err = io.StringIO(), io.StringIO()
    assert live_route(str(off), "acme", "441234", out=out, err=err) == 1
    assert err.getvalue() == f"error: {off}: [management] listen is off: --live needs the API\n"
    port = free_port()  # nothing listens there
    (tmp_path / "down").mkdir()
    down = write(tmp_path / "down", f'[management]\nlisten = "127.0.0.1:{port}"\n')
    err = io.StringIO()
    assert live_route(str(down), "acme", "441234", out=out, err=err) == 1
    assert err.getvalue().startswith(
        f"error: cannot ask the running switch at http://127.0.0.1:{port}/api/route?account=acme"
    )
    assert out.getvalue() == ""
