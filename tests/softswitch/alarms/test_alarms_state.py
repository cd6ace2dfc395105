"""``Alarms`` against a ``Statistics`` fed with hand-made gateway attempts at explicit
(monotonic) times: when an alarm is raised and cleared, what it logs and exports, how
``disable`` takes a gateway out of the select stage and puts it back, and what a reload
keeps. The runner's task is driven once on a real loop, bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path

import pytest
from alarms_support import attempts, config

from softswitch.alarms import AlarmRunner, Alarms
from softswitch.call.live import LiveState
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.select import select_gateways
from softswitch.call.snapshot import build_snapshot
from softswitch.config import Config
from softswitch.stats import Statistics
from softswitch.stats.prometheus import Metrics

ASR = """
[[alarms]]
id = "gw_asr"
metric = "asr"
scope = "gateway"
window = "15m"
below = 0.3
clear = 0.5
min_attempts = 10
actions = ["log", "disable"]
interval = 5
"""
T0 = 10_000.0
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def setup(cfg: Config) -> tuple[Alarms, Statistics, LiveState, Metrics]:
    metrics = Metrics()
    stats, live = Statistics(metrics=metrics), LiveState()
    alarms = Alarms(stats, live, metrics=metrics)
    alarms.configure(cfg, T0)
    return alarms, stats, live, metrics


def raised(alarms: Alarms) -> list[tuple[str, str]]:
    return [(a.rule, a.key) for a in alarms.active()]


def usable(cfg: Config, live: LiveState) -> tuple[list[str], list[tuple[str, str]]]:
    snapshot = build_snapshot(cfg)
    plan = route_call(snapshot, snapshot.accounts["acme"], "441234", AT, "c")
    assert isinstance(plan, RoutePlan)
    found, skipped = select_gateways(snapshot, plan, live, T0)
    return [g.id for g in found], skipped


def test_raised_at_the_threshold_with_enough_attempts_only(tmp_path: Path) -> None:
    alarms, stats, _, _ = setup(config(tmp_path, ASR))
    # 9 failures: an ASR of 0, but fewer than min_attempts: no evidence, no alarm
    attempts(stats, "gw1", T0, failed=9)
    attempts(stats, "gw2", T0, answered=3, failed=7)  # ASR 0.3 exactly: not below
    assert alarms.evaluate(T0, 1.0) == []
    # the 10th failure: raised, on gw1 alone
    attempts(stats, "gw1", T0 + 1, failed=1)
    (change,) = alarms.evaluate(T0 + 5, 2.0)
    assert (change.raised, change.alarm.key, change.alarm.value, change.alarm.attempts) == (
        True,
        "gw1",
        0.0,
        10,
    )
    assert raised(alarms) == [("gw_asr", "gw1")]
    assert alarms.active()[0].view()["since"] == "1970-01-01T00:00:02+00:00"


def test_each_rule_is_evaluated_at_its_interval(tmp_path: Path) -> None:
    alarms, stats, _, _ = setup(config(tmp_path, ASR))
    assert alarms.due_in(T0) == 0.0
    assert alarms.evaluate(T0, 0.0) == []
    assert alarms.due_in(T0 + 1) == 4.0
    attempts(stats, "gw1", T0 + 1, failed=10)
    assert alarms.evaluate(T0 + 4.9, 0.0) == []  # not due yet
    assert len(alarms.evaluate(T0 + 5, 0.0)) == 1


def test_hysteresis_clears_only_back_past_clear(tmp_path: Path) -> None:
    alarms, stats, live, _ = setup(config(tmp_path, ASR))
    attempts(stats, "gw1", T0, failed=10)
    alarms.evaluate(T0, 0.0)
    # 8 answered of 18: ASR 0.44, above the threshold (0.3) but below clear (0.5): raised
    attempts(stats, "gw1", T0 + 1, answered=8)
    assert alarms.evaluate(T0 + 5, 0.0) == []
    assert alarms.active()[0].value == pytest.approx(8 / 18)
    # 10 of 20: 0.5, back at clear: cleared
    attempts(stats, "gw1", T0 + 6, answered=2)
    (change,) = alarms.evaluate(T0 + 10, 0.0)
    assert (change.raised, change.why) == (False, "recovered")
    assert raised(alarms) == []
    assert live.gateway_alarm("gw1") is None


def test_disable_takes_the_gateway_out_of_select_until_it_clears(tmp_path: Path) -> None:
    cfg = config(tmp_path, ASR)
    alarms, stats, live, _ = setup(cfg)
    assert usable(cfg, live) == (["gw1", "gw2", "gw3"], [])
    attempts(stats, "gw1", T0, failed=10)
    alarms.evaluate(T0, 0.0)
    assert live.gateway_alarm("gw1") == "gw_asr"
    assert usable(cfg, live) == (["gw2", "gw3"], [("gw1", "alarm gw_asr")])
    # disabled, gw1 takes no calls: its failures age out of the 15-minute window (60 s
    # buckets: the bucket of T0 leaves at its start + 15 min), and with fewer than
    # min_attempts left there is no evidence to hold it out: it is back
    gone = (T0 // 60 + 15) * 60
    assert alarms.evaluate(gone - 5, 0.0) == []  # rounds every 5 s: the one before
    (change,) = alarms.evaluate(gone, 0.0)
    assert (change.raised, change.why) == (False, "fewer than 10 attempts in the window")
    assert usable(cfg, live) == (["gw1", "gw2", "gw3"], [])


def test_an_alarm_never_lifts_an_operators_disable(tmp_path: Path) -> None:
    cfg = config(tmp_path, ASR)
    alarms, stats, live, _ = setup(cfg)
    live.set_gateway_disabled("gw1", True)
    attempts(stats, "gw1", T0, failed=10)
    alarms.evaluate(T0, 0.0)
    attempts(stats, "gw1", T0 + 1, answered=20)
    alarms.evaluate(T0 + 5, 0.0)
    assert raised(alarms) == []
    assert usable(cfg, live)[1] == [("gw1", "disabled (operator)")]


def test_raising_and_clearing_log_one_warning_each_and_set_the_gauge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alarms, stats, _, metrics = setup(config(tmp_path, ASR))
    attempts(stats, "gw1", T0, failed=10)
    with caplog.at_level(logging.WARNING, logger="softswitch.alarms"):
        alarms.evaluate(T0, 0.0)
        alarms.evaluate(T0 + 5, 0.0)  # still raised: nothing more logged
        attempts(stats, "gw1", T0 + 6, answered=10)
        alarms.evaluate(T0 + 10, 0.0)
    raised_line, cleared_line = caplog.records
    assert raised_line.getMessage() == (
        "event=alarm_raised rule=gw_asr scope=gateway key=gw1 metric=asr value=0 below=0.3"
        " window=15m attempts=10 actions=log,disable; gateway gw1 out of routing until the"
        " alarm clears"
    )
    assert cleared_line.getMessage() == (
        "event=alarm_cleared rule=gw_asr scope=gateway key=gw1 metric=asr value=0.5"
        " clear=0.5 attempts=20 after=10s (recovered); gateway gw1 back in routing"
    )
    extras = [(getattr(r, "event", None), getattr(r, "rule", None)) for r in caplog.records]
    assert extras == [("alarm_raised", "gw_asr"), ("alarm_cleared", "gw_asr")]
    text = metrics.exposition()[0].decode()
    assert 'softswitch_alarm_active{key="gw1",rule="gw_asr"} 0.0' in text


def test_switch_and_account_scopes_and_a_single_key(tmp_path: Path) -> None:
    rules = """
