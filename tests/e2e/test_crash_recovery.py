"""Calls in progress when the switch dies: ``kill -9`` under load, restart, one CDR per call.

SIPp customers place calls through ``softswitch run`` to a SIPp carrier that answers: one
customer's calls are short and end normally, the other's are held for 30 s. Once every call
is answered (and half a second more, well over the store's flush interval) the switch is
killed with SIGKILL while the long calls are up, then started again on the same
configuration and database. Every answered call must then have exactly one CDR: the short
ones ``normal_clearing``, the ones the crash cut ``system_failure``, ended and billed at the
dead run's last heartbeat. All on 127.0.0.1; every SIPp process is stopped by PID.

The first test is one process (``workers = 1``: one run in ``switch_runs``). With several
workers each worker is a run of its own; the others check that killing the whole switch (the
supervisor, whose workers die with it) settles every dead worker's calls at the restart, and
that killing one worker has its calls settled by its successor while the switch runs on,
on SQLite and on PostgreSQL. Calls from one SIPp instance share a source port, so the kernel
hands them all to one worker: held calls come from new instances until both workers have some.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from callflow_harness import LOCAL, Sipp, Switch, free_port, read_cdrs, scenario, sipp_binary
from psycopg.rows import dict_row

from postgres_tool import Postgres, postgres
from softswitch.call.billing import deck_cost
from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.store.migrations import migrate

__all__ = ["postgres"]

pytestmark = pytest.mark.e2e

NUMBER = "441234567"
SELL_RATE = Decimal("0.100000")
BUY_RATE = Decimal("0.010000")
#: Calls per second and calls per customer: about 5 s of placing calls in all.
RATE = 20
SHORT_CALLS = 30
LONG_CALLS = 70
#: The store commits within milliseconds of an answer; the kill comes this long after the
#: last one, so every answered call is past the guarantee's bound.
SETTLE = 0.5

_ANSWERED = re.compile(r"call_id=(\S+) answered by gateway=")
_ANSWERED_BY = re.compile(r"worker=(\d+) .*call_id=(\S+) answered by gateway=")
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
#: Held calls per SIPp instance, and instances at most (each a coin toss for the worker).
HELD_PER = 10
HELD_INSTANCES = 12


@dataclass
class World:
    workdir: Path
    port: int = field(default_factory=free_port)
    carrier_port: int = field(default_factory=free_port)
    sipps: list[Sipp] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)
    #: ``[server] database``: the SQLite file, or a ``postgresql://`` URL.
    url: str = "cdr.sqlite"

    def config(self, workers: int = 1) -> Path:
        (self.workdir / "sell.csv").write_text(f"prefix,destination,rate\n44,UK,{SELL_RATE}\n")
        (self.workdir / "gw1.csv").write_text(f"prefix,destination,rate\n44,UK,{BUY_RATE}\n")
        path = self.workdir / "switch.toml"
        path.write_text(
            f"""
[server]
listen = ["udp:{LOCAL}:{self.port}"]
database = "{self.url}"
realm = "e2e"
drain_timeout = 1
workers = {workers}

[management]
listen = "off"

[defaults]
setup_timeout = 2
max_duration = 120
max_attempts = 2
call_budget = 10

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "gw1"
file = "gw1.csv"

[[accounts]]
id = "customer"
ips = ["{LOCAL}"]
rate_deck = "sell"
routing_plan = "default"

[[gateways]]
id = "gw1"
address = "{LOCAL}:{self.carrier_port}"
rate_deck = "gw1"

