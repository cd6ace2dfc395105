"""A node that dies for good: the node that goes on settles its calls while it runs.

Two ``softswitch run`` nodes on one PostgreSQL (no Redis: nothing here needs it), a prepaid
customer on a deck whose connect fee of 1.00 is all a call costs. The second node carries an
answered call and is killed with SIGKILL, and is never started again. The first node's
recovery sweep finds the dead run (same host, pid gone) and writes the call's CDR
(``system_failure``) and its debit, and its own meter counts the debit at once: its
periodic ledger read is set to 300 s, so only the sweep can have told it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from callflow_harness import LOCAL, Switch
from callflow_net import Account, Carrier, Net

from loopback_ports import free_port
from postgres_tool import Postgres, postgres
from softswitch.billing import ledger
from softswitch.billing.money import to_nanos
from softswitch.store.migrations import migrate
from softswitch.store.postgres import query_postgres
from softswitch.store.postgres_connect import connect

__all__ = ["postgres"]

pytestmark = pytest.mark.e2e

T = TypeVar("T")

#: A call costs its connect fee and nothing more, however long it lasted.
CONNECT_FEE_DECK = "prefix,destination,rate,connect_fee\n44,UK,0,1.00\n"


def start_node(net: Net, carrier: Carrier, database: str, management: str) -> Switch:
    net.sell = CONNECT_FEE_DECK
    prepaid = Account(extra=('billing = "prepaid"',))
    config = net.write_config(
        [carrier],
        [prepaid],
        billing="sync_interval = 300",
        management=management,
        database=database,
    )
    net.switch = Switch(config, net.workdir / "cdr.sqlite", net.port, net.workdir / "switch.log")
    return net.switch.start()


def wait_for(probe: Callable[[], T | None], timeout: float, explain: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, explain()
        time.sleep(0.2)


def balance(port: int) -> Any:
    with urllib.request.urlopen(f"http://{LOCAL}:{port}/api/accounts/customer/balance") as r:
        return json.load(r)["live"]["balance"]


def test_a_dead_nodes_call_is_settled_and_counted_by_the_node_that_runs_on(
    net: Net, second: Net, postgres: Postgres
) -> None:
    url = postgres.database()
    migrate(url)
    with connect(url) as conn:
        at = dt.datetime.now(dt.UTC)
        ledger.book(conn, ledger.Booking("customer", "topup", to_nanos(Decimal(10)), "e2e", at))
    gw = Carrier("gw1")
    carrier = net.carrier(gw, "uas_answer", calls=10, timeout=120)
    api = free_port()
    survivor = start_node(net, gw, url, f'listen = "{LOCAL}:{api}"')
    doomed = start_node(second, gw, url, 'listen = "off"')
    try:
        assert balance(api) == "10.000000"
        held = second.customer("uac_call", args=["-d", "600000"], label="held", timeout=120)

        def open_calls() -> list[Any]:
            with connect(url) as conn:
                return conn.execute("SELECT run_id FROM open_calls").fetchall()

        (row,) = wait_for(open_calls, 20, second.explain)  # answered: its mark is written
        doomed_run = row[0]
        assert doomed.process is not None
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        held.stop()

        # No restart of the dead node: the survivor's sweep (every 5 s) settles its call.
        (cdr,) = wait_for(lambda: query_postgres(url), 30, net.explain)
        assert (cdr.end_reason, cdr.hangup_side) == ("system_failure", "switch"), cdr
        assert cdr.sell_cost == Decimal("1.000000"), cdr
        assert open_calls() == []
        with connect(url) as conn:
            debits = conn.execute(
                "SELECT amount, run_id FROM ledger WHERE kind = 'call'"
            ).fetchall()
        assert [(int(d[0]), d[1]) for d in debits] == [(-to_nanos(Decimal(1)), doomed_run)]
        # The survivor's meter knows: told by its sweep, not by a ledger read (300 s away).
        wait_for(lambda: balance(api) == "9.000000", 10, net.explain)
        assert "closed 1 calls of run" in net.switch_log()
    finally:
        survivor.stop()
        doomed.stop()
        carrier.stop()
