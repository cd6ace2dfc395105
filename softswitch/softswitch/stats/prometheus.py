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
holds only the switch's metrics.

The call events' six metrics are plain numbers in dictionaries, turned into samples only when
the registry is collected (a scrape; :class:`_CallCollector`): a ``prometheus_client`` child
takes a lock for each increment, ten of them per call. The samples are those the library's
``Counter``, ``Gauge`` and ``Histogram`` would give for the same events (names, labels, their
order, values, ``_created`` stamped at a series' first event), so the exposition is theirs.
The alarms' gauge, set rarely, stays a library ``Gauge``.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import metrics as _library
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .events import CallEnded, CallRefused, CallStarted

__all__ = ["DURATION_BUCKETS", "PDD_BUCKETS", "Metrics", "status_class"]

#: PDD histogram bucket bounds (seconds): fine below 2 s, where PDD normally lies.
PDD_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
#: Call duration histogram bucket bounds (seconds): from short calls to two hours.
DURATION_BUCKETS: Final = (
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
)  # fmt: skip

#: How the library writes a bucket's ``le`` label (typed here: the library's is not).
_le_text: Callable[[float], str] = floatToGoString

_STATUS_CLASSES: Final = {n: f"{n}xx" for n in range(1, 7)}


def status_class(status: int | None) -> str:
    """``"2xx"`` for 200-299 and so on; ``"none"`` when no final status came."""
    if status is None or not 100 <= status < 700:
        return "none"
    return _STATUS_CLASSES[status // 100]


class _Counter:
    """A labelled counter's values: label values -> count, and when each series began."""

    __slots__ = ("created", "values")

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], int] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        values = self.values
        n = values.get(labels)
        if n is None:
            self.created[labels] = time.time()
            values[labels] = 1
        else:
            values[labels] = n + 1


class _Histogram:
    """A labelled histogram's values: per label values, the count of each bucket (not
    cumulative, +Inf last), the sum of the observations, and when the series began."""

    __slots__ = ("bounds", "created", "les", "values")

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = [float(b) for b in buckets]
        self.bounds.append(float("inf"))
        #: Each bucket's ``le`` label, as the library writes it.
        self.les = [_le_text(b) for b in self.bounds]
        self.values: dict[str, tuple[list[int], list[float]]] = {}
        self.created: dict[str, float] = {}

    def observe(self, label: str, amount: float) -> None:
        entry = self.values.get(label)
        if entry is None:
            self.created[label] = time.time()
            entry = self.values[label] = ([0] * len(self.bounds), [0.0])
        counts, total = entry
        total[0] += amount
        # The first bucket whose bound is at least ``amount`` (the library's linear walk);
        # amounts here are never NaN (milliseconds / 1000).
        counts[bisect.bisect_left(self.bounds, amount)] += 1


def _counter_family(
    name: str, documentation: str, labelnames: tuple[str, ...], counter: _Counter, created: bool
) -> Metric:
    metric = Metric(name, documentation, "counter")
    stamps = counter.created
    for labels, value in list(counter.values.items()):
        sample_labels = dict(zip(labelnames, labels, strict=True))
        metric.add_sample(name + "_total", sample_labels, float(value))
        if created:
            metric.add_sample(name + "_created", dict(sample_labels), stamps[labels])
    return metric


def _gauge_family(name: str, documentation: str, labelname: str, levels: dict[str, int]) -> Metric:
    metric = Metric(name, documentation, "gauge")
    for label, level in list(levels.items()):
        metric.add_sample(name, {labelname: label}, float(level))
    return metric


def _histogram_family(
    name: str, documentation: str, labelname: str, histogram: _Histogram, created: bool
) -> Metric:
    metric = Metric(name, documentation, "histogram")
    les = histogram.les
    stamps = histogram.created
    for label, (counts, total) in list(histogram.values.items()):
        acc = 0.0
        for le, n in zip(les, list(counts), strict=True):
            acc += n
            metric.add_sample(name + "_bucket", {labelname: label, "le": le}, acc)
        metric.add_sample(name + "_count", {labelname: label}, acc)
        metric.add_sample(name + "_sum", {labelname: label}, total[0])
        if created:
            metric.add_sample(name + "_created", {labelname: label}, stamps[label])
    return metric


