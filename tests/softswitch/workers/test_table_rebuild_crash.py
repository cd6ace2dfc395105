"""A worker killed while it rebuilds a shared table (``SharedTable.rebuild``: a reload that
forgets ids, tombstones cleared on an insertion) must not take the other workers' entries
with it: the calls they count, their blocks. The kill comes at an arbitrary moment of a
rebuild that runs over and over, so the test holds whatever the rebuild's steps are."""

from __future__ import annotations

import functools
import os
import signal
import time

from forking import exit_code, forked

from softswitch.workers.table import ProcessLock, SharedTable

KEYS = 3000


def _filled(lock: ProcessLock) -> SharedTable:
    table = SharedTable(8192, workers=2, ring=4, lock=lock)
    with lock:
        for n in range(KEYS):
            slot = table.find(f"account-{n}", create=True)
            assert slot is not None
            slot.add_calls(1, n % 7 + 1)
    return table


def _rebuilding_for_ever(table: SharedTable, started: int) -> int:
    os.write(started, b"x")
    while True:
        with table.lock:
            table.rebuild(list(table.used()))


def _state(table: SharedTable) -> dict[bytes, int]:
    return {slot.key: slot.calls() for slot in table.used()}


def test_a_worker_killed_inside_a_rebuild_loses_no_entry() -> None:
    for delay in (0.013, 0.031, 0.057, 0.083, 0.101):
        lock = ProcessLock()
        table = _filled(lock)
        with lock:
            before = _state(table)
        assert len(before) == KEYS
        started_r, started_w = os.pipe()
        pid = forked(functools.partial(_rebuilding_for_ever, table, started_w))
        assert os.read(started_r, 1) == b"x"
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with lock:
            after = _state(table)
            assert table.entries == KEYS
            assert table.tombstones == 0
            # Lookups find every key where the probe chains lead (not only a scan).
            for n in range(KEYS):
                slot = table.find(f"account-{n}")
                assert slot is not None, (delay, n)
                assert slot.calls() == n % 7 + 1
        assert after == before, f"killed after {delay} s: {len(after)} of {KEYS} entries left"
        for end in (started_r, started_w):
            os.close(end)
        lock.close()


def test_a_rebuild_keeps_what_it_is_told_to_keep() -> None:
    lock = ProcessLock()
    table = _filled(lock)
    with lock:
        keep = [s for s in table.used() if s.calls() == 3]
        wanted = {s.key: s.calls() for s in keep}
        table.rebuild(keep)
        assert _state(table) == wanted
        assert table.entries == len(wanted)
        assert table.find("account-1") is None
        assert table.find("account-2") is not None
    lock.close()


def test_a_rebuild_cut_short_is_finished_by_the_next_holder_of_the_lock() -> None:
    """The kill the loop above rarely lands on: in the rebuild's application itself, every
    slot emptied and none put back yet. The child dies there; the parent's next ``with
    lock`` applies the rebuild's log again."""
    lock = ProcessLock()
    table = _filled(lock)
    with lock:
        doomed = [s for s in table.used() if s.calls() != 3]
        for slot in doomed:
            table.delete(slot)
        wanted = _state(table)
        assert table.tombstones == len(doomed)

    def emptied_then_killed() -> None:
        for index in range(table.slots):
            table.memory[table._offset(index)] = 0
        os._exit(9)

    def body() -> int:
        table.apply_rebuild = emptied_then_killed  # type: ignore[method-assign]
        with lock:
            table.rebuild(list(table.used()))
        return 0

    pid = forked(body)
    os.waitpid(pid, 0)
    with lock:
        assert _state(table) == wanted
        assert table.tombstones == 0
        assert table.entries == len(wanted)
        for n in range(2, KEYS, 7):
            slot = table.find(f"account-{n}")
            assert slot is not None
            assert slot.calls() == 3
    with lock:  # the mark was cleared: nothing is applied again
        assert not lock._applying[0]
    lock.close()


def test_a_table_made_after_the_fork_is_refused() -> None:
    """Tables are numbered in the order they are made, for the lock's redo mark: one made in
    a child (even one that has taken the lock) would be numbered there alone."""
    lock = ProcessLock()

    def body() -> int:
        with lock:
            pass
        try:
            SharedTable(64, workers=1, ring=1, lock=lock)
        except RuntimeError:
            return 0
        return 1

    assert exit_code(forked(body)) == 0
    SharedTable(64, workers=1, ring=1, lock=lock)  # the maker may
    lock.close()
