"""The primary's channels to the other workers: questions about live calls (answers in slices,
stale answers dropped, a silent worker left out) and the statistics events."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from softswitch.stats import Statistics
from softswitch.stats.events import CallRefused, CallStarted
from softswitch.transport import loop_factory
from softswitch.workers import peers as peers_module
from softswitch.workers.peers import PeerAnswerer, Peers, peer_channels
from softswitch.workers.statistics import ForwardingStatistics, StatsInbox, stats_channel


def run(body: Coroutine[Any, Any, None], *sockets: socket.socket) -> None:
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(asyncio.wait_for(body, 10))
    finally:
        for sock in sockets:
            sock.close()


def test_a_long_list_of_calls_comes_in_slices_and_is_put_together() -> None:
    ((primary_end, worker_end),) = peer_channels(2)
    calls = [{"id": f"call-{n}", "started_at": str(n)} for n in range(250)]

    def answer(question: dict[str, Any]) -> dict[str, Any]:
        assert question["op"] == "calls"
        return {"calls": list(calls)}

    async def body() -> None:
        answerer = PeerAnswerer(worker_end, answer)
        answerer.start()
        try:
            answers, missing = await Peers([primary_end]).ask_all({"op": "calls"})
        finally:
            answerer.stop()
        assert missing == []
        (got,) = answers
        assert got["calls"] == calls

    run(body(), primary_end, worker_end)


def test_a_silent_worker_is_left_out_and_its_late_answer_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers_module, "ANSWER_TIMEOUT", 0.3)
    ((primary_end, worker_end),) = peer_channels(2)

    async def body() -> None:
        peers = Peers([primary_end])
        answers, missing = await peers.ask_all({"op": "calls"})
        assert (answers, missing) == ([], [1])
        # The worker answers the old question late, then the new one: only the new counts.
        answerer = PeerAnswerer(worker_end, lambda q: {"hung_up": q.get("n", 0)})
        answerer.start()
        try:
            await asyncio.sleep(0.1)  # the late answer to the first question is queued
            answers, missing = await peers.ask_all({"op": "hang_up", "n": 7})
        finally:
            answerer.stop()
        assert missing == []
        assert [a["hung_up"] for a in answers] == [7]

    run(body(), primary_end, worker_end)


def test_statistics_events_of_a_worker_are_counted_by_the_primary() -> None:
    inbox, outbox = stats_channel()

    async def body() -> None:
        primary = Statistics()
        reader = StatsInbox(inbox, primary)
        reader.start()
        worker = ForwardingStatistics(outbox, 1)
        now = time.monotonic()
        worker.call_started(CallStarted("acme", "UK", "44"), now)
        worker.gateway_seized("gw1", now)
        worker.call_refused(CallRefused("acme", 503, "limit_exceeded"), now)
        try:
            for _ in range(100):
                if primary.query("switch", "all", "5m", now)["attempts"] >= 1:
                    break
                await asyncio.sleep(0.01)
        finally:
            reader.stop()
        # Counted by the primary, and by the worker itself (quality routing reads its own).
        for stats in (primary, worker):
            assert stats.keys("gateway") == ["gw1"]
            assert stats.query("switch", "all", "5m", now)["attempts"] == 1
            assert stats.keys("account") == ["acme"]

    run(body(), inbox, outbox)
