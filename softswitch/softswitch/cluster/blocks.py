"""Authentication-failure blocks across nodes: ``limit`` failures from one IP within
``window`` seconds, on any nodes, block it everywhere for ``block_for`` seconds.

The same rule as ``LiveState.note_auth_failure``. Failures are a sorted set per IP scored on
Redis's clock and trimmed by the script; the block is a key that expires by itself
(``PX``), so an IP that stops failing leaves nothing behind once its window has passed. A
block is never shortened by a later one.
"""

from __future__ import annotations

import itertools

from .connection import Link
from .counters import check_count
from .keys import Keys
from .rates import window_us
from .scripts import NOTE_FAILURE

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
        keys = [self._keys.failures(ip), self._keys.block(ip)]
        return bool(await self._link.run(NOTE_FAILURE, keys, args))

    async def note_success(self, ip: str) -> None:
        """A success forgives the earlier failures (not a block)."""
        await self._link.command("DEL", self._keys.failures(ip))

    async def blocked_for(self, ip: str) -> float | None:
        """Seconds of block ``ip`` has left, or None."""
        ms = int(await self._link.command("PTTL", self._keys.block(ip)))
        return None if ms < 0 else ms / 1000

    async def is_blocked(self, ip: str) -> bool:
        return bool(await self._link.command("EXISTS", self._keys.block(ip)))

    async def blocked(self) -> dict[str, float]:
        """Every IP blocked now and the seconds each has left (a SCAN of the block keys,
        one PTTL each: for a node mirroring the blocks into its own list)."""
        prefix = self._keys.block("")
        found: dict[str, float] = {}
        cursor: int | str | bytes = 0
        while True:
            cursor, names = await self._link.command(
                "SCAN", int(cursor), "MATCH", prefix + "*", "COUNT", 500
            )
            for name in names:
                key = name.decode() if isinstance(name, bytes) else str(name)
                ms = int(await self._link.command("PTTL", key))
                if ms > 0:
                    found[key[len(prefix) :]] = ms / 1000
            if int(cursor) == 0:
                return found

    async def unblock(self, ip: str) -> bool:
        """An operator's override: the block and the failures go; whether it was blocked."""
        removed = int(await self._link.command("DEL", self._keys.block(ip)))
        await self._link.command("DEL", self._keys.failures(ip))
        return removed == 1
