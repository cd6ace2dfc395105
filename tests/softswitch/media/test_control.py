"""``MediaControl``: what the engine asks of its relays (offers with the topology-hiding and
codec flags, deletes, the media timeout) and what ``/metrics`` shows of them, against
scripted fake relays; the real rtpengine's answers are ``test_ng``'s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rtpengine_tool import FakeNg, pong
from softswitch.media.control import (
    MediaControl,
    MediaUnavailableError,
    OfferRefusedError,
    codec_flags,
)
from softswitch.media.leg import NgLeg
from softswitch.media.metrics import MediaCollector
from softswitch.media.relays import RelayPool, RelaySpec

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
SDP += b"m=audio 4000 RTP/AVP 0 8 101\r\n"


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


async def control(*servers: FakeNg, poll: float = 0.05) -> MediaControl:
    specs = [RelaySpec(f"r{i}", "127.0.0.1", s.port) for i, s in enumerate(servers)]
    pool = RelayPool(specs, timeout=0.03, retries=0, ping_interval=0.05)
    media = MediaControl(pool, poll_interval=poll)
    await media.start()
    return media


def relay_like(reply: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Any:
    def handler(server: FakeNg, cookie: str, request: dict[str, Any]) -> Any:
        if request.get("command") == b"ping":
            return pong(server, cookie, request)
        return reply(request)

    return handler


def query_reply(packets: int) -> dict[str, Any]:
    stream = {"stats": {"packets": packets}, "last packet": 0, "flags": ["RTP"]}
    return {"result": "ok", "tags": {"a": {"medias": [{"streams": [stream]}]}}}


def test_an_offer_carries_the_topology_hiding_and_codec_flags() -> None:
    async def main() -> None:
        server = await FakeNg.start(relay_like(lambda r: {"result": "ok", "sdp": b"relayed"}))
        media = await control(server)
        relay = media.pick()
        assert relay is not None
        sdp = await media.offer(
            relay, NgLeg("c-0"), SDP, from_tag="ft", to_tag=None, codecs=("PCMA", "PCMU")
        )
        assert sdp == b"relayed"
        offer = server.received[-1][1]
        assert offer["command"] == b"offer"
        assert offer["call-id"] == b"c-0"
        assert offer["from-tag"] == b"ft"
        assert "to-tag" not in offer
        assert offer["replace"] == [b"origin", b"session-connection"]
        assert offer["ICE"] == b"remove"
        assert offer["codec"] == {
            "strip": [b"all"],
            "offer": [b"PCMA", b"PCMU", b"telephone-event", b"CN"],
        }
        await media.answer(relay, NgLeg("c-0"), SDP, from_tag="ft", to_tag="tt")
        answer = server.received[-1][1]
        assert (answer["command"], answer["to-tag"], "codec" in answer) == (b"answer", b"tt", False)
        assert (media.stats.offers, media.stats.answers) == (1, 1)
        await media.close()
        server.close()

    run(main)


def test_codec_flags() -> None:
    assert codec_flags(()) is None
    assert codec_flags(("G729",), transcode=True) == {
        "mask": ["all"],
        "transcode": ["G729", "telephone-event"],
    }


def test_a_silent_relay_is_unavailable_and_marked_down_an_error_is_a_refusal() -> None:
    async def main() -> None:
        silent = await FakeNg.start(relay_like(lambda r: None))
        refusing = await FakeNg.start(
            relay_like(lambda r: {"result": "error", "error-reason": "Failed to parse SDP"})
        )
        media = await control(silent, refusing)
        first, second = media.pool.relays
        with pytest.raises(MediaUnavailableError, match="did not answer"):
            await media.offer(first, NgLeg("c-0"), SDP, from_tag="f", to_tag=None)
        assert not first.up  # skipped for new calls until it answers a ping
        assert media.pick() is second
        with pytest.raises(OfferRefusedError, match="Failed to parse SDP"):
            await media.offer(second, NgLeg("c-1"), SDP, from_tag="f", to_tag=None)
        assert second.up  # an error about the SDP says nothing about the relay's health
        assert media.stats.failures == 2
        await media.close()
        silent.close()
        refusing.close()

    run(main)


def test_the_media_timeout_ends_a_call_whose_rtp_stopped_and_only_that_one() -> None:
    async def main() -> None:
        counts = {b"dead-0": 0, b"alive-0": 0}

        def answer(request: dict[str, Any]) -> dict[str, Any]:
            call_id = request["call-id"]
            if call_id == b"alive-0":
                counts[call_id] += 10  # packets keep coming
            return query_reply(counts[call_id])

        server = await FakeNg.start(relay_like(answer))
        media = await control(server)
        relay = media.pick()
        assert relay is not None
        ended: list[str] = []
        media.watch("dead", relay, NgLeg("dead-0"), 0.3, lambda: ended.append("dead"))
        media.watch("alive", relay, NgLeg("alive-0"), 0.3, lambda: ended.append("alive"))
        await asyncio.sleep(0.15)
        assert ended == []  # silence is counted from the watch (the answer), not before
        await asyncio.sleep(0.5)
        assert ended == ["dead"]  # once, and never the call whose packets keep coming
        assert media.stats.timeouts == 1
        media.unwatch("alive")
        await media.close()
        server.close()

    run(main)


def test_a_call_the_relay_forgot_counts_as_silent() -> None:
    async def main() -> None:
        server = await FakeNg.start(
            relay_like(lambda r: {"result": "error", "error-reason": "Unknown call-id"})
        )
        media = await control(server)
        relay = media.pick()
        assert relay is not None
        ended: list[str] = []
        media.watch("gone", relay, NgLeg("gone-0"), 0.2, lambda: ended.append("gone"))
        media.watch("off", relay, NgLeg("off-0"), 0.0, lambda: ended.append("off"))  # 0: never
        await asyncio.sleep(0.5)
        assert ended == ["gone"]
        await media.close()
        server.close()

    run(main)


def test_a_relay_that_stops_answering_does_not_keep_its_calls_billing() -> None:
    """Queries unanswered for the whole timeout: the call is ended all the same (its media
    went with the relay), and a bug in one call's hang-up does not stop the poller."""

    async def main() -> None:
        answering = {"on": True}

        def answer(request: dict[str, Any]) -> dict[str, Any] | None:
            return query_reply(5) if answering["on"] else None

        server = await FakeNg.start(relay_like(answer))
        media = await control(server)
        relay = media.pick()
        assert relay is not None
        ended: list[str] = []

        def broken() -> None:
            ended.append("broken")
            raise RuntimeError("a bug in a hang-up")

        media.watch("broken", relay, NgLeg("b-0"), 0.2, broken)
        media.watch("call", relay, NgLeg("c-0"), 0.4, lambda: ended.append("call"))
        answering["on"] = False
        await asyncio.sleep(0.9)
        assert sorted(ended) == ["broken", "call"]
        await media.close()
        server.close()

    run(main)


