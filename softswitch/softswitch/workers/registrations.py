"""Registered contacts across workers: each worker's index, kept in step through a journal
of changes in shared memory.

A REGISTER reaches one worker (the kernel's hash of its 4-tuple), a call to the registered
account may reach any. Each worker keeps the in-memory index the call path reads
(``registrar.Registrations``); :class:`SharedRegistrations` is that index whose changes are
also written, in the order they happen, to a :class:`BindingJournal` every worker shares,
and which applies the other workers' changes before it answers any question. So a contact
registered (or unregistered) through one worker is seen by every other at its next lookup,
with no database read on the call path and no wait for the registrar's writer to commit:
the change is in the journal before the REGISTER's 200 leaves.

Why a journal and not the database read on lookup: the registrar writes the table from a
thread of its own, after the 200 (a commit per REGISTER on the event loop would cost a disk
sync, or a network round trip on PostgreSQL); a call right after the 200 would not find the
contact there yet. The database stays what a restart reads (``registrar.store``).

The journal is a ring of the last :data:`ENTRIES` changes, each with its sequence number,
under the shared table's lock. Publishing a change and taking the others' is one step under
that lock, so every worker applies the changes in one order, each by the rule the table
and the other nodes' notices follow (``Registrations.put_if_newer``, ``forget_if_older``):
a binding replaces only one registered at the same time or earlier, an unregister removes
only the binding its worker held or an older one. The same contact registered through two
nodes at once reaches a worker by the journal and by a notice in either order; by that rule
every worker, and the table, keep the later one. A REGISTER holds the lock from reading the
account's contacts to publishing its change (``exclusive``), so the contact cap counts
every worker's. A worker catches up at every lookup and once a second
(``Registrar.sweep_forever``).

One that fell more than :data:`ENTRIES` changes behind (the ring went round) reads the
table again and replays the ring, which holds every change the writers may not have
committed yet (WARNING). That read is a database query, so it is not made on a lookup:
``catch_up`` (once a second, from ``sweep_forever``) reads in a thread while the worker
keeps answering from its index (with the changes the ring still holds applied), builds a
new index from the rows and the ring, and swaps it in only when all of it succeeded; a
failed read leaves the index as it was and is retried a second later (logged once). A
worker starting (or restarted) does the same before it listens: the table, then the ring.

Expiry needs no journal: every worker drops an expired contact by the clock alone
(``Registrar.sweep``). Neither does a reload's drop: each binding carries the fingerprint
of the credentials its REGISTER passed (``registrar.credentials``, in the journal too), and
every worker judges it against its own configuration when it looks it up, so a binding
made under a password a reload rotated is used by no worker, however often the ring is
replayed, and whichever worker took it before its own reload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Final

from softswitch.registrar import Binding, Registrations
from softswitch.registrar.store import binding_of_notice, put_notice

from .table import ProcessLock

__all__ = ["ENTRIES", "ENTRY_SIZE", "BindingJournal", "SharedRegistrations"]

logger = logging.getLogger("softswitch.workers")

#: Changes the ring keeps.
ENTRIES: Final = 2048
#: Bytes per change: its header and the JSON of a binding (a contact, a Call-ID and a
#: User-Agent of up to 200 bytes fit many times over).
ENTRY_SIZE: Final = 4096
#: seq u64, worker i32, payload length u32.
_ENTRY = struct.Struct("<qiI")
_HEAD = struct.Struct("<q")
_PAYLOAD = ENTRY_SIZE - _ENTRY.size


class BindingJournal:
    """The ring of the last :data:`ENTRIES` binding changes (module docstring). Made by the
    supervisor before the fork; every method but the constructor and :attr:`head` expects
    ``lock`` held."""

    def __init__(self, lock: ProcessLock) -> None:
        self.lock = lock
        self.memory = mmap.mmap(-1, _HEAD.size + ENTRIES * ENTRY_SIZE)

    @property
    def head(self) -> int:
        """The sequence number of the newest change (0: none yet). Read without the lock
        it may be a moment old, never a change that was not published."""
        return int(_HEAD.unpack_from(self.memory, 0)[0])

    def publish(self, worker: int, payload: bytes) -> int:
        """Append a change; its sequence number. ``payload`` fits (:func:`fits`)."""
        seq = self.head + 1
        at = _HEAD.size + (seq % ENTRIES) * ENTRY_SIZE
        _ENTRY.pack_into(self.memory, at, seq, worker, len(payload))
        self.memory[at + _ENTRY.size : at + _ENTRY.size + len(payload)] = payload
        _HEAD.pack_into(self.memory, 0, seq)
        return seq

    def since(self, seen: int) -> tuple[list[tuple[int, int, bytes]], bool]:
        """The changes after ``seen`` still in the ring, oldest first, as (seq, worker,
        payload); and whether some after ``seen`` are lost (the ring went round)."""
        head = self.head
        oldest = max(1, head - ENTRIES + 1)
        out = []
        for seq in range(max(seen + 1, oldest), head + 1):
            at = _HEAD.size + (seq % ENTRIES) * ENTRY_SIZE
            stored, worker, size = _ENTRY.unpack_from(self.memory, at)
            if stored != seq:  # never written whole (a writer killed inside the lock)
                continue
            out.append(
                (seq, worker, bytes(self.memory[at + _ENTRY.size : at + _ENTRY.size + size]))
            )
        return out, seen + 1 < oldest


def fits(payload: bytes) -> bool:
    return len(payload) <= _PAYLOAD


def _put_payload(binding: Binding) -> bytes:
    """A put, as the other nodes are told of it (``registrar.store.put_notice``): one format,
    read back by one strict decoder (``binding_of_notice``)."""
    return json.dumps(put_notice(binding)).encode("utf-8")


def _drop_tombstones(index: Registrations) -> None:
    """Out of ``index``: the table's tombstones (registered and expired at their unregister),
    read with the live rows to judge the ring's changes by (an expired binding stays, as
    it would have anyway: the sweep drops it)."""
    for binding in index.every():
        if binding.tombstone:
            Registrations.forget(index, binding.account_id, binding.contact)


def _remove_payload(account_id: str, contact: str, registered_at: float) -> bytes:
    """An unregister of what was registered up to ``registered_at`` (the later of the
    binding the worker held and the unregister's own second): a later binding of the
    contact, from another node, is not taken with it."""
    return json.dumps(["remove", account_id, contact, registered_at]).encode("utf-8")


class SharedRegistrations(Registrations):
    """``Registrations`` kept in step with the other workers' through ``journal``.

    ``put`` and ``remove`` are shared (a REGISTER); ``forget`` is this worker's alone (the
    expiry and a reload's drops, which every worker makes by itself). ``learned`` is called
    with each binding another worker put that this worker's configuration accepts (the
    guard trusts its source address, as the worker that checked its digest does).
    ``reload`` reads the table again (the ring went round: ``catch_up``). Single-threaded
    (the event loop), like ``Registrations``.
    """

    __slots__ = (
        "_failed",
        "_held",
        "_journal",
        "_lapped",
        "_reload",
        "_seen",
        "_since_read",
        "_started",
        "_worker",
        "learned",
    )

    shared_table = True

    def __init__(
        self,
        journal: BindingJournal,
        worker: int,
        reload: Callable[[], list[Binding]],
    ) -> None:
        super().__init__()
        self._journal = journal
        self._worker = worker
        self._reload = reload
        self._seen = 0
        #: The ring went round since this worker last looked: ``catch_up`` reads the table.
        self._lapped = False
        #: The last table read failed (logged once until one succeeds).
        self._failed = False
        #: The journal's lock is held (``exclusive``).
        self._held = False
        #: ``restore`` ran: before it the index takes no changes (they would be judged
        #: before the registrar tells it the credentials in force, and trusted unjudged).
        self._started = False
        #: While ``catch_up`` reads the table: every change made to this index since the
        #: read began, in order (a binding put; a removal of what was registered at or
        #: before a second), to be made again to the index the read builds.
        self._since_read: list[Binding | tuple[str, str, float]] | None = None
        self.learned: Callable[[Binding], None] | None = None

    def restore(self, bindings: Iterable[Binding]) -> None:
        """At start: the table's rows (read by the caller, its tombstones included:
        ``load(..., settled=True)``), then every change the ring still holds,
        this worker's earlier life's included (some may not be committed), then the rows
        that are no binding dropped. A tombstone in the table refuses the ring's put of an
        older REGISTER of its contact (another node's unregister, or one committed by a
        writer of this node's that the ring lost), as the table did."""
        self._started = True
        Registrations.restore(self, bindings)
        with self._journal.lock:
            changes, _ = self._journal.since(0)
            self._seen = self._journal.head
        self._apply(self, changes, skip_own=False)
        _drop_tombstones(self)

    def refresh(self) -> None:
        """Take the other workers' changes (at every lookup, and once a second)."""
        self._exchange(None)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The journal's lock, held with the other workers' changes taken: a REGISTER's
        decision and its change are one step for every worker."""
        with self._journal.lock:
            self._held = True
            try:
                self._apply(self, self._trade(None), skip_own=True)
                yield
            finally:
                self._held = False

    async def catch_up(self) -> None:
        """After the ring went round: the table read again in a thread, then the ring
        replayed over it, swapped in whole; on a failure nothing changes and the next call
        (a second later) tries again.

        The index keeps changing while the table is read: the other workers' changes (in
        the ring, replayed anyway), and the other nodes' notices (``node_sync``), the
        expiry and a reload's drops, which are nowhere else: a notice of a commit the read
        did not see would be lost with the old index. So every change made to the index
        meanwhile is kept aside and made again, in its order and by the same rules
        (``Registrations.put_if_newer``, ``forget_if_older``), after the ring."""
        if not self._lapped:
            return
        journal = self._journal
        start = journal.head
        since_read: list[Binding | tuple[str, str, float]] = []
        self._since_read = since_read
        try:
            try:
                rows = await asyncio.to_thread(self._reload)
            except Exception as e:
                if not self._failed:
                    self._failed = True
                    logger.error(
                        "registrations: reading the table again failed (retried every second;"
                        " this worker keeps the contacts it has meanwhile): %s",
                        e,
                    )
                return
            fresh = Registrations()
            if self._accepted is not None:
                fresh.accept(self._accepted)
            fresh.restore(rows)
            with journal.lock:
                # This index takes the ring up to its head first, so that what it did since
                # the read began ends with the ring's last word too.
                self._apply(self, self._trade(None), skip_own=True)
                _, lost = journal.since(start)
                changes, _ = journal.since(0)
                head = journal.head
            if lost:  # the ring went round again while the table was read: read it again
                return
            self._apply(fresh, changes, skip_own=False, learn=False)
            for change in since_read:
                if isinstance(change, Binding):
                    fresh.put_if_newer(change)
                else:
                    fresh.forget_if_older(*change)
            _drop_tombstones(fresh)
            self._by_account, self._by_source = fresh._by_account, fresh._by_source
        finally:
            self._since_read = None
        self._seen = head
        self._lapped = self._failed = False
        logger.warning("registrations: %d contacts after reading the table again", len(fresh))
        if self.learned is not None:
            now = time.time()
            for binding in fresh:
                if binding.live(now):
                    self.learned(binding)

    # -- changes: this worker's go to the journal -----------------------------------------

    def put(self, binding: Binding) -> None:
        """A REGISTER's binding, applied here as every other worker applies it from the
        journal (``put_if_newer``): a later one of the contact (another node's, taken
        meanwhile) stays, here as in the table and in every worker."""
        self._exchange(_put_payload(binding))
        self.put_if_newer(binding)

    def remove(self, account_id: str, contact: str, at: float | None = None) -> Binding | None:
        """An unregister of the binding this worker holds (nothing when it holds none): the
        others drop what was registered up to the later of that binding's second and ``at``
        (the unregistering REGISTER's, as its tombstone in the table), and keep a later
        one (``forget_if_older``): a worker that had not seen a re-REGISTER of the contact
        yet (its ring went round) still unregisters it everywhere, as the table does."""
        if not self._held:
            self.refresh()
        held = self.indexed(account_id, contact)
        if held is None:
            return None
        upto = held.registered_at if at is None else max(held.registered_at, at)
        self._exchange(_remove_payload(account_id, contact, upto))
        return self.forget_if_older(account_id, contact, upto)

    # -- what reached this index, kept aside while ``catch_up`` reads the table ----------
    # What *came in* is kept, whatever it did here (a removal of a contact this index did
    # not hold yet, a put it held a later one of): the index the read builds may hold what
    # this one did not, and the same rules make the same decision there.

    def put_if_newer(self, binding: Binding) -> bool:
        if self._since_read is not None:
            self._since_read.append(binding)
        return Registrations.put_if_newer(self, binding)

    def forget_if_older(
        self, account_id: str, contact: str, registered_at: float
    ) -> Binding | None:
        if self._since_read is not None:
            self._since_read.append((account_id, contact, registered_at))
        return Registrations.forget_if_older(self, account_id, contact, registered_at)

    def forget(self, account_id: str, contact: str) -> Binding | None:
        """The expiry's and a reload's drops (and ``forget_if_older``'s, kept aside again
        by their second: harmless, it is the same removal)."""
        forgotten = Registrations.forget(self, account_id, contact)
        if forgotten is not None and self._since_read is not None:
            self._since_read.append((account_id, contact, forgotten.registered_at))
        return forgotten

    # -- lookups: the other workers' changes first ---------------------------------------

    def __len__(self) -> int:
        self.refresh()
        return super().__len__()

    def __iter__(self) -> Iterator[Binding]:
        self.refresh()
        return super().__iter__()

    def of(self, account_id: str) -> dict[str, Binding]:
        self.refresh()
        return super().of(account_id)

    def contacts(self, account_id: str, now: float) -> list[Binding]:
        self.refresh()
        return super().contacts(account_id, now)

    def account_at(
        self, ip: str, port: int, now: float, transport: str | None = None
    ) -> str | None:
        self.refresh()
        return super().account_at(ip, port, now, transport)

    # -- internals ---------------------------------------------------------------------

    def _exchange(self, payload: bytes | None) -> None:
        """Under the lock: the others' changes since the last look, and ours after them."""
        journal = self._journal
        if payload is not None and not fits(payload):
            logger.error(
                "a registration change of %d bytes does not fit the workers' journal: the"
                " other workers see it after a restart only",
                len(payload),
            )
            payload = None
        if payload is None and not self._started:
            return  # ``restore`` replays the whole ring
        if self._held:  # inside ``exclusive``: the lock is ours already
            changes = self._trade(payload)
        elif payload is None and journal.head == self._seen:
            # Read without the lock (as ``SharedTable.blocked_hint``): a lookup when no worker
            # changed anything costs no system call; a change made this instant is as if
            # made just after the lookup.
            return
        else:
            with journal.lock:
                changes = self._trade(payload)
        self._apply(self, changes, skip_own=True)

    def _trade(self, payload: bytes | None) -> list[tuple[int, int, bytes]]:
        """With the lock held: the changes since the last look, and ``payload`` published
        after them. When some were lost (the ring went round), those still in the ring are
        applied meanwhile and ``catch_up`` reads the table."""
        journal = self._journal
        changes, lapped = journal.since(self._seen)
        if payload is not None:
            journal.publish(self._worker, payload)
        self._seen = journal.head
        if lapped and not self._lapped:
            self._lapped = True
            logger.warning(
                "registrations: more than %d changes since this worker last looked; reading"
                " the table again",
                ENTRIES,
            )
        return changes

    def _apply(
        self,
        target: Registrations,
        changes: list[tuple[int, int, bytes]],
        *,
        skip_own: bool,
        learn: bool = True,
    ) -> None:
        """Apply journal changes to ``target`` (this index, or the one ``catch_up`` builds),
        by the rules the table and the other nodes' notices follow
        (``Registrations.put_if_newer``, ``forget_if_older``): the same contact registered
        through two nodes at once reaches a worker by the journal and by a notice, in either
        order, and every worker must keep the same one. A put is applied whatever its
        fingerprint (lookups judge it), and learned only when this worker's configuration
        accepts it."""
        for _, worker, payload in changes:
            if skip_own and worker == self._worker:
                continue  # applied when it was made
            try:
                change = json.loads(payload)
                if change[0] == "put":
                    binding = binding_of_notice(change[1])
                    put = target.put_if_newer(binding)
                    if put and learn and self.learned is not None and self.accepts(binding):
                        self.learned(binding)
                else:
                    _, account_id, contact, registered_at = change
                    target.forget_if_older(account_id, contact, float(registered_at))
            except (ValueError, TypeError, IndexError, KeyError) as e:
                logger.error("registrations: a journal entry does not decode: %s", e)
