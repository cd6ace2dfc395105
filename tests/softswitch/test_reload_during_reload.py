"""A reload asked while another runs (two SIGHUPs a second apart, after two edits of the
file; a management API call during a SIGHUP's reload): the switch ends up running the file
as it is after the last ask, not as the first reload read it. And a worker answers each
SIGHUP once the reload it asked for is over (``workers.reload_acks``)."""

from __future__ import annotations

import asyncio
import logging
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


class GatedReloads:
    """A switch whose every reload waits, once it has read the file, until the test lets
    that one go (:meth:`release`): reloads that take as long as the test says."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = tmp_path / "switch.toml"
        self.path.write_text(CONFIG.format(database=tmp_path / "cdr.sqlite", realm="first"))
        config = load_config(self.path)
        self.switch = Switch(config, build_snapshot(config), self.path)
        self.started = threading.Semaphore(0)
        self._gates: list[threading.Event] = [threading.Event() for _ in range(20)]
        self.loads = 0
        original = server_module._load

        def gated_load(where: Path) -> object:
            loaded = original(where)
            gate = self._gates[self.loads]
            self.loads += 1
            self.started.release()
            assert gate.wait(10)
            return loaded

        monkeypatch.setattr(server_module, "_load", gated_load)

    async def next_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, True, 10)

    def release(self, run: int) -> None:
        self._gates[run].set()

    def release_all(self) -> None:
        for gate in self._gates:
            gate.set()


def test_an_ask_is_answered_by_the_next_reload_however_many_asks_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP every second while a reload takes five: each ask is answered by the reload
    after it, never left waiting for a quiet moment (helper-86: the first ask went
    unanswered for 17 runs)."""
    rig = GatedReloads(tmp_path, monkeypatch)
    switch = rig.switch

    async def main() -> None:
        try:
            asks = [switch.request_reload()]
            await rig.next_started()  # run 0 reads the file
            for run in range(1, 4):
                asks.append(switch.request_reload())  # during run ``run - 1``
                rig.release(run - 1)
                await rig.next_started()
                await asyncio.sleep(0)
                # The asks before the run that ended are answered; the newest waits.
                assert [a.done() for a in asks] == [True] * run + [False]
            rig.release_all()
            assert all(await asyncio.gather(*asks))
        finally:
            rig.release_all()
            await switch.stop(0)

    asyncio.run(main())
    assert rig.loads == 4


def test_a_stop_ends_the_reloads_and_none_runs_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop while a reload runs and another is asked: the one running is dropped (its
    load ends in its thread, nothing is swapped in), the one asked never runs (a run after
    the stop restarted the prober of a closed engine, helper-86), and the asks are
    cancelled; an ask after the stop is answered False."""
    rig = GatedReloads(tmp_path, monkeypatch)
    switch = rig.switch
    probed = '[[gateways]]\nid = "gw"\naddress = "127.0.0.1:9"\nprobe = 30\n'
    rig.path.write_text(rig.path.read_text().replace('"first"', '"second"') + probed)

    async def main() -> None:
        first = switch.request_reload()
        await rig.next_started()
        second = switch.request_reload()
        stopping = asyncio.create_task(switch.stop(0))
        await asyncio.sleep(0.1)
        rig.release_all()
        await stopping
        assert first.cancelled()
        assert second.cancelled()
        assert await switch.request_reload() is False

    asyncio.run(main())
    assert rig.loads == 1
    assert switch.config.server.realm == "first"
    assert not switch.prober._tasks


def test_a_reload_that_fails_answers_its_asks_with_the_error_and_the_next_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a refused file (that is ``ConfigError``, answered False) but a bug in a reload:
    logged, its asks get the exception (the management API answers 500), and an ask made
    while it ran still gets its own run (it was left queued with nobody to run it,
    helper-87)."""
    rig = GatedReloads(tmp_path, monkeypatch)
    switch = rig.switch
    failing = server_module._load

    def fails_first(where: Path) -> object:
        loaded = failing(where)
        if rig.loads == 1:
            raise RuntimeError("a bug in the reload")
        return loaded

    monkeypatch.setattr(server_module, "_load", fails_first)

    async def main() -> None:
        try:
            first = switch.request_reload()
            await rig.next_started()
            second = switch.request_reload()
            rig.release_all()
            with pytest.raises(RuntimeError, match="a bug in the reload"):
                await first
            assert await asyncio.wait_for(second, 10) is True
        finally:
            await switch.stop(0)

    with caplog.at_level(logging.ERROR, logger="softswitch.proxy.server"):
        asyncio.run(main())
    assert rig.loads == 2
    assert [r for r in caplog.records if r.getMessage() == "reload failed" and r.exc_info]


def test_a_sighup_whose_reload_the_stop_cancelled_is_not_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stopped (SIGTERM alone: the supervisor restarts it) while its reload ran
    never reloaded: the SIGHUP stays unanswered, so its replacement is passed one."""
    rig = GatedReloads(tmp_path, monkeypatch)
    switch = rig.switch
    seat = _Seat()

    async def main() -> None:
        seat.asked = 1
        server_module._on_sighup(switch, seat)  # type: ignore[arg-type]
        await rig.next_started()
        stopping = asyncio.create_task(switch.stop(0))
        await asyncio.sleep(0.1)
        rig.release_all()
        await stopping

    asyncio.run(main())
    assert seat.answered == []
