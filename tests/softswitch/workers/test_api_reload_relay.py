"""The management API's reload with several workers goes through the supervisor: a SIGHUP
to it, which it passes on to every worker as it does an operator's (numbered, to a worker
restarting once it listens, its own stop deadline read again); the asking worker answers
with the verdict of the reload that SIGHUP starts there. A supervisor that does not pass it
on (stopping) leaves the worker to reload on its own. Here the switch is worker 0 of two
(``engine_calls.Rig``) and this test plays the supervisor."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path

import pytest
from forking import exit_code, forked

from engine_calls import Rig
from loopback_ports import LOCAL, free_port
from softswitch.proxy import server as server_module

CONFIG = """[server]
listen = ["udp:{local}:{port}"]
database = "{database}"
realm = "{realm}"
[management]
listen = "off"
"""


def write(path: Path, port: int, realm: str) -> None:
    database = path.parent / "cdr.sqlite"
    path.write_text(CONFIG.format(local=LOCAL, port=port, database=database, realm=realm))


def test_the_apis_reload_is_a_sighup_through_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "RELOAD_RELAY_TIMEOUT", 60.0)  # no reload alone
    path, port = tmp_path / "switch.toml", free_port()
    write(path, port, "before")

    async def main() -> None:
        async with Rig(path, port, workers=2) as rig:
            switch = rig.switch
            assert switch.seat is not None
            seat = dataclasses.replace(switch.seat, supervisor=os.getpid())
            switch.seat = seat
            relayed: list[int] = []

            def supervisor_passes_it_on() -> None:  # what the supervisor's SIGHUP does here
                relayed.append(seat.reload_asked())
                server_module._on_sighup(switch, seat)

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, supervisor_passes_it_on)
            try:
                write(path, port, "after")
                assert await asyncio.wait_for(switch.reload_everywhere(), 10) is True
            finally:
                loop.remove_signal_handler(signal.SIGHUP)
            assert len(relayed) == 1
            assert switch.config.server.realm == "after"

    asyncio.run(main())


def test_a_supervisor_that_does_not_pass_it_on_leaves_the_worker_to_reload_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_module, "RELOAD_RELAY_TIMEOUT", 0.2)
    path, port = tmp_path / "switch.toml", free_port()
    write(path, port, "before")
    deaf_r, deaf_w = os.pipe()

    def deaf() -> int:  # a supervisor that is stopping: SIGHUP is not passed on
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.write(deaf_w, b"x")
        time.sleep(10)
        return 0

    supervisor = forked(deaf)
    assert os.read(deaf_r, 1) == b"x"

    async def main() -> None:
        async with Rig(path, port, workers=2) as rig:
            switch = rig.switch
            assert switch.seat is not None
            switch.seat = dataclasses.replace(switch.seat, supervisor=supervisor)
            write(path, port, "after")
            assert await asyncio.wait_for(switch.reload_everywhere(), 10) is True
            assert switch.config.server.realm == "after"

    try:
        with caplog.at_level(logging.WARNING, logger="softswitch.proxy.server"):
            asyncio.run(main())
    finally:
        os.kill(supervisor, signal.SIGKILL)
        exit_code(supervisor)
        for end in (deaf_r, deaf_w):
            os.close(end)
    assert [r for r in caplog.records if "did not pass the reload on" in r.getMessage()]
