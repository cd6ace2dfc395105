"""The supervisor leaves a dead worker's credit column alone: its replacement finds it as
the dead worker left it and takes it over (after its start-up recovery, in the switch).
Real processes: the supervisor in a forked process, as ``softswitch run`` runs it, its
workers a stand-in for the switch that holds credit on the shared table."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import pytest

from loopback_ports import LOCAL, free_port
from softswitch.config import Config, demo_config
from softswitch.workers.credit import WorkerCredit
from softswitch.workers.seat import Seat
from softswitch.workers.supervisor import Supervisor

Runner = Callable[[Config, Path | None, Sequence[str] | None, Seat], int]


def holding(events: Path) -> Runner:
    """Worker 1's first run holds 70 of account ``acme``'s 100; its successor records what
    it finds in its column, then takes it over."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        credit = WorkerCredit.of(seat.shared, seat.index)
        pid = os.getpid()
        if seat.index == 1:
            first = events / "held"
            if not first.exists():
                if not credit.hold_now("x", "acme", 70, 100):
                    return 4
                first.touch()
            else:
                (events / f"found-{pid}").write_text(str(credit.account_held("acme")))
                (events / f"took-{pid}").write_text(str(credit.take_over()))
        stopping: list[int] = []

        def term(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGTERM, term)
        (events / f"start-{seat.index}-{pid}").touch()
        seat.ready()
        while not stopping:
            signal.pause()
        return 0

    return run


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(what)


def test_a_dead_workers_credit_is_left_for_its_replacement_to_take_over(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    supervisor = Supervisor(
        demo_config(tmp_path / "state"),
        workers=2,
        run=holding(events),
        listen=[f"udp:{LOCAL}:{free_port()}"],
    )
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = supervisor.run()
        finally:
            os._exit(code)
    try:
        wait_until(lambda: len(list(events.glob("start-*"))) == 2, "two workers started")
        (first,) = events.glob("start-1-*")
        os.kill(int(first.name.split("-")[2]), signal.SIGKILL)
        wait_until(lambda: any(events.glob("took-*")), "worker 1 restarted")
        (found,) = events.glob("found-*")
        (took,) = events.glob("took-*")
        # Not zeroed at the reap: the replacement found the 70 and let them go itself.
        assert (found.read_text(), took.read_text()) == ("70", "70")
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
