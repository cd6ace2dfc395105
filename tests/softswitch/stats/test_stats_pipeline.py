"""The pipeline feeds the statistics: admitted calls, gateway claims, CDRs and refusals,
through the real stages with a real configuration and decks (no sockets)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest

from kept_cdrs import Sink
from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrSink
from softswitch.config import load_config
from softswitch.proxy.calls import Admission, Attempt, Call, Target
from softswitch.proxy.engine import Reply
from softswitch.proxy.pipeline import CallContext, Pipeline
from softswitch.sip import Request, parse_message
from softswitch.sip.digest import DigestAuthenticator
from softswitch.sip.transaction import ServerTransaction
from softswitch.stats import Statistics
from softswitch.stats.events import ended_of
from softswitch.stats.prometheus import Metrics
from softswitch.transport import Flow, Transport

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"

[defaults]
setup_timeout = 2
max_duration = 60

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "a"
file = "a.csv"

[[rate_decks]]
id = "b"
file = "b.csv"

[[accounts]]
id = "cust"
ips = ["10.0.0.0/24"]
rate_deck = "sell"
routing_plan = "main"

[[gateways]]
id = "a"
address = "192.0.2.1:5070"
rate_deck = "a"

[[gateways]]
id = "b"
address = "192.0.2.2:5080"
rate_deck = "b"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["a", "b"]
strategy = "lcr"
"""


def make_snapshot(tmp_path: Path) -> Snapshot:
    (tmp_path / "sell.csv").write_text("prefix,destination,rate\n44,United Kingdom,0.10\n")
    (tmp_path / "a.csv").write_text("prefix,rate\n44,0.01\n")
    (tmp_path / "b.csv").write_text("prefix,rate\n44,0.02\n")
    (tmp_path / "switch.toml").write_text(CONFIG)
    return build_snapshot(load_config(tmp_path / "switch.toml"))


def invite(call_id: str = "c1") -> Request:
    text = (
        "INVITE sip:+441234567@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@10.0.0.5>;tag=f\r\n"
        "To: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@10.0.0.5>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def flow(ip: str = "10.0.0.5") -> Flow:
    return Flow(Transport.UDP, ("127.0.0.1", 5060), (ip, 5060))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Pipeline, Statistics, Metrics]:
    metrics = Metrics()
    stats = Statistics(metrics=metrics)
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    pipeline = Pipeline(
        make_snapshot(tmp_path), LiveState(), nonces, cast(CdrSink, Sink()), stats=stats
    )
    return pipeline, stats, metrics


def now() -> float:
    return time.monotonic()


T0 = 1_700_000_000.0  # the call's wall-clock timings


