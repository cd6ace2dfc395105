"""Building the snapshot: decks loaded, tables per plan, deck errors with file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest
from call_support import DECKS, write_config

import lcr
from softswitch.call.snapshot import build_snapshot
from softswitch.config import ConfigError, load_config


def test_snapshot_holds_decks_tables_and_indexes(tmp_path: Path) -> None:
    snap = build_snapshot(load_config(write_config(tmp_path)))
    assert set(snap.decks) == {"sell", "a", "b"}
    assert all(isinstance(d, lcr.RateDeck) for d in snap.decks.values())
    assert set(snap.tables) == {"main"}
    assert set(snap.users) == {"alice", "bob"}
    with pytest.raises(TypeError):
        snap.accounts["x"] = snap.accounts["off"]  # type: ignore[index]


def test_accounts_for_source_most_specific_first(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {'id = "tech2"\nips = ["10.0.1.5"]': 'id = "tech2"\nips = ["10.0.1.5:5070", "10.0.0.9"]'},
    )
    snap = build_snapshot(load_config(path))
    assert [a.id for a in snap.accounts_for_source("10.0.0.9", 5060)] == ["tech2", "ipcust"]
    assert [a.id for a in snap.accounts_for_source("10.0.1.5", 5070)] == ["tech2", "tech1"]
    assert [a.id for a in snap.accounts_for_source("10.0.1.5", 5060)] == ["tech1"]
    assert snap.accounts_for_source("not-an-ip", 5060) == []
    assert snap.accounts_for_source("[::1]", 5060) == []


def test_bad_deck_row_names_file_line_and_column(tmp_path: Path) -> None:
    decks = dict(DECKS)
    decks["a.csv"] = DECKS["a.csv"] + "33,France,cheap,1,1\n"
    path = write_config(tmp_path, decks=decks)
    cfg = load_config(path)  # the config itself is fine
    with pytest.raises(ConfigError) as e:
        build_snapshot(cfg)
    problem = e.value.problems[0]
    assert problem.file.endswith("a.csv")
    assert problem.line == 5
    assert problem.column == "rate"
    assert problem.key == "rate_decks[1]"
    assert "a.csv:5" in str(e.value)


def test_source_index_agrees_with_a_linear_scan() -> None:
    import ipaddress
    import random

    from softswitch.call.snapshot import SourceIndex
    from softswitch.config import Account, IpRule

    rng = random.Random(7)
    accounts = []
    for i in range(60):
        rules = []
        for _ in range(rng.randint(1, 3)):
            prefixlen = rng.choice([32, 32, 30, 28, 24, 16])
            net = ipaddress.ip_network(
                f"10.{rng.randint(0, 2)}.{rng.randint(0, 3)}.{rng.randint(0, 255)}/{prefixlen}",
                strict=False,
            )
            rules.append(IpRule(net, rng.choice([None, None, 5060, 5062])))
        accounts.append(Account(id=f"a{i}", routing_plan="p", ips=tuple(rules)))
    index = SourceIndex(tuple(accounts))
    for _ in range(500):
        ip = f"10.{rng.randint(0, 2)}.{rng.randint(0, 3)}.{rng.randint(0, 255)}"
        port = rng.choice([5060, 5061, 5062])
        addr = ipaddress.ip_address(ip)
        expected = []
        for order, account in enumerate(accounts):
            scores = [
                (r.network.prefixlen, r.port is not None)
                for r in account.ips
                if r.matches(addr, port)
            ]
            if scores:
                best = max(scores)
                expected.append((-best[0], -int(best[1]), order, account.id))
        assert [a.id for a in index.lookup(ip, port)] == [t[3] for t in sorted(expected)]
