"""A worker that dies leaves the primary's levels: its calls in progress and gateway claims
are dropped when the supervisor reports the death, and no level goes below zero."""

from __future__ import annotations

import asyncio
import time

from softswitch.stats import Statistics
from softswitch.stats.events import CallEnded, CallStarted
from softswitch.stats.prometheus import Metrics
from softswitch.transport import loop_factory
from softswitch.workers.statistics import (
    ForwardingStatistics,
    StatsInbox,
    stats_channel,
    worker_died,
)


def ended(account: str) -> CallEnded:
    return CallEnded(account, "UK", "44", 200, "normal_clearing", True, True, 1000, 100)


def test_a_dead_workers_calls_leave_the_primarys_levels() -> None:
    inbox, outbox = stats_channel()
    metrics = Metrics()
    primary = Statistics(metrics=metrics)

    def active(name: str, label: str, value: str) -> float | None:
        return metrics.registry.get_sample_value(name, {label: value})

    async def body() -> None:
        reader = StatsInbox(inbox, primary)
        reader.start()
        dying, living = ForwardingStatistics(outbox, 1), ForwardingStatistics(outbox, 2)
        now = time.monotonic()
        try:
            for worker in (dying, dying, living):
                worker.call_started(CallStarted("acme", "UK", "44"), now)
                worker.gateway_seized("gw1", now)
            worker_died(outbox, 1)  # the supervisor, after reaping worker 1
            # A call the primary never saw start (a restarted primary): clamped at zero.
            living.gateway_released("gw2", now)
            living.call_ended(ended("other"), now)
            for _ in range(200):
                labels = {"account": "other", "outcome": "normal_clearing"}
                if metrics.registry.get_sample_value("softswitch_calls_total", labels):
                    break
                await asyncio.sleep(0.01)
        finally:
            reader.stop()
        assert active("softswitch_calls_active", "account", "acme") == 1.0  # worker 2's
        assert active("softswitch_gateway_calls_active", "gateway", "gw1") == 1.0
        assert active("softswitch_calls_active", "account", "other") in (None, 0.0)
        assert active("softswitch_gateway_calls_active", "gateway", "gw2") in (None, 0.0)
        summary = primary.query("account", "acme", "5m", now)
        assert summary["concurrent"]["current"] == 1
        assert primary.query("gateway", "gw1", "5m", now)["concurrent"]["current"] == 1

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(asyncio.wait_for(body(), 10))
    finally:
        inbox.close()
        outbox.close()
