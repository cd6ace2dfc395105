"""``softswitch run --workers 2``: a reload (SIGHUP) that comes while a killed worker's
replacement is starting reaches the replacement once it listens, so it routes by the
reloaded configuration as its sibling does. The replacement is slow to start here (a large
sell deck to load, and SIGSTOP while the reload comes), so the SIGHUP comes while it still
ignores the signal."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from callflow_net import Account, Carrier, Net
from test_workers import calls_until_both_workers, wait_for, worker_pids, workers_of_calls

pytestmark = pytest.mark.e2e

#: ~1 s to load per worker: the window in which a replacement ignores SIGHUP.
BIG_SELL = "prefix,destination,rate\n44,UK,0.100000\n" + "".join(
    f"45{i:07d},X,0.1000\n" for i in range(300_000)
)


def reloaded(net: Net) -> set[int]:
    """The workers that logged a reload."""
    log = net.switch_log()
    return set(map(int, re.findall(r"worker=(\d+) .*configuration reloaded", log)))


def test_a_sighup_while_a_replacement_starts_reaches_it_and_its_calls_follow(net: Net) -> None:
    net.sell = BIG_SELL
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    switch = net.start_switch([gw1, gw2], [Account()], route=["gw1"], workers=2)
    path = switch.config
    routed_to_gw2 = path.read_text().replace('gateways = ["gw1"]', 'gateways = ["gw2"]')
    assert routed_to_gw2 != path.read_text()
    first = worker_pids(net)
    os.kill(first[1], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (new := worker_pids(net).get(1)) == first[1]:
        assert time.monotonic() < deadline, net.explain()
        time.sleep(0.005)
    assert new is not None
    # Held while it loads its decks (it ignores SIGHUP until it can reload) so that the
    # reload surely comes before it listens, however loaded the machine.
    os.kill(new, signal.SIGSTOP)
    try:
        # The operator routes to gw2 and reloads (only the file is written: the decks the
        # replacement is reading stay as they are).
        path.write_text(routed_to_gw2)
        switch.signal(signal.SIGHUP)
        wait_for(lambda: "reload: passing SIGHUP" in net.switch_log(), "the reload", net)
    finally:
        os.kill(new, signal.SIGCONT)
    wait_for(lambda: reloaded(net) == {0, 1}, "both workers reloaded", net, 30)
    assert f"passing SIGHUP to it now it listens (pid {new})" in net.switch_log(), net.explain()
    # Calls through either worker now go to gw2.
    c1 = net.carrier(gw1, "uas_answer", calls=20)
    c2 = net.carrier(gw2, "uas_answer", calls=20)
    placed = calls_until_both_workers(net)
    time.sleep(0.5)
    rows = net.cdrs(placed)
    assert {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}, net.explain()
    assert {r["gateway_id"] for r in rows} == {"gw2"}, net.explain()
    c1.stop()
    c2.stop()
