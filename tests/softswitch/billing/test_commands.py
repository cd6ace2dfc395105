"""``softswitch balance``, ``topup``, ``adjust``, ``refund``, ``ledger`` and ``spend`` as an
operator runs them: through the command line, on a configuration with a prepaid and a
postpaid account."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

import softswitch
from softswitch.billing import ledger
from softswitch.billing.commands import refund
from softswitch.billing.ledger import Booking
from softswitch.billing.money import to_nanos
from softswitch.cdr import CdrRecord, CdrStore
from softswitch.cli import main
from softswitch.config import demo_config, demo_state_dir

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)

DECK = """prefix,destination,rate,connect_fee,initial_increment,subsequent_increment
44,United Kingdom,0.020,0,60,1
,Rest of world,0.300,0,60,60
"""

CONFIG = """
[server]
database = "{database}"

[[rate_decks]]
id = "sell6"
file = "deck.csv"

[[rate_decks]]
id = "sell2"
file = "deck.csv"
precision = 2

[[accounts]]
id = "alice"
ips = ["192.0.2.1"]
rate_deck = "sell6"
routing_plan = "default"
billing = "prepaid"

[[accounts]]
id = "bob"
ips = ["192.0.2.2"]
rate_deck = "sell2"
routing_plan = "default"
billing = "postpaid"
credit_limit = 100

[[accounts]]
id = "carol"
ips = ["192.0.2.3"]
rate_deck = "sell6"
routing_plan = "default"

[[gateways]]
id = "gw_a"
address = "192.0.2.10:5060"
rate_deck = "sell6"

[[gateways]]
id = "gw_b"
address = "192.0.2.11:5060"

[[routes]]
plan = "default"
prefix = ""
gateways = ["gw_a", "gw_b"]
"""


def write_config(folder: Path, database: str = "cdr.sqlite") -> Path:
    (folder / "deck.csv").write_text(DECK)
    path = folder / "switch.toml"
    path.write_text(CONFIG.format(database=database))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def db(config: Path) -> Path:
    return config.parent / "cdr.sqlite"


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main([*args, "--config", str(config)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        n: int = conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
    return n


def balance_rows(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, str]]:
    status, out, _ = run(config, capsys, "balance", "--csv")
    assert status == 0
    return {row["account"]: row for row in csv.DictReader(io.StringIO(out))}


def assert_consistent(config: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every row's balance_after is its predecessor's plus its amount; the balance shown
    is the sum of the entries and the last balance_after."""
    shown = balance_rows(config, capsys)
    with ledger.connect(db) as conn:
        for account, row in shown.items():
            entries = ledger.entries(conn, account)
            running = 0
            for entry in entries:
                running += entry.amount
                assert entry.balance_after == running
            assert to_nanos(Decimal(row["balance"])) == running
            if entries:
                assert entries[-1].balance_after == running


def book(db: Path, account: str, kind: str, amount: str, reference: str, at: dt.datetime) -> None:
    with ledger.connect(db, create=True) as conn:
        ledger.book(conn, Booking(account, kind, to_nanos(Decimal(amount)), reference, at))


# -- balance, topup, adjust --------------------------------------------------------------