def test_a_call_through_the_pipeline(
    setup: tuple[Pipeline, Statistics, Metrics], tmp_path: Path
) -> None:
    p, stats, _ = setup
    request = invite()
    admission = p.admit(request, flow(), time.time())
    assert isinstance(admission, Admission)
    for dimension, key in (
        ("switch", "all"),
        ("account", "cust"),
        ("destination", "United Kingdom"),
        ("prefix", "44"),
    ):
        summary = stats.query(dimension, key, "5m", now())
        assert summary["concurrent"] == {"current": 1, "peak": 1}, dimension
        assert summary["attempts"] == 0  # counted when the CDR is written
    call = Call(
        call_id="c1",
        invite=request,
        caller_flow=flow(),
        server_tx=ServerTransaction(request, reliable=False),
        admission=admission,
        invite_at=T0,
        started_mono=0.0,
    )
    first = p.next_target(call, now())
    assert isinstance(first, Target)
    assert first.gateway_id == "a"
    assert stats.query("gateway", "a", "5m", now())["concurrent"]["current"] == 1
    call.attempts.append(Attempt("a", "", "", T0 + 0.01, ended_at=T0 + 0.05, status=503))
    call.attempts[0].outcome = "failed"
    p.release_target(call, first)
    assert stats.query("gateway", "a", "5m", now())["concurrent"] == {"current": 0, "peak": 1}
    second = p.next_target(call, now())
    assert isinstance(second, Target)
    assert second.gateway_id == "b"
    call.attempts.append(
        Attempt(
            "b",
            "",
            "",
            T0 + 0.1,
            ring_at=T0 + 0.5,
            answer_at=T0 + 1.0,
            status=200,
            outcome="answered",
        )
    )
    call.ring_at, call.pdd = T0 + 0.6, 0.6
    call.answer_at, call.end_at = T0 + 1.0, T0 + 31.0
    call.final_status, call.end_reason = 200, EndReason.NORMAL_CLEARING
    call.answered_gateway = "b"
    p.account(call)  # releases b with the call

    switch = stats.query("switch", "all", "5m", now())
    assert (switch["attempts"], switch["answered"], switch["seizures"]) == (1, 1, 2)
    assert (switch["asr"], switch["ner"], switch["acd"]) == (1.0, 1.0, 30.0)
    assert switch["pdd"] == {"count": 1, "avg": 0.6, "p95": 0.6, "max": 0.6}
    assert switch["concurrent"] == {"current": 0, "peak": 1}
    assert stats.query("destination", "United Kingdom", "5m", now())["answered"] == 1
    assert stats.query("prefix", "44", "5m", now())["answered"] == 1
    a = stats.query("gateway", "a", "5m", now())
    assert (a["attempts"], a["answered"], a["failures"]["status"]) == (1, 0, {"503": 1})
    b = stats.query("gateway", "b", "5m", now())
    assert (b["attempts"], b["answered"], b["acd"]) == (1, 1, 30.0)
    assert b["pdd"]["avg"] == 0.4  # the gateway's INVITE to its 18x
    assert b["concurrent"] == {"current": 0, "peak": 1}

    # A reload swaps the snapshot, never the statistics.
    p.use(make_snapshot(tmp_path))
    assert p.stats is stats
    assert stats.query("switch", "all", "5m", now())["attempts"] == 1


def test_refusals_count_when_they_get_a_cdr(setup: tuple[Pipeline, Statistics, Metrics]) -> None:
    p, stats, _ = setup
    refused = Reply(503, end_reason=EndReason.LIMIT_EXCEEDED, account_id="cust")
    p.account_refusal(invite(), flow(), refused, time.time())
    # a customer's address, no account named: the switch's attempt only
    p.account_refusal(invite(), flow(), Reply(403, end_reason=EndReason.AUTH_FAILED), time.time())
    # a stranger's: no CDR, so no attempt
    stranger = flow("203.0.113.9")
    p.account_refusal(invite(), stranger, Reply(403, end_reason=EndReason.AUTH_FAILED), 0.0)
    switch = stats.query("switch", "all", "5m", now())
    assert (switch["attempts"], switch["answered"], switch["asr"]) == (2, 0, 0.0)
    assert switch["failures"] == {
        "status": {"403": 1, "503": 1},
        "reason": {"auth_failed": 1, "limit_exceeded": 1},
    }
    cust = stats.query("account", "cust", "5m", now())
    assert (cust["attempts"], cust["failures"]["reason"]) == (1, {"limit_exceeded": 1})
    assert stats.keys("destination") == []


def test_an_admitted_call_with_no_gateway_left_is_an_attempt_without_seizures(
    setup: tuple[Pipeline, Statistics, Metrics],
) -> None:
    p, stats, _ = setup
    request = invite()
    admission = p.admit(request, flow(), time.time())
    assert isinstance(admission, Admission)
    call = Call("c1", request, flow(), ServerTransaction(request, reliable=False), admission, T0, 0)
    call.end_at, call.final_status, call.end_reason = T0, 503, EndReason.NO_GATEWAY
    assert isinstance(admission.policy, CallContext)
    event = ended_of(call, admission.policy.plan)
    assert (event.destination, event.prefix, event.attempts) == ("United Kingdom", "44", ())
    assert (event.status, event.end_reason, event.pdd_ms, event.duration_ms) == (
        503, "no_gateway", None, 0,
    )  # fmt: skip
    p.account(call)
    prefix = stats.query("prefix", "44", "5m", now())
    assert (prefix["attempts"], prefix["seizures"], prefix["failures"]["reason"]) == (
        1, 0, {"no_gateway": 1},
    )  # fmt: skip
