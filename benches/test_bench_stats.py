"""What live statistics cost per call: the events the pipeline records for one call
(started, gateway seized and released, ended, each built from the real ``Call`` and route
plan), applied to ``Statistics`` alone, to the Prometheus ``Metrics`` alone, and to both as
the switch runs them.

The budget is 5% of the switch's CPU per call (about 2 ms at 500 calls/s on the project's
machine, README's Benchmarks): some 100 µs. Each round records ``CALLS`` calls spread over 50
accounts, 10 gateways, 100 destinations and 10 route prefixes, the clock advancing 2 ms per
call (500 calls/s), so buckets fill, roll over and are reset as in service. The per-call
figure is the round's time divided by ``CALLS`` (printed, and in ``extra_info``). Run:

    python -m pytest benches/test_bench_stats.py --benchmark-only -q -s
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from softswitch.call.refusal import EndReason
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy.calls import Admission, Attempt, Call
from softswitch.sip import Request, parse_message
from softswitch.sip.transaction import ServerTransaction
from softswitch.stats import CallRefused, Statistics
from softswitch.stats.events import ended_of, started_of
from softswitch.stats.prometheus import Metrics
from softswitch.transport import Flow, Transport

CALLS = 1000
STEP = 0.002  # seconds between calls: 500 calls/s
T0 = 1_700_000_000.0


@dataclass
class Sample:
    account: str
    plan: RoutePlan
    call: Call


def _config(tmp: Path) -> Path:
    lines = ["[server]", 'listen = ["udp:127.0.0.1:5060"]', 'database = "cdr.sqlite"']
    lines += ["[[rate_decks]]", 'id = "sell"', 'file = "sell.csv"']
    (tmp / "sell.csv").write_text(
        "prefix,destination,rate\n" + "".join(f"44{i:02d},D{i},0.10\n" for i in range(100))
    )
    for g in range(10):
        (tmp / f"g{g}.csv").write_text("prefix,destination,rate\n44,UK,0.01\n")
        lines += ["[[rate_decks]]", f'id = "g{g}"', f'file = "g{g}.csv"']
    for a in range(50):
        lines += ["[[accounts]]", f'id = "a{a}"', f'ips = ["10.{a}.0.0/16"]']
        lines += ['rate_deck = "sell"', 'routing_plan = "main"']
    for g in range(10):
        lines += ["[[gateways]]", f'id = "g{g}"', f'address = "192.0.2.{g + 1}:5060"']
        lines += [f'rate_deck = "g{g}"']
    for d in range(10):
        lines += ["[[routes]]", 'plan = "main"', f'prefix = "44{d}"']
        lines += [f'gateways = ["g{d}", "g{(d + 1) % 10}"]', 'strategy = "lcr"']
    path = tmp / "switch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _invite() -> Request:
    text = (
        "INVITE sip:441234567@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@10.0.0.5>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\n"
        "Call-ID: bench\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def _call(account: str, plan: RoutePlan, failover: bool) -> Call:
    request = _invite()
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.5", 5060))
    admission = Admission(account, "441234567", plan.number, 3600.0, 4, 30.0)
    call = Call("bench", request, flow, ServerTransaction(request, reliable=False), admission,
                T0, 0.0)  # fmt: skip
    gateways = plan.gateway_ids
    if failover:
        call.attempts.append(
            Attempt(gateways[1], "", "", T0 + 0.01, ended_at=T0 + 0.2, status=503, outcome="failed")
        )
    call.attempts.append(
        Attempt(
            gateways[0],
            "",
            "",
            T0 + 0.25,
            ring_at=T0 + 1.1,
            answer_at=T0 + 9.0,
            ended_at=T0 + 95.0,
            status=200,
            outcome="answered",
        )
    )
    call.ring_at, call.pdd = T0 + 1.2, 1.2
    call.answer_at, call.end_at = T0 + 9.0, T0 + 95.0
    call.final_status, call.end_reason = 200, EndReason.NORMAL_CLEARING
    return call


def _samples(tmp: Path, failover: bool) -> list[Sample]:
    config = load_config(_config(tmp))
    snapshot = build_snapshot(config)
    at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    samples = []
    for i in range(100):
        account = snapshot.config.accounts[i % 50]
        plan = route_call(snapshot, account, f"44{i:02d}1234567", at, i)
        assert isinstance(plan, RoutePlan)
        samples.append(Sample(account.id, plan, _call(account.id, plan, failover)))
    return samples


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return _samples(tmp_path_factory.mktemp("plain"), failover=False)


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return _samples(tmp_path_factory.mktemp("failover"), failover=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def tick(self) -> float:
        self.now += STEP
        return self.now


def statistics_round(stats: Statistics, samples: list[Sample], clock: Clock) -> Callable[[], None]:
    """One round: CALLS calls, each with the pipeline's four kinds of event."""

    def run() -> None:
        n = len(samples)
        for i in range(CALLS):
            s = samples[i % n]
            now = clock.tick()
            stats.call_started(started_of(s.account, s.plan), now)
            for attempt in s.call.attempts:
                stats.gateway_seized(attempt.gateway_id, now)
                stats.gateway_released(attempt.gateway_id, now)
            stats.call_ended(ended_of(s.call, s.plan), now)

    return run


