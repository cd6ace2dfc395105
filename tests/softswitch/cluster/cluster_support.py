"""Helpers for the cluster tests: nodes in this process, raw Redis, bounded polls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis

from softswitch.cluster import SharedState, SharedStateUnavailableError

__all__ = ["eventually", "nodes", "raw"]


@contextlib.asynccontextmanager
async def nodes(
    url: str, prefix: str, *names: str, lease: float = 10.0, timeout: float = 1.0
) -> AsyncIterator[list[SharedState]]:
    """Connected nodes, closed afterwards."""
    states: list[SharedState] = []
    try:
        for name in names:
            states.append(
                await SharedState.connect(url, name, lease=lease, prefix=prefix, timeout=timeout)
            )
        yield states
    finally:
        for state in states:
            await state.close()


@contextlib.asynccontextmanager
async def raw(url: str) -> AsyncIterator[Redis]:
    """A plain client, to look at and tamper with the keys."""
    client = Redis.from_url(url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, *, within: float = 20.0
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``within`` seconds (a
    bound for a loaded machine, not a timing claim). ``SharedStateUnavailableError`` counts
    as "not yet": a node backs off for a moment after Redis failed (``circuit``)."""
    deadline = time.monotonic() + within
    while not await _answered(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def _answered(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await check()
    except SharedStateUnavailableError:
        return False
