"""Authentication-failure blocks across nodes: ``limit`` failures from one IP within
``window`` seconds, on any nodes, block it everywhere for ``block_for`` seconds.

The same rule as ``LiveState.note_auth_failure``. Failures are a sorted set per IP scored on
Redis's clock and trimmed by the script; blocks are one sorted set, IP -> the end of its
block on Redis's clock, trimmed of ended blocks by the scripts and expiring (``PX``) with
its last block, so a node mirroring them reads every block in one script rather than a
SCAN of the keyspace and one PTTL per IP. A block is never shortened by a later one.
"""

from __future__ import annotations

import itertools

from .connection import Link
from .counters import check_count
from .keys import Keys
from .rates import window_us
from .scripts import BLOCKS, NOTE_FAILURE

__all__ = ["AuthBlocks"]


class AuthBlocks:
    def __init__(self, link: Link, keys: Keys, member: str) -> None:
        self._link = link
        self._keys = keys
        self._member = member
        self._sequence = itertools.count()

    async def note_failure(self, ip: str, limit: int, window: float, block_for: float) -> bool:
        """Count a failed authentication from ``ip``; True if this one blocked it (the
        limit was reached; ``block_for`` 0 counts but never blocks)."""
        check_count("limit", limit, minimum=1)
        block_ms = 0 if block_for == 0 else window_us("block_for", block_for) // 1000
        args: list[str | int] = [limit, window_us("window", window), block_ms]
        args.append(f"{self._member}:{next(self._sequence)}")
        args.append(ip)
        keys = [self._keys.failures(ip), self._keys.blocks()]
        return bool(await self._link.run(NOTE_FAILURE, keys, args))

    async def note_success(self, ip: str) -> None:
        """A success forgives the earlier failures (not a block)."""
        await self._link.command("DEL", self._keys.failures(ip))

    async def _read(self, ip: str) -> dict[str, float]:
        found = await self._link.run(BLOCKS, [self._keys.blocks()], [ip])
        return {str(found[i]): int(found[i + 1]) / 1000 for i in range(0, len(found), 2)}

    async def blocked_for(self, ip: str) -> float | None:
        """Seconds of block ``ip`` has left, or None."""
        return (await self._read(ip)).get(ip)

    async def is_blocked(self, ip: str) -> bool:
        return await self.blocked_for(ip) is not None

    async def blocked(self) -> dict[str, float]:
        """Every IP blocked now and the seconds each has left, in one script (for a node
        mirroring the blocks into its own list)."""
        return await self._read("")

    async def unblock(self, ip: str) -> bool:
        """An operator's override: the block and the failures go; whether it was blocked."""
        removed = int(await self._link.command("ZREM", self._keys.blocks(), ip))
        await self._link.command("DEL", self._keys.failures(ip))
        return removed == 1
