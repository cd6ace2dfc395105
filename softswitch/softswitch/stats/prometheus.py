"""The switch's Prometheus metrics, on a registry of their own, fed by the same call events
as ``Statistics``; :meth:`Metrics.exposition` is what ``/metrics`` serves.

    softswitch_calls_total{account,outcome}                counter: attempts with a CDR, by
                                                           end reason (outcome)
    softswitch_gateway_attempts_total{gateway,status_class} counter: INVITEs sent, by the
                                                           class of the final status ("2xx"...
                                                           "6xx"; "none": no final status)
    softswitch_calls_active{account}                       gauge: admitted calls in progress
    softswitch_gateway_calls_active{gateway}               gauge: gateways' claimed channels
    softswitch_pdd_seconds{account}                        histogram: INVITE -> first 18x/2xx
    softswitch_call_duration_seconds{account}              histogram: answered calls' CDR
                                                           duration
    softswitch_alarm_active{rule,key}                      gauge: 1 while an alarm of that
                                                           rule is raised on that key, 0
                                                           once it cleared (softswitch.alarms)

With ``[server] shared_state`` set, ``softswitch_shared_state_up`` and
``softswitch_shared_state_errors_total`` too (``softswitch.cluster.metrics``, a collector
on this registry).

Labels are bounded: account and gateway ids come from the configuration, outcomes from the
end reasons' list, status classes are six, alarm rules from the configuration (their keys
are the switch's ``all`` or its gateway and account ids). A number, a Call-ID or an address
is never a label. A refusal that names no account (an unknown source...) has ``account=""``.

Prometheus computes rates and windows itself, so this is plain counters; the windowed
figures (ASR, NER, p95...) are ``Statistics``'. A registry of our own, not the library's
global one, so two switches in one process (tests) never share counters, and the exposition
holds only the switch's metrics. Label children are cached: ``labels()`` costs a lock and a
tuple per call.
"""

from __future__ import annotations

from typing import Final, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from .events import CallEnded, CallRefused, CallStarted

__all__ = ["DURATION_BUCKETS", "PDD_BUCKETS", "Metrics", "status_class"]

#: PDD histogram bucket bounds (seconds): fine below 2 s, where PDD normally lies.
PDD_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
#: Call duration histogram bucket bounds (seconds): from short calls to two hours.
DURATION_BUCKETS: Final = (
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
)  # fmt: skip


def status_class(status: int | None) -> str:
    """``"2xx"`` for 200-299 and so on; ``"none"`` when no final status came."""
    if status is None or not 100 <= status < 700:
        return "none"
    return f"{status // 100}xx"


class Metrics:
    """The Prometheus face of the call events."""

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
