"""The shared state in ``/metrics``: whether Redis answers, and how often it did not.

    softswitch_shared_state_up            gauge: 1 while this process's last question to
                                          Redis was answered, 0 in an outage (the limits
                                          are then the node's own) or before it connected
    softswitch_shared_state_errors_total  counter: questions Redis did not answer

Registered on the switch's registry only when ``[server] shared_state`` is set, so a switch
without it shows no shared-state series at all.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .admission import SharedLimits

__all__ = ["SharedStateCollector"]


class SharedStateCollector(Collector):
    """Register on the switch's registry: ``registry.register(SharedStateCollector(limits))``."""

    def __init__(self, limits: SharedLimits) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "softswitch_shared_state_up",
            "1 while Redis answers the shared limits' questions",
            value=1.0 if self.limits.up else 0.0,
        )
        yield CounterMetricFamily(
            "softswitch_shared_state_errors",
            "questions to the shared state Redis did not answer",
            value=self.limits.errors,
        )
