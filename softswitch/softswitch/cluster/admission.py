"""An account's ``max_calls`` and ``max_cps`` across nodes: the call path's use of Redis.

``[server] shared_state`` set, every INVITE that passed the node's own limits (``LiveState``,
the first gate) asks :meth:`SharedLimits.admit` before it hunts: one slot on
``account:<id>`` (``acquire``, limit ``max_calls``) and one admission on its rate window
(``admit_rate``, limit ``max_cps`` a second). The call's end gives the slot back
(:meth:`SharedLimits.release`); a node that dies holds nothing once its lease runs out.

A gateway's ``capacity`` and ``max_cps`` are checked the same way before each branch
(:meth:`SharedLimits.claim_gateway` on ``gateway:<id>``, :meth:`SharedLimits.release_gateway`
when the branch ends).

The failure policy is the one ``softswitch.cluster`` recommends for these limits: when Redis
does not answer (down, a timeout, not connected yet), the call goes on under the node's own
limits, which it has passed already; its slot is counted in the node's book all the same
and written at the lease's next renewal (or the first one, for a node that could not
connect yet), so the other nodes count it once Redis answers again. One WARNING says so
when an outage starts and one when it ends, whatever the number of calls in between;
``errors`` counts every failed question and ``up`` says whether the last one was answered
(both in ``/metrics``). Refusing every call because the counter store is down would turn a
Redis outage into a switch outage.

A question once sent is never abandoned half-way: a cancelled :meth:`admit` (the switch
stopping) lets its Redis calls finish and gives back a slot they took, so no slot is left
counted on a live node.
"""

from __future__ import annotations

import asyncio
import enum
import logging

from ..cancelling import cancel_and_wait
from .block_mirror import SharedBlocks
from .config import redact
from .credit import SharedCredit
from .errors import SharedStateConfigError, SharedStateError
from .holdings import Holdings
from .state import SharedState

__all__ = ["SharedLimits", "Verdict", "account_key", "gateway_key"]

logger = logging.getLogger("softswitch.cluster")

#: Seconds between attempts to connect while Redis could not be reached at start.
RECONNECT_INTERVAL = 5.0


def account_key(account_id: str) -> str:
    """The shared counter and rate window of an account's calls."""
    return f"account:{account_id}"


def gateway_key(gateway_id: str) -> str:
    """The shared counter and rate window of a gateway's calls (``capacity``, ``max_cps``)."""
    return f"gateway:{gateway_id}"


class Verdict(enum.Enum):
    """What the shared check decided."""

    #: Admitted and one slot held: :meth:`SharedLimits.release` it at the call's end.
    HELD = "held"
    #: Admitted, nothing held: no ``max_calls`` to count. A call admitted while Redis does
    #: not answer (or before the node could connect) is ``HELD``: counted in the node's
    #: book, written at the next renewal.
    ADMITTED = "admitted"
    #: Every live node together holds ``max_calls`` of the account's calls already.
    MAX_CALLS = "max_calls"
    #: ``max_cps`` calls of the account were admitted by the nodes in the last second.
    MAX_CPS = "max_cps"

    @property
    def held(self) -> bool:
        return self is Verdict.HELD


