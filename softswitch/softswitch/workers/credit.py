"""A billed account's credit across the workers of one node: every worker's holds, counted
in shared memory.

Each worker's ``CreditBook`` holds its own calls' credit; with several workers each hold is
also taken on the account's slot of the workers' credit table (``SharedState.credit``, made
by the supervisor before the fork), whose limit is the account's funds as the worker reads
them from the ledger (balance plus credit limit, before any reservation). The check and the
increment are one step under the table's lock, so the reservations of every worker together
never exceed what the account has: the first increment at admission, each later slice as the
call goes on, all of it given back at the call's end. This is the guarantee Redis's
``cluster.credit.SharedCredit`` gives across nodes, with the same methods, so the meter
(``billing.meter``) has one path for both (``billing.holds.CreditHolds``).

Each worker reads the others' debits from the ledger (each is a run of its own), so a
debit must not leave the counter before the ledger shows it: an answered call's end keeps
its debit held (:meth:`WorkerCredit.keep`) until the CDR writer has committed it, then lets
it go and adds it to the account's total of released debits (:meth:`WorkerCredit.committed`,
the ``released`` table: a counter that only grows, modulo 2**64, compared by differences
modulo 2**64 so it never overflows; ``billing.holds.released_since``). A debit larger than
what the call held is kept whole (the excess is added to the column: it is spent already).
A debit whose write failed is never committed: it stays held (``billing.meter``). A worker
that has not read the ledger since some of those were released is told so by
:meth:`WorkerCredit.hold_checked` whenever they could make the difference to a hold, and
reads it first (``billing.meter``): every hold is then checked against a balance that shows
every debit whose hold is gone.

Each worker's holds are a column of their own (nano-units, a signed 64-bit integer). When a
worker dies its column stays as it was: its answered calls are debited only by recovery
(its replacement's start, or the primary's periodic sweep), and debits its writer committed
may not have been let go yet. The replacement reads what the column holds per account as it
starts (:class:`WorkerCredit` is made before the worker takes any call) and, once its
start-up recovery has committed the dead run's debits, takes exactly that over
(:meth:`WorkerCredit.take_over`): subtracts it from the column and counts it as released, in
one step under the lock, so every other worker reads the ledger before a hold that it could
change. Only what the dead run left is let go: when recovery fails and is retried, the
replacement takes calls meanwhile on that same column, and their holds and kept debits stay
(the column is never zeroed). Shared memory always answers, so :meth:`WorkerCredit.hold` is
never None (Redis's "unavailable").

Amounts and funds above :data:`MAX_HELD` nano-units (about 4.6 billion in the account's
currency) are counted as that much: every column and every sum then stays far inside 64 bits.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from softswitch.billing.holds import released_since

from .table import SharedTable, Slot

if TYPE_CHECKING:
    from .live import SharedState

__all__ = ["MAX_HELD", "WorkerCredit", "credit_key"]

logger = logging.getLogger("softswitch.workers")

#: The largest amount and limit counted (nano-units): 2**62, so that a column plus an amount
#: never leaves a signed 64-bit field.
MAX_HELD: Final = 2**62


def credit_key(account_id: str) -> str:
    """The key of an account's slot in the workers' credit table."""
    return "c\0" + account_id


@dataclass(slots=True)
class _CallCredit:
    account_id: str
    #: Nano-units held in this worker's column for the call.
    held: int = 0


class WorkerCredit:
    """One worker's credit holds on the shared credit table (module docstring).

    The interface is ``cluster.credit.SharedCredit``'s; every answer is immediate (the
    ``async`` of :meth:`hold` is the interface's, nothing is awaited).
    """

    #: The meter takes the first hold in its synchronous admission (``billing.holds``).
    answers_at_once = True

    def __init__(self, table: SharedTable, worker: int, released: SharedTable) -> None:
        self._table = table
        self._released = released
        self._worker = worker
        self._calls: dict[Hashable, _CallCredit] = {}
        #: Per account: nano-units kept held for debits not committed yet (:meth:`keep`).
        self._kept: dict[str, int] = {}
        #: Questions not answered: always 0 (the interface's; shared memory answers).
        self.errors = 0
        #: Per account slot (its key's digest): what a dead predecessor left in this
        #: worker's column, read now, before this worker takes any call (``take_over``).
        self._inherited: dict[bytes, int] = {}
        with table.lock:
            for slot in table.used():
                had = slot.worker_amount(worker)
                if had:
                    self._inherited[slot.key] = had

    @classmethod
    def of(cls, state: SharedState, worker: int) -> WorkerCredit:
        """Worker ``worker``'s holds on the supervisor's tables."""
        return cls(state.credit, worker, state.released)

    def claimed(self, key: Hashable) -> int:
        """Nano-units the call holds across workers (nothing is ever "asked" and pending)."""
        return self.held(key)

    def held(self, key: Hashable) -> int:
        """Nano-units the call holds across workers."""
        entry = self._calls.get(key)
        return 0 if entry is None else entry.held

    async def hold(self, key: Hashable, account_id: str, amount: int, funds: int) -> bool | None:
        """Hold ``amount`` more for the call ``key`` if every worker's holds on the account
        stay within ``funds``: True held, False refused (the credit is spent)."""
        return self.hold_now(key, account_id, amount, funds)

    def hold_now(self, key: Hashable, account_id: str, amount: int, funds: int) -> bool:
        """:meth:`hold`, synchronously."""
        verdict, _ = self.hold_checked(key, account_id, amount, funds, None)
        return bool(verdict)

    def hold_checked(
        self, key: Hashable, account_id: str, amount: int, funds: int, seen: int | None
    ) -> tuple[bool | None, int]:
        """:meth:`hold_now`, unless debits released since ``seen`` (the account's
        :meth:`released` when the caller last read the ledger; None: do not check) could
        make the difference: then None, nothing held, and the caller reads the ledger and
        asks again. Also returns the account's :meth:`released` now."""
        entry = self._calls.setdefault(key, _CallCredit(account_id))
        amount = min(max(0, amount), MAX_HELD)
        # This worker's own kept debits are in its funds already (its book debited them).
        limit = max(0, min(funds + self._kept.get(account_id, 0), MAX_HELD))
        table = self._table
        with table.lock:
            found = self._released.find(credit_key(account_id))
            released = 0 if found is None else found.total()
            if amount <= 0:
                return True, released
            slot = self._slot(account_id)
            held = slot.amount()
            if held + amount > limit:
                return False, released
            if seen is not None and held + amount + released_since(released, seen) > limit:
                return None, released
            slot.add_amount(self._worker, amount)
        entry.held += amount
        return True, released

    def keep(self, key: Hashable, debit: int) -> int:
        """The call ended with ``debit`` to write to the ledger: keep that much held until
        the debit is committed (:meth:`committed`), so no worker admits against a balance
        that does not show it yet; give back the rest. A debit larger than the call's hold
        is kept whole: the excess is added to the column unchecked (it is spent already).
        Returns what is kept."""
        entry = self._calls.pop(key, None)
        if entry is None:
            return 0
        kept = min(max(0, debit), MAX_HELD)
        if kept > entry.held:
            with self._table.lock:
                self._slot(entry.account_id).add_amount(self._worker, kept - entry.held)
            entry.held = kept
        entry.held -= kept
        if entry.held:
            self._give_back(entry)
        if kept:
            self._kept[entry.account_id] = self._kept.get(entry.account_id, 0) + kept
        return kept

    def committed(self, debits: list[tuple[str, int]]) -> None:
        """Debits kept by :meth:`keep` are committed: their holds go back, and each is
        counted in the account's :meth:`released` (the others read the ledger when it
        matters). One that cannot be counted (no room in the ``released`` table, which a
        reload that would not fit is refused for) stays held: never let go uncounted."""
        table = self._table
        with table.lock:
            for account_id, amount in debits:
                released = self._released.find(credit_key(account_id), create=True)
                if released is None:
                    logger.error(
                        "account %s: no room to count a committed debit as released;"
                        " its %d nano-units stay held until this worker restarts",
                        account_id,
                        amount,
                    )
                    continue
                slot = table.find(credit_key(account_id))
                mine = 0 if slot is None else slot.worker_amount(self._worker)
                if slot is not None:
                    slot.add_amount(self._worker, -min(amount, mine))
                released.add_total(self._worker, amount)
                self._kept[account_id] = self._kept.get(account_id, 0) - amount
                if self._kept[account_id] <= 0:
                    del self._kept[account_id]

    def released(self, account_ids: list[str]) -> dict[str, int]:
        """Per account: every debit kept and then released since the start (nano-units,
        a counter modulo 2**64: compare values with ``billing.holds.released_since``). A
        worker that read the ledger after seeing a value has every one of those debits in
        its balance."""
        with self._table.lock:
            out = {}
            for account_id in account_ids:
                slot = self._released.find(credit_key(account_id))
                out[account_id] = 0 if slot is None else slot.total()
            return out

    def take_over(self) -> int:
        """What a dead predecessor left in this worker's column (read when this object was
        made, before the worker took any call), let go: subtracted from the column and
        counted as released, per account, in one step under the lock (nano-units, every
        account's together); the holds and kept debits of this worker's own calls stay.
        Call it once the dead run's calls are settled in the ledger (start-up recovery
        committed): every other worker then reads the ledger before a hold those debits
        could change, so the credit is never free before its debits show. An account the
        ``released`` table has no room for keeps its share held (logged, and tried again
        at a later call); what was let go is never let go twice."""
        table = self._table
        let_go = 0
        with table.lock:
            for key, had in list(self._inherited.items()):
                slot = table.find_digest(key)
                if slot is None:  # a slot holding an amount is never freed: nothing left
                    del self._inherited[key]
                    continue
                released = self._released.find_digest(key, create=True)
                if released is None:
                    logger.error(
                        "no room to count a dead worker's %d nano-units of credit as"
                        " released: they stay held until worker %d restarts",
                        had,
                        self._worker,
                    )
                    continue
                slot.add_amount(self._worker, -had)
                if had > 0:
                    released.add_total(self._worker, had)
                let_go += had
                del self._inherited[key]
        return let_go

    def release(self, key: Hashable) -> None:
        """The call ended: give back all it holds."""
        entry = self._calls.pop(key, None)
        if entry is not None and entry.held:
            self._give_back(entry)

    def _give_back(self, entry: _CallCredit) -> None:
        table = self._table
        with table.lock:
            slot = table.find(credit_key(entry.account_id))
            mine = 0 if slot is None else slot.worker_amount(self._worker)
            if slot is None or mine < entry.held:
                # Only a bug gets here: this worker's column is its own; its replacement
                # takes over (``take_over``) only what it held when this process died.
                logger.error(
                    "account %s: releasing %d nano-units of credit, the worker holds %d",
                    entry.account_id,
                    entry.held,
                    mine,
                )
                if slot is not None:
                    slot.add_amount(self._worker, -mine)
                return
            slot.add_amount(self._worker, -entry.held)

    def account_held(self, account_id: str) -> int:
        """What every worker's calls of the account hold together (nano-units)."""
        with self._table.lock:
            slot = self._table.find(credit_key(account_id))
            return 0 if slot is None else slot.amount()

    async def settle(self) -> None:
        """Nothing is ever in flight (the interface's)."""

    def _slot(self, account_id: str) -> Slot:
        slot = self._table.find(credit_key(account_id), create=True)
        if slot is None:  # a reload that would not fit is refused (SharedState.refusal)
            raise RuntimeError(
                f"the workers' shared credit table is full ({self._table.capacity} accounts):"
                " restart the switch to size it for the configuration"
            )
        return slot
