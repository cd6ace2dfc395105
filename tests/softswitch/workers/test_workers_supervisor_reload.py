"""The supervisor and reloads: a SIGHUP that comes while a dead worker's replacement is
starting (forked but not listening yet, or not forked yet) reaches that replacement once it
listens; and the deadline after which it kills draining workers follows the reloaded
``[server] drain_timeout``. Real processes: the supervisor forked as in ``test_supervisor``,
its workers stand-ins for the switch."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import pytest
from test_supervisor import Runner, Running, files, wait_until

from softswitch.config import DEMO_DIR, Config, load_config
from softswitch.workers import supervisor as supervisor_module
from softswitch.workers.live import SharedState
from softswitch.workers.seat import Seat
from softswitch.workers.supervisor import Supervisor


def hup_after_start(events: Path) -> Runner:
    """A worker that records its start and each SIGHUP it takes. A restarted worker 1 waits
    for ``events/go`` before it takes SIGHUP and says it listens: as the switch, which
    ignores SIGHUP until it has built its snapshot (the supervisor's ``SIG_IGN``)."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        pid = os.getpid()
        restarted = seat.index == 1 and any(events.glob("start-1-*"))
        (events / f"start-{seat.index}-{pid}").touch()
        while restarted and not (events / "go").exists():
            time.sleep(0.01)

        def hup(signum: int, frame: FrameType | None) -> None:
            (events / f"hup-{seat.index}-{pid}-{time.monotonic_ns()}").touch()

        return listen_until_sigterm(seat, hup)

    return run


def listen_until_sigterm(seat: Seat, hup: Callable[[int, FrameType | None], None]) -> int:
    """A stand-in worker's life once started: ``hup`` on SIGHUP, "ready" to the supervisor,
    then wait for its SIGTERM; 0."""
    stopping: list[int] = []

    def term(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGTERM, term)
    seat.ready()
    while not stopping:
        signal.pause()
    return 0


def hups(events: Path) -> dict[int, int]:
    """pid -> SIGHUPs it took."""
    out: dict[int, int] = {}
    for path in events.glob("hup-*"):
        pid = int(path.name.split("-")[2])
        out[pid] = out.get(pid, 0) + 1
    return out


def test_a_sighup_while_a_replacement_starts_reaches_it_once_it_listens(
    tmp_path: Path,
) -> None:
    events = tmp_path / "events"
    events.mkdir()
    running = Running(tmp_path, hup_after_start(events))
    try:
        wait_until(running.ready, "the supervisor's start over")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(first[1], signal.SIGKILL)
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        # The replacement is forked, not listening yet (it ignores SIGHUP): reload now.
        os.kill(running.pid, signal.SIGHUP)
        wait_until(lambda: hups(events).get(first[0]) == 1, "SIGHUP to worker 0")
        assert new not in hups(events)
        (events / "go").touch()
        wait_until(lambda: hups(events).get(new) == 1, "SIGHUP to the replacement", 5.0)
        time.sleep(0.3)
        assert hups(events) == {first[0]: 1, new: 1}  # each once
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
    finally:
        running.stop()


def test_a_sighup_while_a_dead_worker_waits_to_restart_reaches_its_replacement(
    tmp_path: Path,
) -> None:
    """The reload comes after the death, before the restart's back-off is over: the
    replacement may be forked before the other workers have recorded the reloaded
    configuration, so it is passed the SIGHUP once it listens."""
    events = tmp_path / "events"
    events.mkdir()
    (events / "go").touch()
    running = Running(tmp_path, hup_after_start(events))
    try:
        wait_until(running.ready, "the supervisor's start over")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(first[1], signal.SIGKILL)
        # Reaped by the supervisor (its back-off runs 0.5 s from here), not restarted yet.
        wait_until(lambda: not Path(f"/proc/{first[1]}").exists(), "worker 1 reaped", 5.0)
        os.kill(running.pid, signal.SIGHUP)
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        wait_until(lambda: hups(events).get(new) == 1, "SIGHUP to the replacement", 5.0)
        assert hups(events).get(first[0]) == 1
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
    finally:
        running.stop()


def dies_in_its_reload(events: Path) -> Runner:
    """A worker that records its start and each SIGHUP, and says when each SIGHUP's reload
    is over (``Seat.reloaded``), as the switch does. The first run of worker 1 dies inside
    its first reload instead, before it says so (``exit-in-reload`` present), or right
    after it said so (absent): a crash on the way out of a good reload."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        pid = os.getpid()
        first_run = seat.index == 1 and not any(events.glob("start-1-*"))
        (events / f"start-{seat.index}-{pid}").touch()

        def hup(signum: int, frame: FrameType | None) -> None:
            upto = seat.reload_asked()
            (events / f"hup-{seat.index}-{pid}-{time.monotonic_ns()}").touch()
            if first_run and (events / "exit-in-reload").exists():
                os._exit(3)
            seat.reloaded(upto)
            if first_run:
                os._exit(3)

        return listen_until_sigterm(seat, hup)

    return run


@pytest.mark.parametrize("in_reload", [True, False])
def test_a_worker_that_dies_inside_its_reload_has_its_replacement_reloaded(
    tmp_path: Path, in_reload: bool
) -> None:
    """The SIGHUP reached worker 1 while it listened, and it died before its reload was over:
    it may have died before it read the file, and its replacement may start before the
    other workers recorded the reloaded configuration, so the replacement is passed a
    SIGHUP once it listens. A worker that died after its reload was over is not: its
    replacement reads what the reload recorded, and a reload it was not asked for would
    take edits of the file the operator has not signalled yet."""
    events = tmp_path / "events"
    events.mkdir()
    if in_reload:
        (events / "exit-in-reload").touch()
    running = Running(tmp_path, dies_in_its_reload(events))
    try:
        wait_until(running.ready, "the supervisor's start over")
        first = {i: pids[0] for i, pids in files(events, "start").items()}
        os.kill(running.pid, signal.SIGHUP)
        wait_until(lambda: len(files(events, "start").get(1, [])) == 2, "worker 1 restarted")
        (new,) = set(files(events, "start")[1]) - {first[1]}
        if in_reload:
            wait_until(lambda: hups(events).get(new) == 1, "SIGHUP to the replacement", 5.0)
        else:
            time.sleep(1.0)  # the replacement listens at once: a SIGHUP would have come
            assert new not in hups(events)
        assert hups(events).get(first[0]) == 1
        assert hups(events).get(first[1]) == 1
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
    finally:
        running.stop()


# -- the kill deadline of a stop after a reload -------------------------------------------


def config_file(folder: Path, drain_timeout: float | None) -> Path:
    """The demo's configuration in ``folder`` with ``[server] drain_timeout`` (None: a file
    that does not load)."""
    if not folder.exists():
        shutil.copytree(DEMO_DIR, folder)
    path = folder / "demo.toml"
    text = (DEMO_DIR / "demo.toml").read_text()
    if drain_timeout is None:
        text = text.replace("[server]", "[server]\ndrain_timeout = 'soon'")
    else:
        text = text.replace("[server]", f"[server]\ndrain_timeout = {drain_timeout}")
    path.write_text(text)
    return path


def slow_drain(events: Path, seconds: float) -> Runner:
    """A worker that records each SIGHUP; on SIGTERM it "drains" for ``seconds``, then
    records that it stopped by itself (``term-<index>-<pid>``)."""

    def run(config: Config, path: Path | None, listen: Sequence[str] | None, seat: Seat) -> int:
        pid = os.getpid()
        stopping: list[int] = []

        def hup(signum: int, frame: FrameType | None) -> None:
            (events / f"hup-{seat.index}-{pid}").touch()

        def term(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGHUP, hup)
        signal.signal(signal.SIGTERM, term)
        (events / f"start-{seat.index}-{pid}").touch()
        seat.ready()
        while not stopping:
            signal.pause()
        time.sleep(seconds)
        (events / f"term-{seat.index}-{pid}").touch()
        return 0

    return run


def test_the_kill_deadline_follows_a_reloaded_drain_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with drain_timeout 0.2, reloaded to 4: workers that drain 2 s are not
    killed (the grace beyond drain_timeout made 0.3 s here, 30 s in a switch)."""
    monkeypatch.setattr(supervisor_module, "KILL_GRACE", 0.3)
    events = tmp_path / "events"
    events.mkdir()
    folder = tmp_path / "conf"
    running = Running(tmp_path, slow_drain(events, 2.0), config_path=config_file(folder, 0.2))
    try:
        wait_until(lambda: set(files(events, "start")) == {0, 1}, "two workers started")
        time.sleep(0.3)  # "softswitch: ready" (the supervisor's start over)
        config_file(folder, 4)
        os.kill(running.pid, signal.SIGHUP)
        wait_until(lambda: set(files(events, "hup")) == {0, 1}, "SIGHUP to both workers")
        os.kill(running.pid, signal.SIGTERM)
        assert running.wait() == 0
        assert set(files(events, "term")) == {0, 1}, "a draining worker was killed"
    finally:
        running.stop()


