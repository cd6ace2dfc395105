"""The switch on PostgreSQL: ``[server] database`` a ``postgresql://`` URL, a SIPp call
through it, and its CDR in PostgreSQL; an unmigrated database refused at start, naming
``softswitch migrate``; a prepaid account metered from the PostgreSQL ledger (admitted on
its balance, its debit in the ledger, an account without credit refused until an
operator's ``softswitch topup`` on that database)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from callflow_net import NUMBER, Account, Carrier, Net, ok

import softswitch
from postgres_tool import Postgres, postgres
from softswitch.billing import ledger
from softswitch.billing.money import to_nanos
from softswitch.store.migrations import latest_version, migrate
from softswitch.store.postgres import query_postgres
from softswitch.store.postgres_connect import connect
from softswitch.store.records import CdrRecord

__all__ = ["postgres"]

pytestmark = pytest.mark.e2e


def test_a_call_through_the_switch_lands_its_cdr_in_postgres(net: Net, postgres: Postgres) -> None:
    url = postgres.database()
    assert migrate(url) == list(range(1, latest_version(url) + 1))
    net.database = url
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "500"])
    ok(net, customer, carrier)
    cdrs = query_postgres(url)
    for _ in range(100):  # the writer commits within milliseconds; bounded, not timed
        if cdrs:
            break
        time.sleep(0.05)
        cdrs = query_postgres(url)
    (cdr,) = cdrs
    assert cdr.end_reason == "normal_clearing"
    assert cdr.gateway_id == "gw1"
    assert cdr.callee_dialed == NUMBER
    assert cdr.billsec >= 1
    assert cdr.sell_cost is not None
    assert [(a.gateway_id, a.status, a.outcome) for a in cdr.attempts] == [("gw1", 200, "answered")]
    assert not (net.workdir / "cdr.sqlite").exists()
    assert net.switch is not None
    assert net.switch.stop() == 0
    with psycopg.connect(url) as conn:
        runs = conn.execute("SELECT stopped_at, heartbeat_at FROM switch_runs").fetchall()
        left = conn.execute("SELECT count(*) FROM open_calls").fetchone()
    assert len(runs) == 1
    assert runs[0][0] is not None  # stopped cleanly
    assert left == (0,)


def run_until_refused(config: Path) -> subprocess.CompletedProcess[str]:
    """``softswitch run`` expected to refuse to start (bounded: it exits at once)."""
    return subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "run", "--config", str(config)],
        cwd=Path(softswitch.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_switch_refuses_an_unmigrated_database(net: Net, postgres: Postgres) -> None:
    url = postgres.database()
    net.database = url
    result = run_until_refused(net.write_config([Carrier("gw1")], [Account()]))
    assert result.returncode == 2, result.stderr
    assert f"schema version 0, this switch needs {latest_version(url)};" in result.stderr
    assert "softswitch migrate" in result.stderr


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``softswitch ARGS --config FILE`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "softswitch.cli", *args, "--config", str(config)],
        cwd=Path(softswitch.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def pg_cdrs(url: str, expected: int) -> list[CdrRecord]:
    """The CDRs once ``expected`` are committed (bounded wait, then asserted exactly)."""
    cdrs = query_postgres(url)
    for _ in range(100):
        if len(cdrs) >= expected:
            break
        time.sleep(0.05)
        cdrs = query_postgres(url)
    assert len(cdrs) == expected, cdrs
    return cdrs


def test_a_prepaid_account_is_metered_from_the_postgres_ledger(
    net: Net, postgres: Postgres
) -> None:
    url = postgres.database()
    migrate(url)
    net.database = url
    with connect(url) as conn:
        at = dt.datetime.now(dt.UTC)
        ledger.book(conn, ledger.Booking("paid", "topup", to_nanos(Decimal("1")), "setup", at))
    gw = Carrier("gw1")
    paid = Account("paid", tech_prefix="71#", extra=('billing = "prepaid"',))
    broke = Account("broke", tech_prefix="72#", extra=('billing = "prepaid"',))
    # No periodic ledger read during the test: only the one before a refusal can see it.
    switch = net.start_switch([gw], [paid, broke], billing="sync_interval = 30")
    carrier = net.carrier(gw, "uas_answer", calls=2)
    ok(net, net.customer("uac_call", number="71%23" + NUMBER, args=["-d", "500"], label="paid"))
    refused = net.customer(
        "uac_refused", number="72%23" + NUMBER, fill={"EXPECTED": "402"}, label="refused"
    )
    ok(net, refused)
    done = cli(switch.config, "topup", "broke", "1.00", "--note", "e2e top-up")
    assert done.returncode == 0, (done.stdout, done.stderr)
    admitted = net.customer(
        "uac_call", number="72%23" + NUMBER, args=["-d", "500"], label="admitted"
    )
    ok(net, admitted, carrier)

    paid_call, refusal, broke_call = pg_cdrs(url, 3)
    assert (refusal.account_id, refusal.end_reason) == ("broke", "insufficient_balance")
    assert (refusal.status, refusal.q850, refusal.attempts) == (402, 21, ())
    assert re.search(r"^Reason: Q\.850;cause=21", refused.messages(), re.MULTILINE)
    with connect(url) as conn:
        (run_id,) = conn.execute("SELECT run_id FROM switch_runs").fetchone()
        for call, account in ((paid_call, "paid"), (broke_call, "broke")):
            assert (call.account_id, call.end_reason) == (account, "normal_clearing")
            assert call.sell_cost is not None
            assert call.sell_cost > 0
            topup, debit = ledger.entries(conn, account)
            assert (topup.kind, topup.amount, topup.run_id) == ("topup", to_nanos(Decimal(1)), None)
            assert (debit.kind, debit.reference, debit.run_id) == ("call", call.call_id, run_id)
            assert debit.amount == -to_nanos(call.sell_cost)
            assert debit.balance_after == topup.amount + debit.amount
        assert ledger.entries(conn, "broke")[0].reference == "e2e top-up"
        sums, _ = ledger.balances(conn)
    shown = cli(switch.config, "balance", "--csv")
    assert shown.returncode == 0, (shown.stdout, shown.stderr)
    for row in csv.DictReader(io.StringIO(shown.stdout)):
        assert to_nanos(Decimal(row["balance"])) == sums[row["account"]]
    assert not (net.workdir / "cdr.sqlite").exists()
