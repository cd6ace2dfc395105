"""``Metrics`` keeps plain numbers and turns them into samples at a scrape: its exposition
must be, byte for byte, what the library's own ``Counter``, ``Gauge`` and ``Histogram`` give
for the same events (the reference below is the implementation that used them)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import metrics as library
from prometheus_client.exposition import choose_encoder

from softswitch.stats import CallEnded, CallRefused, CallStarted, GatewayAttempt
from softswitch.stats.prometheus import DURATION_BUCKETS, PDD_BUCKETS, Metrics, status_class

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class ReferenceMetrics:
    """``Metrics`` as it was: a ``prometheus_client`` child incremented per event."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "softswitch_calls",
            "Call attempts with a CDR, by account and outcome (the CDR's end reason).",
            ["account", "outcome"],
            registry=r,
        )
        self.gateway_attempts = Counter(
            "softswitch_gateway_attempts",
            "INVITEs sent to gateways, by the class of their final status.",
            ["gateway", "status_class"],
            registry=r,
        )
        self.calls_active = Gauge(
            "softswitch_calls_active", "Admitted calls in progress.", ["account"], registry=r
        )
        self.gateway_calls_active = Gauge(
            "softswitch_gateway_calls_active",
            "Gateway channels claimed by calls in progress.",
            ["gateway"],
            registry=r,
        )
        self.pdd = Histogram(
            "softswitch_pdd_seconds",
            "Post-dial delay: the customer's INVITE to the first 18x (or the 2xx).",
            ["account"],
            buckets=PDD_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "softswitch_call_duration_seconds",
            "Answered calls' duration, as in the CDR.",
            ["account"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.alarm_active = Gauge(
            "softswitch_alarm_active",
            "1 while an alarm is raised on a key (a gateway, an account, the switch's all).",
            ["rule", "key"],
            registry=r,
        )
        self._children: dict[tuple[object, ...], object] = {}
        #: The active gauges' values, kept here to clamp them at zero: an end whose start
        #: this process never saw (a restarted primary of several workers, whose
        #: predecessor counted the start) must not push a gauge below zero.
        self._levels: dict[tuple[object, str], int] = {}

    def _child(self, metric: Counter | Gauge | Histogram, *labels: str) -> object:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _counter(self, metric: Counter, *labels: str) -> Counter:
        return cast(Counter, self._child(metric, *labels))

    def _gauge(self, metric: Gauge, *labels: str) -> Gauge:
        return cast(Gauge, self._child(metric, *labels))

    def _histogram(self, metric: Histogram, *labels: str) -> Histogram:
        return cast(Histogram, self._child(metric, *labels))

    # -- events (the same as ``Statistics``', without a clock: Prometheus stamps scrapes) ----

    def _up(self, metric: Gauge, label: str) -> None:
        key = (metric, label)
        self._levels[key] = self._levels.get(key, 0) + 1
        self._gauge(metric, label).inc()

    def _down(self, metric: Gauge, label: str) -> None:
        key = (metric, label)
        level = self._levels.get(key, 0)
        if level > 0:
            self._levels[key] = level - 1
            self._gauge(metric, label).dec()

    def call_started(self, event: CallStarted) -> None:
        self._up(self.calls_active, event.account)

    def call_lost(self, account: str) -> None:
        """A call in progress that will never end with an event (its worker died)."""
        self._down(self.calls_active, account)

    def call_ended(self, event: CallEnded) -> None:
        account = event.account
        self._down(self.calls_active, account)
        self._counter(self.calls, account, event.end_reason).inc()
        if event.pdd_ms is not None:
            self._histogram(self.pdd, account).observe(event.pdd_ms / 1000)
        if event.answered:
            self._histogram(self.duration, account).observe(event.duration_ms / 1000)
        for attempt in event.attempts:
            self._counter(
                self.gateway_attempts, attempt.gateway, status_class(attempt.status)
            ).inc()

    def call_refused(self, event: CallRefused) -> None:
        self._counter(self.calls, event.account or "", event.end_reason).inc()

    def gateway_seized(self, gateway: str) -> None:
        self._up(self.gateway_calls_active, gateway)

    def gateway_released(self, gateway: str) -> None:
        self._down(self.gateway_calls_active, gateway)

    def alarm(self, rule: str, key: str, active: bool) -> None:
        """An alarm raised (1) or cleared (0) (``softswitch.alarms``)."""
        self._gauge(self.alarm_active, rule, key).set(1 if active else 0)

    # -- reading -----------------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` (an HTTP Accept header) asks for, and its
        content type: Prometheus' text format by default, OpenMetrics when asked."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class FakeClock:
    """``time.time`` for both implementations: each series' ``_created`` is the n-th stamp."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def events(seed: int) -> Iterator[tuple[str, object]]:
    rng = random.Random(seed)
    accounts = ["acme", "beta", "", 'c\\d"e']
    gateways = ["gw1", "gw2", "gw3"]
    reasons = ["normal_clearing", "busy", "no_answer", "limit_exceeded"]
    for _ in range(400):
        kind = rng.choice(["start", "start", "end", "end", "refuse", "seize", "release", "lost"])
        account = rng.choice(accounts)
        if kind == "start":
            yield "call_started", CallStarted(account, None, None)
        elif kind == "end":
            answered = rng.random() < 0.5
            attempts = tuple(
                GatewayAttempt(
                    rng.choice(gateways),
                    rng.choice([None, 183, 200, 404, 486, 503, 603, 700]),
                    "failed",
                    False,
                    None,
                )
                for _ in range(rng.randint(0, 3))
            )
            pdd = rng.choice([None, 0, 100, 250, 251, 1234, 59_999, 60_000, 60_001, 999_999])
            duration = rng.choice(
                [0, 1, 999, 1000, 42_000, 7_200_000, 9_000_000, rng.randint(0, 10**7)]
            )
            yield "call_ended", CallEnded(
                account, None, None, 200, rng.choice(reasons), answered, False, duration, pdd,
                attempts,
            )  # fmt: skip
        elif kind == "refuse":
            yield (
                "call_refused",
                CallRefused(rng.choice([*accounts, None]), 403, rng.choice(reasons)),
            )
        elif kind == "seize":
            yield "gateway_seized", rng.choice(gateways)
        elif kind == "release":
            yield "gateway_released", rng.choice(gateways)
        else:
            yield "call_lost", account
        if rng.random() < 0.05:
            yield "alarm", (rng.choice(["asr", "ner"]), rng.choice(gateways), rng.random() < 0.5)


def feed(metrics: Metrics | ReferenceMetrics, seed: int) -> None:
    for kind, event in events(seed):
        if kind == "alarm":
            rule, key, active = cast(tuple[str, str, bool], event)
            metrics.alarm(rule, key, active)
        else:
            getattr(metrics, kind)(event)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("created", [True, False])
def test_the_exposition_is_the_librarys(
    seed: int, created: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(library, "_use_created", created)
    outputs = []
    for implementation in (ReferenceMetrics, Metrics):
        clock = FakeClock()
        monkeypatch.setattr("time.time", clock)
        metrics = implementation()
        feed(metrics, seed)
        outputs.append((metrics.exposition(), metrics.exposition(OPENMETRICS)))
    assert outputs[0] == outputs[1]


def test_an_empty_switch_exposes_the_same_families() -> None:
    assert ReferenceMetrics().exposition() == Metrics().exposition()
    assert ReferenceMetrics().exposition(OPENMETRICS) == Metrics().exposition(OPENMETRICS)


def test_sample_values_read_from_the_registry() -> None:
    metrics = Metrics()
    metrics.call_started(CallStarted("acme", None, None))
    metrics.call_refused(CallRefused("acme", 403, "auth_failed"))
    registry = metrics.registry
    assert registry.get_sample_value("softswitch_calls_active", {"account": "acme"}) == 1.0
    labels = {"account": "acme", "outcome": "auth_failed"}
    assert registry.get_sample_value("softswitch_calls_total", labels) == 1.0


def test_a_name_taken_by_the_call_metrics_cannot_be_registered_twice() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("softswitch_calls", "again", registry=metrics.registry)
