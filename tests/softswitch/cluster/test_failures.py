"""Redis forgetting scripts, stopping, not answering; bad URLs."""

from __future__ import annotations

import asyncio

import pytest
from cluster_support import eventually, nodes, raw

from redis_tool import running_redis
from softswitch.cluster import (
    SharedState,
    SharedStateConfigError,
    SharedStateUnavailableError,
    check_url,
    redact,
)


def test_scripts_are_sent_again_after_script_flush(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a") as (a,), raw(url) as client:
            assert await a.acquire("account:x", 1, limit=2)
            assert await a.admit_rate("account:x", 5)
            reloads = a.script_reloads
            await client.script_flush()
            assert await a.acquire("account:x", 1, limit=2)
            assert not await a.acquire("account:x", 1, limit=2)
            assert await a.admit_rate("account:x", 5)
            assert a.script_reloads == reloads + 2  # acquire's and rate's, once each
            await a.release("account:x", 2)
            assert await a.total("account:x") == 0

    asyncio.run(main())


def test_a_stopped_redis_raises_unavailable(prefix: str) -> None:
    async def main() -> None:
        with running_redis() as server:
            a = await SharedState.connect(server.url, "a", prefix=prefix, timeout=0.5)
            assert await a.acquire("account:x", 1, limit=2)
            server.stop()
            with pytest.raises(SharedStateUnavailableError, match="Redis unavailable"):
                await a.acquire("account:x", 1, limit=2)
            with pytest.raises(SharedStateUnavailableError):
                await a.admit_rate("account:x", 5)
            with pytest.raises(SharedStateUnavailableError):
                await a.is_blocked("192.0.2.1")
            with pytest.raises(SharedStateUnavailableError):
                await a.release("account:x")
            assert a.held("account:x") == 0  # the call ended, whatever Redis says
            with pytest.raises(SharedStateUnavailableError):
                await a.close()
            with pytest.raises(SharedStateUnavailableError):
                await SharedState.connect(server.url, "b", prefix=prefix, timeout=0.5)

    asyncio.run(main())


def test_a_redis_that_does_not_answer_times_out_and_is_repaired_after(prefix: str) -> None:
    async def main() -> None:
        with running_redis() as server:
            async with nodes(server.url, prefix, "a", lease=2.0, timeout=0.3) as (a,):
                assert await a.acquire("account:x", 1, limit=5)
                server.pause()
                try:
                    with pytest.raises(SharedStateUnavailableError):
                        await a.acquire("account:x", 1, limit=5)
                finally:
                    server.resume()
                # The timed-out script may have run once Redis went on: the renewal writes
                # what this node really holds.

                async def repaired() -> bool:
                    return await a.total("account:x") == 1 and a.held("account:x") == 1

                await eventually(repaired, "the unsure key rewritten")
                await a.release("account:x")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "scheme must be redis://"),
        ("127.0.0.1:6379", "scheme must be redis://"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("redis://:6379/0", "no host"),
        ("redis://127.0.0.1:99999/0", "not a valid URL"),
        ("unix://", "socket path"),
        ("", "expected a redis:// URL"),
    ],
)
def test_bad_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(SharedStateConfigError, match=problem) as raised:
        check_url(url)
    assert "[server] shared_state" in str(raised.value)

    async def connect() -> None:
        await SharedState.connect(url, "a")

    with pytest.raises(SharedStateConfigError, match=problem):
        asyncio.run(connect())


def test_passwords_are_never_shown() -> None:
    assert redact("redis://user:s3cret@10.0.0.5:6380/1") == "redis://user:***@10.0.0.5:6380/1"
    with pytest.raises(SharedStateConfigError) as raised:
        check_url("redis://user:s3cret@host/db1")
    assert "s3cret" not in str(raised.value)
    assert check_url("rediss://:pw@host:6380/2") == "rediss://:pw@host:6380/2"


def test_a_redis_that_lost_its_data_is_refilled_by_the_nodes(prefix: str) -> None:
    async def main() -> None:
        with running_redis() as server:
            async with (
                nodes(server.url, prefix, "a", "b", lease=1.0) as (a, b),
                raw(server.url) as client,
            ):
                assert await a.acquire("account:x", 2, limit=5)
                assert await b.acquire("account:x", 1, limit=5)
                await client.flushall()  # a restart without persistence

                async def refilled() -> bool:
                    return await a.total("account:x") == 3

                await eventually(refilled, "both nodes' holdings written again")
                assert not await a.acquire("account:x", 3, limit=5)
                await a.release("account:x", 2)
                await b.release("account:x")

    asyncio.run(main())


def test_after_a_failure_calls_fail_at_once_then_redis_is_asked_again(prefix: str) -> None:
    """While Redis is known down, the next calls do not each wait the timeout: they fail
    without asking (the callers' policy applies at once) until a probe finds Redis back."""

    async def main() -> None:
        with running_redis() as server:
            async with nodes(server.url, prefix, "a", lease=5.0, timeout=0.3) as (a,):
                server.pause()
                try:
                    with pytest.raises(SharedStateUnavailableError):  # waits the timeout
                        await a.acquire("account:x", 1, limit=5)
                    for _ in range(3):
                        with pytest.raises(SharedStateUnavailableError, match="not asked"):
                            await a.acquire("account:x", 1, limit=5)
                    assert a.unasked >= 3
                finally:
                    server.resume()

                async def admitted() -> bool:
                    return await a.acquire("account:x", 1, limit=5)

                await eventually(admitted, "Redis asked again after the back-off")
                assert await a.total("account:x") == 1
                await a.release("account:x")

    asyncio.run(main())
