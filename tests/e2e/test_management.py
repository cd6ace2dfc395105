"""The management HTTP API of a real ``softswitch run``, with SIPp calls through it.

Everything an operator does from the API, checked by what the switch then does on the wire
and in its CDRs: a live call listed and hung up (both SIPp sides get the BYE), a gateway
disabled and enabled, an account disabled, a block lifted, a top-up that lets a prepaid call
in, a reload, the route explanation against ``softswitch route``, CDR export, ``/metrics``
counting the calls, and the token and error answers.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from callflow_harness import LOCAL, free_port
from callflow_net import NUMBER, Account, Carrier, Net, ok

import softswitch

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token"


class Api:
    """The switch's API over HTTP, as any client sees it (urllib, bounded)."""

    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.base = f"http://{LOCAL}:{port}"
        self.token = token

    def raw(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, str, str]:
        """(status, content type, body text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        token = token if token is not None else self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return (
                    response.status,
                    response.headers.get_content_type(),
                    response.read().decode(),
                )
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get_content_type(), e.read().decode()

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, content_type, text = self.raw(method, path, body, **kw)
        assert content_type == "application/json", (status, text)
        return status, json.loads(text)

    def calls_until(self, state: str, count: int = 1) -> list[dict[str, Any]]:
        """The live calls once ``count`` are in ``state`` (bounded: SIPp's call is quick)."""
        deadline = time.monotonic() + 10
        calls: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            _, listed = self("GET", "/api/calls")
            calls = [c for c in listed["calls"] if c["state"] == state]
            if len(calls) >= count:
                return calls
            time.sleep(0.05)
        raise AssertionError(f"no {count} {state} calls: {calls}")

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when the series does not exist yet)."""
        status, _, text = self.raw("GET", "/metrics")
        assert status == 200, text
        for line in text.splitlines():
            match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
            if match is None or match[1] != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
            if found == labels:
                return float(match[3])
        return 0.0


def start(net: Net, carriers: list[Carrier], accounts: list[Account], **kw: Any) -> Api:
    port = free_port()
    management = f'listen = "{LOCAL}:{port}"\ntoken = "{TOKEN}"'
    net.start_switch(carriers, accounts, management=management, **kw)
    return Api(port)


def test_a_live_call_is_hung_up_and_metrics_count_the_calls(net: Net) -> None:
    a = Carrier("a")
    api = start(net, [a], [Account()])
    before = api.metric("softswitch_calls_total", account="customer", outcome="normal_clearing")
    carrier = net.carrier(a, "uas_answer", calls=4)
    waiting = net.customer("uac_wait_bye", label="waiting")
    (call,) = api.calls_until("answered")
    assert (call["account"], call["gateway"], call["number"]) == ("customer", "a", NUMBER)
    assert call["duration"] >= 0
    assert api.metric("softswitch_calls_active", account="customer") == 1.0  # during the call
    quoted = urllib.parse.quote(call["id"], safe="")
    status, done = api("DELETE", f"/api/calls/{quoted}")
    assert (status, done["hung_up"], done["end_reason"]) == (200, 1, "operator_hangup")
    ok(net, waiting)  # SIPp got the switch's BYE and answered it
    others = net.customer("uac_call", calls=3, args=["-d", "100", "-r", "10"], label="others")
    ok(net, others, carrier)
    rows = net.cdrs(4)
    assert sorted(r["end_reason"] for r in rows) == ["normal_clearing"] * 3 + ["operator_hangup"]
    hung = next(r for r in rows if r["end_reason"] == "operator_hangup")
    assert (hung["call_id"], hung["hangup_side"]) == (call["id"], "switch")
    # /metrics moved by exactly the calls made
    after = api.metric("softswitch_calls_total", account="customer", outcome="normal_clearing")
    assert after - before == 3.0
    assert api.metric("softswitch_calls_total", account="customer", outcome="operator_hangup") == 1
    assert api.metric("softswitch_calls_active", account="customer") == 0.0
    # the CSV export is the CDRs
    status, content_type, text = api.raw("GET", "/api/cdrs.csv?account=customer")
    assert (status, content_type) == (200, "text/csv")
    exported = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["call_id"] for r in exported) == sorted(r["call_id"] for r in rows)
    # the token, and errors as JSON
    assert api("GET", "/api/calls", token="wrong") == (401, {"error": "wrong token"})
    assert Api(api_port(api), token=None)("GET", "/metrics")[0] == 401
    status, bad = api("GET", "/api/cdrs?since=yesterday")
    assert status == 400
    assert bad["error"].startswith("since must be an ISO 8601 date or time")
    assert api("DELETE", f"/api/calls/{quoted}")[0] == 404
    assert api("POST", "/api/accounts/customer/topup", {"amount": "1"})[0] == 409  # not billed


def api_port(api: Api) -> int:
    return int(api.base.rsplit(":", 1)[1])


def test_operators_controls_change_what_the_switch_does(net: Net) -> None:
    a, b = Carrier("a"), Carrier("b")
    accounts = [
        Account(),
        Account("prepaid", tech_prefix="7777", extra=('billing = "prepaid"',)),
        Account("alice", ips=(), username="alice", password="s3cret"),
    ]
    api = start(net, [a, b], accounts, defaults="auth_fail_limit = 1")
    carrier_a = net.carrier(a, "uas_answer", calls=2)
    carrier_b = net.carrier(b, "uas_answer", calls=1)

    # a gateway disabled: the next call goes to the next gateway; enabled again: back
    status, done = api("POST", "/api/gateways/a/disable")
    assert (status, done["enabled"]) == (200, False)
    assert "SIGHUP reload keeps it" in done["lasts"]
    ok(net, net.customer("uac_call", args=["-d", "100"], label="while_a_off"))
    assert api("POST", "/api/gateways/a/enable")[1]["enabled"] is True
    ok(net, net.customer("uac_call", args=["-d", "100"], label="a_back"))
    assert [r["gateway_id"] for r in net.cdrs(2)] == ["b", "a"]
    assert "gateway a disabled by an operator" in net.switch_log()

    # an account disabled: 403
    assert api("POST", "/api/accounts/customer/disable")[0] == 200
    ok(net, net.customer("uac_refused", fill={"EXPECTED": "403"}, label="disabled"))
    assert net.cdrs(3)[-1]["end_reason"] == "account_disabled"
    assert api("POST", "/api/accounts/customer/enable")[0] == 200

    # a top-up through the API lets a prepaid call in
    status, booked = api("POST", "/api/accounts/prepaid/topup", {"amount": "5", "note": "e2e"})
    assert (status, booked["entry"]["balance_after"]) == (200, "5.000000")
    ok(net, net.customer("uac_call", number=f"7777{NUMBER}", args=["-d", "100"], label="paid"))
    ok(net, carrier_a, carrier_b)
    paid = net.cdrs(4)[-1]
    assert (paid["account_id"], paid["end_reason"]) == ("prepaid", "normal_clearing")

    # a source blocked for a wrong password (127.0.0.2), listed and unblocked
    wrong = ["-au", "alice", "-ap", "wrong", "-auth_uri", f"{NUMBER}@{LOCAL}:{net.port}"]
    ok(
        net,
        net.customer(
            "uac_auth_refused",
            args=[*wrong, "-i", "127.0.0.2"],
            fill={"EXPECTED": "403"},
            label="guesser",
        ),
    )
    status, blocks = api("GET", "/api/blocks")
    assert [b["ip"] for b in blocks["blocks"]] == ["127.0.0.2"]
    assert api("DELETE", "/api/blocks/127.0.0.2") == (200, {"ip": "127.0.0.2", "unblocked": True})
    assert api("GET", "/api/blocks") == (200, {"blocks": []})

    # a reload; the route explanation is `softswitch route`'s
    status, reloaded = api("POST", "/api/reload")
    assert (status, reloaded["reloaded"]) == (200, True)
    at = "2026-12-04T10:00:00+00:00"
    query = urllib.parse.urlencode({"account": "customer", "number": NUMBER, "at": at})
    status, route = api("GET", f"/api/route?{query}")
    assert status == 200
    assert [g["gateway"] for g in route["gateways"]] == ["a", "b"]
    assert net.switch is not None
    command = subprocess.run(
        [
            sys.executable,
            "-m",
            "softswitch.cli",
            "route",
            "--config",
            str(net.switch.config),
            "--account",
            "customer",
            "--at",
            at,
            NUMBER,
        ],
        cwd=Path(softswitch.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert route["text"] == command.stdout