_CALLS = (
    "softswitch_calls",
    "Call attempts with a CDR, by account and outcome (the CDR's end reason).",
)
_GATEWAY_ATTEMPTS = (
    "softswitch_gateway_attempts",
    "INVITEs sent to gateways, by the class of their final status.",
)
_CALLS_ACTIVE = ("softswitch_calls_active", "Admitted calls in progress.")
_GATEWAY_CALLS_ACTIVE = (
    "softswitch_gateway_calls_active",
    "Gateway channels claimed by calls in progress.",
)
_PDD = (
    "softswitch_pdd_seconds",
    "Post-dial delay: the customer's INVITE to the first 18x (or the 2xx).",
)
_DURATION = ("softswitch_call_duration_seconds", "Answered calls' duration, as in the CDR.")


class _CallCollector(Collector):
    """The call events' metrics, as samples, from :class:`Metrics`' numbers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        for (name, documentation), typ in (
            (_CALLS, "counter"),
            (_GATEWAY_ATTEMPTS, "counter"),
            (_CALLS_ACTIVE, "gauge"),
            (_GATEWAY_CALLS_ACTIVE, "gauge"),
            (_PDD, "histogram"),
            (_DURATION, "histogram"),
        ):
            yield Metric(name, documentation, typ)

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        created = bool(_library._use_created)  # the library's switch for ``_created``
        yield _counter_family(*_CALLS, ("account", "outcome"), m._calls, created)
        yield _counter_family(
            *_GATEWAY_ATTEMPTS, ("gateway", "status_class"), m._gateway_attempts, created
        )
        yield _gauge_family(*_CALLS_ACTIVE, "account", m._calls_active)
        yield _gauge_family(*_GATEWAY_CALLS_ACTIVE, "gateway", m._gateway_calls_active)
        yield _histogram_family(*_PDD, "account", m._pdd, created)
        yield _histogram_family(*_DURATION, "account", m._duration, created)


class Metrics:
    """The Prometheus face of the call events."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._calls = _Counter()
        self._gateway_attempts = _Counter()
        #: The active gauges' values, clamped at zero: an end whose start this process never
        #: saw (a restarted primary of several workers, whose predecessor counted the start)
        #: must not push a gauge below zero. A key is there from its first start on.
        self._calls_active: dict[str, int] = {}
        self._gateway_calls_active: dict[str, int] = {}
        self._pdd = _Histogram(PDD_BUCKETS)
        self._duration = _Histogram(DURATION_BUCKETS)
        self.registry.register(_CallCollector(self))
        self.alarm_active = Gauge(
            "softswitch_alarm_active",
            "1 while an alarm is raised on a key (a gateway, an account, the switch's all).",
            ["rule", "key"],
            registry=self.registry,
        )
        self._alarms: dict[tuple[str, str], Gauge] = {}

    # -- events (the same as ``Statistics``', without a clock: Prometheus stamps scrapes) ----

    @staticmethod
    def _up(levels: dict[str, int], label: str) -> None:
        levels[label] = levels.get(label, 0) + 1

    @staticmethod
    def _down(levels: dict[str, int], label: str) -> None:
        level = levels.get(label, 0)
        if level > 0:
            levels[label] = level - 1

    def call_started(self, event: CallStarted) -> None:
        self._up(self._calls_active, event.account)

    def call_lost(self, account: str) -> None:
        """A call in progress that will never end with an event (its worker died)."""
        self._down(self._calls_active, account)

    def call_ended(self, event: CallEnded) -> None:
        account = event.account
        self._down(self._calls_active, account)
        self._calls.inc((account, event.end_reason))
        if event.pdd_ms is not None:
            self._pdd.observe(account, event.pdd_ms / 1000)
        if event.answered:
            self._duration.observe(account, event.duration_ms / 1000)
        for attempt in event.attempts:
            self._gateway_attempts.inc((attempt.gateway, status_class(attempt.status)))

    def call_refused(self, event: CallRefused) -> None:
        self._calls.inc((event.account or "", event.end_reason))

    def gateway_seized(self, gateway: str) -> None:
        self._up(self._gateway_calls_active, gateway)

    def gateway_released(self, gateway: str) -> None:
        self._down(self._gateway_calls_active, gateway)

    def alarm(self, rule: str, key: str, active: bool) -> None:
        """An alarm raised (1) or cleared (0) (``softswitch.alarms``)."""
        child = self._alarms.get((rule, key))
        if child is None:
            child = self._alarms[(rule, key)] = self.alarm_active.labels(rule, key)
        child.set(1 if active else 0)

    # -- reading -----------------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` (an HTTP Accept header) asks for, and its
        content type: Prometheus' text format by default, OpenMetrics when asked."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
