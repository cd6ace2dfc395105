"""A switch node in a process of its own, for the cluster tests (run with ``python PATH``).

    cluster_node.py hold URL PREFIX NODE LEASE KEY AMOUNT [GRACE]
        take AMOUNT on KEY, print "held", then keep the lease until a line (or EOF) on
        stdin; then release, close and exit 0. With GRACE (seconds), the node's holdings on
        a credit KEY outlive its lease by that much.
    cluster_node.py fill URL PREFIX NODE KEY LIMIT ATTEMPTS
        print "ready", wait for a line, try ATTEMPTS acquires of 1 without releasing, print
        {"acquired": n}, wait for a line, release everything, close.
    cluster_node.py churn URL PREFIX NODE KEY LIMIT ATTEMPTS TASKS
        print "ready", wait for a line; TASKS tasks each loop: acquire; INCR a check key;
        yield; DECR it; release. Print {"acquired", "released", "refused", "max_seen"}, where
        max_seen is the largest value the check key reached: it counts only holders that
        are inside their acquire..release, so it can never exceed LIMIT if the limit holds.

Logs go to stderr at INFO. Every wait is bounded (120 s) so no process outlives a test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine

from redis.asyncio import Redis

from softswitch.cluster import SharedState

BOUND = 120.0


async def line() -> None:
    """Wait for a line on stdin (or EOF), at most ``BOUND`` seconds."""
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), BOUND)


def say(text: str) -> None:
    print(text, flush=True)


async def hold(
    url: str, prefix: str, node: str, lease: str, key: str, amount: str, grace: str = "0"
) -> int:
    state = await SharedState.connect(
        url, node, lease=float(lease), prefix=prefix, grace=float(grace)
    )
    assert await state.acquire(key, int(amount), limit=2**53 - 1)
    say("held")
    await line()
    await state.release(key, int(amount))
    await state.close()
    return 0


async def fill(url: str, prefix: str, node: str, key: str, limit: str, attempts: str) -> int:
    state = await SharedState.connect(url, node, prefix=prefix)
    say("ready")
    await line()
    acquired = 0
    for _ in range(int(attempts)):
        acquired += await state.acquire(key, 1, limit=int(limit))
    say(json.dumps({"acquired": acquired}))
    await line()
    if acquired:
        await state.release(key, acquired)
    await state.close()
    return 0


async def churn(
    url: str, prefix: str, node: str, key: str, limit: str, attempts: str, tasks: str
) -> int:
    state = await SharedState.connect(url, node, prefix=prefix)
    check = Redis.from_url(url, decode_responses=True)
    counts = {"acquired": 0, "released": 0, "refused": 0, "max_seen": 0}

    async def worker() -> None:
        for _ in range(int(attempts)):
            if not await state.acquire(key, 1, limit=int(limit)):
                counts["refused"] += 1
                await asyncio.sleep(0)
                continue
            counts["acquired"] += 1
            seen = int(await check.incr(f"{prefix}:check"))
            counts["max_seen"] = max(counts["max_seen"], seen)
            await asyncio.sleep(0)
            await check.decr(f"{prefix}:check")
            await state.release(key, 1)
            counts["released"] += 1

    say("ready")
    await line()
    await asyncio.gather(*(worker() for _ in range(int(tasks))))
    say(json.dumps(counts))
    await check.aclose()
    await state.close()
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    modes: dict[str, Callable[..., Coroutine[None, None, int]]]
    modes = {"hold": hold, "fill": fill, "churn": churn}
    return asyncio.run(modes[argv[0]](*argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