def metrics_round(metrics: Metrics, samples: list[Sample]) -> Callable[[], None]:
    def run() -> None:
        n = len(samples)
        for i in range(CALLS):
            s = samples[i % n]
            metrics.call_started(started_of(s.account, s.plan))
            for attempt in s.call.attempts:
                metrics.gateway_seized(attempt.gateway_id)
                metrics.gateway_released(attempt.gateway_id)
            metrics.call_ended(ended_of(s.call, s.plan))

    return run


def per_call(benchmark: Any, label: str) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["us_per_call"] = round(mean / CALLS * 1e6, 2)
    print(f"\n{label}: {mean / CALLS * 1e6:.1f} µs per call")


def test_statistics_only(benchmark: Any, plain: list[Sample]) -> None:
    benchmark(statistics_round(Statistics(), plain, Clock()))
    per_call(benchmark, "Statistics alone, one attempt")


def test_metrics_only(benchmark: Any, plain: list[Sample]) -> None:
    benchmark(metrics_round(Metrics(), plain))
    per_call(benchmark, "Metrics alone, one attempt")


def test_statistics_and_metrics(benchmark: Any, plain: list[Sample]) -> None:
    benchmark(statistics_round(Statistics(metrics=Metrics()), plain, Clock()))
    per_call(benchmark, "Statistics + Metrics (the switch), one attempt")


def test_statistics_and_metrics_failover(benchmark: Any, failover: list[Sample]) -> None:
    benchmark(statistics_round(Statistics(metrics=Metrics()), failover, Clock()))
    per_call(benchmark, "Statistics + Metrics (the switch), two attempts")


def test_refusals(benchmark: Any) -> None:
    stats = Statistics(metrics=Metrics())
    clock = Clock()
    refusals = [CallRefused(f"a{i % 50}", 503, "limit_exceeded") for i in range(100)]

    def run() -> None:
        for i in range(CALLS):
            stats.call_refused(refusals[i % 100], clock.tick())

    benchmark(run)
    per_call(benchmark, "a refusal, Statistics + Metrics")


def test_query_an_account_over_24h(benchmark: Any, plain: list[Sample]) -> None:
    """A read (the management API's): one account's 24 h window, after a day of traffic."""
    stats = Statistics()
    clock = Clock()
    fill = statistics_round(stats, plain, clock)
    for _ in range(90):  # 90,000 calls at 500/s: 3 minutes ...
        fill()
        clock.now += 900.0  # ... spread over 22.5 hours, a bucket apart
    result = benchmark(stats.query, "account", "a0", "24h", clock.now)
    assert result["attempts"] == 90 * CALLS // 50
