"""Leased counters: "at most ``limit`` held on this key by all live nodes together".

One hash per key, one field per node (``leases`` says how fields of dead nodes stop
counting). ``acquire`` counts the live nodes' holdings, compares with the limit and adds, in
one script; ``release`` takes back what this node holds, never below zero. Both write the
node's field as its whole holding from its own book (``holdings``), one operation per key at
a time. The same counter serves both uses the switch has:

* concurrency: ``acquire("account:<id>", 1, limit=max_calls)`` per call, ``release`` at its
  end (``gateway:<id>`` with ``capacity`` likewise);
* credit: ``acquire("credit:<account>", nanos, limit=available)``, amounts in the integer
  nano-units of ``billing.money`` (never a float), so the reservations of every node
  together never exceed what the account has.
"""

from __future__ import annotations

import logging

from .connection import Link
from .errors import SharedStateConfigError, SharedStateError
from .holdings import Holdings
from .keys import Keys, lingers
from .leases import NodeLease
from .scripts import ACQUIRE, MAX_AMOUNT, RELEASE, TOTAL

__all__ = ["LeasedCounters", "check_count"]

logger = logging.getLogger("softswitch.cluster")


def check_count(name: str, value: int, *, minimum: int) -> int:
    """An integer in ``minimum .. MAX_AMOUNT - 1`` (what Redis's Lua counts exactly)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SharedStateConfigError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value < MAX_AMOUNT:
        raise SharedStateConfigError(f"{name} {value} is outside {minimum}..{MAX_AMOUNT - 1}")
    return value


class LeasedCounters:
    def __init__(self, link: Link, keys: Keys, lease: NodeLease, book: Holdings) -> None:
        self._link = link
        self._keys = keys
        self._lease = lease
        self._book = book

    def held(self, key: str) -> int:
        """What this node holds on ``key`` (its own book; no Redis call)."""
        return self._book.held(key)

    async def acquire(self, key: str, amount: int = 1, *, limit: int) -> bool:
        """Hold ``amount`` more on ``key`` if the live nodes' total stays within ``limit``
        (True); else change nothing (False). On a credit key (``keys.lingers``) dead nodes'
        holdings count for their grace too (``leases``: their calls are not settled yet)."""
        check_count("amount", amount, minimum=1)
        check_count("limit", limit, minimum=0)
        lease = self._lease
        keys = [self._keys.hold(key), lease.key]
        async with self._book.operation(key):
            for _attempt in range(2):
                # The field is written as this node's whole holding after the call (not a
                # delta): a field that Redis lost (a regain) is right again at once.
                args: list[str | int] = [
                    self._keys.node_prefix,
                    lease.field,
                    lease.incarnation,
                    self._book.held(key) + amount,
                    limit,
                    self._keys.seen_prefix if lingers(key) else "",
                ]
                try:
                    code, _total = await self._link.run(ACQUIRE, keys, args)
                except SharedStateError:
                    self._book.mark_unsure(key)  # the script may have run
                    raise
                if code == 1:
                    self._book.add(key, amount)
                    return True
                if code == 0:
                    return False
                await lease.regain()  # our lease is gone: take it, then try again
        raise SharedStateError(f"node {lease.node_id}: its lease was lost again at once")

    def hold_unverified(self, key: str, amount: int = 1) -> None:
        """Count ``amount`` on ``key`` in this node's book without asking Redis (which did
        not answer: a call admitted under the node's own limits); the next renewal writes
        it, so every node counts the call from then on. Pair it with a :meth:`release`."""
        check_count("amount", amount, minimum=1)
        self._book.add_unsure(key, amount)

    async def release(self, key: str, amount: int = 1) -> None:
        """Give back ``amount`` held on ``key`` by this node. More than it holds is logged
        and only what it holds is released. The node's own book drops it first, so when
        Redis cannot be reached (``SharedStateUnavailableError``) the lease's renewal writes
        the right value once Redis is back."""
        check_count("amount", amount, minimum=1)
        async with self._book.operation(key):
            held = self._book.held(key)
            if held < amount:
                logger.warning(
                    "shared state: release of %d on %s, but node %s holds %d there",
                    amount,
                    key,
                    self._lease.node_id,
                    held,
                    extra={"event": "unknown_release", "key": key},
                )
                amount = held
                if not amount:
                    return
            # An unsure key's field may not hold what the book does (a call admitted while
            # Redis did not answer, or before the node connected, not written yet): a
            # release finding less there is what is expected, not a lost lease.
            unsure = self._book.is_unsure(key)
            self._book.remove(key, amount)
            try:
                short = int(
                    await self._link.run(
                        RELEASE,
                        [self._keys.hold(key)],
                        [self._lease.field, amount, held - amount],
                    )
                )
            except SharedStateError:
                self._book.mark_unsure(key)
                raise
        if short and not unsure:
            # Our field had been deleted (the lease expired meanwhile): nothing to undo.
            logger.warning(
                "shared state: release of %d on %s found %d of it already gone in Redis"
                " (node %s's lease expired?)",
                amount,
                key,
                short,
                self._lease.node_id,
                extra={"event": "release_short", "key": key},
            )

    async def total(self, key: str) -> int:
        """What all live nodes hold on ``key`` now (on a credit key, and the dead ones within
        their grace, as ``acquire`` counts them)."""
        seen = self._keys.seen_prefix if lingers(key) else ""
        return int(
            await self._link.run(TOTAL, [self._keys.hold(key)], [self._keys.node_prefix, seen])
        )
