"""``SharedLiveState``: the same answers as ``LiveState``, shared by real forked processes."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import pytest
from forking import exit_code, forked

from softswitch.call.live import LiveState
from softswitch.workers.live import SharedLiveState, SharedState
from softswitch.workers.table import ProcessLock, SharedTable, digest


def test_concurrent_admits_from_two_processes_never_exceed_max_calls() -> None:
    shared = SharedState(workers=2, ids=1)
    start = os.pipe()

    def admit_all(worker: int) -> Callable[[], int]:
        def body() -> int:
            live = SharedLiveState(shared, worker)
            os.read(start[0], 1)  # both start together
            admitted = 0
            for _ in range(400):
                if live.account_admit("acme", 1.0, max_calls=150) is None:
                    admitted += 1
            return admitted

        return body

    pids = [forked(admit_all(0)), forked(admit_all(1))]
    os.write(start[1], b"go")
    admitted = [exit_code(pid) for pid in pids]
    assert sum(admitted) == 150
    live = SharedLiveState(shared, 0)
    assert live.account_calls("acme") == 150


def test_admit_and_release_in_two_processes_stay_within_the_limit() -> None:
    shared = SharedState(workers=2, ids=1)

    def churn(worker: int) -> Callable[[], int]:
        def body() -> int:
            live = SharedLiveState(shared, worker)
            held = 0
            rng = random.Random(worker)
            for _ in range(3000):
                if held and rng.random() < 0.5:
                    live.gateway_release("gw")
                    held -= 1
                elif live.gateway_admit("gw", 1.0, capacity=7) is None:
                    held += 1
                    if live.gateway_calls("gw") > 7:
                        return 99  # someone got past the limit
            for _ in range(held):
                live.gateway_release("gw")
            return 0

        return body

    pids = [forked(churn(0)), forked(churn(1))]
    assert [exit_code(pid) for pid in pids] == [0, 0]
    assert SharedLiveState(shared, 0).gateway_calls("gw") == 0


def test_a_killed_process_share_is_released_and_only_its_share() -> None:
    shared = SharedState(workers=2, ids=1)
    mine = SharedLiveState(shared, 0)
    assert mine.account_admit("acme", 1.0, max_calls=5) is None
    ready = os.pipe()

    def hold_three() -> int:
        live = SharedLiveState(shared, 1)
        for _ in range(3):
            assert live.account_admit("acme", 1.0, max_calls=5) is None
        os.write(ready[1], b"x")
        time.sleep(60)
        return 0

    pid = forked(hold_three)
    os.read(ready[0], 1)
    assert mine.account_calls("acme") == 4
    assert mine.account_admit("acme", 1.0, max_calls=4) == "max_calls"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert shared.release_worker(1) == 3
    assert mine.account_calls("acme") == 1  # worker 0's call is still counted
    assert mine.account_admit("acme", 1.0, max_calls=4) is None


def test_cps_window_is_shared_and_slides() -> None:
    shared = SharedState(workers=2, ids=1)

    def burst(worker: int, now: float) -> Callable[[], int]:
        def body() -> int:
            live = SharedLiveState(shared, worker)
            return sum(live.account_admit("acme", now, max_cps=10) is None for _ in range(20))

        return body

    first = [forked(burst(0, 100.0)), forked(burst(1, 100.2))]
    assert sum(exit_code(pid) for pid in first) == 10
    live = SharedLiveState(shared, 0)
    assert live.account_rate("acme", 100.5) == 10
    assert live.account_admit("acme", 100.9, max_cps=10) == "max_cps"  # same second
    # A second after the first admissions (all at 100.0 or 100.2): room again.
    later = [forked(burst(0, 101.3)), forked(burst(1, 101.3))]
    assert sum(exit_code(pid) for pid in later) == 10


def test_blocks_overrides_and_gateway_health_are_seen_by_the_other_process() -> None:
    shared = SharedState(workers=2, ids=2)
    here = SharedLiveState(shared, 0)

    def other() -> int:
        live = SharedLiveState(shared, 1)
        for _ in range(3):
            live.note_auth_failure("203.0.113.9", 10.0, limit=3, window=60, block_for=30)
        live.mark_gateway("gw1", False)
        live.set_account_disabled("acme", True)
        live.set_gateway_disabled("gw2", True)
        live.set_gateway_alarm("gw2", "asr_low", True)
        return 0

    assert exit_code(forked(other)) == 0
    assert here.is_blocked("203.0.113.9", 20.0)
    assert here.blocks.is_blocked("203.0.113.9", 20.0)
    assert len(here.blocks) == 1
    assert here.blocks.blocked(20.0) == {"203.0.113.9": 20.0}
    assert not here.gateway_is_up("gw1")
    assert here.account_disabled("acme")
    assert here.gateway_disabled("gw2")
    assert here.gateway_alarm("gw2") == "asr_low"
    here.unblock("203.0.113.9")
    assert not here.is_blocked("203.0.113.9", 20.0)
    assert not here.is_blocked("203.0.113.9", 20.0)
    assert len(here.blocks) == 0


def test_a_flag_read_without_the_lock_follows_its_slot_being_freed_and_reused() -> None:
    """Flags are read lock-free at a remembered slot: another process's change is seen at
    once, and a slot a reload freed (and another id took) is never read as the old id's."""
    shared = SharedState(workers=2, ids=1)
    here = SharedLiveState(shared, 0)
    here.set_account_disabled("acme", True)
    assert here.account_disabled("acme")  # its place is remembered now

    def enable() -> int:
        SharedLiveState(shared, 1).set_account_disabled("acme", False)
        return 0

    assert exit_code(forked(enable)) == 0
    assert not here.account_disabled("acme")
    here.set_account_disabled("acme", True)
    table = shared.counters
    slot = table.find("a\0acme")
    assert slot is not None
    with shared.lock:
        table.delete(slot)  # what forget_absent does for an id a reload removed
    assert table.flags_at(slot.offset, digest("a\0acme")) is None
    assert not here.account_disabled("acme")  # gone: not the freed slot's old flags
    here.set_account_disabled("other", True)  # another id in a slot of its own
    other = table.find("a\0other")
    assert other is not None
    assert table.flags_at(other.offset, digest("a\0acme")) is None  # another key: not read
    assert table.flags_at(other.offset, digest("a\0other")) == other.flags
    assert not here.account_disabled("acme")
    assert here.account_disabled("other")


