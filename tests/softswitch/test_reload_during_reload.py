"""A reload asked while another runs (two SIGHUPs a second apart, after two edits of the
file; a management API call during a SIGHUP's reload): the switch ends up running the file
as it is after the last ask, not as the first reload read it. And a worker answers each
SIGHUP once the reload it asked for is over (``workers.reload_acks``)."""

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


class SlowFirstReload:
    """A switch on a file whose first reload stops once it has read the file, until
    :meth:`go_on`: the time a deck of millions of rows takes, for the test to act in."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = tmp_path / "switch.toml"
        self._database = tmp_path / "cdr.sqlite"
        self.write("first")
        config = load_config(self.path)
        self.switch = Switch(config, build_snapshot(config), self.path)
        #: The realm each reload read.
        self.loads: list[str] = []
        self._read = threading.Event()
        self._go_on = threading.Event()
        original = server_module._load

        def slow_load(where: Path) -> object:
            loaded = original(where)
            self.loads.append(loaded[0].server.realm)
            if len(self.loads) == 1:
                self._read.set()
                assert self._go_on.wait(10)
            return loaded

        monkeypatch.setattr(server_module, "_load", slow_load)

    def write(self, realm: str) -> None:
        self.path.write_text(CONFIG.format(database=self._database, realm=realm))

    async def first_read(self) -> None:
        """Once the first reload has read the file (and waits)."""
        assert await asyncio.to_thread(self._read.wait, 10)

    def go_on(self) -> None:
        self._go_on.set()


def test_a_reload_asked_during_a_reload_runs_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = SlowFirstReload(tmp_path, monkeypatch)
    switch = rig.switch

    async def main() -> tuple[bool, bool]:
        try:
            rig.write("second")
            first = switch.request_reload()
            await rig.first_read()
            rig.write("third")
            again = switch.request_reload()  # the operator's second SIGHUP
            rig.go_on()
            return await first, await again
        finally:
            await switch.stop(0)

    assert asyncio.run(main()) == (True, True)
    assert rig.loads == ["second", "third"]
    assert switch.config.server.realm == "third"
    assert switch.pipeline.nonces.realm == "third"


def test_asks_during_a_reload_make_one_more_reload_not_one_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = SlowFirstReload(tmp_path, monkeypatch)
    switch = rig.switch

    async def main() -> None:
        try:
            first = switch.request_reload()
            await rig.first_read()
            rig.write("last")
            asks = [switch.request_reload() for _ in range(5)]
            rig.go_on()
            assert all(await asyncio.gather(first, *asks))
        finally:
            await switch.stop(0)

    asyncio.run(main())
    assert rig.loads == ["first", "last"]
    assert switch.config.server.realm == "last"


class _Seat:
    """What ``_on_sighup`` uses of a worker's seat: the SIGHUPs the supervisor asked so
    far, and the answer to them."""

    def __init__(self) -> None:
        self.asked = 0
        self.answered: list[int] = []

    def reload_asked(self) -> int:
        return self.asked

    def reloaded(self, upto: int) -> None:
        self.answered.append(upto)


def test_a_worker_answers_each_sighup_once_its_reload_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP is answered with the number the supervisor had asked when its handler ran,
    once the reload it asked for is over (two SIGHUPs during one reload: once it has run
    again for the second), and not before: the supervisor owes the replacement of a worker
    that died with one unanswered a SIGHUP."""
    rig = SlowFirstReload(tmp_path, monkeypatch)
    switch = rig.switch
    seat = _Seat()

    async def main() -> None:
        try:
            seat.asked = 1
            server_module._on_sighup(switch, seat)  # type: ignore[arg-type]
            await rig.first_read()
            seat.asked = 2
            server_module._on_sighup(switch, seat)  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            assert seat.answered == []
            rig.go_on()
            task = switch.reloading
            assert task is not None
            await task
            await asyncio.sleep(0)  # the done callbacks
            assert sorted(seat.answered) == [1, 2]
            assert rig.loads == ["first", "first"]  # the second ask's own run
        finally:
            await switch.stop(0)

    asyncio.run(main())
