"""What this node holds on each counter, as the node itself knows it.

The node's own book is the truth and Redis mirrors it: a call admitted here is held here
until this node releases it. The mirror can go wrong in two ways, and both are repaired from
this book by the lease's renewal (``leases``):

* the node lost its lease (a pause longer than the lease, a Redis restart without data):
  another node's admission deleted this node's fields, so all of them are written again;
* a call to Redis failed or timed out: the script may or may not have run, so that key is
  *unsure* and its field is written again.

A repair writes absolute values, so it must not overlap an acquire or release on the same
key whose effect in Redis is not yet in this book: keys with an operation in flight are left
for the next round, and a key touched while its repair was on the wire stays unsure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Holdings", "Snapshot"]


@dataclass(slots=True)
class _Key:
    held: int = 0
    inflight: int = 0
    #: The number of the last operation started on the key (one count for all keys, so a
    #: key forgotten and seen again never repeats a number): did one overlap a repair?
    generation: int = 0


#: key -> (amount held, generation when read): what one repair writes.
Snapshot = dict[str, tuple[int, int]]


class Holdings:
    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._unsure: set[str] = set()
        self._operations = 0

    def held(self, key: str) -> int:
        entry = self._keys.get(key)
        return 0 if entry is None else entry.held

    def items(self) -> dict[str, int]:
        """Every key with something held, and how much."""
        return {k: e.held for k, e in self._keys.items() if e.held}

    @property
    def unsure(self) -> frozenset[str]:
        return frozenset(self._unsure)

    @contextlib.contextmanager
    def operation(self, key: str) -> Iterator[None]:
        """Around an acquire or release of ``key`` (while Redis may be changing it)."""
        entry = self._keys.setdefault(key, _Key())
        entry.inflight += 1
        self._operations += 1
        entry.generation = self._operations
        try:
            yield
        finally:
            entry.inflight -= 1
            self._forget_if_empty(key)

    def add(self, key: str, amount: int) -> None:
        self._keys.setdefault(key, _Key()).held += amount

    def remove(self, key: str, amount: int) -> None:
        entry = self._keys.get(key)
        if entry is None or entry.held < amount:
            raise ValueError(f"removing {amount} from {key!r}, which holds {self.held(key)}")
        entry.held -= amount
        self._forget_if_empty(key)

    def mark_unsure(self, key: str) -> None:
        self._unsure.add(key)

    def to_repair(self, *, everything: bool) -> Snapshot:
        """The keys a repair should write now: the unsure ones (and, with ``everything``,
        every key held), less those with an operation in flight, which stay unsure."""
        wanted = set(self._unsure)
        if everything:
            wanted.update(k for k, e in self._keys.items() if e.held)
        snapshot: Snapshot = {}
        for key in wanted:
            entry = self._keys.setdefault(key, _Key())
            if entry.inflight:
                self._unsure.add(key)
            else:
                snapshot[key] = (entry.held, entry.generation)
        return snapshot

    def repaired(self, snapshot: Snapshot) -> None:
        """``snapshot`` is written in Redis: those keys are sure again unless an operation
        started on one meanwhile."""
        for key, (_held, generation) in snapshot.items():
            entry = self._keys.get(key, _Key(generation=-1))
            if entry.inflight or entry.generation != generation:
                self._unsure.add(key)
            else:
                self._unsure.discard(key)
            self._forget_if_empty(key)

    def _forget_if_empty(self, key: str) -> None:
        entry = self._keys.get(key)
        if entry is not None and not entry.held and not entry.inflight and key not in self._unsure:
            del self._keys[key]
