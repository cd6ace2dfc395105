"""Alarms and quality routing on a real ``softswitch run``, with SIPp carriers whose success
rates the test controls: ``bad`` rejects every call with 503, ``good`` answers every one.

* A route with ``quality`` demotes ``bad`` once it has failed ``min_attempts`` calls: later
  calls go to ``good`` first, as the CDRs' attempts show, and the routing trace in the CDR,
  ``softswitch route --live`` and the offline ``softswitch route`` each say so their way.
* An ``[[alarms]]`` rule with action ``disable`` takes ``bad`` out: later CDRs show it
  skipped (``alarm bad_asr``); the alarm is in the log, ``/api/alarms``, ``/api/gateways``
  and ``/metrics``; a reload without the rule clears it and puts the gateway back.

Calls run in batches with at most one call up at a time, and each batch's CDRs are awaited
before the next: a CDR written is a call counted, so the next batch is routed on figures
that include it. Every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from callflow_harness import LOCAL, free_port
from callflow_net import NUMBER, Account, Carrier, Net, attempts, ok

import softswitch

pytestmark = pytest.mark.e2e

REJECT = {"STATUS": "503 Service Unavailable"}
#: At most one call up at a time: each call ends before the next is routed.
ONE_AT_A_TIME = ["-l", "1", "-d", "0"]
QUALITY = 'quality = { min_asr = 0.5, window = "5m", min_attempts = 3 }'
ALARM = """
[[alarms]]
id = "bad_asr"
metric = "asr"
scope = "gateway"
window = "5m"
below = 0.5
min_attempts = 3
actions = ["log", "disable"]
interval = 0.2
"""


def api(port: int, method: str, path: str) -> Any:
    """One request to the switch's management API (loopback, no token), its JSON answer
    (or the text of ``/metrics``)."""
    request = urllib.request.Request(f"http://{LOCAL}:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    return body if path == "/metrics" else json.loads(body)


def start(net: Net, **kw: Any) -> tuple[Carrier, Carrier, int]:
    bad, good = Carrier("bad"), Carrier("good")  # bad first in priority order
    port = free_port()
    net.start_switch([bad, good], [Account()], management=f'listen = "{LOCAL}:{port}"', **kw)
    return bad, good, port


def calls(net: Net, count: int, label: str) -> None:
    ok(net, net.customer("uac_call", calls=count, args=ONE_AT_A_TIME, label=label))


def route_command(net: Net, *flags: str) -> str:
    """``softswitch route`` on the test's configuration, as an operator runs it."""
    assert net.switch is not None
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "softswitch.cli",
            "route",
            "--config",
            str(net.switch.config),
            "--account",
            "customer",
            *flags,
            NUMBER,
        ],
        cwd=Path(softswitch.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def order(route: str) -> list[str]:
    """The gateways of ``softswitch route``'s "gateways in order:" list."""
    listed = route.split("gateways in order:\n", 1)[1].splitlines()
    return [line.split()[1] for line in listed if line.startswith("  ") and ". " in line[:6]]


def test_quality_routing_tries_the_failing_gateway_last(net: Net) -> None:
    bad, good = start(net, route_extra=QUALITY)[:2]
    failing = net.carrier(bad, "uas_reject", calls=3, fill=REJECT)
    answering = net.carrier(good, "uas_answer", calls=5)

    calls(net, 3, "first")  # bad fails each, good takes it: 3 failed seizures of bad
    first = net.cdrs(3)
    assert [attempts(r) for r in first] == [[("bad", 503, "failed"), ("good", 200, "answered")]] * 3
    assert all("demoted" not in r["detail"] for r in first)

    calls(net, 2, "then")  # bad's ASR 0 over 3 attempts: demoted, good first
    ok(net, failing, answering)
    then = net.cdrs(5)[3:]
    assert [attempts(r) for r in then] == [[("good", 200, "answered")]] * 2
    why = "demoted bad: ASR 0.00 < 0.5 over 5m (0/3 answered)"
    assert all(why in r["detail"] for r in then), [r["detail"] for r in then]
    assert why in net.switch_log()  # the INFO routing trace of each call

    live = route_command(net, "--live")
    assert order(live) == ["good", "bad"]
    assert "  bad              ASR 0.00 < 0.5 over 5m (0/3 answered)" in live
    offline = route_command(net)
    assert order(offline) == ["bad", "good"]
    assert "not applied here (softswitch route --live asks the running switch)" in offline


def test_an_alarm_takes_the_failing_gateway_out(net: Net) -> None:
    bad, good, port = start(net, tail=ALARM)
    failing = net.carrier(bad, "uas_reject", calls=3, fill=REJECT)
    answering = net.carrier(good, "uas_answer", calls=5)

    calls(net, 3, "first")
    assert [attempts(r) for r in net.cdrs(3)] == [
        [("bad", 503, "failed"), ("good", 200, "answered")]
    ] * 3
    deadline = time.monotonic() + 10  # rounds every 0.2 s: the next one raises it
    while not (raised := api(port, "GET", "/api/alarms")["alarms"]):
        assert time.monotonic() < deadline, net.explain()
        time.sleep(0.05)
    (alarm,) = raised
    assert {k: alarm[k] for k in ("rule", "key", "metric", "value", "attempts", "below")} == {
        "rule": "bad_asr",
        "key": "bad",
        "metric": "asr",
        "value": 0.0,
        "attempts": 3,
        "below": 0.5,
    }
    gateway = api(port, "GET", "/api/gateways/bad")
    assert (gateway["enabled"], gateway["disabled_by_alarm"]) == (False, "bad_asr")
    assert 'softswitch_alarm_active{key="bad",rule="bad_asr"} 1.0' in api(port, "GET", "/metrics")
    assert "event=alarm_raised rule=bad_asr scope=gateway key=bad metric=asr value=0" in (
        net.switch_log()
    )

    calls(net, 2, "then")  # bad is skipped: good alone
    ok(net, failing, answering)
    then = net.cdrs(5)[3:]
    assert [attempts(r) for r in then] == [[("good", 200, "answered")]] * 2
    assert all("skipped bad: alarm bad_asr" in r["detail"] for r in then)
    route = api(port, "GET", f"/api/route?account=customer&number={NUMBER}")
    assert {"gateway": "bad", "reason": "alarm bad_asr"} in route["excluded"]

    # a reload without the rule clears the alarm and puts bad back
    net.write_config([bad, good], [Account()], management=f'listen = "{LOCAL}:{port}"')
    assert api(port, "POST", "/api/reload")["reloaded"] is True
    assert api(port, "GET", "/api/alarms") == {"alarms": [], "rules": []}
    assert api(port, "GET", "/api/gateways/bad")["disabled_by_alarm"] is None
    assert 'softswitch_alarm_active{key="bad",rule="bad_asr"} 0.0' in api(port, "GET", "/metrics")
    assert "event=alarm_cleared rule=bad_asr scope=gateway key=bad" in net.switch_log()
    assert "(rule removed); gateway bad back in routing" in net.switch_log()