class SharedLimits:
    """One process's client of the shared limits, with the failure policy (module docstring).

    :meth:`start` it once the event loop runs and :meth:`close` it at shutdown.
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        lease: float = 10.0,
        prefix: str = "softswitch",
        timeout: float = 1.0,
        reconnect: float = RECONNECT_INTERVAL,
        grace: float = 0.0,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self._lease = lease
        self._grace = grace
        self._prefix = prefix
        self._timeout = timeout
        self._reconnect = reconnect
        self._state: SharedState | None = None
        #: What this node holds, kept from the start: calls admitted before the first
        #: connection are counted here and written by the first renewal.
        self._book = Holdings()
        self._connecting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[object]] = set()
        #: The last question to Redis was answered (False until connected).
        self.up = False
        #: Questions Redis did not answer (each fell back to the node's own limits).
        self.errors = 0
        self._outage = False
        #: Billed accounts' credit across nodes, on the same connection (fails closed).
        self.credit = SharedCredit(lambda: self._state)
        #: Authentication-failure blocks across nodes (fail open).
        self.blocks = SharedBlocks(lambda: self._state)

    @property
    def state(self) -> SharedState | None:
        """The connected client (None until connected)."""
        return self._state

    async def start(self) -> None:
        """Connect and take this node's lease. Redis unreachable: log, keep trying in the
        background, and admit on the node's own limits meanwhile. A node id another live
        process holds raises ``SharedStateConfigError``: two nodes must never share one."""
        try:
            await self._connect()
        except SharedStateConfigError:
            raise
        except SharedStateError as e:
            self._failed(e)
            self._connecting = asyncio.get_running_loop().create_task(
                self._keep_connecting(), name=f"shared state connect {self.node_id}"
            )

    async def _connect(self) -> None:
        self._state = await SharedState.connect(
            self.url,
            self.node_id,
            lease=self._lease,
            prefix=self._prefix,
            timeout=self._timeout,
            grace=self._grace,
            book=self._book,
        )
        self._answered()

    async def _keep_connecting(self) -> None:
        while self._state is None:
            await asyncio.sleep(self._reconnect)
            try:
                await self._connect()
            except SharedStateConfigError as e:
                # Another live process took our id meanwhile: nothing a retry fixes soon.
                logger.error(
                    "shared state: %s; limits stay per node until the next start",
                    e,
                    extra={"event": "shared_state_config", "node_id": self.node_id},
                )
                return
            except SharedStateError as e:
                self._failed(e)

    def set_grace(self, grace: float) -> None:
        """The credit holds' grace from the next renewal on (``SharedState.set_grace``); kept
        for a connection made later."""
        self._grace = grace
        if self._state is not None:
            self._state.set_grace(grace)

    async def admit(self, account_id: str, max_calls: int | None, max_cps: int | None) -> Verdict:
        """The account's call against every node's: see :class:`Verdict`. Never raises for
        Redis's sake (the failure policy)."""
        return await self._ask(account_key(account_id), max_calls, max_cps)

    async def claim_gateway(
        self, gateway_id: str, capacity: int | None, max_cps: int | None
    ) -> Verdict:
        """One more call to the gateway against every node's (``capacity`` as
        ``Verdict.MAX_CALLS``, ``max_cps`` as ``Verdict.MAX_CPS``), with the same failure
        policy; a ``HELD`` verdict is given back with :meth:`release_gateway`."""
        return await self._ask(gateway_key(gateway_id), capacity, max_cps)

    async def _ask(self, key: str, max_calls: int | None, max_cps: int | None) -> Verdict:
        if max_calls is None and max_cps is None:
            return Verdict.ADMITTED
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self._check(key, max_calls, max_cps)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            verdict = await asyncio.shield(task)
        except asyncio.CancelledError:
            # Our caller is gone (shutdown): a slot the check takes after all goes back.
            task.add_done_callback(lambda done: self._give_back(done, key))
            raise
        assert isinstance(verdict, Verdict)
        return verdict

    async def _check(self, key: str, max_calls: int | None, max_cps: int | None) -> Verdict:
        state = self._state
        if state is None:
            if max_calls is None:
                return Verdict.ADMITTED
            self._book.add_unsure(key, 1)  # written by the first renewal, if still held
            return Verdict.HELD
        held = False
        try:
            if max_calls is not None:
                if not await state.acquire(key, limit=max_calls):
                    self._answered()
                    return Verdict.MAX_CALLS
                held = True
            if max_cps is not None and not await state.admit_rate(key, max_cps, 1.0):
                if held:
                    held = False
                    await self._release(state, key)
                else:
                    self._answered()
                return Verdict.MAX_CPS
        except SharedStateError as e:
            self._failed(e)
            if held:
                # The call goes on under the node's limits; its slot is still counted.
                return Verdict.HELD
            if max_calls is not None:
                # The call goes on under the node's limits, and counts across nodes from the
                # next renewal on (else it would stay unseen by them for its whole life).
                state.hold_unverified(key)
                return Verdict.HELD
            return Verdict.ADMITTED
        self._answered()
        return Verdict.HELD if held else Verdict.ADMITTED

    def _give_back(self, done: asyncio.Task[object], key: str) -> None:
        if not done.cancelled() and done.exception() is None and done.result() is Verdict.HELD:
            self._release_key(key)

    def release(self, account_id: str) -> None:
        """Give back the slot a ``HELD`` verdict took (in a task: the call's end is
        synchronous). Redis unavailable: the node's own count drops at once and the lease's
        renewal writes it once Redis is back."""
        self._release_key(account_key(account_id))

    def release_gateway(self, gateway_id: str) -> None:
        """Give back the call a ``HELD`` :meth:`claim_gateway` took, as :meth:`release`."""
        self._release_key(gateway_key(gateway_id))

    def _release_key(self, key: str) -> None:
        state = self._state
        if state is None:  # held before the first connection: in the book only
            if self._book.held(key):
                self._book.remove(key, 1)
            return
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self._release(state, key)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release(self, state: SharedState, key: str) -> None:
        try:
            await state.release(key)
        except SharedStateError as e:
            self._failed(e)
        else:
            self._answered()

    def _failed(self, error: SharedStateError) -> None:
        self.errors += 1
        self.up = False
        if not self._outage:
            self._outage = True
            logger.warning(
                "shared state unavailable (%s): max_calls, max_cps and gateway capacity"
                " fall back to this node's own limits until Redis answers again",
                error,
                extra={"event": "shared_state_down", "node_id": self.node_id},
            )

    def _answered(self) -> None:
        self.up = True
        if self._outage:
            self._outage = False
            logger.warning(
                "shared state %s answers again: limits count across nodes",
                redact(self.url),
                extra={"event": "shared_state_up", "node_id": self.node_id},
            )

    async def settle(self) -> None:
        """Wait for the questions and releases in flight (each bounded by the client's
        timeout), including those they start."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    async def close(self) -> None:
        """Let the questions and releases in flight finish, then give back the lease and
        whatever this node still holds."""
        if self._connecting is not None:
            await cancel_and_wait(self._connecting)
            self._connecting = None
        await self.settle()
        await self.credit.settle()
        await self.blocks.close()
        state, self._state = self._state, None
        self.up = False
        if state is not None:
            try:
                await state.close()
            except SharedStateError as e:
                logger.warning(
                    "shared state: leaving failed (%s); this node's slots stop counting"
                    " when its lease runs out",
                    e,
                    extra={"event": "shared_state_leave", "node_id": self.node_id},
                )
