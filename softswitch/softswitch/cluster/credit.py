"""A billed account's credit across nodes: what every node's calls hold, counted in Redis.

Each node's ``CreditBook`` holds its own calls' credit; with ``[server] shared_state`` every
hold is also taken on the leased counter ``credit:<account>`` (integer nano-units), whose
limit is the account's funds as the node reads them from the shared ledger (balance plus
credit limit, before any reservation). So the reservations of every node together never
exceed what the account has: the first increment at admission, each later slice as the call
goes on, all of it given back at the call's end (:meth:`SharedCredit.release`).

A node that dies keeps its holds counted for its lease's grace (``leases``), past its
lease: its calls are debited only when another node's recovery settles its run, and until
those debits show in the ledger its reserved credit must stay counted, or another node
would spend it again. Between the debits and the grace's end it is counted twice (fail
closed: a call that would fit may be refused for those seconds).

The failure policy is the one ``softswitch.cluster`` recommends for credit: fail closed.
When Redis does not answer, :meth:`SharedCredit.hold` says so (None) and the caller refuses
the new call (a node that cannot see the other nodes' reservations cannot know the balance
is not spent); a call already up keeps what it holds locally and goes on.

Amounts and limits above ``MAX_AMOUNT - 1`` nano-units (about 9 million in the account's
currency) are counted as that much: what Redis's Lua counts exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .errors import SharedStateError
from .keys import CREDIT_PREFIX
from .scripts import MAX_AMOUNT
from .state import SharedState

__all__ = ["SharedCredit", "credit_key"]

logger = logging.getLogger("softswitch.cluster")


def credit_key(account_id: str) -> str:
    """The shared counter of an account's reserved credit, in nano-units."""
    return CREDIT_PREFIX + account_id


@dataclass(slots=True)
class _CallCredit:
    account_id: str
    #: Nano-units held in Redis for the call.
    held: int = 0
    #: Nano-units asked for and not answered yet.
    asked: int = 0
    #: The call ended: what an answer still in flight takes goes back at once.
    ended: bool = False


class SharedCredit:
    """One process's credit holds on the shared counters (module docstring).

    ``state()`` gives the connected ``SharedState`` or None (not connected: unavailable).
    Every Redis call runs in a task of its own that is never abandoned half-way, so a hold
    taken while its caller went away is still given back; :meth:`settle` waits for them.
    """

    def __init__(self, state: Callable[[], SharedState | None]) -> None:
        self.state = state
        self._calls: dict[Hashable, _CallCredit] = {}
        self._pending: set[asyncio.Task[object]] = set()
        #: Questions Redis did not answer (each refused a new call or left a slice local).
        self.errors = 0
        self._outage = False

    def claimed(self, key: Hashable) -> int:
        """Nano-units the call holds across nodes or has asked for."""
        entry = self._calls.get(key)
        return 0 if entry is None else entry.held + entry.asked

    def held(self, key: Hashable) -> int:
        """Nano-units the call holds across nodes."""
        entry = self._calls.get(key)
        return 0 if entry is None else entry.held

    async def hold(self, key: Hashable, account_id: str, amount: int, funds: int) -> bool | None:
        """Hold ``amount`` more for the call ``key`` if every node's holds on the account
        stay within ``funds``: True held, False refused (the credit is spent), None Redis
        did not answer (fail closed: the caller refuses a new call)."""
        entry = self._calls.setdefault(key, _CallCredit(account_id))
        if amount <= 0:
            return True
        amount = min(amount, MAX_AMOUNT - 1)
        entry.asked += amount
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self._acquire(entry, amount, max(0, min(funds, MAX_AMOUNT - 1)))
        )
        self._track(task)
        answer = await asyncio.shield(task)
        assert answer is None or isinstance(answer, bool)
        return answer

    async def _acquire(self, entry: _CallCredit, amount: int, funds: int) -> bool | None:
        state = self.state()
        try:
            if state is None:
                self._failed("not connected")
                return None
            try:
                ok = await state.acquire(credit_key(entry.account_id), amount, limit=funds)
            except SharedStateError as e:
                self._failed(str(e))
                return None
            self._answered()
        finally:
            entry.asked -= amount
        if ok:
            if entry.ended:
                await self._give_back(state, entry.account_id, amount)
            else:
                entry.held += amount
        return ok

    def release(self, key: Hashable) -> None:
        """The call ended: give back all it holds (in a task: the call's end is
        synchronous); a hold still being asked goes back when Redis answers."""
        entry = self._calls.pop(key, None)
        if entry is None:
            return
        entry.ended = True
        state = self.state()
        if entry.held and state is not None:
            amount, entry.held = entry.held, 0
            self._track(
                asyncio.get_running_loop().create_task(
                    self._give_back(state, entry.account_id, amount)
                )
            )

    async def _give_back(self, state: SharedState, account_id: str, amount: int) -> None:
        try:
            await state.release(credit_key(account_id), amount)
        except SharedStateError as e:
            # The node's own book dropped it: the lease's renewal writes it once Redis is back.
            self._failed(str(e))

    def _track(self, task: asyncio.Task[object]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _failed(self, error: str) -> None:
        self.errors += 1
        if not self._outage:
            self._outage = True
            logger.warning(
                "shared state unavailable (%s): new calls of billed accounts are refused"
                " until Redis answers again; calls up keep their credit",
                error,
                extra={"event": "shared_credit_down"},
            )

    def _answered(self) -> None:
        if self._outage:
            self._outage = False
            logger.warning(
                "shared state answers again: credit counts across nodes",
                extra={"event": "shared_credit_up"},
            )

    async def settle(self) -> None:
        """Wait for the holds and releases in flight (each bounded by the client's timeout)."""
        while self._pending:
            await asyncio.wait(list(self._pending))
