"""``softswitch check-config``, ``route`` and ``cdr`` as an operator runs them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
from pathlib import Path

import pytest

from softswitch.cdr import CdrRecord, CdrStore
from softswitch.cli import main
from softswitch.config import DEMO_DIR


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """The shipped demo configuration, copied so a test may edit it."""
    for name in ("demo.toml", "sell.csv", "carrier_a.csv", "carrier_b.csv"):
        shutil.copy(DEMO_DIR / name, tmp_path / name)
    return tmp_path / "demo.toml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_check_config_ok(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "ok: 2 accounts, 2 gateways, 3 rate decks (18 rates), 1 routing plan" in out


def test_check_config_names_key_and_deck_line(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(demo, 'address = "127.0.0.1:5070"', 'address = "127.0.0.1:port"')
    assert main(["check-config", str(demo)]) == 1
    err = capsys.readouterr().err
    assert f"error: {demo}: gateways[0].address: " in err

    edit(demo, 'address = "127.0.0.1:port"', 'address = "127.0.0.1:5070"')
    deck = demo.parent / "carrier_b.csv"
    deck.write_text(deck.read_text() + "33;France;abc\n")
    assert main(["check-config", str(demo)]) == 1
    err = capsys.readouterr().err
    assert f"{deck}:8: rate_decks[2]: column 'Price'" in err
    assert "1 problem" in err


def test_route_prints_candidates_with_rates_and_exclusions(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(
        demo,
        'capacity = 50\n\n[[gateways]]\nid = "carrier_b"',
        'capacity = 50\n\n[[gateways]]\nid = "carrier_b"\nenabled = false',
    )
    assert main(["route", "--config", str(demo), "--account", "demo", "+447911123456"]) == 0
    out = capsys.readouterr().out
    assert "number 447911123456" in out
    assert "sell rate 0.080000" in out
    assert "1. carrier_a" in out
    assert "rate 0.050000" in out
    assert "sip:447911123456@127.0.0.1:5070" in out
    assert "excluded:\n  carrier_b        disabled" in out


def test_route_order_follows_rates(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--config", str(demo), "--account", "demo", "4930123"]) == 0
    out = capsys.readouterr().out
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("1.", "2."))]
    assert lines[-2].startswith("1. carrier_b")  # 0.013 beats 0.014
    assert lines[-1].startswith("2. carrier_a")


def test_route_refusals(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--config", str(demo), "--account", "nobody", "44"]) == 1
    assert "no account with id 'nobody'" in capsys.readouterr().err
    assert main(["route", "--config", str(demo), "--account", "demo", "44abc"]) == 1
    assert "refused: 484 invalid_number" in capsys.readouterr().out
    edit(demo, 'prefix = ""', 'prefix = "44"')
    assert main(["route", "--config", str(demo), "--account", "demo", "33123"]) == 1
    out = capsys.readouterr().out
    assert "refused: 404 no_route (Q.850 3)" in out


def _cdr(call_id: str, when: dt.datetime) -> CdrRecord:
    return CdrRecord(
        call_id=call_id,
        account_id="demo",
        source="127.0.0.1:5061",
        caller="alice",
        callee_dialed="447911123456",
        invite_at=when,
        end_at=when + dt.timedelta(seconds=30),
        answer_at=when + dt.timedelta(seconds=2),
        gateway_id="carrier_b",
        end_reason="normal_clearing",
        status=200,
        q850=16,
    )


def test_cdr_list_and_csv(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    with CdrStore(demo.parent / "cdr.sqlite") as store:
        store.write(_cdr("early", t0))
        store.write(_cdr("late", t0 + dt.timedelta(days=2)))
    assert main(["cdr", "--config", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "early" in out
    assert "late" in out
    assert "2 CDRs" in out
    assert main(["cdr", "--config", str(demo), "--since", "2026-05-02", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["call_id"], r["billsec"], r["status"]) for r in rows] == [("late", "28", "200")]


def test_cdr_without_a_database(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cdr", "--config", str(demo)]) == 1
    assert "no CDR database" in capsys.readouterr().err


# -- operator-proof errors ------------------------------------------------------------------


def test_check_config_lists_every_bad_row_of_every_deck_with_the_other_problems(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run shows everything to fix: the file's problems, then each deck's bad rows."""
    edit(demo, 'routing_plan = "default"', 'routing_plan = "nope"')
    deck_a = demo.parent / "carrier_a.csv"
    deck_a.write_text(deck_a.read_text() + "99,Nowhere,zz,0,1,1\n")
    deck_b = demo.parent / "carrier_b.csv"
    deck_b.write_text(deck_b.read_text() + "33;France;abc\n34;Spain;-1\n")
    assert main(["check-config", str(demo)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {demo}: accounts[0].routing_plan: no [[routes]] with plan 'nope'",
        f"error: {deck_a}:8: rate_decks[1]: column 'rate': not a decimal number: 'zz'",
        f"error: {deck_b}:8: rate_decks[2]: column 'Price': not a decimal number: 'abc'",
        f"error: {deck_b}:9: rate_decks[2]: column 'Price': must not be negative: '-1'",
        f"{demo}: 4 problems",
    ]


def test_check_config_skips_a_deck_whose_own_settings_are_wrong(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deck read with a delimiter other than the operator's would only add noise."""
    edit(demo, 'delimiter = ";"', 'delimiter = ";;"')
    assert main(["check-config", str(demo)]) == 1
    err = capsys.readouterr().err
    assert f"error: {demo}: rate_decks[2].delimiter: must be one character, got ';;'" in err
    assert "carrier_b.csv" not in err
    assert f"{demo}: 1 problem" in err


def test_check_config_reports_a_deck_that_does_not_load_at_all(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deck = demo.parent / "carrier_b.csv"
    deck.write_text("Prefix;Name;Price\n44;UK;0.01\n")
    sell = demo.parent / "sell.csv"
    sell.write_text(sell.read_text() + "4x,Bad,0.1,0,1,1\n")
    assert main(["check-config", str(demo)]) == 1
    err = capsys.readouterr().err
    assert f"error: {sell}:" in err
    assert (
        f"error: {deck}:1: rate_decks[2]: column 'Code': "
        "column 'Code' (mapped to prefix) is not in the header"
    ) in err
    assert f"{demo}: 2 problems" in err


def test_check_config_of_a_non_utf8_file(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo.write_bytes(demo.read_bytes().replace(b'"softswitch-demo"', b'"d\xe9mo"'))
    assert main(["check-config", str(demo)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"error: {demo}:9: not UTF-8 text: byte 0xe9 at column")
    assert "Traceback" not in err


def test_check_config_accepts_a_byte_order_mark(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo.write_bytes(b"\xef\xbb\xbf" + demo.read_bytes())
    assert main(["check-config", str(demo)]) == 0
    assert f"{demo}: ok: 2 accounts" in capsys.readouterr().out


def test_check_config_warns_about_no_accounts_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n")
    assert main(["check-config", str(empty)]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"warning: {empty}: no accounts: every call will be refused\n"
    assert captured.out == (
        f"{empty}: ok: 0 accounts, 0 gateways, 0 rate decks (0 rates), 0 routing plans,"
        " 0 routes; 1 warning\n"
    )


def test_check_config_warns_alongside_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "switch.toml"
    path.write_text("[server]\nrealm = 5\n")
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}: server.realm: must be a string, got a number (5)",
        f"warning: {path}: no accounts: every call will be refused",
        f"{path}: 1 problem, 1 warning",
    ]
