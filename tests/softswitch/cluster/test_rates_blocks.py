"""CPS windows and authentication-failure blocks across two nodes."""

from __future__ import annotations

import asyncio

from cluster_support import eventually, nodes, raw


def test_rate_counts_both_nodes_in_one_window(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            admitted = [await (a, b)[i % 2].admit_rate("account:x", 5, 60.0) for i in range(10)]
            assert admitted == [True] * 5 + [False] * 5
            # Refused calls do not use up the window: it holds the 5 admitted only.
            async with raw(url) as client:
                assert await client.zcard(f"{prefix}:rate:account:x") == 5
                assert 0 < await client.pttl(f"{prefix}:rate:account:x") <= 61_000

    asyncio.run(main())


def test_admissions_at_once_are_each_counted(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            tries = [node.admit_rate("gateway:g", 5, 60.0) for node in (a, b) * 20]
            assert sum(await asyncio.gather(*tries)) == 5

    asyncio.run(main())


def test_the_window_slides(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            assert await a.admit_rate("account:y", 2, 0.3)
            assert await b.admit_rate("account:y", 2, 0.3)
            assert not await a.admit_rate("account:y", 2, 0.3)

            async def admitted_again() -> bool:
                return await b.admit_rate("account:y", 2, 0.3)

            await eventually(admitted_again, "an admission once the window has passed")

    asyncio.run(main())


def test_failures_on_two_nodes_block_everywhere(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            ip = "192.0.2.7"
            assert not await a.note_failure(ip, 3, 60.0, 300.0)
            assert not await b.note_failure(ip, 3, 60.0, 300.0)
            assert not await a.is_blocked(ip)
            async with raw(url) as client:
                assert 0 < await client.pttl(f"{prefix}:authfail:{ip}") <= 61_000
            assert await a.note_failure(ip, 3, 60.0, 300.0)
            assert await b.is_blocked(ip)
            left = await b.blocked_for(ip)
            assert left is not None
            assert 0 < left <= 300
            assert await b.unblock(ip)
            assert not await a.is_blocked(ip)
            assert not await a.unblock(ip)
            # A success forgives: two more failures do not block.
            assert not await a.note_failure(ip, 3, 60.0, 300.0)
            await b.note_success(ip)
            assert not await a.note_failure(ip, 3, 60.0, 300.0)
            assert not await b.note_failure(ip, 3, 60.0, 300.0)
            assert not await a.is_blocked(ip)

    asyncio.run(main())


def test_a_block_expires_by_itself(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a") as (a,):
            assert await a.note_failure("198.51.100.1", 1, 60.0, 0.2)
            assert await a.is_blocked("198.51.100.1")

            async def unblocked() -> bool:
                return not await a.is_blocked("198.51.100.1")

            await eventually(unblocked, "the block's expiry")
            async with raw(url) as client:
                assert await client.keys(f"{prefix}:*198.51.100.1") == []

    asyncio.run(main())


def test_blocks_are_one_sorted_set_read_in_one_call(url: str, prefix: str) -> None:
    """The mirror reads every block at once: one sorted set IP -> end of block, not one key
    per IP to SCAN for and PTTL one by one; an ended block is trimmed by the next read."""

    async def main() -> None:
        async with nodes(url, prefix, "a") as (a,):
            for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
                assert await a.note_failure(ip, 1, 60.0, 300.0)
            assert await a.note_failure("192.0.2.9", 1, 60.0, 0.2)
            async with raw(url) as client:
                assert await client.keys(f"{prefix}:block*") == [f"{prefix}:blocks"]

                async def ended() -> bool:
                    return "192.0.2.9" not in await a.blocked()

                await eventually(ended, "the short block to end")
                assert await client.zcard(f"{prefix}:blocks") == 3  # trimmed
            blocked = await a.blocked()
            assert sorted(blocked) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            assert all(0 < left <= 300 for left in blocked.values())
            assert await a.unblock("192.0.2.1")
            assert sorted(await a.blocked()) == ["192.0.2.2", "192.0.2.3"]

    asyncio.run(main())