class CountingLock(ProcessLock):
    """The shared lock, counting how often it is taken."""

    taken = 0

    def __enter__(self) -> None:
        type(self).taken += 1
        super().__enter__()


def test_an_unused_gateway_and_one_without_alarms_cost_no_lock_per_call() -> None:
    """What every call asks of every candidate gateway (disabled? up? alarmed? room
    without limits?) is read without the lock once known, also for a gateway no call has
    used yet; a slot another process creates, and an alarm it raises, are still seen."""
    shared = SharedState(workers=2, ids=2)
    lock = CountingLock()
    shared.lock = shared.counters.lock = lock
    here = SharedLiveState(shared, 0)

    def ask() -> tuple[bool, bool, str | None, object]:
        return (
            here.gateway_disabled("gw9"),
            here.gateway_is_up("gw9"),
            here.gateway_alarm("gw9"),
            here.gateway_has_room("gw9", 1.0),
        )

    assert ask() == (False, True, None, None)
    before = CountingLock.taken
    for _ in range(5):
        assert ask() == (False, True, None, None)
    assert CountingLock.taken == before  # no slot, same generation: no lock

    def alarm() -> int:
        SharedLiveState(shared, 1).set_gateway_alarm("gw9", "asr_low", True)
        return 0

    assert exit_code(forked(alarm)) == 0  # creates the slot: a new generation
    assert here.gateway_alarm("gw9") == "asr_low"
    before = CountingLock.taken
    assert here.gateway_alarm("gw9") == "asr_low"  # the text is read under the lock
    assert CountingLock.taken == before + 1

    def clear() -> int:
        SharedLiveState(shared, 1).set_gateway_alarm("gw9", "asr_low", False)
        return 0

    assert exit_code(forked(clear)) == 0
    before = CountingLock.taken
    assert here.gateway_alarm("gw9") is None
    assert not here.gateway_disabled("gw9")
    assert CountingLock.taken == before  # the slot's place is known: flags lock-free