def test_deletes_run_in_the_background_and_close_waits_for_them() -> None:
    async def main() -> None:
        slow: list[str] = []

        def handler(server: FakeNg, cookie: str, request: dict[str, Any]) -> Any:
            if request.get("command") == b"delete":
                loop = asyncio.get_running_loop()
                loop.call_later(0.02, server.reply, cookie, {"result": "ok", "tags": {}})
                slow.append(request["call-id"].decode())
                return None
            return pong(server, cookie, request)

        server = await FakeNg.start(handler)
        media = await control(server)
        relay = media.pick()
        assert relay is not None
        media.delete(relay, NgLeg("c-0"), "c")
        media.delete(relay, NgLeg("c-1"), "c")
        assert media.stats.deletes == 2
        await media.close()
        assert slow == ["c-0", "c-1"]
        assert not media._tasks  # both answered before close returned
        server.close()

    run(main)


def test_metrics_show_relays_up_and_the_counters() -> None:
    async def main() -> None:
        up = await FakeNg.start()
        down = await FakeNg.start(lambda s, c, r: None)
        media = await control(up, down)
        registry = CollectorRegistry()
        registry.register(MediaCollector(media))
        media.stats.offers, media.stats.timeouts = 3, 1
        text = generate_latest(registry).decode()
        assert 'softswitch_media_relay_up{relay="r0"} 1.0' in text
        assert 'softswitch_media_relay_up{relay="r1"} 0.0' in text
        assert 'softswitch_media_requests_total{command="offer"} 3.0' in text
        assert "softswitch_media_timeouts_total 1.0" in text
        await media.close()
        up.close()
        down.close()

    run(main)
