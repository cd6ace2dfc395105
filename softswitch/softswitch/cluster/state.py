"""``SharedState``: one node's handle on the counters every node shares through Redis."""

from __future__ import annotations

import asyncio
import logging

from ..cancelling import cancel_and_wait
from .blocks import AuthBlocks
from .connection import Link
from .counters import LeasedCounters
from .errors import SharedStateConfigError
from .holdings import Holdings
from .keys import Keys
from .leases import NodeLease
from .rates import RateWindows

__all__ = ["SharedState"]

logger = logging.getLogger("softswitch.cluster")


class SharedState:
    """Leased counters, rate windows and auth blocks shared by every node of a cluster.

    Make one with :meth:`connect` per process that admits calls (each worker of a node is a
    node here, with its own ``node_id``: ``<host>/<worker>`` is a good one) and
    :meth:`close` it at shutdown. Every method may raise ``SharedStateUnavailableError``.
    """

    def __init__(self, link: Link, keys: Keys, lease: NodeLease, book: Holdings) -> None:
        self._link = link
        self._lease = lease
        self._counters = LeasedCounters(link, keys, lease, book)
        self._rates = RateWindows(link, keys, lease.field)
        self._blocks = AuthBlocks(link, keys, lease.field)
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        node_id: str,
        *,
        lease: float = 10.0,
        prefix: str = "softswitch",
        timeout: float = 1.0,
        grace: float = 0.0,
        book: Holdings | None = None,
    ) -> SharedState:
        """Connect, take this node's lease and start renewing it.

        ``grace``: seconds its credit holds (``credit:<account>`` keys) still count after its
        last renewal, should it die (0: none; else at least ``lease``, at most an hour):
        long enough for another node to settle its calls in the ledger and the others to
        read the debits. :meth:`set_grace` changes it (a reload).

        ``timeout``: seconds any one Redis call may take before it raises
        ``SharedStateUnavailableError``. Raises ``SharedStateConfigError`` for a bad URL or an id
        another live process holds, ``SharedStateUnavailableError`` when Redis does not answer.

        ``book``: what this node held before it could connect (``Holdings.add_unsure``: calls
        admitted on its own limits meanwhile); the first renewal writes it.
        """
        if not 0 < timeout <= 60:
            raise SharedStateConfigError(f"timeout {timeout!r}: must be over 0, at most 60 s")
        keys = Keys(prefix)
        book = Holdings() if book is None else book
        link = Link(url, timeout=timeout, name=f"softswitch-{node_id}")
        try:
            node = NodeLease(link, keys, node_id, lease, book, grace=grace)
            await link.command("PING")
            await node.claim()
        except BaseException:
            await link.close()
            raise
        state = cls(link, keys, node, book)
        state._keeper = asyncio.create_task(node.keep_alive(), name=f"lease {node_id}")
        logger.info(
            "shared state: node %s connected to %s (lease %.1f s)",
            node_id,
            link.where,
            lease,
            extra={"event": "shared_state_connected", "node_id": node_id},
        )
        return state

    async def close(self) -> None:
        """Stop renewing; give back the lease and whatever this node still holds, so it
        stops counting at once (if Redis is unreachable, it stops within the lease)."""
        if self._keeper is not None:
            await cancel_and_wait(self._keeper)
            self._keeper = None
        try:
            await self._lease.leave()
        finally:
            await self._link.close()

    # -- identity and health -----------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._lease.node_id

    @property
    def field(self) -> str:
        """This node's field in the counters' hashes: ``<node_id>#<incarnation>``."""
        return self._lease.field

    def set_grace(self, grace: float) -> None:
        """The grace from the next renewal on (a reload changed what it is made of)."""
        self._lease.set_grace(grace)

    @property
    def lease_losses(self) -> int:
        """Times this node found its lease gone and took it again (logged as a WARNING)."""
        return self._lease.losses

    @property
    def unasked(self) -> int:
        """Calls failed at once, without asking Redis, in the back-off after a failure."""
        return self._link.circuit.skipped

    @property
    def script_reloads(self) -> int:
        """Times a script was sent again after NOSCRIPT."""
        return self._link.reloads

    # -- leased counters ---------------------------------------------------------------

    async def acquire(self, key: str, amount: int = 1, *, limit: int) -> bool:
        """Hold ``amount`` on ``key`` if every live node's holdings plus it stay within
        ``limit``; False changes nothing. Pair each True with a :meth:`release`. On a
        credit key (``credit:<account>``) a dead node's holdings count for its grace."""
        return await self._counters.acquire(key, amount, limit=limit)

    def hold_unverified(self, key: str, amount: int = 1) -> None:
        """Count ``amount`` on ``key`` as this node's without asking Redis (it did not
        answer); written at the next renewal. Pair it with a :meth:`release`."""
        self._counters.hold_unverified(key, amount)

    async def release(self, key: str, amount: int = 1) -> None:
        """Give back what an :meth:`acquire` took (never below zero; more is logged)."""
        await self._counters.release(key, amount)

    async def total(self, key: str) -> int:
        """What every live node holds on ``key`` (on a credit key, and the dead ones within
        their grace)."""
        return await self._counters.total(key)

    def held(self, key: str) -> int:
        """What this node holds on ``key`` (no Redis call)."""
        return self._counters.held(key)

    # -- rates -------------------------------------------------------------------------

    async def admit_rate(self, key: str, limit: int, window: float = 1.0) -> bool:
        """One admission on ``key`` unless ``limit`` happened in the last ``window`` s."""
        return await self._rates.admit(key, limit, window)

    # -- authentication failures -------------------------------------------------------

    async def note_failure(self, ip: str, limit: int, window: float, block_for: float) -> bool:
        """A failed authentication from ``ip``; True if this one blocked it."""
        return await self._blocks.note_failure(ip, limit, window, block_for)

    async def note_success(self, ip: str) -> None:
        """A success forgives ``ip``'s earlier failures."""
        await self._blocks.note_success(ip)

    async def is_blocked(self, ip: str) -> bool:
        return await self._blocks.is_blocked(ip)

    async def blocked(self) -> dict[str, float]:
        """Every IP blocked now, with the seconds of block it has left."""
        return await self._blocks.blocked()

    async def blocked_for(self, ip: str) -> float | None:
        """Seconds of block ``ip`` has left, or None."""
        return await self._blocks.blocked_for(ip)

    async def unblock(self, ip: str) -> bool:
        """Lift a block (and forget the failures); whether there was one."""
        return await self._blocks.unblock(ip)
