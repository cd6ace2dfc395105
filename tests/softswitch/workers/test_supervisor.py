"""The supervisor with real processes: workers forked, a killed one restarted (its calls
released), SIGHUP passed on, SIGTERM stopping all, a failed start stopping the start.

The workers here run a stand-in for the switch that writes what happens to it into files;
the supervisor runs in a forked process of its own, as ``softswitch run`` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import pytest

from loopback_ports import LOCAL, free_port
from softswitch.cli import worker_count
from softswitch.config import Config, demo_config, load_config
from softswitch.workers.seat import Seat
from softswitch.workers.steering import SteeringKey, call_id_owner
from softswitch.workers.supervisor import Supervisor

Runner = Callable[[Config, Path | None, Sequence[str] | None, Seat], int]

#: The Call-ID hash's key the supervisors here are given, so that a test knows which worker
#: owns a Call-ID: a secret one (from a fixed secret), as a running switch has, which each
#: worker's hand-off must take from its seat's sockets.
KEY = SteeringKey.from_secret(b"test_supervisor: the switch's secret key")


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
        # The key its listen group's program and its hand-off hash with.
        (events / f"key-{seat.index}-{pid}").write_text(str(seat.sockets.steering_key == KEY))
        (events / f"start-{seat.index}-{pid}").touch()
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

    def __init__(
        self, tmp_path: Path, runner: Runner, workers: int = 2, config_path: Path | None = None
    ) -> None:
        """``config_path``: the file the supervisor reads (at a reload too), else the demo
        configuration."""
        config = (
            demo_config(tmp_path / "state") if config_path is None else load_config(config_path)
        )
        port = free_port()
        self.supervisor = Supervisor(
            config,
            workers=workers,
            run=runner,
            config_path=config_path,
            listen=[f"udp:{LOCAL}:{port}"],
            steering_key=KEY,
        )
        #: What the supervisor prints ("softswitch: ready ..." once every worker is up).
        self.out = tmp_path / "supervisor.out"
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                sys.stdout = self.out.open("w")  # pytest's capture is not fd 1 alone
                code = self.supervisor.run()
            finally:
                os._exit(code)

    def ready(self) -> bool:
        """Every worker up, as the supervisor sees it: a worker that dies before is a
        failed start (the supervisor exits), one that dies after is restarted."""
        return self.out.exists() and b"softswitch: ready" in self.out.read_bytes()

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
        wait_until(running.ready, "the supervisor's start over")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(first[1], signal.SIGKILL)
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        assert files(events, "refused") == {}  # the dead worker's call was released
        # Every worker, the restarted one too, has the supervisor's steering key.
        keys = [p.read_text() for p in events.glob("key-*")]
        assert keys == ["True"] * 3, keys
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


def test_billed_or_registering_accounts_run_on_every_worker(tmp_path: Path) -> None:
    # The demo has billed accounts: their credit (and registered contacts) are shared
    # between workers (tests/softswitch/workers/test_worker_credit.py, ...bindings.py), so
    # it runs one worker per core like any configuration, and as many as asked.
    config = demo_config(tmp_path)
    assert any(a.billed for a in config.accounts)
    assert worker_count(config, None) == (os.cpu_count() or 1)
    assert worker_count(config, 3) == 3
    assert (
        worker_count(
            dataclasses.replace(config, server=dataclasses.replace(config.server, workers=2)), None
        )
        == 2
    )


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


def handing(events: Path) -> Runner:
    """A worker that records each datagram handed to it (``handed-<index>-<pid>``: the
    datagram, its listen address and source); on SIGUSR1 worker 0 hands worker 1 a request
    it owns, recording (``hand-0-<pid>``) how many worker 1s had started by then."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        pid = os.getpid()
        handoff = seat.handoff()
        assert handoff is not None

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            loop.add_signal_handler(signal.SIGTERM, stop.set)

            def inject(data: bytes, local: tuple[str, int], source: tuple[str, int]) -> None:
                line = f"{local[0]} {local[1]} {source[0]} {source[1]}\n".encode()
                (events / "handed.tmp").write_bytes(line + data)  # whole once it is there
                (events / "handed.tmp").rename(events / f"handed-{seat.index}-{pid}")

            def hand() -> None:
                starts = len(list(events.glob("start-1-*")))
                taken = handoff.divert(HANDED, (LOCAL, 5060), ("2001:db8::7", 5062))
                (events / f"hand-{seat.index}-{pid}").write_text(f"{taken} {starts}")

            handoff.start(inject)
            loop.add_signal_handler(signal.SIGUSR1, hand)
            (events / f"start-{seat.index}-{pid}").touch()
            seat.ready()
            await stop.wait()
            handoff.stop()

        asyncio.run(main())
        return 0

    return run


#: A request worker 1 of 2 owns with :data:`KEY`, and worker 0 with the fixed key: a
#: hand-off that hashed with any key but the supervisor's would keep it.
HANDED = next(
    payload
    for n in range(100)
    if [
        call_id_owner(
            payload := (
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n"
                f"Call-ID: {n}-dead-owner@example.com\r\nCSeq: 1 OPTIONS\r\n\r\n"
            ).encode(),
            2,
            key,
        )
        for key in (KEY, SteeringKey.fixed())
    ]
    == [1, 0]
)


def test_a_request_handed_to_a_dead_worker_reaches_its_successor(tmp_path: Path) -> None:
    """The supervisor's hand-off channels outlive a worker: a request handed to worker 1
    while it is dead waits in its channel and is taken by the worker started after it.
    Worker 0's hand-off finds the owner with the supervisor's key (its seat's)."""
    events = tmp_path / "events"
    events.mkdir()
    running = Running(tmp_path, handing(events))
    try:
        wait_until(lambda: set(files(events, "start")) == {0, 1}, "two workers started")
        wait_until(running.ready, "the supervisor's start over")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(first[1], signal.SIGKILL)

        def gone() -> bool:  # reaped by the supervisor
            try:
                os.kill(first[1], 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, "worker 1 dead")
        os.kill(first[0], signal.SIGUSR1)
        wait_until(lambda: bool(files(events, "hand")), "worker 0 handed the request")
        # Handed (not dropped) while only the dead worker 1 had started.
        assert (events / f"hand-0-{first[0]}").read_text() == "True 1"
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        wait_until(lambda: bool(files(events, "handed")), "the successor took it")
        assert files(events, "handed") == {1: [new]}
        handed = (events / f"handed-1-{new}").read_bytes()
        assert handed == f"{LOCAL} 5060 2001:db8::7 5062\n".encode() + HANDED
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
    finally:
        running.stop()


def test_each_supervisor_draws_its_own_steering_key(tmp_path: Path) -> None:
    """A start of the switch hashes Call-IDs with a key of its own, never the public one:
    nobody can build Call-IDs for it offline."""
    config = demo_config(tmp_path / "state")
    keys = [Supervisor(config, workers=2, run=stand_in(tmp_path)).steering_key for _ in range(3)]
    assert len({(k.multiplier, k.seed) for k in keys}) == 3
    assert SteeringKey.fixed() not in keys