[[routes]]
plan = "default"
prefix = "44"
gateways = ["gw1"]
"""
        )
        return path

    def switch(self, log: str) -> Switch:
        switch = Switch(
            self.workdir / "switch.toml", self.database, self.port, self.workdir / log
        ).start()
        self.switches.append(switch)
        return switch

    @property
    def database(self) -> Path:
        return self.workdir / "cdr.sqlite"

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """``sql`` on the switch's database, SQLite or PostgreSQL (timestamps as text)."""
        if not self.url.startswith("postgresql://"):
            return table(self.database, sql)
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            rows = conn.execute(sql).fetchall()
        return [{k: _text(v) for k, v in row.items()} for row in rows]

    def sipp(self, sipp: Sipp, target: str | None = None) -> Sipp:
        self.sipps.append(sipp)
        return sipp.start(target)

    def explain(self) -> str:
        parts = [s.explain() for s in self.sipps]
        for switch in self.switches:
            if switch.log.exists():
                parts.append(f"--- {switch.log.name}\n{switch.log.read_text()[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sipp_binary()
    w = World(tmp_path)
    try:
        yield w
    finally:
        for sipp in w.sipps:
            sipp.stop()
        for switch in w.switches:
            switch.stop()


def answered_call_ids(log: Path) -> list[str]:
    """The Call-IDs the switch logged as answered (one INFO line per 2xx relayed)."""
    return _ANSWERED.findall(log.read_text(errors="replace")) if log.exists() else []


def answered_by_carrier(carrier: Sipp, expected: int) -> set[str]:
    """The Call-IDs the carrier answered (200 OK to an INVITE sent), from its message log."""
    deadline = time.monotonic() + 5
    while True:
        ids = set()
        for block in re.split(r"^-{10,}.*$", carrier.messages(), flags=re.MULTILINE):
            if (
                "message sent" in block
                and re.search(r"^SIP/2.0 200 OK", block, re.MULTILINE)
                and re.search(r"^CSeq: 1 INVITE", block, re.MULTILINE)
            ):
                found = re.search(r"^Call-ID: (\S+)", block, re.MULTILINE)
                if found:
                    ids.add(found.group(1))
        if len(ids) >= expected or time.monotonic() > deadline:
            return ids
        time.sleep(0.1)


def _text(value: object) -> object:
    """A PostgreSQL value as SQLite gives it: timestamps as ISO text, numerics as text."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(value, Decimal):
        return str(value)
    return value


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def table(db: Path, sql: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


def test_kill_9_with_calls_up_then_restart_gives_one_cdr_per_answered_call(
    world: World,
) -> None:
    world.config(workers=1)  # one process: one run (the worker cases are below)
    first = world.switch("switch.log")
    carrier = world.sipp(
        Sipp(
            world.workdir,
            "carrier",
            scenario("uas_answer", world.workdir),
            calls=SHORT_CALLS + LONG_CALLS,
            timeout=60,
            port=world.carrier_port,
        )
    )
    target = f"{LOCAL}:{world.port}"
    short = world.sipp(
        Sipp(
            world.workdir,
            "short",
            scenario("uac_call", world.workdir),
            args=["-s", NUMBER, "-r", str(RATE), "-d", "300", "-buff_size", "4194304"],
            calls=SHORT_CALLS,
            timeout=20,
        ),
        target,
    )
    held = world.sipp(
        Sipp(
            world.workdir,
            "held",
            scenario("uac_call", world.workdir),
            args=["-s", NUMBER, "-r", str(RATE), "-d", "30000", "-buff_size", "4194304"],
            calls=LONG_CALLS,
            timeout=60,
        ),
        target,
    )
    # The short calls end normally; then wait for every long call to be answered.
    assert short.wait(timeout=25) == 0, world.explain()
    expected = SHORT_CALLS + LONG_CALLS
    deadline = time.monotonic() + 15
    while len(answered_call_ids(first.log)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    answered = answered_call_ids(first.log)
    assert len(answered) == expected, world.explain()
    time.sleep(SETTLE)
    # And a heartbeat after the answers (the first comes 5 s after the start), so the cut
    # calls have something to be billed up to.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (run,) = table(world.database, "SELECT started_at, heartbeat_at FROM switch_runs")
        if run["heartbeat_at"] > run["started_at"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("no heartbeat within 10 s")

    assert first.process is not None
    first.signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = dt.datetime.now(dt.UTC)
    assert held.process is not None
    assert held.process.poll() is None  # the long calls were still up at the kill

    # Before the restart: the crash left the long calls open, the short ones recorded.
    (dead,) = table(world.database, "SELECT * FROM switch_runs")
    assert dead["stopped_at"] is None
    assert len(table(world.database, "SELECT 1 FROM open_calls")) == LONG_CALLS
    assert len(read_cdrs(world.database)) == SHORT_CALLS

    world.switch("switch-restart.log")  # recovery runs before "ready"
    rows = read_cdrs(world.database)
    by_call = Counter(r["call_id"] for r in rows)
    assert [c for c, n in by_call.items() if n > 1] == []  # no duplicates
    assert sorted(by_call) == sorted(answered), world.explain()  # every answered call: one CDR
    assert set(by_call) == answered_by_carrier(carrier, expected)  # as the carrier saw them
    reasons = Counter(r["end_reason"] for r in rows)
    assert reasons == {"normal_clearing": SHORT_CALLS, "system_failure": LONG_CALLS}

    heartbeat = dt.datetime.fromisoformat(dead["heartbeat_at"])
    billed = 0
    snapshot = build_snapshot(load_config(world.workdir / "switch.toml"))
    assert heartbeat <= killed_at
    for row in rows:
        if row["end_reason"] != "system_failure":
            continue
        answer_at = dt.datetime.fromisoformat(row["answer_at"])
        assert (row["status"], row["q850"], row["hangup_side"]) == (200, 41, "switch")
        assert (row["account_id"], row["gateway_id"]) == ("customer", "gw1")
        assert row["end_at"] == dead["heartbeat_at"] or (
            answer_at > heartbeat and row["end_at"] == row["answer_at"]
        )
        duration = max(0.0, round((heartbeat - answer_at).total_seconds(), 3))
        assert row["duration"] == pytest.approx(duration, abs=0.0015)
        assert row["billsec"] == math.ceil(row["duration"])
        billed += row["duration"] > 0
        # Rated as a normal CDR is: the same decks, for the billed seconds, at the answer.
        number, billsec = row["callee_normalised"], row["billsec"]
        sell = deck_cost(snapshot, "sell", number, answer_at, billsec)
        buy = deck_cost(snapshot, "gw1", number, answer_at, billsec)
        assert sell is not None
        assert buy is not None
        assert (Decimal(row["sell_cost"]), Decimal(row["buy_cost"])) == (sell, buy)
        assert "system failure: run " in row["detail"]
    assert billed == LONG_CALLS  # all answered before that heartbeat: billed up to it
    assert table(world.database, "SELECT * FROM open_calls") == []
    runs = {r["run_id"]: r for r in table(world.database, "SELECT * FROM switch_runs")}
    assert runs[dead["run_id"]]["recovered_calls"] == LONG_CALLS
    carrier.stop()
    held.stop()


# ------------------------------------------------------------------------------- workers


@dataclass
class CallsUp:
    """Calls through a switch of two workers: held ones on both, short ones ended."""

    carrier: Sipp
    held: list[Sipp]
    short: int
    #: Call-ID -> the worker that answered it (every answered call).
    answered: dict[str, int]
    #: Call-ID -> run id, of the calls left open (the held ones).
    open_calls: dict[str, str]


def answered_by_worker(log: Path) -> dict[str, int]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return {call: int(worker) for worker, call in _ANSWERED_BY.findall(text)}


def calls_up_on_both_workers(world: World, switch: Switch, short_calls: int = 20) -> CallsUp:
    """Held calls on both workers (new SIPp instances until both have some), then short calls
    that end normally; returns once a heartbeat of each run is later than its calls' answers,
    so a cut call has something to be billed up to."""
    carrier = world.sipp(
        Sipp(
            world.workdir,
            "carrier",
            scenario("uas_answer", world.workdir),
            calls=HELD_PER * HELD_INSTANCES + short_calls,
            timeout=120,
            port=world.carrier_port,
        )
    )
    target = f"{LOCAL}:{world.port}"
    held: list[Sipp] = []
    while len(held) < HELD_INSTANCES:
        held.append(
            world.sipp(
                Sipp(
                    world.workdir,
                    f"held{len(held)}",
                    scenario("uac_call", world.workdir),
                    args=["-s", NUMBER, "-r", str(RATE), "-d", "60000", "-buff_size", "4194304"],
                    calls=HELD_PER,
                    timeout=120,
                ),
                target,
            )
        )
        deadline = time.monotonic() + 15
        while len(answered_by_worker(switch.log)) < HELD_PER * len(held):
            assert time.monotonic() < deadline, world.explain()
            time.sleep(0.05)
        if set(answered_by_worker(switch.log).values()) == {0, 1}:
            break
    assert set(answered_by_worker(switch.log).values()) == {0, 1}, world.explain()
    short = world.sipp(
        Sipp(
            world.workdir,
            "short",
            scenario("uac_call", world.workdir),
            args=["-s", NUMBER, "-r", str(RATE), "-d", "300", "-buff_size", "4194304"],
            calls=short_calls,
            timeout=30,
        ),
        target,
    )
    assert short.wait(timeout=35) == 0, world.explain()
    answered = answered_by_worker(switch.log)
    assert len(answered) == HELD_PER * len(held) + short_calls, world.explain()
    time.sleep(SETTLE)
    deadline = time.monotonic() + 15
    while True:
        late = world.rows(
            "SELECT r.run_id FROM switch_runs r JOIN open_calls o ON o.run_id = r.run_id"
            " WHERE r.stopped_at IS NULL GROUP BY r.run_id, r.heartbeat_at"
            " HAVING r.heartbeat_at <= MAX(o.answer_at)"
        )
        if not late:
            break
        assert time.monotonic() < deadline, f"no heartbeat after the answers: {late}"
        time.sleep(0.1)
    open_calls = {r["call_id"]: r["run_id"] for r in world.rows("SELECT * FROM open_calls")}
    assert len(open_calls) == HELD_PER * len(held), world.explain()
    return CallsUp(carrier, held, short_calls, answered, open_calls)


def assert_settled(
    world: World, cut: dict[str, str], dead: dict[str, dict[str, Any]], cdrs: list[dict[str, Any]]
) -> None:
    """Each call of ``cut`` (Call-ID -> run) has one CDR, ``system_failure``, ended at its
    dead run's last heartbeat and billed up to it; its run is marked recovered."""
    by_call = {r["call_id"]: r for r in cdrs}
    for call_id, run_id in cut.items():
        row = by_call[call_id]
        run = dead[run_id]
        assert row["end_reason"] == "system_failure", row
        assert (row["status"], row["q850"], row["hangup_side"]) == (200, 41, "switch")
        assert _when(row["end_at"]) == _when(run["heartbeat_at"]), (row, run)
        assert row["billsec"] >= 1  # answered before that heartbeat: billed up to it
        assert f"system failure: run {run_id} " in row["detail"]
    runs = {r["run_id"]: r for r in world.rows("SELECT * FROM switch_runs")}
    for run_id in set(cut.values()):
        assert runs[run_id]["recovered_at"] is not None
        assert runs[run_id]["recovered_calls"] == sum(1 for r in cut.values() if r == run_id)


def test_kill_9_of_a_switch_of_two_workers_then_restart_settles_every_workers_calls(
    world: World,
) -> None:
    """The supervisor killed: its workers die with it (``PR_SET_PDEATHSIG``), the restart
    comes at once (the killed workers may not even be reaped yet: a zombie's run is dead),
    and every dead worker's open calls are settled; no ended call's CDR is lost."""
    world.config(workers=2)
    first = world.switch("switch.log")
    up = calls_up_on_both_workers(world, first)
    assert first.process is not None
    first.signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    runs = {r["run_id"]: r for r in world.rows("SELECT * FROM switch_runs")}
    assert len(runs) == 2  # one run per worker
    assert all(r["stopped_at"] is None for r in runs.values())
    assert len(set(up.open_calls.values())) == 2  # both workers' runs had calls up
    assert len(read_cdrs(world.database)) == up.short  # the ended calls, all recorded

    second = world.switch("switch-restart.log")  # recovery runs before "ready"
    cdrs = read_cdrs(world.database)
    by_call = Counter(r["call_id"] for r in cdrs)
    assert [c for c, n in by_call.items() if n > 1] == []
    assert sorted(by_call) == sorted(up.answered), world.explain()
    assert set(by_call) == answered_by_carrier(up.carrier, len(up.answered))
    reasons = Counter(r["end_reason"] for r in cdrs)
    assert reasons == {"normal_clearing": up.short, "system_failure": len(up.open_calls)}
    dead = {r["run_id"]: r for r in world.rows("SELECT * FROM switch_runs")}
    assert_settled(world, up.open_calls, dead, cdrs)
    assert table(world.database, "SELECT * FROM open_calls") == []
    restart_log = second.log.read_text(errors="replace")
    for run_id in runs:  # not taken for live (a killed worker not yet reaped is dead)
        assert not re.search(rf"run {run_id} \(pid \d+ on \S+\) looks alive", restart_log)
    for sipp in up.held:
        sipp.stop()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_kill_9_of_one_worker_settles_its_calls_while_the_switch_runs_on(
    world: World, database: str, request: pytest.FixtureRequest
) -> None:
    """One worker killed while calls are up: the supervisor starts a new one, which closes
    the dead worker's calls (``system_failure``, billed to its last heartbeat) before it
    takes calls; the other worker's calls stay up, and the switch is never restarted."""
    if database == "postgres":
        pg: Postgres = request.getfixturevalue("postgres")
        world.url = pg.database()
        migrate(world.url)
    world.config(workers=2)
    switch = world.switch("switch.log")
    up = calls_up_on_both_workers(world, switch)
    assert switch.process is not None
    victim = 1
    pid = {int(i): int(p) for i, p in _STARTED.findall(switch.log.read_text())}[victim]
    (run,) = world.rows(f"SELECT * FROM switch_runs WHERE pid = {pid} AND stopped_at IS NULL")
    cut = {c: r for c, r in up.open_calls.items() if r == run["run_id"]}
    kept = {c: r for c, r in up.open_calls.items() if r != run["run_id"]}
    assert cut
    assert kept  # the other worker's calls, which must stay up
    assert {up.answered[c] for c in cut} == {victim}

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not world.rows(
        f"SELECT 1 FROM switch_runs WHERE run_id = '{run['run_id']}' AND recovered_at IS NOT NULL"
    ):
        assert time.monotonic() < deadline, world.explain()
        time.sleep(0.1)
    assert switch.process.poll() is None  # the switch ran on: no restart of the whole
    log = switch.log.read_text(errors="replace")
    assert re.search(rf"worker {victim} \(pid {pid}\) died \(signal SIGKILL\)", log)
    assert len(_STARTED.findall(log)) == 3  # the two workers and the killed one's successor

    cdrs = world.rows("SELECT * FROM cdrs")
    by_call = Counter(r["call_id"] for r in cdrs)
    assert [c for c, n in by_call.items() if n > 1] == []
    dead = {r["run_id"]: r for r in world.rows("SELECT * FROM switch_runs")}
    assert_settled(world, cut, dead, cdrs)
    # The ended calls are all there; the other worker's calls are still up, not settled.
    reasons = Counter(r["end_reason"] for r in cdrs)
    assert reasons == {"normal_clearing": up.short, "system_failure": len(cut)}
    still_open = {r["call_id"] for r in world.rows("SELECT call_id FROM open_calls")}
    assert still_open == set(kept)
    assert dead[next(iter(kept.values()))]["recovered_at"] is None
    for sipp in up.held:
        sipp.stop()
