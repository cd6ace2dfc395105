"""Leased counters with two nodes in one process: limits, credit amounts, releases."""

from __future__ import annotations

import asyncio
import logging

import pytest
from cluster_support import nodes, raw

from softswitch.cluster import MAX_AMOUNT, SharedStateConfigError


def test_two_nodes_share_one_limit(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            assert await a.acquire("account:acme", 1, limit=3)
            assert await a.acquire("account:acme", 1, limit=3)
            assert await b.acquire("account:acme", 1, limit=3)
            assert not await b.acquire("account:acme", 1, limit=3)
            assert not await a.acquire("account:acme", 1, limit=3)
            assert await a.total("account:acme") == await b.total("account:acme") == 3
            assert (a.held("account:acme"), b.held("account:acme")) == (2, 1)
            await a.release("account:acme")
            assert await b.acquire("account:acme", 1, limit=3)
            assert await a.total("account:acme") == 3
            # Other keys are other counters.
            assert await b.acquire("gateway:gw1", 1, limit=1)
            assert await a.total("gateway:gw1") == 1
            for node in (a, b):
                await node.release("account:acme", node.held("account:acme"))
            await b.release("gateway:gw1")
            assert await a.total("account:acme") == 0
        async with raw(url) as client:
            assert await client.exists(f"{prefix}:hold:account:acme") == 0  # emptied, gone

    asyncio.run(main())


def test_credit_in_nano_units_is_exact_at_the_limit(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            available = 10_000_000_000  # 10.00 in nano-units
            assert await a.acquire("credit:acme", 7_500_000_000, limit=available)
            assert not await b.acquire("credit:acme", 2_500_000_001, limit=available)
            assert await b.acquire("credit:acme", 2_500_000_000, limit=available)
            assert not await a.acquire("credit:acme", 1, limit=available)
            assert await a.total("credit:acme") == available
            # Near 2**53, where Lua's doubles are still exact.
            top = MAX_AMOUNT - 1
            assert await a.acquire("credit:big", top - 1, limit=top)
            assert await b.acquire("credit:big", 1, limit=top)
            assert not await b.acquire("credit:big", 1, limit=top)
            assert await a.total("credit:big") == top
            await a.release("credit:big", top - 1)
            assert await b.total("credit:big") == 1
            for node in (a, b):
                for key in ("credit:acme", "credit:big"):
                    if node.held(key):
                        await node.release(key, node.held(key))

    asyncio.run(main())


def test_concurrent_acquires_never_pass_the_limit(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            tries = [node.acquire("account:x", 1, limit=10) for node in (a, b) * 30]
            results = await asyncio.gather(*tries)
            assert sum(results) == 10
            assert await a.total("account:x") == 10
            assert a.held("account:x") + b.held("account:x") == 10

    asyncio.run(main())


def test_a_release_beyond_what_is_held_is_logged_not_raised(
    url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            assert await a.acquire("account:x", 2, limit=5)
            assert await b.acquire("account:x", 1, limit=5)
            with caplog.at_level(logging.WARNING, logger="softswitch.cluster"):
                await b.release("account:x", 3)  # b holds 1: releases that 1
                await b.release("account:x")  # holds nothing now
            assert [r.getMessage() for r in caplog.records if "release of" in r.getMessage()]
            assert await a.total("account:x") == 2  # a's holdings untouched
            assert b.held("account:x") == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("amount", "limit"), [(0, 5), (1.5, 5), (True, 5), (1, -1), (MAX_AMOUNT, MAX_AMOUNT), (1, 2.0)]
)
def test_amounts_and_limits_are_checked(
    url: str, prefix: str, amount: object, limit: object
) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a") as (a,):
            with pytest.raises(SharedStateConfigError):
                await a.acquire("k", amount, limit=limit)  # type: ignore[arg-type]

    asyncio.run(main())
