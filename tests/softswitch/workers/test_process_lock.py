"""The workers' lock (``workers.table.ProcessLock``): libc's ``lockf`` asked for with the GIL
held must still exclude other processes, wait for them, and be freed when its holder dies."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time

from forking import exit_code, forked

from softswitch.workers.table import ProcessLock


def _held_by_child(lock: ProcessLock, hold: float) -> tuple[int, int]:
    """A child that takes ``lock``, says so on a pipe, holds it ``hold`` seconds (then exits
    0); (its pid, the read end of the pipe, once the child holds the lock)."""
    ready_r, ready_w = os.pipe()

    def body() -> int:
        with lock:
            os.write(ready_w, b"x")
            time.sleep(hold)
        return 0

    pid = forked(body)
    assert os.read(ready_r, 1) == b"x"
    return pid, ready_r


def test_another_process_waits_until_the_holder_lets_go() -> None:
    lock = ProcessLock()
    pid, ready = _held_by_child(lock, 0.5)
    start = time.monotonic()
    with lock:
        waited = time.monotonic() - start
    assert exit_code(pid) == 0
    assert waited > 0.3  # the child held it for 0.5 s after it said so
    os.close(ready)
    lock.close()


def test_the_lock_is_the_whole_file_as_fcntl_lockf_takes_it() -> None:
    """A process holding ``fcntl.lockf(fd, LOCK_EX)`` on the descriptor keeps the lock from
    this one: the two name the same region (the whole file), so a switch never mixes two
    disjoint locks."""
    lock = ProcessLock()
    fd = lock._fd
    ready_r, ready_w = os.pipe()

    def body() -> int:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(ready_w, b"x")
        time.sleep(0.5)
        return 0

    pid = forked(body)
    assert os.read(ready_r, 1) == b"x"
    start = time.monotonic()
    with lock:
        waited = time.monotonic() - start
    assert exit_code(pid) == 0
    assert waited > 0.3
    for end in (ready_r, ready_w):
        os.close(end)
    lock.close()


def test_a_holder_killed_inside_frees_the_lock() -> None:
    lock = ProcessLock()
    pid, ready = _held_by_child(lock, 60.0)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    start = time.monotonic()
    with lock:
        assert time.monotonic() - start < 5.0
    os.close(ready)
    lock.close()


def test_threads_of_one_process_exclude_each_other() -> None:
    """The record lock is the process's: a thread lock in front of it keeps two threads of
    one process out of each other's critical sections (the CDR writer's and the loop's)."""
    lock = ProcessLock()
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(2000):
            with lock:
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0)  # let the other thread run while this one holds the lock
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
    lock.close()


def test_a_signal_during_the_wait_does_not_break_it() -> None:
    """A signal that interrupts the kernel's wait (EINTR: Python's handlers are installed
    without SA_RESTART) has its handler run, and the lock is asked for again. The holder
    sends it: no thread of this process can while the GIL waits."""
    lock = ProcessLock()
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    seen: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))

    def body() -> int:
        with lock:
            os.write(ready_w, b"x")
            time.sleep(0.2)
            os.kill(parent, signal.SIGUSR1)
            time.sleep(0.4)
        return 0

    try:
        pid = forked(body)
        assert os.read(ready_r, 1) == b"x"
        start = time.monotonic()
        with lock:
            waited = time.monotonic() - start
        assert waited > 0.4  # not given up at the signal, 0.2 s in
        assert seen == [signal.SIGUSR1]
        assert exit_code(pid) == 0
    finally:
        signal.signal(signal.SIGUSR1, old)
        for end in (ready_r, ready_w):
            os.close(end)
        lock.close()