def test_balance_before_the_switch_has_run_is_zero_and_creates_nothing(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(config, capsys, "balance")
    assert status == 0
    assert out.splitlines() == [
        "account  billing    balance  credit_limit  reserved  available",
        "alice    prepaid   0.000000      0.000000  0.000000   0.000000",
        "bob      postpaid      0.00        100.00      0.00     100.00",
    ]
    assert f"note: no database at {db} yet (the switch has not run): balances are 0" in err
    assert not db.exists()
    for args in (["ledger", "alice"], ["spend"]):
        assert run(config, capsys, *args)[0] == 0
    assert not db.exists()


def test_topup_then_balance(config: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(config, capsys, "topup", "alice", "25", "--note", "card 1234")
    assert status == 0, err
    assert out.startswith("alice: topup 25.000000; balance after 25.000000 (ledger entry 1 at ")
    status, out, _ = run(config, capsys, "topup", "bob", "10.5")
    assert status == 0
    assert out.startswith("bob: topup 10.50; balance after 10.50 (ledger entry 2 at ")

    status, out, err = run(config, capsys, "balance")
    assert status == 0
    assert err == ""
    assert out.splitlines()[1:] == [
        "alice    prepaid   25.000000      0.000000  0.000000  25.000000",
        "bob      postpaid      10.50        100.00      0.00     110.50",
    ]
    status, out, _ = run(config, capsys, "balance", "bob", "--csv")
    assert status == 0
    assert out == (
        "account,billing,balance,credit_limit,reserved,available\n"
        "bob,postpaid,10.50,100.00,0.00,110.50\n"
    )
    with ledger.connect(db) as conn:
        (entry,) = ledger.entries(conn, "alice")
    assert (entry.kind, entry.amount, entry.reference, entry.run_id) == (
        "topup",
        25 * 10**9,
        "card 1234",
        None,
    )
    assert_consistent(config, db, capsys)


def test_balance_subtracts_what_calls_in_progress_hold(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reserved`` is the credit answered calls hold (``open_calls``, the switch's table)."""
    assert run(config, capsys, "topup", "alice", "10")[0] == 0
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE open_calls (billed_account TEXT, reserved INTEGER)")
        conn.execute("INSERT INTO open_calls VALUES ('alice', 1200000000), ('bob', 500000000)")
    rows = balance_rows(config, capsys)
    assert (rows["alice"]["reserved"], rows["alice"]["available"]) == ("1.200000", "8.800000")
    assert (rows["bob"]["reserved"], rows["bob"]["available"]) == ("0.50", "99.50")


def test_adjust_takes_credit_away_with_a_negative_amount(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "topup", "alice", "25")[0] == 0
    status, out, err = run(config, capsys, "adjust", "alice", "-5", "--note", "double top-up")
    assert status == 0, err
    assert out.startswith("alice: adjustment -5.000000; balance after 20.000000 (ledger entry 2")
    status, out, _ = run(config, capsys, "adjust", "alice", "+0.25", "--note", "goodwill")
    assert status == 0
    assert "balance after 20.250000" in out
    # A postpaid account may go below zero, down to its credit limit and beyond by hand.
    status, out, _ = run(config, capsys, "adjust", "bob", "-150.5", "--note", "old invoice")
    assert status == 0
    assert "bob: adjustment -150.50; balance after -150.50" in out
    rows = balance_rows(config, capsys)
    assert rows["alice"]["balance"] == "20.250000"
    assert (rows["bob"]["balance"], rows["bob"]["available"]) == ("-150.50", "-50.50")
    with ledger.connect(db) as conn:
        assert [e.reference for e in ledger.entries(conn, "alice")] == [
            "",
            "double top-up",
            "goodwill",
        ]
    assert_consistent(config, db, capsys)


# -- refund ------------------------------------------------------------------------------


def test_refund_never_gives_back_more_than_the_call_was_debited(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "topup", "alice", "10")[0] == 0
    book(db, "alice", "call", "-1.2", "call-1", T0)
    book(db, "alice", "call", "-0.3", "call-2", T0)
    book(db, "bob", "call", "-4", "call-3", T0)

    status, out, err = run(config, capsys, "refund", "alice", "call-1", "0.5")
    assert status == 0, err
    assert out.startswith(
        "alice: refund 0.500000 of call 'call-1' (debited 1.200000); balance after 9.000000"
    )
    before = count(db)
    status, _, err = run(config, capsys, "refund", "alice", "call-1", "0.8")
    assert status == 1
    assert err == (
        "error: call 'call-1' of account 'alice': refund 0.800000 is more than the 0.700000 "
        "left to refund (debited 1.200000, refunded 0.500000)\n"
    )
    assert count(db) == before
    # Without an amount: all that is left.
    status, out, _ = run(config, capsys, "refund", "alice", "call-1")
    assert status == 0
    assert "refund 0.700000 of call 'call-1'" in out
    assert "balance after 9.700000" in out
    status, _, err = run(config, capsys, "refund", "alice", "call-1")
    assert status == 1
    assert "call 'call-1' of account 'alice': nothing left to refund (debited 1.200000," in err
    status, _, err = run(config, capsys, "refund", "alice", "call-1", "0.01")
    assert status == 1
    # Another account's call, and a call that was never debited.
    status, _, err = run(config, capsys, "refund", "alice", "call-3")
    assert status == 1
    assert err == "error: account 'alice' has no call debit with Call-ID 'call-3'\n"
    status, _, err = run(config, capsys, "refund", "alice", "nope", "1")
    assert status == 1
    assert "has no call debit with Call-ID 'nope'" in err
    assert count(db) == before + 1

    with ledger.connect(db) as conn:
        refunds = [e for e in ledger.entries(conn, "alice") if e.kind == "refund"]
    assert [(e.amount, e.reference) for e in refunds] == [
        (500_000_000, "call-1"),
        (700_000_000, "call-1"),
    ]
    assert_consistent(config, db, capsys)


def test_refund_without_a_database(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(config, capsys, "refund", "alice", "call-1")
    assert status == 1
    assert err == f"error: no database at {db}: account 'alice' has no calls\n"
    assert not db.exists()


def test_two_refunds_at_once_cannot_both_take_the_whole_debit(config: Path, db: Path) -> None:
    book(db, "alice", "call", "-2", "call-1", T0)
    statuses: list[int] = []

    def full_refund() -> None:
        out, err = io.StringIO(), io.StringIO()
        statuses.append(refund(str(config), "alice", "call-1", "2", out=out, err=err))

    threads = [threading.Thread(target=full_refund) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [0, 1, 1, 1]
    with ledger.connect(db) as conn:
        assert [e.balance_after for e in ledger.entries(conn, "alice")] == [-2 * 10**9, 0]


# -- ledger ------------------------------------------------------------------------------


def test_ledger_lists_entries_oldest_first_and_as_csv(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book(db, "alice", "topup", "20", "wire 77", T0)
    book(db, "bob", "topup", "5", "", T0)
    book(db, "alice", "call", "-0.4", "abc@192.0.2.1", T0 + dt.timedelta(days=1))
    book(db, "alice", "refund", "0.1", "abc@192.0.2.1", T0 + dt.timedelta(days=2))

    status, out, err = run(config, capsys, "ledger", "alice")
    assert status == 0, err
    assert out.splitlines() == [
        "id  at                         kind       amount  balance_after  reference",
        " 1  2026-05-01T12:00:00+00:00  topup   20.000000      20.000000  wire 77",
        " 3  2026-05-02T12:00:00+00:00  call    -0.400000      19.600000  abc@192.0.2.1",
        " 4  2026-05-03T12:00:00+00:00  refund   0.100000      19.700000  abc@192.0.2.1",
        "3 entries",
    ]
    status, out, _ = run(config, capsys, "ledger", "alice", "--csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["id", "at", "kind", "amount", "balance_after", "reference"]
    assert [(r["id"], r["kind"], r["amount"], r["balance_after"]) for r in rows] == [
        ("1", "topup", "20.000000", "20.000000"),
        ("3", "call", "-0.400000", "19.600000"),
        ("4", "refund", "0.100000", "19.700000"),
    ]
    assert rows[0]["at"] == "2026-05-01T12:00:00.000000+00:00"

    # --since inclusive, --until exclusive; no offset = UTC.
    args = ("ledger", "alice", "--since", "2026-05-02T12:00", "--until", "2026-05-03 12:00")
    status, out, _ = run(config, capsys, *args, "--csv")
    assert status == 0
    assert [r["id"] for r in csv.DictReader(io.StringIO(out))] == ["3"]
    status, out, _ = run(config, capsys, "ledger", "bob")
    assert out.splitlines()[1:] == [
        " 2  2026-05-01T12:00:00+00:00  topup    5.00           5.00",
        "1 entry",
    ]
    assert_consistent(config, db, capsys)


# -- refusals: exit 1, one clear line, nothing written -------------------------------------

REFUSALS = [
    (["topup", "dave", "1"], "error: {config}: no account with id 'dave'"),
    (["topup", "carol", "1"], "error: account 'carol' is not billed (billing = \"none\")"),
    (["adjust", "carol", "1", "--note", "x"], "is not billed"),
    (["refund", "carol", "call-1"], "is not billed"),
    (["balance", "carol"], "is not billed"),
    (["balance", "dave"], "no account with id 'dave'"),
    (["ledger", "carol"], "is not billed"),
    (["ledger", "dave"], "no account with id 'dave'"),
    (["topup", "alice", "-1"], "error: amount '-1' is negative; the amount must be positive"),
    (["topup", "alice", "0"], "error: amount '0' is zero; nothing to book"),
    (["topup", "alice", "0.000"], "is zero"),
    (["topup", "alice", "12,50"], "error: amount '12,50' is not a decimal amount (write e.g."),
    (["topup", "alice", "1e3"], "is not a decimal amount"),
    (["topup", "alice", "abc"], "is not a decimal amount"),
    (
        ["topup", "alice", "1.0000001"],
        "'1.0000001' has 7 decimal places; this account's deck has 6",
    ),
    (
        ["topup", "bob", "1.005"],
        "error: amount '1.005' has 3 decimal places; this account's deck has 2",
    ),
    (["adjust", "alice", "-5"], "error: adjust needs --note TEXT saying why"),
    (["adjust", "alice", "5", "--note", "  "], "adjust needs --note"),
    (["adjust", "alice", "0", "--note", "x"], "is zero"),
    (["adjust", "alice", "-0", "--note", "x"], "is zero"),
    (["adjust", "bob", "-0.001", "--note", "x"], "has 3 decimal places"),
    (["refund", "alice", "call-1", "-1"], "is negative"),
    (["refund", "alice", "call-1", "0"], "is zero"),
    (["refund", "alice", "call-1", "0.0000001"], "has 7 decimal places"),
    (["refund", "alice", "call-1", "1.5"], "refund 1.500000 is more than the 1.000000 left"),
    (["refund", "alice", "call-2"], "has no call debit with Call-ID 'call-2'"),
    (["ledger", "alice", "--since", "2026-05-02", "--until", "2026-05-01"], "is not after --since"),
]


@pytest.mark.parametrize(("args", "message"), REFUSALS)
def test_a_refused_command_exits_1_and_writes_nothing(
    args: list[str], message: str, config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = message.format(config=config)
    # Before the switch has run: no database file is made (a refund then finds no call).
    status, out, err = run(config, capsys, *args)
    assert status == 1
    assert out == ""
    assert err.startswith("error: ")
    assert len(err.splitlines()) == 1
    assert message in err or f"error: no database at {db}" in err
    assert not db.exists()
    # With a ledger: no row is added.
    book(db, "alice", "topup", "3", "", T0)
    book(db, "alice", "call", "-1", "call-1", T0)
    status, out, err = run(config, capsys, *args)
    assert status == 1
    assert message in err
    assert len(err.splitlines()) == 1
    assert count(db) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["balance"],
        ["ledger", "alice"],
        ["spend"],
        ["topup", "alice", "1"],
        ["adjust", "alice", "1", "--note", "x"],
        ["refund", "alice", "call-1"],
    ],
)
def test_a_database_folder_that_does_not_exist_is_refused(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "no/such/folder/cdr.sqlite")
    status, _, err = run(config, capsys, *args)
    assert status == 1
    folder = tmp_path / "no" / "such" / "folder"
    assert err == f"error: database {folder / 'cdr.sqlite'}: folder {folder} does not exist\n"
    assert not (tmp_path / "no").exists()


def test_the_demo_before_and_after_a_top_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --config: the embedded demo, whose state folder ``softswitch run`` makes.
    Before it has run, balances are 0; a top-up makes the folder and the database."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    billed = [a.id for a in demo_config(demo_state_dir()).accounts if a.billed]
    if not billed:
        pytest.skip("the demo has no billed account")
    assert main(["balance"]) == 0
    assert "note: no database at" in capsys.readouterr().err
    assert not (tmp_path / "softswitch").exists()
    assert main(["topup", billed[0], "5"]) == 0
    assert (tmp_path / "softswitch" / "cdr.sqlite").is_file()
    capsys.readouterr()
    assert main(["balance", billed[0], "--csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert Decimal(row["balance"]) == 5


def test_a_bad_configuration_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(tmp_path / "missing.toml", capsys, "topup", "alice", "1")
    assert status == 1
    assert err.startswith("error: ")
    assert "missing.toml" in err


# -- spend -------------------------------------------------------------------------------


def cdr(
    call_id: str,
    gateway: str | None,
    *,
    billsec: int = 60,
    buy: str | None = "0.045000",
    answered: bool = True,
    start: dt.datetime = T0,
) -> CdrRecord:
    answer = start + dt.timedelta(seconds=2)
    return CdrRecord(
        call_id=call_id,
        account_id="alice",
        source="192.0.2.1:5060",
        caller="alice",
        callee_dialed="447911123456",
        invite_at=start,
        end_at=answer + dt.timedelta(seconds=billsec),
        answer_at=answer if answered else None,
        gateway_id=gateway,
        end_reason="normal_clearing" if answered else "no_answer",
        status=200 if answered else 480,
        q850=16 if answered else 19,
        buy_cost=Decimal(buy) if buy is not None and answered else None,
    )


def test_spend_sums_the_buy_cost_of_answered_calls_per_gateway(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with CdrStore(db) as store:
        store.enqueue(cdr("c1", "gw_a", billsec=61, buy="0.050833"))
        store.enqueue(cdr("c2", "gw_a", billsec=30, buy="0.025000"))
        store.enqueue(cdr("c3", "gw_a", answered=False))  # not answered: not billed
        store.enqueue(cdr("c4", "gw_b", billsec=120, buy="0.1"))
        store.enqueue(cdr("c5", "gw_b", billsec=7, buy=None))  # unrated
        store.enqueue(cdr("c6", None, answered=False))  # refused before any gateway
        store.enqueue(cdr("c7", "gw_a", buy="1.000000", start=T0 + dt.timedelta(days=1)))
    status, out, err = run(config, capsys, "spend", "--until", "2026-05-02")
    assert status == 0, err
    assert out.splitlines() == [
        "gateway  calls  billsec  minutes  buy_cost  unrated",
        "gw_a         2       91     1.52  0.075833        0",
        "gw_b         2      127     2.12       0.1        1",
    ]
    status, out, _ = run(config, capsys, "spend", "--gateway", "gw_a", "--csv")
    assert status == 0
    assert out == ("gateway,calls,billsec,minutes,buy_cost,unrated\ngw_a,3,151,2.52,1.075833,0\n")
    status, out, _ = run(config, capsys, "spend", "--since", "2026-05-02", "--csv")
    assert out.splitlines()[1:] == ["gw_a,1,60,1.00,1.000000,0"]
    status, out, err = run(config, capsys, "spend", "--gateway", "gw_z")
    assert status == 0
    assert out.splitlines() == ["gateway  calls  billsec  minutes  buy_cost  unrated"]
    assert "no gateway with id 'gw_z'" in err


def test_spend_of_a_database_with_only_a_ledger(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "topup", "alice", "1")[0] == 0
    status, out, _ = run(config, capsys, "spend", "--csv")
    assert status == 0
    assert out == "gateway,calls,billsec,minutes,buy_cost,unrated\n"


# -- concurrent writers ------------------------------------------------------------------

TOPUPS = """
import sys, time
from softswitch.cli import main
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # both start booking together
for i in range(int(sys.argv[3])):
    assert main(["topup", "alice", sys.argv[2], "--config", sys.argv[1]]) == 0
"""


def test_two_processes_topping_up_at_once_never_share_a_predecessor(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "topup", "alice", "1000")[0] == 0
    n = 40
    start = time.time() + 1.5
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", TOPUPS, str(config), amount, str(n), str(start)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(softswitch.__file__).parents[1],
        )
        for amount in ("1", "0.001")
    ]
    for p in processes:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    with ledger.connect(db) as conn:
        entries = ledger.entries(conn, "alice")
    assert len(entries) == 1 + 2 * n
    afters = [e.balance_after for e in entries]
    assert len(set(afters)) == len(afters)  # no two rows from the same predecessor
    assert afters[-1] == sum(e.amount for e in entries) == to_nanos(Decimal("1040.04"))
    assert_consistent(config, db, capsys)


def test_threads_booking_at_once_on_their_own_connections(db: Path) -> None:
    book(db, "alice", "topup", "1", "", T0)

    def topups() -> None:
        with ledger.connect(db) as conn:
            for _ in range(100):
                ledger.book(conn, Booking("alice", "topup", 1, "", T0))

    threads = [threading.Thread(target=topups) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ledger.connect(db) as conn:
        afters = [e.balance_after for e in ledger.entries(conn, "alice")]
    assert afters == [10**9 + i for i in range(301)]
