"""What this node holds on each counter, as the node itself knows it.

The node's own book is the truth and Redis mirrors it: a call admitted here is held here
until this node releases it. The mirror can go wrong in three ways, and all are repaired from
this book by the lease's renewal (``leases``), which writes the node's field on the keys it
holds on, the unsure ones, and, when Redis may have gone back to older data, on every key it
has ever held on (0 where it holds nothing now, which deletes the field):

* the node lost its lease (a pause longer than the lease, a Redis restart without data):
  another node's admission deleted this node's fields, so all of them are written again;
* a call to Redis failed or timed out: the script may or may not have run, so that key is
  *unsure* and its field is written again (a call admitted meanwhile under the node's own
  limits is added here unsure, ``add_unsure``, and so written too);
* Redis came back with older data while the lease key survived (a snapshot, a lagging
  replica): writes it acknowledged are gone without an error, and only writing every key
  again finds them. The renewal does that when Redis's ``run_id`` or ``master_replid``
  changed (a restart, a failover, a resync: ``leases.NodeLease._server_id``); otherwise it
  writes the next :data:`SWEEP` keys held on in turn, so a key changed behind the node's
  back (an operator's edit, a ``DEBUG RELOAD``, a restore neither identifier shows)
  is put right within a sweep too, at a bounded cost per renewal. Writing every key at every
  renewal held the event loop 48 ms per renewal in this book alone for 20,000 keys.

Every write of this node's field is an absolute value computed from this book (the
acquire and release scripts as much as a repair), and writes on one key are serialised by a
lock per key: an acquire or release holds it across its script, and so does a repair for the
keys it writes. A repair therefore never races an in-flight delta, and a key that triggered
a regain (its acquire found the lease gone) is written back by that regain, from the
operation's own task. Keys a regain cannot lock at once (another task's operation is on the
wire) stay unsure, and the next renewal waits for their lock, so a busy key converges too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

__all__ = ["SWEEP", "Holdings", "Snapshot"]

#: Keys held on (and no longer) written again by each renewal in turn (``repairing``).
SWEEP: Final = 256


@dataclass(slots=True)
class _Key:
    held: int = 0
    #: Tasks using or waiting for ``lock``: the entry is kept while any is.
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    owner: asyncio.Task[object] | None = None


#: key -> amount held: what one repair writes.
Snapshot = dict[str, int]


class Holdings:
    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._unsure: set[str] = set()
        #: Every key this node has held something on: a whole repair writes each (0 deletes
        #: the field), so a release that Redis lost (restored from older data) is undone.
        #: As many as the accounts and gateways the node has had calls for.
        self._touched: set[str] = set()
        #: The same keys, in the order the renewals' sweep writes them.
        self._sweep: collections.deque[str] = collections.deque()

    def held(self, key: str) -> int:
        entry = self._keys.get(key)
        return 0 if entry is None else entry.held

    def items(self) -> dict[str, int]:
        """Every key with something held, and how much."""
        return {k: e.held for k, e in self._keys.items() if e.held}

    @property
    def unsure(self) -> frozenset[str]:
        return frozenset(self._unsure)

    @contextlib.asynccontextmanager
    async def operation(self, key: str) -> AsyncIterator[None]:
        """Around an acquire or release of ``key``: holds the key's lock, so no repair or
        other operation writes the key meanwhile."""
        entry = self._keys.setdefault(key, _Key())
        entry.users += 1
        try:
            async with entry.lock:
                entry.owner = asyncio.current_task()
                try:
                    yield
                finally:
                    entry.owner = None
        finally:
            entry.users -= 1
            self._forget_if_empty(key)

    def add(self, key: str, amount: int) -> None:
        self._keys.setdefault(key, _Key()).held += amount
        if key not in self._touched:
            self._touched.add(key)
            self._sweep.append(key)

    def add_unsure(self, key: str, amount: int) -> None:
        """Count ``amount`` that Redis was not told of (it did not answer) and mark the key
        unsure: the next renewal writes the node's whole holding there."""
        self.add(key, amount)
        self._unsure.add(key)

    def remove(self, key: str, amount: int) -> None:
        entry = self._keys.get(key)
        if entry is None or entry.held < amount:
            raise ValueError(f"removing {amount} from {key!r}, which holds {self.held(key)}")
        entry.held -= amount
        self._forget_if_empty(key)

    def is_unsure(self, key: str) -> bool:
        return key in self._unsure

    def mark_unsure(self, key: str) -> None:
        self._unsure.add(key)

    @contextlib.asynccontextmanager
    async def repairing(self, *, everything: bool, sweep: int = 0) -> AsyncIterator[Snapshot]:
        """The keys a repair should write now, locked until the block ends: the unsure ones;
        with ``everything``, every key this node has held on (0 where it holds nothing now);
        with ``sweep`` instead, the keys it holds on and the next ``sweep`` keys it has held
        on, in turn (a renewal's share). A key whose operation is the calling
        task's own (a regain from inside an acquire) is included as it is. From inside an
        operation, keys locked by another task are left out and stay unsure (waiting could
        deadlock two regains); from outside one (the renewal), their locks are awaited, in
        order, so a key under constant traffic is still repaired."""
        me = asyncio.current_task()
        inside = any(e.owner is me for e in self._keys.values())
        wanted = set(self._unsure)
        if everything or sweep:
            wanted.update(k for k, e in self._keys.items() if e.held)
        if everything:
            wanted.update(self._touched)
        elif sweep:
            turn = self._sweep
            for _ in range(min(sweep, len(turn))):
                key = turn.popleft()
                turn.append(key)
                wanted.add(key)
        taken: list[_Key] = []
        snapshot: Snapshot = {}
        try:
            for key in sorted(wanted):
                entry = self._keys.setdefault(key, _Key())
                if entry.owner is not me or me is None:
                    if inside and entry.lock.locked():
                        self._unsure.add(key)
                        continue
                    entry.users += 1
                    try:
                        await entry.lock.acquire()
                    except BaseException:  # cancelled waiting: the lock is another's
                        entry.users -= 1
                        raise
                    taken.append(entry)
                snapshot[key] = entry.held
            yield snapshot
        finally:
            for entry in taken:
                entry.lock.release()
                entry.users -= 1
            for key in wanted:
                self._forget_if_empty(key)

    def repaired(self, snapshot: Snapshot) -> None:
        """``snapshot`` is written in Redis (its keys were locked): they are sure again."""
        for key in snapshot:
            self._unsure.discard(key)

    def _forget_if_empty(self, key: str) -> None:
        entry = self._keys.get(key)
        if entry is not None and not entry.held and not entry.users and key not in self._unsure:
            del self._keys[key]