[[alarms]]
id = "busy"
metric = "attempts"
scope = "switch"
window = "5m"
above = 5
clear = 2

[[alarms]]
id = "beta_pdd"
metric = "pdd_p95"
scope = "account"
key = "beta"
window = "5m"
above = 0.4
"""
    alarms, stats, _, metrics = setup(config(tmp_path, rules))
    attempts(stats, "gw2", T0, answered=6)  # account acme, PDD 0.5 s
    alarms.evaluate(T0, 0.0)
    assert raised(alarms) == [("busy", "all")]  # beta has no calls: nothing to measure
    text = metrics.exposition()[0].decode()
    assert 'softswitch_alarm_active{key="all",rule="busy"} 1.0' in text


def test_a_reload_keeps_raised_alarms_and_clears_those_of_removed_rules(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, ASR)
    alarms, stats, live, _ = setup(cfg)
    attempts(stats, "gw1", T0, failed=10)
    alarms.evaluate(T0, 0.0)
    # the same rule, only log now: still raised, the gateway back in routing
    (tmp_path / "second").mkdir()
    logged = config(tmp_path / "second", ASR.replace('["log", "disable"]', '["log"]'))
    assert alarms.configure(logged, T0 + 1) == []
    assert raised(alarms) == [("gw_asr", "gw1")]
    assert live.gateway_alarm("gw1") is None
    # disable again, then the rule removed: cleared, gateway back
    assert alarms.configure(cfg, T0 + 2) == []
    assert live.gateway_alarm("gw1") == "gw_asr"
    (change,) = alarms.configure(config(tmp_path / "second"), T0 + 3)
    assert (change.raised, change.why) == (False, "rule removed")
    assert (raised(alarms), live.gateway_alarm("gw1")) == ([], None)


def test_the_runner_evaluates_on_the_loop(tmp_path: Path) -> None:
    """Bounded: the first round runs as soon as the task starts. On the runner's clock
    alone (``time.monotonic``, the seconds since the machine booted): configured first at
    ``T0`` (10,000 s), the rules would not be due again on a machine up for less than that."""
    metrics = Metrics()
    stats = Statistics(metrics=metrics)
    alarms = Alarms(stats, LiveState(), metrics=metrics)

    async def scenario() -> None:
        now = time.monotonic()  # the runner's clock
        alarms.configure(config(tmp_path, ASR.replace("15m", "5m")), now)
        attempts(stats, "gw1", now, failed=10)
        runner = AlarmRunner(alarms)
        runner.start()
        try:
            while not alarms.active():
                await asyncio.sleep(0.01)
        finally:
            await runner.stop()

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert raised(alarms) == [("gw_asr", "gw1")]
