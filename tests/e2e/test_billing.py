"""Billing control end to end: prepaid and postpaid accounts metered by ``softswitch run``.

SIPp customers call through the switch to a SIPp carrier that answers and waits; the switch
must refuse a call the credit cannot start (402, Q.850 cause 21, no gateway tried), admit
the next one once an operator's ``softswitch topup`` has been booked while it runs, and cut
answered calls (BYE to both sides, Reason Q.850 cause 16) when their credit runs out. Each
test then checks that the three records agree: the CDR (``credit_exhausted``, billsec never
beyond the covered seconds, sell cost), the ledger (one ``call`` row per answered billed
call, amount = -sell_cost, each ``balance_after`` the running sum) and the balance (the
ledger's sum). The crash test kills the switch with SIGKILL under load and checks that the
restart debits each call up then exactly once. All on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from callflow_harness import Switch
from callflow_net import NUMBER, Account, Carrier, Net, ok

import softswitch
from softswitch.billing import ledger
from softswitch.billing.money import to_nanos

pytestmark = pytest.mark.e2e

HEADER = "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
#: 0.60 a minute: 0.01 a second, 0.06 per 6 s, 0.60 per minute.
RATE = "0.600000"


def deck(increment: int, connect_fee: str = "0") -> str:
    return HEADER + f"44,UK,{RATE},{connect_fee},{increment},{increment}\n"


def dialled(tech_prefix: str) -> str:
    """The Request-URI user for an account's tech prefix (``#`` escaped for SIPp's -s)."""
    return tech_prefix.replace("#", "%23") + NUMBER


def prepaid(*lines: str) -> tuple[str, ...]:
    return ('billing = "prepaid"', *lines)


def nanos(amount: str | None) -> int:
    assert amount is not None
    return to_nanos(Decimal(amount))


def top_up(net: Net, account: str, amount: str) -> None:
    """Setup: a top-up booked straight into the ledger (before the switch starts)."""
    with ledger.connect(net.workdir / "cdr.sqlite", create=True) as conn:
        booking = ledger.Booking(account, "topup", nanos(amount), "setup", dt.datetime.now(dt.UTC))
        ledger.book(conn, booking)


def table(db: Path, sql: str, *params: object) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]


def ledger_rows(net: Net, account: str | None = None) -> list[dict[str, Any]]:
    db = net.workdir / "cdr.sqlite"
    if account is None:
        return table(db, "SELECT * FROM ledger ORDER BY id")
    return table(db, "SELECT * FROM ledger WHERE account_id = ? ORDER BY id", account)


def balances(net: Net) -> dict[str, int]:
    with ledger.connect(net.workdir / "cdr.sqlite") as conn:
        return ledger.balances(conn)[0]


def assert_chain(rows: list[dict[str, Any]]) -> None:
    """Each row's balance_after is the sum of its account's amounts up to and including it."""
    running: Counter[str] = Counter()
    for row in rows:
        running[row["account_id"]] += row["amount"]
        assert row["balance_after"] == running[row["account_id"]], rows


def assert_debited(net: Net, cdrs: list[dict[str, Any]]) -> None:
    """Each answered CDR has exactly one ``call`` row: its Call-ID, amount -sell_cost."""
    calls = [r for r in ledger_rows(net) if r["kind"] == "call"]
    by_ref = Counter(r["reference"] for r in calls)
    assert [ref for ref, n in by_ref.items() if n > 1] == []  # no call debited twice
    answered = {c["call_id"]: c for c in cdrs if c["answer_at"] is not None}
    assert set(by_ref) == set(answered)
    for row in calls:
        cdr = answered[row["reference"]]
        assert row["account_id"] == cdr["account_id"]
        assert row["amount"] == -nanos(cdr["sell_cost"]), (row, cdr)


def reasons_in_byes(sipp_messages: str) -> dict[str, str]:
    """Call-ID -> Reason header of each BYE SIPp received (from its -trace_msg log)."""
    found = {}
    for block in re.split(r"^-{10,}.*$", sipp_messages, flags=re.MULTILINE):
        if "message received" in block and re.search(r"^BYE ", block, re.MULTILINE):
            call_id = re.search(r"^Call-ID: *(\S+)", block, re.MULTILINE)
            reason = re.search(r"^Reason: *(.+?)\s*$", block, re.MULTILINE)
            assert call_id is not None
            found[call_id.group(1)] = reason.group(1) if reason else ""
    return found


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``softswitch ARGS --config FILE`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "softswitch.cli", *args, "--config", str(config)],
        cwd=Path(softswitch.__file__).parents[1],  # not the repository root: see Switch
        capture_output=True,
        text=True,
        timeout=30,
    )


# ----------------------------------------------------------------------------- cut-off

#: account, tech prefix, increment (initial = subsequent), connect fee, balance, the second
#: the credit runs out at, the sell cost of that many seconds.
DECKS = [
    ("m60", "61#", 60, "0", "0.600000", 60, "0.600000"),  # exactly one minute
    ("s6", "62#", 6, "0", "0.180000", 18, "0.180000"),  # exactly three increments
    ("s6x", "63#", 6, "0", "0.150000", 12, "0.120000"),  # 15 s of credit: 18 s unaffordable
    ("s1", "64#", 1, "0.020000", "0.090000", 7, "0.090000"),  # connect fee + 7 x 0.01
]


def test_prepaid_calls_are_cut_when_the_credit_runs_out_for_60_6_and_1_second_decks(
    net: Net,
) -> None:
    """One switch, four prepaid accounts with their own decks, all calling at once (the
    minute-long call is the only one of the file)."""
    net.decks = {f"deck_{a}": deck(inc, fee) for a, _, inc, fee, *_ in DECKS}
    accounts = [
        Account(a, tech_prefix=p, rate_deck=f"deck_{a}", max_duration=120, extra=prepaid())
        for a, p, *_ in DECKS
    ]
    for a, *_, balance, _, _ in DECKS:
        top_up(net, a, balance)
    gw = Carrier("gw1")
    net.start_switch([gw], accounts)
    carrier = net.carrier(gw, "uas_answer", calls=len(DECKS), timeout=85)
    customers = [
        net.customer("uac_wait_bye_reason", number=dialled(p), label=a, timeout=80)
        for a, p, *_ in DECKS
    ]
    ok(net, *reversed(customers), carrier)  # the shortest first: each wait is bounded

    cdrs = {c["account_id"]: c for c in net.cdrs(len(DECKS))}
    sums = balances(net)
    for account, _, _, _, balance, second, cost in DECKS:
        cdr = cdrs[account]
        assert cdr["end_reason"] == "credit_exhausted", cdr
        assert (cdr["status"], cdr["q850"], cdr["hangup_side"]) == (200, 16, "switch")
        assert cdr["billsec"] == second, cdr  # the exact second, never beyond it
        assert abs(cdr["duration"] - second) < 1.0, cdr
        assert Decimal(cdr["sell_cost"]) == Decimal(cost), cdr
        topup, call = ledger_rows(net, account)
        assert (topup["kind"], topup["amount"]) == ("topup", nanos(balance))
        assert (call["kind"], call["reference"]) == ("call", cdr["call_id"])
        assert call["amount"] == -nanos(cost)
        assert call["balance_after"] == nanos(balance) - nanos(cost) >= 0
        assert call["run_id"] is not None
        assert sums[account] == call["balance_after"]
    assert_chain(ledger_rows(net))
    # The BYE to the carrier carries the reason too (the customers' scenario checked theirs).
    to_carrier = reasons_in_byes(carrier.messages())
    assert set(to_carrier) == {c["call_id"] for c in cdrs.values()}
    assert all(r.startswith("Q.850;cause=16") for r in to_carrier.values()), to_carrier


def test_two_calls_of_one_account_share_the_credit_and_are_cut_together(net: Net) -> None:
    net.sell = deck(1)
    top_up(net, "customer", "0.100000")  # 10 call-seconds for both calls together
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(extra=prepaid())], billing="slice = 3")
    carrier = net.carrier(gw, "uas_answer", calls=2)
    first = net.customer("uac_wait_bye_reason", label="first")
    time.sleep(1.0)  # answered a second apart, yet cut at the same moment
    second = net.customer("uac_wait_bye_reason", label="second")
    ok(net, first, second, carrier)

    cdrs = net.cdrs(2)
    assert [c["end_reason"] for c in cdrs] == ["credit_exhausted", "credit_exhausted"], cdrs
    ends = [dt.datetime.fromisoformat(c["end_at"]) for c in cdrs]
    assert abs((ends[0] - ends[1]).total_seconds()) <= 1.5, cdrs  # cut together
    assert all(c["billsec"] >= 1 for c in cdrs), cdrs
    total = sum(nanos(c["sell_cost"]) for c in cdrs)
    assert nanos("0.080000") <= total <= nanos("0.100000"), cdrs  # the credit, used up
    rows = ledger_rows(net)
    assert [r["kind"] for r in rows] == ["topup", "call", "call"]
    assert_chain(rows)
    assert_debited(net, cdrs)
    assert balances(net)["customer"] == nanos("0.100000") - total == rows[-1]["balance_after"]


# ----------------------------------------------------------------------------- admission


def test_zero_balance_is_refused_until_a_topup_while_the_switch_runs(net: Net) -> None:
    """Also: a ``billing = "none"`` account calls as before and never gets a ledger row."""
    net.sell = deck(1)
    gw = Carrier("gw1")
    paid = Account("customer", tech_prefix="71#", extra=prepaid())
    free = Account("free", tech_prefix="72#", extra=('billing = "none"',))
    # No periodic ledger read during the test: only the one before a refusal can see it.
    switch = net.start_switch([gw], [paid, free], billing="sync_interval = 30")
    carrier = net.carrier(gw, "uas_answer", calls=2)
    refused = net.customer(
        "uac_refused", number=dialled("71#"), fill={"EXPECTED": "402"}, label="refused"
    )
    ok(net, refused)
    ok(net, net.customer("uac_call", number=dialled("72#"), args=["-d", "200"], label="free"))

    done = cli(switch.config, "topup", "customer", "1.00", "--note", "e2e top-up")
    assert done.returncode == 0, (done.stdout, done.stderr)
    # No reload, no wait: the very next INVITE is admitted.
    admitted = net.customer(
        "uac_call", number=dialled("71#"), args=["-d", "1200"], label="admitted"
    )
    ok(net, admitted, carrier)

    refusal, free_call, paid_call = net.cdrs(3)
    assert refusal["end_reason"] == "insufficient_balance", refusal
    assert (refusal["status"], refusal["q850"]) == (402, 21)
    assert refusal["attempts"] == []  # no gateway tried
    assert refusal["gateway_id"] is None
    assert refusal["answer_at"] is None
    assert re.search(r"^Reason: Q\.850;cause=21", refused.messages(), re.MULTILINE)
    assert carrier.messages().count(f"Call-ID: {refusal['call_id']}") == 0
    assert (free_call["account_id"], free_call["end_reason"]) == ("free", "normal_clearing")
    assert (paid_call["account_id"], paid_call["end_reason"]) == ("customer", "normal_clearing")
    assert paid_call["billsec"] >= 1

    rows = ledger_rows(net)
    assert [(r["account_id"], r["kind"]) for r in rows] == [
        ("customer", "topup"),
        ("customer", "call"),
    ]  # and none for the "none" account
    assert (rows[0]["amount"], rows[0]["reference"]) == (nanos("1.00"), "e2e top-up")
    assert_chain(rows)
    assert_debited(net, [refusal, paid_call])
    assert balances(net) == {"customer": nanos("1.00") - nanos(paid_call["sell_cost"])}


def test_postpaid_account_stops_at_its_credit_limit(net: Net) -> None:
    net.sell = deck(1)
    gw = Carrier("gw1")
    terms = ('billing = "postpaid"', 'credit_limit = "0.05"', 'low_balance = "-0.02"')
    switch = net.start_switch([gw], [Account(extra=terms)])
    carrier = net.carrier(gw, "uas_answer")
    ok(net, net.customer("uac_wait_bye_reason", label="first"), carrier)
    # At the limit: the next call is refused before any gateway.
    ok(net, net.customer("uac_refused", fill={"EXPECTED": "402"}, label="refused"))

    cut, refusal = net.cdrs(2)
    assert cut["end_reason"] == "credit_exhausted", cut
    assert (cut["billsec"], Decimal(cut["sell_cost"])) == (5, Decimal("0.05")), cut
    assert refusal["end_reason"] == "insufficient_balance"
    assert refusal["attempts"] == []
    (row,) = ledger_rows(net)
    assert (row["kind"], row["reference"]) == ("call", cut["call_id"])
    assert row["amount"] == -nanos("0.05")
    assert row["balance_after"] == -nanos("0.05")  # exactly the limit, never below it
    assert balances(net) == {"customer": -nanos("0.05")}
    assert "balance -0.050000 is below its low_balance -0.020000" in net.switch_log()
    shown = cli(switch.config, "balance", "customer", "--csv")
    assert shown.returncode == 0, (shown.stdout, shown.stderr)
    (line,) = csv.DictReader(io.StringIO(shown.stdout))
    assert line["billing"] == "postpaid"
    assert Decimal(line["balance"]) == Decimal("-0.05") == -Decimal(line["credit_limit"])
    assert Decimal(line["reserved"]) == Decimal(line["available"]) == 0


# ----------------------------------------------------------------------------- crash


def kill_9(switch: Switch) -> None:
    assert switch.process is not None
    switch.signal(signal.SIGKILL)
    switch.process.wait(timeout=10)
    switch.stop()  # only closes its pipe now


SHORT, HELD, THIN = 16, 16, 3


def test_kill_9_under_load_then_restart_debits_each_answered_call_once(net: Net) -> None:
    """Two prepaid accounts: ``rich`` has short calls that end and long calls that are up at
    the kill; ``thin`` has three calls sharing 0.05 that are cut for credit before it."""
    net.sell = deck(1)
    top_up(net, "rich", "100.00")
    top_up(net, "thin", "0.05")
    accounts = [
        Account("rich", tech_prefix="81#", max_duration=120, extra=prepaid()),
        Account("thin", tech_prefix="82#", extra=prepaid()),
    ]
    gw = Carrier("gw1")
    first = net.start_switch([gw], accounts, billing="slice = 2")
    carrier = net.carrier(gw, "uas_answer", calls=SHORT + HELD + THIN, timeout=60)
    load = ["-r", "20", "-buff_size", "4194304"]
    short = net.customer(
        "uac_call", number=dialled("81#"), args=["-d", "300", *load], calls=SHORT, label="short"
    )
    held = net.customer(
        "uac_call",
        number=dialled("81#"),
        args=["-d", "60000", *load],
        calls=HELD,
        label="held",
        timeout=60,
    )
    thin = net.customer("uac_wait_bye_reason", number=dialled("82#"), args=load, calls=THIN)
    ok(net, short, thin)

    db = net.workdir / "cdr.sqlite"
    deadline = time.monotonic() + 15
    while True:  # every held call open and reserved, and a heartbeat after its answer
        opened = table(db, "SELECT call_id, answer_at, billed_until FROM open_calls")
        (run,) = table(db, "SELECT run_id, heartbeat_at FROM switch_runs")
        if (
            len(opened) == HELD
            and all(o["billed_until"] for o in opened)
            and run["heartbeat_at"] > max(o["answer_at"] for o in opened)
        ):
            break
        assert time.monotonic() < deadline, (opened, run, net.explain())
        time.sleep(0.1)
    kill_9(first)
    assert held.process is not None
    assert held.process.poll() is None  # still up at the kill
    opened = table(db, "SELECT call_id, billed_until FROM open_calls")
    covered = {o["call_id"]: o["billed_until"] for o in opened}
    debited_before = ledger_rows(net)
    assert not {r["reference"] for r in debited_before} & set(covered)

    net.switch = Switch(first.config, db, net.port, net.workdir / "switch-2.log").start()
    cdrs = net.cdrs(SHORT + HELD + THIN)
    reasons = Counter((c["account_id"], c["end_reason"]) for c in cdrs)
    assert reasons == {
        ("rich", "normal_clearing"): SHORT,
        ("rich", "system_failure"): HELD,
        ("thin", "credit_exhausted"): THIN,
    }, cdrs
    for cdr in cdrs:
        if cdr["end_reason"] == "system_failure":
            assert 0 < cdr["billsec"] <= covered[cdr["call_id"]], cdr
    assert table(db, "SELECT * FROM open_calls") == []
    rows = ledger_rows(net)
    assert rows[: len(debited_before)] == debited_before  # appended to, never rewritten
    assert_chain(rows)
    assert balances(net) == {r["account_id"]: r["balance_after"] for r in rows}  # the last
    assert_debited(net, cdrs)
    thin_spent = -sum(r["amount"] for r in rows if r["account_id"] == "thin" and r["amount"] < 0)
    assert 0 < thin_spent <= nanos("0.05")
    assert all(r.startswith("Q.850;cause=16") for r in reasons_in_byes(thin.messages()).values())

    # A second crash and start: the first run is settled, nothing is debited again.
    kill_9(net.switch)
    net.switch = Switch(first.config, db, net.port, net.workdir / "switch-3.log").start()
    assert ledger_rows(net) == rows
    assert len(net.cdrs(SHORT + HELD + THIN)) == SHORT + HELD + THIN
    held.stop()
    carrier.stop()
