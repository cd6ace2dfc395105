"""Calls in progress when the switch dies: ``kill -9`` under load, restart, one CDR per call.

SIPp customers place calls through ``softswitch run`` to a SIPp carrier that answers: one
customer's calls are short and end normally, the other's are held for 30 s. Once every call
is answered (and half a second more, well over the store's flush interval) the switch is
killed with SIGKILL while the long calls are up, then started again on the same
configuration and database. Every answered call must then have exactly one CDR: the short
ones ``normal_clearing``, the ones the crash cut ``system_failure``, ended and billed at the
dead run's last heartbeat. All on 127.0.0.1; every SIPp process is stopped by PID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
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

import pytest
from callflow_harness import LOCAL, Sipp, Switch, free_port, read_cdrs, scenario, sipp_binary

from softswitch.call.billing import deck_cost
from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config

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


@dataclass
class World:
    workdir: Path
    port: int = field(default_factory=free_port)
    carrier_port: int = field(default_factory=free_port)
    sipps: list[Sipp] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)

    def config(self) -> Path:
        (self.workdir / "sell.csv").write_text(f"prefix,destination,rate\n44,UK,{SELL_RATE}\n")
        (self.workdir / "gw1.csv").write_text(f"prefix,destination,rate\n44,UK,{BUY_RATE}\n")
        path = self.workdir / "switch.toml"
        path.write_text(
            f"""
[server]
listen = ["udp:{LOCAL}:{self.port}"]
database = "cdr.sqlite"
realm = "e2e"
drain_timeout = 1

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


def table(db: Path, sql: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


def test_kill_9_with_calls_up_then_restart_gives_one_cdr_per_answered_call(
    world: World,
) -> None:
    world.config()
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
