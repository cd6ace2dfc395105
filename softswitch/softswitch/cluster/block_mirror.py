"""Authentication-failure blocks across nodes: the switch's use of ``blocks``.

Each node keeps blocking on its own (``LiveState.note_auth_failure``, synchronous, on the
call path). With ``[server] shared_state`` every failure is also noted in Redis, in a task
the call never waits for, so ``auth_fail_limit`` failures within ``auth_fail_window`` on any
nodes together block the IP there; a success forgives there too. Every ``interval`` seconds
each node reads the blocks in Redis and mirrors those it does not have into its own block
list (the one its ``SourceGuard`` and ``authorise`` read) for the time they have left: an IP
that failed on node A is refused on node B within about a second.

Failure policy: fail open. Redis not answering, the node's own blocks are the only ones
(one WARNING when the outage starts, one when it ends); nothing is refused for Redis's sake.
An operator's ``unblock`` lifts the node's own block; the block in Redis runs its course
(and is mirrored again meanwhile) unless it is lifted there too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..cancelling import cancel_and_wait
from .errors import SharedStateError
from .state import SharedState

__all__ = ["SharedBlocks"]

logger = logging.getLogger("softswitch.cluster")

#: Seconds between two reads of the blocks in Redis.
MIRROR_INTERVAL = 1.0


class SharedBlocks:
    """One process's side of the shared blocks (module docstring). ``state()`` gives the
    connected ``SharedState`` or None (not connected: the node's own blocks only)."""

    def __init__(
        self, state: Callable[[], SharedState | None], *, interval: float = MIRROR_INTERVAL
    ) -> None:
        self.state = state
        self.interval = interval
        self._pending: set[asyncio.Task[None]] = set()
        self._mirror: asyncio.Task[None] | None = None
        self._outage = False
        #: Questions Redis did not answer.
        self.errors = 0

    def note_failure(self, ip: str, limit: int, window: float, block_for: float) -> None:
        """A failed authentication from ``ip``, counted in Redis in a task of its own."""
        state = self.state()
        if state is not None:
            self._spawn(self._note(state.note_failure(ip, limit, window, block_for)))

    def note_success(self, ip: str) -> None:
        """A success from ``ip`` forgives its failures in Redis too (a task of its own)."""
        state = self.state()
        if state is not None:
            self._spawn(self._note(state.note_success(ip)))

    async def _note(self, question: Awaitable[object]) -> None:
        try:
            await question
        except SharedStateError as e:
            self._failed(e)
        else:
            self._answered()

    def start(self, block: Callable[[str, float], bool]) -> None:
        """Mirror Redis's blocks from now on: ``block(ip, seconds_left)`` blocks ``ip`` in
        the node's own list and says whether it was new there."""
        if self._mirror is None:
            self._mirror = asyncio.get_running_loop().create_task(
                self._mirror_forever(block), name="shared blocks mirror"
            )

    async def mirror_once(self, block: Callable[[str, float], bool]) -> int:
        """Read the blocks in Redis once into the node's list; how many were new there."""
        state = self.state()
        if state is None:
            return 0
        try:
            blocked = await state.blocked()
        except SharedStateError as e:
            self._failed(e)
            return 0
        self._answered()
        new = 0
        for ip, left in blocked.items():
            if block(ip, left):
                new += 1
                logger.info(
                    "blocked %s for %gs: authentication failures across nodes",
                    ip,
                    left,
                    extra={"peer": ip, "block_reason": "auth_failures_across_nodes"},
                )
        return new

    async def _mirror_forever(self, block: Callable[[str, float], bool]) -> None:
        while True:
            try:
                await self.mirror_once(block)
            except Exception:  # the task must outlive any one bad round
                logger.exception("mirroring the shared blocks failed; retried")
            await asyncio.sleep(self.interval)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _failed(self, error: SharedStateError) -> None:
        self.errors += 1
        if not self._outage:
            self._outage = True
            logger.warning(
                "shared state unavailable (%s): authentication-failure blocks are this"
                " node's own until Redis answers again",
                error,
                extra={"event": "shared_blocks_down"},
            )

    def _answered(self) -> None:
        if self._outage:
            self._outage = False
            logger.warning(
                "shared state answers again: blocks count across nodes",
                extra={"event": "shared_blocks_up"},
            )

    async def close(self) -> None:
        """Stop mirroring; let the notes in flight finish (each bounded by the timeout)."""
        if self._mirror is not None:
            await cancel_and_wait(self._mirror)
            self._mirror = None
        while self._pending:
            await asyncio.wait(list(self._pending))
