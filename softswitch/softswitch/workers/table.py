"""A fixed-size hash table in shared memory, for state every worker reads and changes.

Created by the supervisor *before* the workers are forked (an anonymous ``MAP_SHARED``
mapping is inherited by the children, and only by them), sized once and never grown: a table
that could grow would need every process to re-map it. One slot per key (an account, a
gateway, a source IP), found by open addressing with linear probing on a 16-byte BLAKE2b
digest of the key, so keys of any length fit in a fixed slot and every process hashes alike
(Python's ``hash`` is salted per interpreter).

The table is never let to fill: live entries and tombstones together stay under
:attr:`SharedTable.capacity` (three quarters of the slots), so a lookup of an absent key
stops at an empty slot after a few probes instead of scanning every slot. A deleted key
leaves a tombstone (other keys' probe chains run through it); once tombstones are an eighth
of the slots, the next insertion that needs room rebuilds the table without them, which is
O(slots) after at least slots/8 deletions: O(1) amortised per deletion.

A slot holds what ``LiveState`` keeps per id: flags (gateway down, operator overrides), the
calls in progress *per worker* (so the supervisor can zero a dead worker's share and nothing
else), a ring of the most recent admission times (the sliding one-second CPS window), a
block deadline and the ids of the alarms that disable a gateway. A table made with
``amounts`` also keeps a 64-bit amount per worker (the credit table: nano-units each
worker's calls of a billed account hold, ``workers.credit``, signed; or a counter that only
grows, modulo 2**64: ``Slot.add_total``).

Every read-modify-write happens under :class:`ProcessLock`: a POSIX record lock
(``lockf``) on a file only these processes hold, which the kernel releases when its holder
dies. A ``multiprocessing.Lock`` would stay taken for ever if ``kill -9`` hit a worker inside
a critical section; a record lock cannot. What such a worker was writing may be left half
done (a counter of that worker, which the supervisor zeroes anyway, or one ring entry),
except a rebuild of the whole table, which the next holder of the lock finishes from its
redo log.

The record lock is taken and given back *without letting go of the GIL* (libc's ``lockf``
through a ``ctypes.PyDLL`` function, where ``fcntl.lockf`` lets go around the system call):
a call takes and gives back the lock four times, and each time the GIL was let go, a thread
of this process that wanted it (the CDR writer, when busy) took it, and the event loop waited
for it back. With the writer always busy (``benches/engine_call.py --workers 2``) that was
22 µs per ``lockf`` and 100-160 µs of handler CPU per call (855-891 against 727-759 µs now;
one process without the tables: 665). Holding the GIL while the kernel waits is safe: a
thread of this process that holds the record lock holds the thread lock too, so a wait for
the record lock is a wait for another process only, whose critical section needs nothing of
this one's; a worker stopped inside one (SIGSTOP, a debugger) stalls the others' threads,
not only their event loops.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Final

__all__ = ["TOTAL_MODULUS", "ProcessLock", "SharedTable", "Slot"]

_EMPTY: Final = 0
_USED: Final = 1
_DELETED: Final = 2

#: Header: live entries, entries with a block deadline, tombstones, generation.
_HEADER = struct.Struct("<qqqq")
_KEY_SIZE: Final = 16
#: The alarm ids of a slot: UTF-8, joined by newlines, NUL-padded.
ALARM_TEXT: Final = 128
# state u8 + pad, key, flags u32, ring head u32, ring count u32, pad, until f64, alarm text
_FIXED = struct.Struct(f"<B7x{_KEY_SIZE}sIIIxxxxd{ALARM_TEXT}s")
_STATE, _KEY, _FLAGS, _HEAD, _COUNT, _UNTIL, _ALARM = 0, 8, 24, 28, 32, 40, 48
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_Q = struct.Struct("<q")
_U64 = struct.Struct("<Q")
#: The modulus of :meth:`Slot.add_total`'s counters.
TOTAL_MODULUS: Final = 2**64


#: This process's id, kept by a fork hook: a lock taken a dozen times per call asks it
#: without a system call.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class ProcessLock:
    """Mutual exclusion between the processes sharing a table, and between threads of one.

    ``lockf`` on an unlinked temporary file: the kernel frees the lock of a process that
    dies, however it dies. Record locks belong to a process, not a thread, so a thread lock
    is taken first. Create it before forking; each child uses the inherited descriptor.
    The record lock is asked for with the GIL held (the module's docstring says why).
    """

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="softswitch-lock-")
        os.unlink(path)
        self._fd = fd
        self._threads = threading.Lock()
        self._pid = _pid
        #: The process that made it: the only one that may :meth:`register` tables.
        self._maker = _pid
        #: Shared: the number (``register``) of a table whose rebuild is being applied
        #: (``SharedTable.rebuild``), 0 when none is. A holder that finds it set took the
        #: lock from a process that died applying it, and finishes it first.
        self._applying = mmap.mmap(-1, 1)
        self._tables: list[SharedTable] = []

    def __enter__(self) -> None:
        if self._pid != _pid:
            # A child of the fork: its thread lock is a copy taken or not by a thread that
            # does not exist here; start with a fresh one.
            self._threads = threading.Lock()
            self._pid = _pid
        self._threads.acquire()
        try:
            _record_lock(self._fd, _F_LOCK)
        except BaseException:
            self._threads.release()
            raise
        if self._applying[0]:
            try:
                self._tables[self._applying[0] - 1].apply_rebuild()
            except BaseException:
                self.__exit__(None, None, None)
                raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            _record_lock(self._fd, _F_ULOCK)
        finally:
            self._threads.release()

    def close(self) -> None:
        os.close(self._fd)

    def register(self, table: SharedTable) -> int:
        """``table`` is guarded by this lock: its number for :meth:`applying`. Before the
        fork (as every table is made), so every process numbers the tables alike."""
        if self._maker != _pid:
            raise RuntimeError("a table must be made before the fork, by the lock's maker")
        if len(self._tables) >= 255:
            raise ValueError("at most 255 tables share one lock")
        self._tables.append(table)
        return len(self._tables)

    def applying(self, table: int) -> None:
        """Table number ``table`` (0: none) is having a rebuild applied."""
        self._applying[0] = table


# ``lockf``'s commands (<unistd.h>): the same on Linux, the BSDs and macOS.
_F_ULOCK: Final = 0
_F_LOCK: Final = 1


def _libc_lockf() -> Callable[[int, int, int], int] | None:
    """libc's ``lockf`` as a function that keeps the GIL while it runs (None: no libc to
    load, as on Windows, where the workers do not run anyway)."""
    try:
        function = ctypes.PyDLL(None, use_errno=True).lockf
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long)
    function.restype = ctypes.c_int
    return function


_lockf = _libc_lockf()


def _record_lock(fd: int, command: int) -> None:
    """Lock (``_F_LOCK``, waiting for it) or unlock (``_F_ULOCK``) the whole of ``fd``'s file,
    as ``fcntl.lockf(fd, LOCK_EX)`` / ``LOCK_UN`` do, without letting go of the GIL.

    libc's ``lockf`` reaches from the file offset to the end: the offset of this descriptor,
    shared by every process that inherited it, is 0 for ever (nothing reads or writes the
    file), so it is the whole file, as ``fcntl.lockf`` asks for. A signal whose handler was
    installed without SA_RESTART (``signal.signal``) interrupts the wait (EINTR): the
    interpreter runs the handler between the failed call and the next, which asks again
    (asyncio's handlers restart the wait and reach the loop through its wake-up fd)."""
    if _lockf is None:
        fcntl.lockf(fd, fcntl.LOCK_EX if command == _F_LOCK else fcntl.LOCK_UN)
        return
    while _lockf(fd, command, 0) != 0:
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def digest(key: str) -> bytes:
    """The fixed-size key a slot stores: the same in every process."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=_KEY_SIZE).digest()


class Slot:
    """One key's fields, at ``offset`` in the table's memory. Use it under the lock only."""

    __slots__ = ("_amounts", "_mm", "_ring", "_ring_at", "_workers", "offset")

    def __init__(self, table: SharedTable, offset: int) -> None:
        self._mm = table.memory
        self._workers = table.workers
        self._ring = table.ring
        self._ring_at = table.ring_offset
        self._amounts = table.amounts_base
        self.offset = offset

    @property
    def key(self) -> bytes:
        """The digest of the slot's key (``digest``)."""
        return bytes(self._mm[self.offset + _KEY : self.offset + _KEY + _KEY_SIZE])

    @property
    def ring(self) -> int:
        """Times the slot's ring keeps."""
        return self._ring

    # -- flags ---------------------------------------------------------------------------

    @property
    def flags(self) -> int:
        return int(_U32.unpack_from(self._mm, self.offset + _FLAGS)[0])

    @flags.setter
    def flags(self, value: int) -> None:
        _U32.pack_into(self._mm, self.offset + _FLAGS, value)

    def flag(self, bit: int) -> bool:
        return bool(self.flags & bit)

    def set_flag(self, bit: int, on: bool) -> bool:
        """Set or clear ``bit``; whether it changed."""
        flags = self.flags
        new = flags | bit if on else flags & ~bit
        self.flags = new
        return new != flags

    # -- calls per worker ----------------------------------------------------------------

    def calls(self) -> int:
        """Calls in progress, every worker's together."""
        base = self.offset + _FIXED.size
        return sum(_I32.unpack_from(self._mm, base + 4 * i)[0] for i in range(self._workers))

    def worker_calls(self, worker: int) -> int:
        return int(_I32.unpack_from(self._mm, self.offset + _FIXED.size + 4 * worker)[0])

    def add_calls(self, worker: int, delta: int) -> None:
        at = self.offset + _FIXED.size + 4 * worker
        _I32.pack_into(self._mm, at, _I32.unpack_from(self._mm, at)[0] + delta)

    def zero_calls(self, worker: int) -> int:
        """Forget ``worker``'s calls (it died); how many there were."""
        at = self.offset + _FIXED.size + 4 * worker
        had = int(_I32.unpack_from(self._mm, at)[0])
        _I32.pack_into(self._mm, at, 0)
        return had

    # -- amounts per worker (a table made with ``amounts``: credit held, nano-units) -----

    def amount(self) -> int:
        """Every worker's amount together."""
        base = self.offset + self._amounts
        return sum(_Q.unpack_from(self._mm, base + 8 * i)[0] for i in range(self._workers))

    def worker_amount(self, worker: int) -> int:
        return int(_Q.unpack_from(self._mm, self.offset + self._amounts + 8 * worker)[0])

    def add_amount(self, worker: int, delta: int) -> None:
        at = self.offset + self._amounts + 8 * worker
        _Q.pack_into(self._mm, at, _Q.unpack_from(self._mm, at)[0] + delta)

    def zero_amount(self, worker: int) -> int:
        """Forget ``worker``'s amount (it died); how much it was."""
        at = self.offset + self._amounts + 8 * worker
        had = int(_Q.unpack_from(self._mm, at)[0])
        _Q.pack_into(self._mm, at, 0)
        return had

    # -- wrapping totals (a table made with ``amounts`` used as counters that only grow) --

    def total(self) -> int:
        """Every worker's counter together, modulo 2**64 (:meth:`add_total`)."""
        base = self.offset + self._amounts
        words = (_U64.unpack_from(self._mm, base + 8 * i)[0] for i in range(self._workers))
        return int(sum(words)) % TOTAL_MODULUS

    def add_total(self, worker: int, delta: int) -> None:
        """Add ``delta`` to ``worker``'s counter modulo 2**64: a lifetime total never
        overflows (nor, as a signed field would, drops to 0); readers compare two values
        by their difference modulo 2**64 (``workers.credit``)."""
        at = self.offset + self._amounts + 8 * worker
        _U64.pack_into(self._mm, at, (_U64.unpack_from(self._mm, at)[0] + delta) % TOTAL_MODULUS)

    # -- the ring of recent times (CPS window, auth failures) ----------------------------

    def push_time(self, now: float) -> None:
        """Record an admission (or a failure) at ``now``; the oldest beyond the ring goes.

        Times stay in order although processes read their clocks before taking the lock:
        one earlier than the newest is recorded as the newest (a difference of microseconds).
        """
        mm, o = self._mm, self.offset
        head = _U32.unpack_from(mm, o + _HEAD)[0]
        count = _U32.unpack_from(mm, o + _COUNT)[0]
        if count:
            newest = self.nth_newest(1)
            if newest is not None and newest > now:
                now = newest
        _F64.pack_into(mm, self._ring_at(o, head), now)
        _U32.pack_into(mm, o + _HEAD, (head + 1) % self._ring)
        _U32.pack_into(mm, o + _COUNT, min(count + 1, self._ring))

    def nth_newest(self, n: int) -> float | None:
        """The ``n``-th most recent time (1: the newest); None when fewer are kept."""
        mm, o = self._mm, self.offset
        count = _U32.unpack_from(mm, o + _COUNT)[0]
        if n < 1 or n > count:
            return None
        head = _U32.unpack_from(mm, o + _HEAD)[0]
        return float(_F64.unpack_from(mm, self._ring_at(o, (head - n) % self._ring))[0])

    def times_after(self, since: float) -> int:
        """How many kept times are later than ``since`` (newest first, stops at the first
        that is not)."""
        n = 0
        while True:
            t = self.nth_newest(n + 1)
            if t is None or t <= since:
                return n
            n += 1

    def clear_times(self) -> None:
        _U32.pack_into(self._mm, self.offset + _COUNT, 0)

    # -- block deadline and alarm ids ----------------------------------------------------

    @property
    def until(self) -> float:
        return float(_F64.unpack_from(self._mm, self.offset + _UNTIL)[0])

    @until.setter
    def until(self, value: float) -> None:
        _F64.pack_into(self._mm, self.offset + _UNTIL, value)

    @property
    def alarms(self) -> set[str]:
        raw = bytes(self._mm[self.offset + _ALARM : self.offset + _ALARM + ALARM_TEXT])
        text = raw.rstrip(b"\0").decode("utf-8", "replace")
        return set(text.split("\n")) if text else set()

    @alarms.setter
    def alarms(self, ids: set[str]) -> None:
        raw = "\n".join(sorted(ids)).encode("utf-8")
        if len(raw) > ALARM_TEXT:
            raise ValueError(f"alarm ids of one gateway exceed {ALARM_TEXT} bytes: {sorted(ids)}")
        self._mm[self.offset + _ALARM : self.offset + _ALARM + ALARM_TEXT] = raw.ljust(
            ALARM_TEXT, b"\0"
        )

    @property
    def label(self) -> str:
        """The key as text, for a slot whose key must be listed (a blocked IP): kept in
        the bytes a gateway's slot uses for alarm ids."""
        raw = bytes(self._mm[self.offset + _ALARM : self.offset + _ALARM + ALARM_TEXT])
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    @label.setter
    def label(self, text: str) -> None:
        raw = text.encode("utf-8")[:ALARM_TEXT]
        self._mm[self.offset + _ALARM : self.offset + _ALARM + ALARM_TEXT] = raw.ljust(
            ALARM_TEXT, b"\0"
        )

    def is_idle(self) -> bool:
        """Nothing worth keeping in a source IP's slot: no flags, calls, failure times, block."""
        return (
            self.flags == 0
            and self.calls() == 0
            and _U32.unpack_from(self._mm, self.offset + _COUNT)[0] == 0
            and self.until == 0.0
        )


class SharedTable:
    """``slots`` slots for up to ``workers`` worker processes, each with a ring of ``ring``
    times; with ``amounts`` also a signed 64-bit amount per worker (``Slot.amount``: the
    credit each worker's calls hold, kept apart per worker like the calls so that a dead
    worker's share is released alone). ``lock`` guards it; every method except
    :attr:`blocked_hint` expects it held."""

    def __init__(
        self, slots: int, *, workers: int, ring: int, lock: ProcessLock, amounts: bool = False
    ) -> None:
        if slots < 1 or workers < 1 or ring < 1:
            raise ValueError("slots, workers and ring must be at least 1")
        self.slots = slots
        self.workers = workers
        self.ring = ring
        self.lock = lock
        calls = 4 * workers
        #: Where a slot's amounts start (its ring when the table has none).
        self.amounts_base = _FIXED.size + calls + (-(_FIXED.size + calls) % 8)
        self._ring_base = self.amounts_base + (8 * workers if amounts else 0)
        self.slot_size = self._ring_base + 8 * ring
        self.memory = mmap.mmap(-1, _HEADER.size + slots * self.slot_size)
        #: :meth:`rebuild`'s redo log: the header to write, then each kept slot's new index
        #: and bytes; room for :attr:`capacity` slots (its pages cost nothing until a
        #: rebuild writes them).
        self._redo = mmap.mmap(-1, _HEADER.size + self.capacity * (8 + self.slot_size))
        self._number = lock.register(self)

    def ring_offset(self, slot_offset: int, index: int) -> int:
        return slot_offset + self._ring_base + 8 * index

    def _offset(self, index: int) -> int:
        return _HEADER.size + index * self.slot_size

    # -- header counters -----------------------------------------------------------------

    @property
    def entries(self) -> int:
        return int(_Q.unpack_from(self.memory, 0)[0])

    def _add_entries(self, delta: int) -> None:
        _Q.pack_into(self.memory, 0, self.entries + delta)

    @property
    def blocked_hint(self) -> int:
        """Slots holding a block deadline (expired or not). Read without the lock: a
        switch that has blocked nobody answers "not blocked" for a packet with no syscall."""
        return int(_Q.unpack_from(self.memory, 8)[0])

    def add_blocked(self, delta: int) -> None:
        _Q.pack_into(self.memory, 8, self.blocked_hint + delta)

    @property
    def generation(self) -> int:
        """Changes (under the lock) whenever a key gets or loses its slot. Read WITHOUT the
        lock: a key found absent while the generation read ``g`` is still absent while it
        reads ``g``, so asking again costs no lock (``SharedLiveState._flag``)."""
        return int(_Q.unpack_from(self.memory, 24)[0])

    def _next_generation(self) -> None:
        _Q.pack_into(self.memory, 24, self.generation + 1)

    # -- slots ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Live entries and tombstones held at most: three quarters of the slots."""
        return max(1, self.slots * 3 // 4)

    @property
    def tombstones(self) -> int:
        return int(_Q.unpack_from(self.memory, 16)[0])

    def _add_tombstones(self, delta: int) -> None:
        _Q.pack_into(self.memory, 16, self.tombstones + delta)

    def flags_at(self, offset: int, wanted: bytes) -> int | None:
        """The flags of the slot at ``offset`` if it still holds the key digest ``wanted``
        (None: it does not), read WITHOUT the lock. Flags are one aligned 32-bit word,
        written whole under the lock, so a reader sees the old or the new value; the key is
        checked before and after, so a slot freed and reused by a reload meanwhile reads as
        None (then look it up again under the lock), never as another key's flags."""
        mm = self.memory
        key = slice(offset + _KEY, offset + _KEY + _KEY_SIZE)
        if mm[offset] != _USED or mm[key] != wanted:
            return None
        flags = int(_U32.unpack_from(mm, offset + _FLAGS)[0])
        if mm[offset] != _USED or mm[key] != wanted:
            return None
        return flags

    def find(self, key: str, *, create: bool = False) -> Slot | None:
        """``key``'s slot; with ``create`` a new one when there is none (None: the table
        holds :attr:`capacity` entries)."""
        return self.find_digest(digest(key), create=create)

    def find_digest(self, wanted: bytes, *, create: bool = False) -> Slot | None:
        """:meth:`find` by the key's digest (``Slot.key``: a slot of another table)."""
        mm = self.memory
        start = int.from_bytes(wanted[:8], "little") % self.slots
        free: int | None = None
        for step in range(self.slots):
            offset = self._offset((start + step) % self.slots)
            state = mm[offset]
            if state == _EMPTY:
                if free is None:
                    free = offset
                break
            if state == _DELETED:
                if free is None:
                    free = offset
                continue
            if mm[offset + _KEY : offset + _KEY + _KEY_SIZE] == wanted:
                return Slot(self, offset)
        if not create or free is None:
            return None
        if mm[free] == _DELETED:
            self._add_tombstones(-1)
        elif self.entries + self.tombstones >= self.capacity:
            if self.tombstones < max(1, self.slots // 8):
                return None  # full of live entries: the caller's policy makes room
            self.rebuild(list(self.used()))  # clear the tombstones, amortised
            return self.find_digest(wanted, create=True)
        mm[free : free + self.slot_size] = bytes(self.slot_size)
        mm[free + _KEY : free + _KEY + _KEY_SIZE] = wanted
        mm[free] = _USED
        self._add_entries(1)
        self._next_generation()
        return Slot(self, free)

    def delete(self, slot: Slot) -> None:
        """Free ``slot`` (a tombstone keeps the probe chains of other keys intact)."""
        if slot.until != 0.0:
            self.add_blocked(-1)
        self.memory[slot.offset] = _DELETED
        self._add_entries(-1)
        self._add_tombstones(1)
        self._next_generation()

    def used(self) -> Iterator[Slot]:
        for index in range(self.slots):
            offset = self._offset(index)
            if self.memory[offset] == _USED:
                yield Slot(self, offset)

    def rebuild(self, keep: list[Slot]) -> None:
        """Rebuild the table with only the ``keep`` slots (of this table) and no tombstones.
        O(slots): for a table that has no room, and at most once per slots/8 insertions.

        Crash-safe, through a redo log: the kept slots are copied to ``_redo`` with the
        index each gets in the new layout, then the lock's *applying* mark is set and the
        log applied (:meth:`apply_rebuild`). A process killed before the mark leaves the
        table as it was; one killed after leaves the mark, and the next holder of the lock
        applies the log again before doing anything else. Done in place with nothing kept
        apart, as it was, a kill between clearing the slots and putting the kept ones back
        lost every entry not yet back (the other workers' calls and blocks). The kept
        slots are copied twice, as before (out, then back): the rings make them large."""
        if len(keep) > self.capacity:
            raise ValueError(f"{len(keep)} slots kept, the table holds {self.capacity}")
        mm, redo, size = memoryview(self.memory), memoryview(self._redo), self.slot_size
        taken: set[int] = set()
        at = _HEADER.size
        for slot in keep:
            raw = mm[slot.offset : slot.offset + size]
            index = int.from_bytes(raw[_KEY : _KEY + 8], "little") % self.slots
            while index in taken:
                index = (index + 1) % self.slots
            taken.add(index)
            _Q.pack_into(redo, at, index)
            redo[at + 8 : at + 8 + size] = raw
            at += 8 + size
        blocked = sum(s.until != 0.0 for s in keep)
        _HEADER.pack_into(redo, 0, len(keep), blocked, 0, self.generation + 1)
        self.lock.applying(self._number)
        self.apply_rebuild()

    def apply_rebuild(self) -> None:
        """Apply :meth:`rebuild`'s redo log and clear the lock's mark: the slots emptied
        (their states: a slot is zeroed when taken), the kept ones written at their new
        index, the header last (the generation moves once every slot is in place). What a
        rebuild does last, and what the next holder of the lock does for a process that
        died in it: applying the log twice gives the same table."""
        mm, redo, size = memoryview(self.memory), memoryview(self._redo), self.slot_size
        kept, blocked, tombstones, generation = _HEADER.unpack_from(redo, 0)
        for index in range(self.slots):
            mm[self._offset(index)] = _EMPTY
        at = _HEADER.size
        for _ in range(kept):
            offset = self._offset(int(_Q.unpack_from(redo, at)[0]))
            mm[offset : offset + size] = redo[at + 8 : at + 8 + size]
            at += 8 + size
        _HEADER.pack_into(mm, 0, kept, blocked, tombstones, generation)
        self.lock.applying(0)

    def zero_worker(self, worker: int) -> int:
        """Release every call counted for ``worker`` (it died); how many there were."""
        released = 0
        for slot in self.used():
            released += slot.zero_calls(worker)
        return released