def test_the_drain_timeout_read_at_a_reload_and_what_the_workers_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The deadline uses the file's drain_timeout as of the last reload, or what the
    workers run (recorded by their last accepted reload) when that is longer: a reload
    the workers refused leaves them on their value. A file that does not load changes
    nothing (logged)."""
    folder = tmp_path / "conf"
    path = config_file(folder, 2)
    config = load_config(path)
    supervisor = Supervisor(config, workers=2, run=lambda *a: 0, config_path=path)
    grace = supervisor_module.KILL_GRACE
    assert supervisor.kill_after() == 2 + grace
    config_file(folder, 120)
    supervisor.reread_config()
    assert supervisor.kill_after() == 120 + grace
    config_file(folder, None)
    with caplog.at_level(logging.ERROR, logger="softswitch.workers"):
        supervisor.reread_config()
    assert supervisor.kill_after() == 120 + grace
    assert "keeps drain_timeout 120 s" in caplog.text
    config_file(folder, 5)
    supervisor.reread_config()
    assert supervisor.kill_after() == 5 + grace
    # The workers still run 120 (they refused the reload): theirs is the longer.
    shared = SharedState.for_config(config, workers=2)
    shared.running.record(load_config(config_file(folder, 120)))
    config_file(folder, 5)
    supervisor._shared = shared
    assert supervisor.kill_after() == 120 + grace
