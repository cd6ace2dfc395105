"""A pool of rtpengine relays: which one a new call uses, and which are answering.

Each relay has a weight; a new call picks among the relays that are up, in proportion to
their weights (weight 0: kept up and pinged, never picked, for draining a relay). A relay
is marked down when a ping fails or when its user reports a timed-out request
(``RelayPool.failed``), and up again at the next ping it answers; a background task pings
every relay each ``ping_interval`` seconds.

A call stays on the relay it started on: the pool hands out ``Relay`` objects and never
moves a call, since the relay alone holds that call's ports and state.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from softswitch.cancelling import cancel_and_wait
from softswitch.media.ng import NgClient, NgError

__all__ = ["Relay", "RelayPool", "RelaySpec"]

logger = logging.getLogger("softswitch.media")


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """One relay as configured: a name for logs and CDRs, its NG address and its weight."""

    id: str
    host: str
    port: int
    weight: int = 1

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a relay needs an id")
        if not 0 < self.port < 65536:
            raise ValueError(f"relay {self.id}: port {self.port} out of range")
        if self.weight < 0:
            raise ValueError(f"relay {self.id}: weight {self.weight} is negative")


class Relay:
    """A relay of the pool: its spec, its NG client and whether it is answering."""

    __slots__ = ("client", "spec", "up")

    def __init__(self, spec: RelaySpec, client: NgClient) -> None:
        self.spec = spec
        self.client = client
        self.up = False

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def weight(self) -> int:
        return self.spec.weight

    def __repr__(self) -> str:
        return f"<Relay {self.id} {self.client.relay} {'up' if self.up else 'down'}>"


Connect = Callable[[RelaySpec], Awaitable[NgClient]]


class RelayPool:
    """The relays of the switch; ``start`` before use, ``close`` when done."""

    def __init__(
        self,
        specs: Sequence[RelaySpec],
        *,
        timeout: float = 0.5,
        retries: int = 2,
        ping_interval: float = 5.0,
        rng: random.Random | None = None,
        connect: Connect | None = None,
    ) -> None:
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"relay ids must be unique: {ids}")
        if ping_interval <= 0:
            raise ValueError("ping_interval must be positive")
        self.specs = tuple(specs)
        self.timeout = timeout
        self.retries = retries
        self.ping_interval = ping_interval
        self._rng = rng or random.Random()
        self._connect = connect or self._open
        self._relays: dict[str, Relay] = {}
        self._pinger: asyncio.Task[None] | None = None

    async def _open(self, spec: RelaySpec) -> NgClient:
        return await NgClient.open(spec.host, spec.port, timeout=self.timeout, retries=self.retries)

    async def start(self) -> None:
        """Open a client per relay, ping each once, then keep pinging in the background."""
        if self._relays:
            raise RuntimeError("the relay pool is already started")
        try:
            for spec in self.specs:
                self._relays[spec.id] = Relay(spec, await self._connect(spec))
        except BaseException:
            await self.close()
            raise
        await self.check()
        logger.info(
            "media relays: %d of %d up",
            len(self.healthy()),
            len(self._relays),
            extra={"relays": {r.id: r.up for r in self._relays.values()}},
        )
        self._pinger = asyncio.get_running_loop().create_task(self._ping_forever())

    async def check(self) -> None:
        """Ping every relay now (all at once) and mark each up or down by its answer."""
        relays = list(self._relays.values())
        results = await asyncio.gather(
            *(relay.client.ping() for relay in relays), return_exceptions=True
        )
        for relay, result in zip(relays, results, strict=True):
            if isinstance(result, NgError):
                self._mark(relay, up=False, why=str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                self._mark(relay, up=True, why="answered ping")

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.check()
            except Exception:  # a bug must not stop the health checks for good
                logger.exception("media relay health check failed")

    def _mark(self, relay: Relay, *, up: bool, why: str) -> None:
        if relay.up == up:
            return
        relay.up = up
        if up:
            logger.info("media relay %s is up", relay.id, extra={"relay": relay.id})
        else:
            logger.warning("media relay %s is down: %s", relay.id, why, extra={"relay": relay.id})

    def failed(self, relay: Relay) -> None:
        """Report that a request to ``relay`` timed out: it is skipped until it answers a
        ping again."""
        self._mark(relay, up=False, why="a request timed out")

    def pick(self, exclude: Collection[str] = ()) -> Relay | None:
        """A relay for a new call, chosen by weight among the ones up (and not in
        ``exclude``, ids of relays that already failed this call); ``None`` if there is none."""
        candidates = [
            relay
            for relay in self._relays.values()
            if relay.up and relay.weight > 0 and relay.id not in exclude
        ]
        if not candidates:
            return None
        return self._rng.choices(candidates, weights=[r.weight for r in candidates])[0]

    def get(self, relay_id: str) -> Relay | None:
        """The relay named ``relay_id`` (up or not), ``None`` if the pool has none."""
        return self._relays.get(relay_id)

    def healthy(self) -> list[Relay]:
        """The relays that answered their last ping (weight 0 included)."""
        return [relay for relay in self._relays.values() if relay.up]

    @property
    def relays(self) -> tuple[Relay, ...]:
        return tuple(self._relays.values())

    async def close(self) -> None:
        """Stop pinging and close every client."""
        if self._pinger is not None:
            await cancel_and_wait(self._pinger)
            self._pinger = None
        for relay in self._relays.values():
            relay.client.close()
            relay.up = False
