"""The world of an end-to-end call test: the switch's config, its process and the SIPp
processes around it, all on 127.0.0.1 (``Net``), with the customers and carriers it is made
of. The ``net`` fixture (``conftest.py``) gives each test its own and stops what it started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callflow_harness import LOCAL, Sipp, Switch, free_port, scenario

NUMBER = "441234567"
SELL = "prefix,destination,rate\n44,UK,0.100000\n"


@dataclass
class Carrier:
    id: str
    rate: str = "0.010000"
    capacity: int | None = None
    transport: str = "udp"
    probe: float = 0.0
    extra: str = ""
    port: int = field(default_factory=free_port)
    #: The carrier's whole buy deck (CSV), when ``rate`` alone is not enough.
    deck: str | None = None


@dataclass
class Account:
    id: str = "customer"
    ips: tuple[str, ...] = (LOCAL,)
    username: str | None = None
    password: str | None = None
    tech_prefix: str = ""
    max_calls: int | None = None
    max_duration: int | None = None
    #: The account's sell deck: ``"sell"`` (``Net.sell``) or one of ``Net.decks``.
    rate_deck: str = "sell"
    #: More TOML lines for the account (``enabled = false``, ``deny = [...]``).
    extra: tuple[str, ...] = ()


@dataclass
class Net:
    """One test's world: the switch's config, its process, the SIPp processes to stop."""

    workdir: Path
    sipps: list[Sipp] = field(default_factory=list)
    switch: Switch | None = None
    port: int = field(default_factory=free_port)
    #: The customers' sell deck (CSV).
    sell: str = SELL
    #: More sell decks for the accounts, by id (CSV, written as ``{id}.csv``).
    decks: dict[str, str] = field(default_factory=dict)
    #: ``[server] database`` of the configs written (a ``postgresql://`` URL, say).
    database: str = "cdr.sqlite"

    def write_config(
        self,
        carriers: list[Carrier],
        accounts: list[Account],
        *,
        strategy: str = "priority",
        route: list[str] | None = None,
        defaults: str = "",
        billing: str = "",
        management: str = 'listen = "off"',
        route_extra: str = "",
        tail: str = "",
        workers: int | None = 1,
        server: str = "",
        database: str | None = None,
    ) -> Path:
        """The switch's TOML. ``management`` is ``[management]``'s body: off unless a test
        asks (the default 127.0.0.1:8080 may be another program's). ``route_extra``: more
        lines for the route (``quality = {...}``); ``tail``: more tables at the end
        (``[[alarms]]``); ``server``: more ``[server]`` lines; ``database``: ``[server]
        database``, ``Net.database`` unless given. ``workers``: ``[server]
        workers``; one process unless a test asks for more (the tests read one process's logs
        and its Record-Route port), None: the default, one per core
        (``tests/e2e/test_workers.py``)."""
        lines = [
            "[server]",
            f'listen = ["udp:{LOCAL}:{self.port}", "tcp:{LOCAL}:{self.port}"]',
            f'database = "{self.database if database is None else database}"',
            'realm = "e2e"',
            "drain_timeout = 2",
            'digest_algorithms = ["MD5"]',
            *([] if workers is None else [f"workers = {workers}"]),
            server,
            "[defaults]",
            "setup_timeout = 1",
            "max_duration = 30",
            "max_attempts = 5",
            "call_budget = 10",
            defaults,
            "[[rate_decks]]",
            'id = "sell"',
            'file = "sell.csv"',
        ]
        (self.workdir / "sell.csv").write_text(self.sell)
        for deck_id, deck in self.decks.items():
            (self.workdir / f"{deck_id}.csv").write_text(deck)
            lines += ["[[rate_decks]]", f'id = "{deck_id}"', f'file = "{deck_id}.csv"']
        for c in carriers:
            deck = c.deck if c.deck is not None else f"prefix,destination,rate\n44,UK,{c.rate}\n"
            (self.workdir / f"{c.id}.csv").write_text(deck)
            lines += ["[[rate_decks]]", f'id = "{c.id}"', f'file = "{c.id}.csv"']
        for a in accounts:
            lines += ["[[accounts]]", f'id = "{a.id}"', f'rate_deck = "{a.rate_deck}"']
            lines.append('routing_plan = "default"')
            if a.ips:
                lines.append("ips = [" + ", ".join(f'"{ip}"' for ip in a.ips) + "]")
            if a.username:
                lines += [f'username = "{a.username}"', f'password = "{a.password}"']
            if a.tech_prefix:
                lines.append(f'tech_prefix = "{a.tech_prefix}"')
            if a.max_calls is not None:
                lines.append(f"max_calls = {a.max_calls}")
            if a.max_duration is not None:
                lines.append(f"max_duration = {a.max_duration}")
            lines += a.extra
        for i, c in enumerate(carriers):
            lines += [
                "[[gateways]]",
                f'id = "{c.id}"',
                f'address = "{LOCAL}:{c.port}"',
                f'transport = "{c.transport}"',
                f'rate_deck = "{c.id}"',
                f"priority = {i}",
            ]
            if c.capacity is not None:
                lines.append(f"capacity = {c.capacity}")
            if c.probe:
                lines.append(f"probe = {c.probe}")
            if c.extra:
                lines.append(c.extra)
        gateways = route if route is not None else [c.id for c in carriers]
        lines += [
            "[[routes]]",
            'plan = "default"',
            'prefix = "44"',
            "gateways = [" + ", ".join(f'"{g}"' for g in gateways) + "]",
            f'strategy = "{strategy}"',
            route_extra,
        ]
        if billing:
            lines += ["[billing]", billing]
        lines += ["[management]", management, tail]
        path = self.workdir / "switch.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_switch(self, *args: Any, **kwargs: Any) -> Switch:
        config = self.write_config(*args, **kwargs)
        # Kept before it starts: a start that fails or times out still leaves a process
        # for the fixture to stop.
        self.switch = Switch(
            config, self.workdir / "cdr.sqlite", self.port, self.workdir / "switch.log"
        )
        return self.switch.start()

    def carrier(self, carrier: Carrier, name: str, calls: int = 1, **kw: Any) -> Sipp:
        transport = "t1" if carrier.transport == "tcp" else "u1"
        sipp = Sipp(
            self.workdir,
            f"carrier_{carrier.id}",
            scenario(name, self.workdir, **kw.pop("fill", {})),
            args=kw.pop("args", []),
            calls=calls,
            timeout=kw.pop("timeout", 15.0),
            transport=transport,
            port=carrier.port,
        )
        self.sipps.append(sipp)
        return sipp.start()

    def customer(
        self,
        name: str,
        *,
        number: str = NUMBER,
        args: list[str] | None = None,
        calls: int = 1,
        transport: str = "u1",
        label: str = "customer",
        fill: dict[str, str] | None = None,
        timeout: float = 15.0,
        port: int | None = None,
    ) -> Sipp:
        """A customer's SIPp calling the switch's listen port (or ``port``: a worker's own)."""
        sipp = Sipp(
            self.workdir,
            label,
            scenario(name, self.workdir, **(fill or {})),
            args=["-s", number, *(args or [])],
            calls=calls,
            timeout=timeout,
            transport=transport,
        )
        self.sipps.append(sipp)
        return sipp.start(f"{LOCAL}:{self.port if port is None else port}")

    def switch_log(self) -> str:
        assert self.switch is not None
        return self.switch.log.read_text() if self.switch.log.exists() else ""

    def explain(self) -> str:
        parts = [s.explain() for s in self.sipps]
        if self.switch is not None and self.switch.log.exists():
            parts.append("--- switch log\n" + self.switch.log.read_text()[-6000:])
        return "\n".join(parts)

    def cdrs(self, expected: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The CDRs, once ``expected`` are there (asserted: no more, no fewer)."""
        assert self.switch is not None
        rows = self.switch.cdrs(expected, timeout)
        assert len(rows) == expected, (rows, self.explain())
        for row in rows:
            row["attempts"] = json.loads(row["attempts"])
        return rows


def ok(net: Net, *sipps: Sipp) -> None:
    for sipp in sipps:
        code = sipp.wait()
        assert code == 0, f"{sipp.name} exited {code}\n{net.explain()}"


def digest(user: str, password: str, net: Net) -> list[str]:
    """SIPp's credentials; the digest uri must be the Request-URI (the switch checks it)."""
    return ["-au", user, "-ap", password, "-auth_uri", f"{NUMBER}@{LOCAL}:{net.port}"]


def attempts(row: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return [(a["gateway_id"], a["status"], a["outcome"]) for a in row["attempts"]]
