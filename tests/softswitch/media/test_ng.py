"""The NG client against a real rtpengine, and against fake servers that misbehave on cue."""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from loopback_ports import LOCAL
from rtpengine_tool import FakeNg, Rtpengine
from softswitch.media.bencode import Encodable, Value
from softswitch.media.ng import (
    NgClient,
    NgError,
    NgLoadLimit,
    NgTimeout,
    check_reply,
    encode_request,
    last_media_activity,
    packet_totals,
    split_datagram,
)

# Topology hiding: rtpengine's address in o= and the session c= too, and no ICE candidates.
HIDE_REPLACE = ("origin", "session-connection")
HIDE_EXTRA: dict[str, Encodable] = {"ICE": "remove"}


def caller_sdp(port: int, address: str = LOCAL, payload_types: str = "0 8 101") -> bytes:
    return (
        "v=0\r\n"
        f"o=alice 2890844526 2890844526 IN IP4 {address}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_types}\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    ).encode()


def callee_sdp(port: int, address: str = LOCAL) -> bytes:
    return (
        "v=0\r\n"
        f"o=gw 1 1 IN IP4 {address}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=sendrecv\r\n"
    ).encode()


def media_port(sdp: bytes) -> int:
    match = re.search(rb"^m=audio (\d+) ", sdp, re.MULTILINE)
    assert match, sdp
    return int(match[1])


def payload_types(sdp: bytes) -> list[str]:
    match = re.search(rb"^m=audio \d+ RTP/AVP ([\d ]+)\r$", sdp, re.MULTILINE)
    assert match, sdp
    return match[1].decode().split()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


async def client_for(rtpengine: Rtpengine, **options: Any) -> NgClient:
    return await NgClient.open(rtpengine.host, rtpengine.ng_port, **options)


# --- the real rtpengine ---------------------------------------------------------------------


def test_ping(rtpengine: Rtpengine) -> None:
    async def main() -> None:
        client = await client_for(rtpengine)
        await client.ping()
        client.close()

    run(main)


def test_offer_and_answer_hide_each_side_behind_rtpengine(rtpengine: Rtpengine) -> None:
    async def main() -> None:
        client = await client_for(rtpengine)
        call_id = uuid.uuid4().hex
        try:
            offered = await client.offer(
                call_id,
                "ftag",
                caller_sdp(49170, "192.0.2.10"),
                via_branch="z9hG4bK1",
                replace=HIDE_REPLACE,
                extra=HIDE_EXTRA,
            )
            answered = await client.answer(
                call_id,
                "ftag",
                "ttag",
                callee_sdp(30000, "198.51.100.7"),
                replace=HIDE_REPLACE,
                extra=HIDE_EXTRA,
            )
        finally:
            await client.delete(call_id)
            client.close()
        for sdp in (offered, answered):
            assert b"192.0.2.10" not in sdp
            assert b"198.51.100.7" not in sdp
            assert b"IN IP4 127.0.0.1\r\n" in sdp
            assert rtpengine.port_min <= media_port(sdp) <= rtpengine.port_max
        assert payload_types(offered) == ["0", "8", "101"]
        assert payload_types(answered) == ["8", "101"]
        assert b"a=rtpmap:101 telephone-event/8000\r\n" in offered

    run(main)


def test_codec_policy_strips_and_reorders(rtpengine: Rtpengine) -> None:
    """``strip: all`` + ``offer: [...]`` keeps only the listed codecs, in the listed order;
    ``except`` keeps them in the caller's order; stripping everything changes nothing."""

    async def main() -> None:
        client = await client_for(rtpengine)
        results = {}
        cases = {
            "offer": {"strip": ["all"], "offer": ["PCMA", "PCMU", "telephone-event"]},
            "except": {"strip": ["all"], "except": ["PCMA", "PCMU"]},
            "strip": {"strip": ["PCMU"]},
            "nothing left": {"strip": ["all"], "except": ["G722"]},
        }
        try:
            for name, codec in cases.items():
                call_id = uuid.uuid4().hex
                sdp = await client.offer(call_id, "ftag", caller_sdp(49170), codec=codec)
                results[name] = payload_types(sdp)
                await client.delete(call_id)
        finally:
            client.close()
        assert results == {
            "offer": ["8", "0", "101"],
            "except": ["0", "8"],
            "strip": ["8", "101"],
            "nothing left": ["0", "8", "101"],
        }

    run(main)


def rtp(sequence: int, payload_type: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, sequence, sequence * 160, ssrc) + bytes(160)


class Peer(asyncio.DatagramProtocol):
    """An RTP endpoint that counts what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's datagram transport does not subclass DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (LOCAL, port))


async def peer() -> Peer:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Peer, local_addr=(LOCAL, 0)
    )
    return protocol


def test_media_flows_both_ways_and_query_shows_it(rtpengine: Rtpengine) -> None:
    async def main() -> None:
        client = await client_for(rtpengine)
        caller, callee = await peer(), await peer()
        call_id = uuid.uuid4().hex
        try:
            offered = await client.offer(call_id, "caller", caller_sdp(caller.port))
            answered = await client.answer(call_id, "caller", "callee", callee_sdp(callee.port))
            quiet = await client.query(call_id)
            assert packet_totals(quiet) == {"caller": 0, "callee": 0}
            assert last_media_activity(quiet) is None

            for sequence in range(8):
                caller.send(rtp(sequence, 8, 0xA), media_port(answered))
                callee.send(rtp(sequence, 8, 0xB), media_port(offered))
                if sequence < 5:
                    caller.send(rtp(100 + sequence, 8, 0xA), media_port(answered))
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            reply = await client.query(call_id)
        finally:
            await client.delete(call_id)
            for endpoint in (caller, callee):
                assert endpoint.transport is not None
                endpoint.transport.close()
        assert len(caller.received) == 8
        assert len(callee.received) == 13
        assert packet_totals(reply) == {"caller": 13, "callee": 8}
        last = last_media_activity(reply)
        assert last is not None
        assert time.time() - 3 <= last <= time.time() + 1
        with pytest.raises(NgError, match="Unknown call-id"):
            await client.query(call_id)
        client.close()

    run(main)


def test_error_replies_raise_ng_error_with_the_reason(rtpengine: Rtpengine) -> None:
    async def main() -> None:
        client = await client_for(rtpengine)
        try:
            with pytest.raises(NgError, match="Unknown call-id") as raised:
                await client.answer("no-such-call", "a", "b", callee_sdp(4000))
            assert raised.value.reason == "Unknown call-id"
            assert raised.value.command == "answer"
            with pytest.raises(NgError, match="Failed to parse SDP"):
                await client.offer(uuid.uuid4().hex, "a", b"hello")
            with pytest.raises(NgError, match="Unrecognized command"):
                await client.request({"command": "frobnicate"})
        finally:
            client.close()

    run(main)


def test_deleting_an_unknown_call_is_ok_with_a_warning(
    rtpengine: Rtpengine, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        client = await client_for(rtpengine)
        with caplog.at_level(logging.INFO, "softswitch.media"):
            reply = await client.delete("no-such-call", from_tag="a")
        client.close()
        assert reply["result"] == b"ok"
        assert reply["warning"] == b"Call-ID not found or tags didn't match"
        assert "Call-ID not found" in caplog.text

    run(main)


def test_many_requests_in_flight_at_once(rtpengine: Rtpengine) -> None:
    async def main() -> None:
        client = await client_for(rtpengine, timeout=2.0)
        call_ids = [uuid.uuid4().hex for _ in range(15)]
        try:
            offers = [client.offer(call_id, "f", caller_sdp(40000)) for call_id in call_ids]
            pings = [client.ping() for _ in range(500)]
            results = await asyncio.gather(*offers, *pings)
            assert client.in_flight == 0
            ports = {media_port(cast(bytes, sdp)) for sdp in results[: len(call_ids)]}
            assert len(ports) == len(call_ids)  # each reply went to its own request
            queries = await asyncio.gather(*(client.query(call_id) for call_id in call_ids))
            assert all("f" in packet_totals(reply) for reply in queries)
        finally:
            await asyncio.gather(*(client.delete(call_id) for call_id in call_ids))
            client.close()

    run(main)


# --- fake servers ---------------------------------------------------------------------------


def test_a_lost_request_is_sent_again_with_the_same_cookie() -> None:
    async def main() -> None:
        def drop_first(server: FakeNg, cookie: str, request: dict[str, Value]) -> Any:
            return None if len(server.received) == 1 else {"result": "pong"}

        server = await FakeNg.start(drop_first)
        client = await NgClient.open(LOCAL, server.port, timeout=0.05, retries=2)
        await client.ping()
        assert [cookie for cookie, _ in server.received] == [server.received[0][0]] * 2
        assert server.received[0][1] == server.received[1][1] == {"command": b"ping"}
        await client.ping()  # a new request, a new cookie
        assert server.received[2][0] != server.received[0][0]
        client.close()
        server.close()

    run(main)


def test_no_reply_after_the_retries_is_a_timeout() -> None:
    async def main() -> None:
        server = await FakeNg.start(lambda *_: None)
        client = await NgClient.open(LOCAL, server.port, timeout=0.05, retries=2)
        started = time.monotonic()
        with pytest.raises(NgTimeout, match="no reply after 3 sends") as raised:
            await client.query("c1")
        assert 0.14 <= time.monotonic() - started < 1.0
        assert isinstance(raised.value, NgError)
        assert len(server.received) == 3
        assert len({cookie for cookie, _ in server.received}) == 1
        assert client.in_flight == 0
        client.close()
        server.close()

    run(main)


def test_replies_are_matched_by_cookie_not_by_order(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        held: list[tuple[str, dict[str, Value]]] = []

        def hold_two_then_answer_backwards(server: FakeNg, cookie: str, request: Any) -> None:
            held.append((cookie, request))
            if len(held) == 2:
                for held_cookie, held_request in reversed(held):
                    answer = {"result": "ok", "echo": held_request["call-id"]}
                    server.reply(held_cookie, answer)
                    server.reply(held_cookie, answer)  # a late duplicate
                server.reply("stranger_1", {"result": "ok"})  # a cookie never sent
                server.reply("", {}, raw=b"no-space-here")

        server = await FakeNg.start(hold_two_then_answer_backwards)
        client = await NgClient.open(LOCAL, server.port, timeout=1.0, retries=0)
        with caplog.at_level(logging.DEBUG, "softswitch.media"):
            first, second = await asyncio.gather(client.query("one"), client.query("two"))
            await asyncio.sleep(0.05)  # let the duplicates arrive
        assert (first["echo"], second["echo"]) == (b"one", b"two")
        assert caplog.text.count("dropped NG reply") == 3
        assert "without a cookie" in caplog.text
        client.close()
        server.close()

    run(main)


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"d6:result5:error12:error-reason9:bad thinge", NgError, "bad thing"),
        (b"d6:result5:errore", NgError, "error without a reason"),
        (b"d6:result10:load limit7:message4:fulle", NgLoadLimit, "full"),
        (b"li1ee", NgError, "not a dictionary"),
        (b"d3:sdp3:v=0e", NgError, "without a result"),
        (b"d6:resulti1ee", NgError, "without a result"),
        (b"d6:result5:maybee", NgError, "unknown result"),
        (b"d6:result", NgError, "malformed reply"),
    ],
)
def test_bad_replies_raise_ng_error(raw: bytes, error: type[NgError], reason: str) -> None:
    async def main() -> None:
        def answer(server: FakeNg, cookie: str, request: Any) -> None:
            server.reply(cookie, None, raw=raw)

        server = await FakeNg.start(answer)
        client = await NgClient.open(LOCAL, server.port, timeout=0.5, retries=0)
        with pytest.raises(error, match=reason) as raised:
            await client.query("c1")
        assert type(raised.value) is error
        client.close()
        server.close()

    run(main)


def test_offer_needs_an_sdp_in_the_reply_and_ping_a_pong() -> None:
    async def main() -> None:
        server = await FakeNg.start(lambda *_: {"result": "ok"})
        client = await NgClient.open(LOCAL, server.port, timeout=0.5, retries=0)
        with pytest.raises(NgError, match="without an SDP"):
            await client.offer("c", "f", b"v=0\r\n")
        with pytest.raises(NgError, match="pong"):
            await client.ping()
        client.close()
        server.close()

    run(main)


def test_requests_carry_what_the_caller_asked_for() -> None:
    async def main() -> None:
        server = await FakeNg.start(lambda *_: {"result": "ok", "sdp": "v=0\r\n"})
        client = await NgClient.open(LOCAL, server.port)
        await client.offer(
            "c",
            "f",
            b"v=0\r\n",
            via_branch="z9hG4bK1",
            flags=["trust address"],
            replace=("origin",),
            codec={"strip": ("all",), "offer": ["PCMA"]},
            extra={"ICE": "remove", "supports": ["load limit"]},
        )
        await client.answer("c", "f", "t", b"v=0\r\n")
        await client.delete("c", to_tag="t")
        await client.query("c", from_tag="f")
        with pytest.raises(ValueError, match="override"):
            await client.offer("c", "f", b"", extra={"call-id": "other"})
        client.close()
        server.close()
        requests = [request for _, request in server.received]
        assert requests == [
            {
                "command": b"offer",
                "call-id": b"c",
                "from-tag": b"f",
                "via-branch": b"z9hG4bK1",
                "sdp": b"v=0\r\n",
                "flags": [b"trust address"],
                "replace": [b"origin"],
                "codec": {"strip": [b"all"], "offer": [b"PCMA"]},
                "ICE": b"remove",
                "supports": [b"load limit"],
            },
            {
                "command": b"answer",
                "call-id": b"c",
                "from-tag": b"f",
                "to-tag": b"t",
                "sdp": b"v=0\r\n",
            },
            {"command": b"delete", "call-id": b"c", "to-tag": b"t"},
            {"command": b"query", "call-id": b"c", "from-tag": b"f"},
        ]

    run(main)


def test_closing_fails_the_requests_in_flight() -> None:
    async def main() -> None:
        server = await FakeNg.start(lambda *_: None)
        client = await NgClient.open(LOCAL, server.port, timeout=5.0)
        pending = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.01)
        client.close()
        with pytest.raises(NgError, match="closed"):
            await pending
        with pytest.raises(NgError, match="closed"):
            await client.ping()
        server.close()

    run(main)


def test_cookies_differ_between_clients() -> None:
    async def main() -> None:
        server = await FakeNg.start()
        clients = [await NgClient.open(LOCAL, server.port) for _ in range(2)]
        for client in clients:
            await client.ping()
            client.close()
        first, second = (cookie for cookie, _ in server.received)
        assert first.split("_")[0] != second.split("_")[0]
        server.close()

    run(main)


# --- the codec and the query readers --------------------------------------------------------


def test_datagram_codec() -> None:
    assert encode_request("ab_1", {"command": "ping"}) == b"ab_1 d7:command4:pinge"
    assert split_datagram(b"ab_1 d6:result4:ponge") == ("ab_1", b"d6:result4:ponge")
    assert split_datagram(b"nocookie") is None
    assert split_datagram(b" d6:result4:ponge") is None
    assert check_reply(b"d6:result4:ponge") == {"result": b"pong"}
    with pytest.raises(ValueError, match="cookie"):
        encode_request("a b", {"command": "ping"})
    with pytest.raises(ValueError, match="command"):
        encode_request("a", {"call-id": "x"})


def stream(packets: int, last: int, *flags: str) -> dict[str, Value]:
    return {
        "local port": 40000,
        "last packet": last,
        "flags": [flag.encode() for flag in flags],
        "stats": {"packets": packets, "bytes": packets * 172, "errors": 0},
    }


def test_query_readers_on_a_reply_shaped_like_rtpengine_10_5() -> None:
    created = 1_796_433_003
    reply: dict[str, Value] = {
        "result": b"ok",
        "created": created,
        "tags": {
            "A": {
                "tag": b"A",
                "medias": [
                    {
                        "index": 1,
                        "type": b"audio",
                        "streams": [
                            stream(6, created + 7, "RTP", "filled"),
                            stream(2, created + 9, "RTCP", "filled"),
                        ],
                    }
                ],
            },
            "B": {
                "tag": b"B",
                "medias": [
                    {
                        "streams": [
                            stream(5, created + 5, "RTP", "filled"),
                            # "last packet" is set when a stream is set up: not a packet.
                            stream(0, created + 30, "RTCP"),
                        ]
                    }
                ],
            },
            "<untagged 1>": {"medias": [{"streams": [stream(0, created + 40)]}]},
        },
        "totals": {"RTP": {"packets": 11, "bytes": 1892, "errors": 0}},
    }
    assert packet_totals(reply) == {"A": 6, "B": 5, "<untagged 1>": 0}
    assert last_media_activity(reply) == float(created + 9)


def test_query_readers_tolerate_odd_shapes() -> None:
    assert packet_totals({"result": b"ok"}) == {}
    assert last_media_activity({"result": b"ok"}) is None
    odd: dict[str, Value] = {
        "tags": {"A": b"x", "B": {"medias": b"y"}, "C": {"medias": [b"z", {"streams": [1]}]}}
    }
    assert packet_totals(odd) == {}
    assert last_media_activity(odd) is None
