"""The shared source IP table when it is full or churned: a new failure or block is always
recorded, the failure window is the configured one, and tombstones never make a lookup
scan the whole table."""

from __future__ import annotations

from softswitch.workers.live import SharedLiveState, SharedState
from softswitch.workers.table import ProcessLock, SharedTable


def small(slots: int) -> SharedLiveState:
    lock = ProcessLock()
    shared = SharedState(workers=1, ids=1)
    shared.ips = SharedTable(slots, workers=1, ring=8, lock=lock)
    shared.lock = lock
    shared.counters.lock = lock
    return SharedLiveState(shared, 0)


def source(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def test_a_brute_forcer_is_blocked_when_the_table_is_full_of_recent_failures() -> None:
    live = small(64)
    for n in range(64):  # a scan: one failure each, all within the window
        assert not live.note_auth_failure(source(n), 1000.0 + n / 100, limit=5, window=60)
    blocked = [live.note_auth_failure("203.0.113.9", 1001.0 + k, limit=5) for k in range(5)]
    assert blocked == [False] * 4 + [True]
    assert live.is_blocked("203.0.113.9", 1010.0)
    # The oldest non-blocked failures were forgotten, the newest kept.
    assert live.note_auth_failure(source(63), 1010.0, limit=2, window=60)


def test_the_sources_forgotten_first_are_those_idle_for_the_configured_window() -> None:
    live = small(16)
    table = live._ips
    for n in range(table.capacity - 1):  # old failures: idle for a 60 s window at t=100
        live.note_auth_failure(source(n), 0.0, limit=5, window=60)
    live.note_auth_failure("198.51.100.7", 90.0, limit=2, window=60)  # recent
    assert table.entries == table.capacity
    live.note_auth_failure("203.0.113.9", 100.0, limit=5, window=60)  # needs room
    # All the idle ones went (not an hour's cutoff), the recent one and the new one stay.
    assert table.entries == 2
    assert live.note_auth_failure("198.51.100.7", 101.0, limit=2, window=60)


def test_churned_sources_leave_no_tombstone_scan() -> None:
    live = small(64)
    table = live._ips
    for n in range(64 * 20):  # a failure then a success from each of many sources
        live.note_auth_failure(source(n), 1000.0 + n, limit=5)
        live.note_auth_success(source(n))
    empty = sum(table.memory[table._offset(i)] == 0 for i in range(table.slots))
    # A quarter of the slots stay empty, so a lookup stops after a few probes.
    assert empty >= table.slots - table.capacity
    assert table.entries + table.tombstones <= table.capacity
