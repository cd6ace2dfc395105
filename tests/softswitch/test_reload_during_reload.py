"""A reload asked while another runs (two SIGHUPs a second apart, after two edits of the
file; a management API call during a SIGHUP's reload): the switch ends up running the file
as it is after the last ask, not as the first reload read it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy import server as server_module
from softswitch.proxy.server import Switch

CONFIG = """[server]
database = "{database}"
realm = "{realm}"
[management]
listen = "off"
"""


def test_a_reload_asked_during_a_reload_runs_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "switch.toml"
    database = tmp_path / "cdr.sqlite"
    path.write_text(CONFIG.format(database=database, realm="first"))
    config = load_config(path)
    switch = Switch(config, build_snapshot(config), path)
    read = threading.Event()  # the first reload has read the file
    go_on = threading.Event()
    loads: list[str] = []
    original = server_module._load

    def slow_load(where: Path) -> object:
        loaded = original(where)
        loads.append(loaded[0].server.realm)
        if len(loads) == 1:
            read.set()
            assert go_on.wait(10)
        return loaded

    monkeypatch.setattr(server_module, "_load", slow_load)

    async def main() -> tuple[bool, bool]:
        try:
            path.write_text(CONFIG.format(database=database, realm="second"))
            first = switch.request_reload()
            await asyncio.to_thread(read.wait, 10)
            path.write_text(CONFIG.format(database=database, realm="third"))
            again = switch.request_reload()  # the operator's second SIGHUP
            go_on.set()
            return await first, await again
        finally:
            await switch.stop(0)

    assert asyncio.run(main()) == (True, True)
    assert loads == ["second", "third"]
    assert switch.config.server.realm == "third"
    assert switch.pipeline.nonces.realm == "third"


def test_asks_during_a_reload_make_one_more_reload_not_one_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "switch.toml"
    database = tmp_path / "cdr.sqlite"
    path.write_text(CONFIG.format(database=database, realm="first"))
    config = load_config(path)
    switch = Switch(config, build_snapshot(config), path)
    read = threading.Event()
    go_on = threading.Event()
    loads: list[str] = []
    original = server_module._load

    def slow_load(where: Path) -> object:
        loaded = original(where)
        loads.append(loaded[0].server.realm)
        if len(loads) == 1:
            read.set()
            assert go_on.wait(10)
        return loaded

    monkeypatch.setattr(server_module, "_load", slow_load)

    async def main() -> None:
        try:
            first = switch.request_reload()
            await asyncio.to_thread(read.wait, 10)
            path.write_text(CONFIG.format(database=database, realm="last"))
            asks = [switch.request_reload() for _ in range(5)]
            go_on.set()
            assert all(await asyncio.gather(first, *asks))
        finally:
            await switch.stop(0)

    asyncio.run(main())
    assert loads == ["first", "last"]
    assert switch.config.server.realm == "last"


class _Seat:
    """What ``_on_sighup`` uses of a worker's seat: its answer to the supervisor."""

    def __init__(self) -> None:
        self.answered = 0

    def reloaded(self) -> None:
        self.answered += 1


def test_a_worker_answers_each_sighup_once_its_reload_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SIGHUP a worker takes is answered (``workers.reload_acks``) when the reload it
    asked for is over, two SIGHUPs during one reload included, and not before: the
    supervisor owes the replacement of a worker that died with one unanswered a SIGHUP."""
    path = tmp_path / "switch.toml"
    database = tmp_path / "cdr.sqlite"
    path.write_text(CONFIG.format(database=database, realm="first"))
    config = load_config(path)
    switch = Switch(config, build_snapshot(config), path)
    read = threading.Event()
    go_on = threading.Event()
    original = server_module._load

    def slow_load(where: Path) -> object:
        loaded = original(where)
        read.set()
        assert go_on.wait(10)
        return loaded

    monkeypatch.setattr(server_module, "_load", slow_load)
    seat = _Seat()

    async def main() -> None:
        try:
            server_module._on_sighup(switch, seat)  # type: ignore[arg-type]
            await asyncio.to_thread(read.wait, 10)
            server_module._on_sighup(switch, seat)  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            assert seat.answered == 0
            go_on.set()
            task = switch.reloading
            assert task is not None
            await task
            await asyncio.sleep(0)  # the done callbacks
            assert seat.answered == 2
        finally:
            await switch.stop(0)

    asyncio.run(main())
