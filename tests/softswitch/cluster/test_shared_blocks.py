"""Authentication-failure blocks across nodes (``cluster.block_mirror``): failures through
node A block the source on node B. Two "nodes" are two ``LiveState``s in this process, each
with its own client of one real Redis (``redis_tool``), authorising real INVITEs against a
real snapshot; a Redis that does not answer leaves each node its own blocks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cluster_support import eventually, nodes

from redis_tool import running_redis
from softswitch.call.authorise import Authorised, authorise
from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason, Refusal
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cluster.block_mirror import SharedBlocks
from softswitch.config import load_config
from softswitch.sip import Request, parse_message
from softswitch.sip.digest import DigestAuthenticator

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"

[defaults]
auth_fail_limit = 3
auth_fail_window = 60
auth_block_time = 120

[[accounts]]
id = "cust"
ips = ["127.0.0.1/32"]
routing_plan = "main"

[[gateways]]
id = "gw"
address = "127.0.0.1:5080"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["gw"]
"""

ATTACKER = "192.0.2.66"


def snapshot_of(tmp_path: Path) -> Snapshot:
    path = tmp_path / "switch.toml"
    path.write_text(CONFIG)
    return build_snapshot(load_config(path))


def invite() -> Request:
    text = (
        "INVITE sip:441234567@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.66:5062;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@192.0.2.66>;tag=caller\r\n"
        "To: <sip:441234567@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:1000@192.0.2.66:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


class Node:
    """One node's authorisation: its own live state, its own client of the shared blocks."""

    def __init__(self, snapshot: Snapshot, shared: SharedBlocks) -> None:
        self.snapshot = snapshot
        self.live = LiveState()
        self.shared = shared
        self.nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")

    def authorise(self, ip: str) -> Authorised | Refusal | object:
        now = time.monotonic()
        return authorise(
            self.snapshot,
            invite(),
            (ip, 5062),
            self.live,
            time.time(),
            self.nonces,
            clock=now,
            shared=self.shared,
        )

    def block(self, ip: str, seconds_left: float) -> bool:
        """What the switch's mirror does (``Switch._mirror_block``)."""
        now = time.monotonic()
        new = not self.live.blocks.is_blocked(ip, now)
        return self.live.blocks.block(ip, now + seconds_left, now) and new


def test_failures_through_node_a_block_the_source_on_node_b(
    tmp_path: Path, url: str, prefix: str
) -> None:
    snapshot = snapshot_of(tmp_path)

    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a_state, b_state):
            shared_a = SharedBlocks(lambda: a_state)
            shared_b = SharedBlocks(lambda: b_state, interval=0.1)
            a, b = Node(snapshot, shared_a), Node(snapshot, shared_b)
            # Two failures on A, one on B: neither node's own count reaches 3, Redis's does.
            for node in (a, a, b):
                refused = node.authorise(ATTACKER)
                assert isinstance(refused, Refusal)
                assert refused.end_reason == EndReason.AUTH_FAILED
                assert "unknown source" in refused.detail
            await shared_a.close()
            await shared_b.close()
            assert not a.live.is_blocked(ATTACKER, time.monotonic())
            assert await b_state.blocked_for(ATTACKER) is not None
            left = (await b_state.blocked()).get(ATTACKER)
            assert left is not None
            assert 0 < left <= 120

            shared_b.start(b.block)
            shared_a.start(a.block)

            async def blocked_everywhere() -> bool:
                now = time.monotonic()
                return a.live.is_blocked(ATTACKER, now) and b.live.is_blocked(ATTACKER, now)

            await eventually(blocked_everywhere, "the block mirrored into both nodes")
            refused = b.authorise(ATTACKER)
            assert isinstance(refused, Refusal)
            assert "blocked after repeated failures" in refused.detail
            # A customer's own address is never blocked by it.
            assert isinstance(b.authorise("127.0.0.1"), Authorised)
            await shared_a.close()
            await shared_b.close()

    asyncio.run(main())


def test_blocks_fail_open_when_redis_does_not_answer(tmp_path: Path, prefix: str) -> None:
    snapshot = snapshot_of(tmp_path)

    async def main() -> None:
        with running_redis() as server:
            async with nodes(server.url, prefix, "a", timeout=0.3) as (state,):
                shared = SharedBlocks(lambda: state)
                node = Node(snapshot, shared)
                server.pause()
                try:
                    for _ in range(3):
                        assert isinstance(node.authorise(ATTACKER), Refusal)
                    await shared.close()
                    assert shared.errors == 3
                    assert await shared.mirror_once(node.block) == 0
                finally:
                    server.resume()
                # The node's own count blocked it all the same.
                assert node.live.is_blocked(ATTACKER, time.monotonic())

    asyncio.run(main())