def test_block_expires() -> None:
    live = SharedLiveState(SharedState(workers=1, ids=1), 0)
    assert live.note_auth_failure("198.51.100.1", 0.0, limit=1, window=5, block_for=10)
    assert live.is_blocked("198.51.100.1", 9.9)
    assert not live.is_blocked("198.51.100.1", 10.0)
    assert len(live.blocks) == 0


def test_a_full_ip_table_of_blocks_still_records_a_new_block() -> None:
    lock = ProcessLock()
    shared = SharedState(workers=1, ids=1)
    shared.ips = SharedTable(8, workers=1, ring=8, lock=lock)
    shared.lock = lock
    shared.counters.lock = lock
    live = SharedLiveState(shared, 0)
    for n in range(shared.ips.capacity):
        assert live.blocks.block(f"192.0.2.{n}", 10.0 + n, 0.0)
    # Full of blocks in force: the ones that end first make room, the new one is recorded.
    assert live.blocks.block("192.0.2.99", 20.0, 5.0)
    assert live.is_blocked("192.0.2.99", 6.0)
    assert not live.is_blocked("192.0.2.0", 6.0)  # ended first: forgotten
    assert live.is_blocked(f"192.0.2.{shared.ips.capacity - 1}", 6.0)
    assert len(live.blocks) == shared.ips.entries


@pytest.mark.parametrize("seed", range(5))
def test_same_answers_as_live_state(seed: int) -> None:
    """A random run of admissions, releases and clock steps: the shared backend answers
    every question as the one-process ``LiveState`` does."""
    rng = random.Random(seed)
    plain, shared = LiveState(), SharedLiveState(SharedState(workers=1, ids=4), 0)
    held: dict[str, int] = {"a": 0, "b": 0}
    now = 0.0
    for _ in range(2000):
        now += rng.choice((0.0, 0.01, 0.1, 0.3, 1.0))
        key = rng.choice(("a", "b"))
        op = rng.random()
        if op < 0.45:
            kw = {"max_calls": rng.choice((None, 3, 5)), "max_cps": rng.choice((None, 2, 4))}
            got = shared.account_admit(key, now, **kw)
            assert got == plain.account_admit(key, now, **kw)
            held[key] += got is None
        elif op < 0.7:
            cap = {"capacity": rng.choice((None, 2)), "max_cps": rng.choice((None, 3))}
            assert shared.gateway_has_room(key, now, **cap) == plain.gateway_has_room(
                key, now, **cap
            )
            got_gw = shared.gateway_admit(key, now, **cap)
            assert got_gw == plain.gateway_admit(key, now, **cap)
            if got_gw is None:
                shared.gateway_release(key)
                plain.gateway_release(key)
        elif held[key]:
            shared.account_release(key)
            plain.account_release(key)
            held[key] -= 1
        assert shared.account_calls(key) == plain.account_calls(key)
        assert shared.account_rate(key, now) == plain.account_rate(key, now)
        assert shared.gateway_rate(key, now) == plain.gateway_rate(key, now)


def test_release_without_admit_is_a_programming_error() -> None:
    live = SharedLiveState(SharedState(workers=1, ids=1), 0)
    with pytest.raises(RuntimeError, match="released more calls than admitted"):
        live.account_release("nobody")
