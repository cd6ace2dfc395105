"""A worker that dies leaves the primary's levels: its calls in progress and gateway claims
are dropped when the supervisor reports the death, and no level goes below zero."""

from __future__ import annotations

import asyncio
import pickle
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
            dying.flush()  # what worker 1 sent before it died: its batches that left
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


def test_a_workers_events_travel_in_one_datagram_and_flush_sends_them_at_once() -> None:
    """Batched: many events, one datagram; ``flush`` (a stopping worker's last act) sends
    what waits without waiting for the timer, and nothing is lost or counted twice."""
    inbox, outbox = stats_channel()
    primary = Statistics()

    async def body() -> None:
        worker = ForwardingStatistics(outbox, 1)
        now = time.monotonic()
        for _ in range(10):
            worker.call_started(CallStarted("acme", "UK", "44"), now)
        worker.call_ended(ended("acme"), now)
        worker.flush()
        datagrams = []
        while True:
            try:
                datagrams.append(inbox.recv(1 << 20))
            except BlockingIOError:
                break
        assert len(datagrams) == 1
        # Read back by the primary's reader, as if it had just arrived.
        reader_in, reader_out = stats_channel()
        try:
            reader = StatsInbox(reader_in, primary)
            reader_out.send(datagrams[0])
            reader.start()
            for _ in range(200):
                if primary.query("switch", "all", "5m", now)["attempts"] >= 1:
                    break
                await asyncio.sleep(0.01)
            reader.stop()
        finally:
            reader_in.close()
            reader_out.close()
        summary = primary.query("account", "acme", "5m", now)
        assert summary["concurrent"]["current"] == 9  # ten started, one ended
        assert primary.query("switch", "all", "5m", now)["attempts"] == 1

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(asyncio.wait_for(body(), 10))
    finally:
        inbox.close()
        outbox.close()


def test_events_of_a_worker_without_an_event_loop_leave_at_once() -> None:
    inbox, outbox = stats_channel()
    try:
        worker = ForwardingStatistics(outbox, 1)
        worker.call_started(CallStarted("acme", "UK", "44"), time.monotonic())
        assert inbox.recv(1 << 20)
    finally:
        inbox.close()
        outbox.close()


def test_a_batch_too_big_for_one_datagram_goes_in_parts() -> None:
    inbox, outbox = stats_channel()
    try:
        worker = ForwardingStatistics(outbox, 1)
        worker._waiting = [
            ("call_started", CallStarted(f"{i}" + "a" * 40_000, "UK", "44"), 1.0, 1)
            for i in range(4)
        ]
        worker.flush()
        parts = []
        while True:
            try:
                parts.append(pickle.loads(inbox.recv(1 << 20)))
            except BlockingIOError:
                break
        assert len(parts) == 2
        assert [event.account[0] for part in parts for _, event, _, _ in part] == list("0123")
    finally:
        inbox.close()
        outbox.close()
