"""The supervisor with real processes: workers forked, a killed one restarted (its calls
released), SIGHUP passed on, SIGTERM stopping all, a failed start stopping the start.

The workers here run a stand-in for the switch that writes what happens to it into files;
the supervisor runs in a forked process of its own, as ``softswitch run`` does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import pytest

from loopback_ports import LOCAL, free_port
from softswitch.config import Config, demo_config
from softswitch.workers.seat import Seat
from softswitch.workers.supervisor import Supervisor, single_process_reason

Runner = Callable[[Config, Path | None, Sequence[str] | None, Seat], int]


def stand_in(events: Path, *, fail_worker: int | None = None) -> Runner:
    """A worker that records its start, each SIGHUP and its SIGTERM, holding one call of
    account ``acme`` (``max_calls`` = the worker count) in the shared limits meanwhile."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        if seat.index == fail_worker:
            return 3
        live = seat.live()
        pid = os.getpid()
        # One call each, the limit as many as there are workers: a successor of a killed
        # worker is admitted only if the supervisor released the dead one's call.
        if live.account_admit("acme", time.monotonic(), max_calls=seat.count) is not None:
            (events / f"refused-{seat.index}-{pid}").touch()
            return 4
        stopping: list[int] = []

        def hup(signum: int, frame: FrameType | None) -> None:
            (events / f"hup-{seat.index}-{pid}").touch()

        def term(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGHUP, hup)
        signal.signal(signal.SIGTERM, term)
        (events / f"start-{seat.index}-{pid}").touch()
        (events / f"secret-{seat.index}-{pid}").write_bytes(seat.nonce_secret)
        seat.ready()
        while not stopping:
            signal.pause()
        live.account_release("acme")
        (events / f"term-{seat.index}-{pid}").touch()
        return 0

    return run


def files(events: Path, kind: str) -> dict[int, list[int]]:
    """index -> pids of the ``kind`` files (start, hup, term)."""
    out: dict[int, list[int]] = {}
    for path in events.glob(f"{kind}-*"):
        _, index, pid = path.name.split("-")
        out.setdefault(int(index), []).append(int(pid))
    return out


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(what)


class Running:
    """A supervisor in a child process, with the shared state it made readable here."""

    def __init__(self, tmp_path: Path, runner: Runner, workers: int = 2) -> None:
        config = demo_config(tmp_path / "state")
        port = free_port()
        self.supervisor = Supervisor(
            config, workers=workers, run=runner, listen=[f"udp:{LOCAL}:{port}"]
        )
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                code = self.supervisor.run()
            finally:
                os._exit(code)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_killed_worker_restarted_its_call_released_hup_and_term_reach_all(
    tmp_path: Path,
) -> None:
    events = tmp_path / "events"
    events.mkdir()
    running = Running(tmp_path, stand_in(events))
    try:
        wait_until(lambda: set(files(events, "start")) == {0, 1}, "two workers started")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(first[1], signal.SIGKILL)
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        assert files(events, "refused") == {}  # the dead worker's call was released
        # One digest nonce secret for every worker, the restarted one's included.
        secrets = {p.read_bytes() for p in events.glob("secret-*")}
        assert len(list(events.glob("secret-*"))) == 3
        assert len(secrets) == 1
        assert len(secrets.pop()) >= 16
        os.kill(running.pid, signal.SIGHUP)
        wait_until(
            lambda: files(events, "hup") == {0: [first[0]], 1: [new]}, "SIGHUP to both workers"
        )
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
        assert files(events, "term") == {0: [first[0]], 1: [new]}
    finally:
        running.stop()


def test_a_worker_failing_at_start_stops_the_start(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    running = Running(tmp_path, stand_in(events, fail_worker=1))
    try:
        assert running.wait() == 3  # the failed worker's own exit status
        # Worker 0 was told to stop, and did.
        wait_until(lambda: set(files(events, "term")) == set(files(events, "start")), "stopped")
    finally:
        running.stop()


def test_billed_or_registering_accounts_need_one_process(tmp_path: Path) -> None:
    reason = single_process_reason(demo_config(tmp_path))
    assert reason is not None
    assert "credit reservations are per process" in reason


def held_at_start(events: Path) -> Runner:
    """A worker that says it listens only once ``events/go`` exists, records each SIGHUP
    and its SIGTERM; on SIGHUP worker 0 records a reloaded configuration (realm
    ``reloaded``) as the switch does; each start writes the realm it was given."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        pid = os.getpid()
        stopping: list[int] = []

        def hup(signum: int, frame: FrameType | None) -> None:
            (events / f"hup-{seat.index}-{pid}").touch()
            if seat.index == 0:
                server = dataclasses.replace(config.server, realm="reloaded")
                seat.shared.running.record(dataclasses.replace(config, server=server))

        def term(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGHUP, hup)
        signal.signal(signal.SIGTERM, term)
        (events / f"start-{seat.index}-{pid}").write_text(config.server.realm)
        while not (events / "go").exists() and not stopping:
            time.sleep(0.01)
        if not stopping:
            seat.ready()
        while not stopping:
            signal.pause()
        (events / f"term-{seat.index}-{pid}").touch()
        return 0

    return run


def test_sigterm_during_the_start_stops_the_workers_and_exits_0(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    running = Running(tmp_path, held_at_start(events))
    try:
        wait_until(lambda: 0 in files(events, "start"), "worker 0 started")
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
        assert set(files(events, "term")) == {0}
    finally:
        running.stop()


def test_sighup_during_the_start_is_passed_on_once_all_listen(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    running = Running(tmp_path, held_at_start(events))
    try:
        wait_until(lambda: 0 in files(events, "start"), "worker 0 started")
        os.kill(running.pid, signal.SIGHUP)
        time.sleep(0.2)  # the supervisor takes it during the start (no deadline asserted)
        (events / "go").touch()
        wait_until(lambda: set(files(events, "hup")) == {0, 1}, "SIGHUP to both workers")
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
    finally:
        running.stop()


def test_a_restarted_worker_runs_what_the_others_reloaded(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    (events / "go").touch()
    running = Running(tmp_path, held_at_start(events))
    try:
        wait_until(lambda: set(files(events, "start")) == {0, 1}, "two workers started")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(running.pid, signal.SIGHUP)
        wait_until(lambda: set(files(events, "hup")) == {0, 1}, "SIGHUP to both workers")
        os.kill(first[1], signal.SIGKILL)
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        assert (events / f"start-1-{new}").read_text() == "reloaded"
        assert (events / f"start-1-{first[1]}").read_text() != "reloaded"
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
    finally:
        running.stop()
