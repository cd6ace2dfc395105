"""The relay pool: weighted choice among the relays that answer, and their health checks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from loopback_ports import LOCAL, free_port
from rtpengine_tool import FakeNg, Rtpengine, pong
from softswitch.media.relays import Relay, RelayPool, RelaySpec


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


class Switchable:
    """A fake relay's handler that answers pings until told to go quiet."""

    def __init__(self) -> None:
        self.answering = True

    def __call__(self, server: FakeNg, cookie: str, request: Any) -> Any:
        return pong(server, cookie, request) if self.answering else None


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def fast_pool(specs: list[RelaySpec], **options: Any) -> RelayPool:
    options = {"timeout": 0.03, "retries": 0, "ping_interval": 0.05, **options}
    return RelayPool(specs, rng=random.Random(7), **options)


def test_picks_follow_the_weights() -> None:
    async def main() -> None:
        servers = [await FakeNg.start() for _ in range(2)]
        specs = [
            RelaySpec("light", LOCAL, servers[0].port, weight=1),
            RelaySpec("heavy", LOCAL, servers[1].port, weight=3),
        ]
        pool = fast_pool(specs, ping_interval=60)
        await pool.start()
        picks = Counter(relay.id for relay in (pool.pick() for _ in range(4000)) if relay)
        await pool.close()
        for server in servers:
            server.close()
        assert sum(picks.values()) == 4000
        assert picks["heavy"] / 4000 == pytest.approx(0.75, abs=0.03)

    run(main)


def test_weight_zero_is_up_but_never_picked() -> None:
    async def main() -> None:
        servers = [await FakeNg.start() for _ in range(2)]
        pool = fast_pool(
            [
                RelaySpec("draining", LOCAL, servers[0].port, weight=0),
                RelaySpec("main", LOCAL, servers[1].port, weight=1),
            ],
            ping_interval=60,
        )
        await pool.start()
        assert {relay.id for relay in pool.healthy()} == {"draining", "main"}
        assert {pool.pick().id for _ in range(200)} == {"main"}  # type: ignore[union-attr]
        assert pool.pick(exclude={"main"}) is None
        await pool.close()
        for server in servers:
            server.close()

    run(main)


def test_a_dead_relay_is_skipped_until_it_answers_a_ping_again() -> None:
    async def main() -> None:
        flaky_handler = Switchable()
        flaky_server, steady_server = await FakeNg.start(flaky_handler), await FakeNg.start()
        pool = fast_pool(
            [
                RelaySpec("flaky", LOCAL, flaky_server.port, weight=1),
                RelaySpec("steady", LOCAL, steady_server.port, weight=1),
            ]
        )
        await pool.start()
        flaky = pool.get("flaky")
        assert flaky is not None
        assert flaky.up
        assert {pool.pick().id for _ in range(100)} == {"flaky", "steady"}  # type: ignore[union-attr]

        flaky_handler.answering = False
        await until(lambda: not flaky.up)
        assert [relay.id for relay in pool.healthy()] == ["steady"]
        assert {pool.pick().id for _ in range(100)} == {"steady"}  # type: ignore[union-attr]

        flaky_handler.answering = True
        await until(lambda: flaky.up)
        assert {pool.pick().id for _ in range(100)} == {"flaky", "steady"}  # type: ignore[union-attr]
        await pool.close()
        flaky_server.close()
        steady_server.close()

    run(main)


def test_a_failed_request_marks_the_relay_down_until_the_next_ping() -> None:
    async def main() -> None:
        server = await FakeNg.start()
        pool = fast_pool([RelaySpec("only", LOCAL, server.port)], ping_interval=0.2)
        await pool.start()
        relay = pool.get("only")
        assert relay is not None
        pool.failed(relay)
        assert not relay.up
        assert pool.pick() is None
        await until(lambda: relay.up)  # the relay still answers pings
        assert pool.pick() is relay
        await pool.close()
        server.close()

    run(main)


def test_a_relay_down_at_start_is_marked_down() -> None:
    async def main() -> None:
        server = await FakeNg.start()
        nobody = free_port()  # nothing listens there
        pool = fast_pool(
            [RelaySpec("gone", LOCAL, nobody, weight=5), RelaySpec("here", LOCAL, server.port)],
            ping_interval=60,
        )
        await pool.start()
        assert [relay.id for relay in pool.healthy()] == ["here"]
        assert {pool.pick().id for _ in range(50)} == {"here"}  # type: ignore[union-attr]
        gone = pool.get("gone")
        assert gone is not None
        assert not gone.up
        assert repr(gone).endswith("down>")
        assert pool.get("unknown") is None
        await pool.close()
        server.close()

    run(main)


def test_a_pool_over_the_real_rtpengine(rtpengine: Rtpengine) -> None:
    async def main() -> None:
        pool = RelayPool([RelaySpec("rtpe1", rtpengine.host, rtpengine.ng_port)], ping_interval=60)
        await pool.start()
        relay = pool.pick()
        assert isinstance(relay, Relay)
        assert relay.id == "rtpe1"
        await relay.client.ping()
        await pool.close()
        assert relay.client.closed
        assert not relay.up

    run(main)


def test_close_stops_the_pings() -> None:
    async def main() -> None:
        server = await FakeNg.start()
        pool = fast_pool([RelaySpec("r", LOCAL, server.port)], ping_interval=0.02)
        await pool.start()
        await asyncio.sleep(0.1)
        await pool.close()
        count = len(server.received)
        assert count >= 3
        await asyncio.sleep(0.1)
        assert len(server.received) == count
        with pytest.raises(RuntimeError, match="already started"):
            await pool.start()
        server.close()

    run(main)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (("", LOCAL, 2223, 1), "needs an id"),
        (("r", LOCAL, 0, 1), "out of range"),
        (("r", LOCAL, 2223, -1), "negative"),
    ],
)
def test_bad_specs_are_refused(spec: tuple[str, str, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RelaySpec(*spec)


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        RelayPool([RelaySpec("r", LOCAL, 1), RelaySpec("r", LOCAL, 2)])
