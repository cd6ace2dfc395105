"""Which runs on this host are alive: ``store.recovery.pid_running`` and ``run_is_alive``.

A worker of a killed supervisor is killed too, then lingers as a zombie until init reaps it;
a restart in that moment must see its run as dead (it will never write again), or the run's
open calls stay open until the next start.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from softswitch.store.recovery import pid_running, run_is_alive


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()[0]


def _zombie() -> subprocess.Popen[bytes]:
    """A child that has exited and is not reaped (Popen is not waited for until the end)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while _state(child.pid) != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    return child


def _run(pid: int, heartbeat: dt.datetime) -> dict[str, object]:
    return {
        "run_id": "r1",
        "host": socket.gethostname(),
        "pid": pid,
        "stopped_at": None,
        "heartbeat_at": heartbeat.isoformat(),
        "heartbeat_interval": 5.0,
    }


def test_a_zombie_is_not_running_though_signal_0_reaches_it() -> None:
    child = _zombie()
    try:
        os.kill(child.pid, 0)  # the old test: it "exists"
        assert pid_running(child.pid) is False
    finally:
        child.wait()
    assert pid_running(child.pid) is False  # reaped: gone


def test_a_live_process_is_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_running(child.pid) is True
        assert pid_running(os.getpid()) is True
    finally:
        child.kill()
        child.wait()


def test_a_fresh_run_whose_pid_is_a_zombie_is_dead() -> None:
    now = dt.datetime.now(dt.UTC)
    child = _zombie()
    try:
        assert run_is_alive(_run(child.pid, now), now, socket.gethostname()) is False
    finally:
        child.wait()


def test_a_live_pid_does_not_keep_a_stale_run_alive() -> None:
    """The guard against a reused pid: past three heartbeats a run is dead, whoever holds
    its pid now (here: a live process of ours)."""
    now = dt.datetime.now(dt.UTC)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fresh = _run(child.pid, now - dt.timedelta(seconds=14))
        stale = _run(child.pid, now - dt.timedelta(seconds=16))
        assert run_is_alive(fresh, now, socket.gethostname()) is True
        assert run_is_alive(stale, now, socket.gethostname()) is False
    finally:
        child.kill()
        child.wait()
