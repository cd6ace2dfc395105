"""The ``lcr`` command, run as a user runs it: a real process with real files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

HEADER = (
    "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,"
    "effective_from,effective_to\n"
)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lcr.cli", *args], capture_output=True, text=True, check=check
    )


@pytest.fixture
def decks(tmp_path: Path) -> dict[str, Path]:
    a = tmp_path / "carrier_a.csv"
    a.write_text(HEADER + "44,UK,0.010,,1,1,,\n447,UK Mobile,0.080,,1,1,,2026-03-01\n")
    b = tmp_path / "carrier_b.csv"
    b.write_text(HEADER + "44,UK,0.020,,1,1,,\n447,UK Mobile,0.050,,1,1,,\n")
    return {"a": a, "b": b}


def test_help_lists_commands() -> None:
    out = run("--help").stdout
    for command in ("lookup", "route", "rate", "check"):
        assert command in out


def test_lookup_with_time_and_cost(decks: dict[str, Path]) -> None:
    out = run("lookup", str(decks["a"]), "+447911", "--at", "2026-01-15", "--duration", "61").stdout
    assert "prefix=447" in out
    assert "rate=0.080000" in out
    assert "billed=61s cost=0.081334" in out
    later = run("lookup", str(decks["a"]), "447911", "--at", "2026-03-01T00:00:00Z").stdout
    assert "prefix=44 " in later
    missing = run("lookup", str(decks["a"]), "33", check=False)
    assert missing.returncode == 1
    assert "no rate" in missing.stdout


def test_route_explain_from_decks_and_toml(decks: dict[str, Path], tmp_path: Path) -> None:
    out = run(
        "route",
        "447911",
        "--deck",
        f"A={decks['a']}",
        "--deck",
        f"B={decks['b']}",
        "--at",
        "2026-01-15",
        "--explain",
    ).stdout
    assert out.index("1. B") < out.index("2. A")
    table = tmp_path / "table.toml"
    table.write_text(
        f"""
[decks.a]
file = "{decks["a"].name}"
[decks.b]
file = "{decks["b"].name}"

[[routes]]
prefix = "44"
strategy = "lcr"
max_rate = 0.06
targets = [{{ gateway = "A", deck = "a" }}, {{ gateway = "B", deck = "b" }},
           {{ gateway = "C", enabled = false }}]
"""
    )
    out = run("route", "447911", "--table", str(table), "--at", "2026-01-15", "--explain").stdout
    assert "1. B" in out
    assert "A                above_max_rate" in out
    assert "C                disabled" in out
    reference = run(
        "route",
        "447911",
        "--table",
        str(table),
        "--at",
        "2026-01-15",
        "--explain",
        "--reference",
    ).stdout
    assert reference == out


def test_table_windows_and_margin_duration(decks: dict[str, Path], tmp_path: Path) -> None:
    """``windows`` (``start``/``end`` or ``from``/``to``, quoted or TOML times) choose the
    route by the call's local time; the table's ``margin_duration`` checks true margins
    against the ``--sell`` deck's rate; both implementations agree."""
    sell = tmp_path / "sell.csv"
    sell.write_text(HEADER + "44,UK,0.0150,,1,1,,\n")
    table = tmp_path / "table.toml"
    table.write_text(
        f"""
min_margin = 0.004
margin_duration = [30]
[decks.a]
file = "{decks["a"].name}"
[decks.b]
file = "{decks["b"].name}"

[[routes]]
prefix = "44"
targets = [{{ gateway = "A", deck = "a" }}, {{ gateway = "B", deck = "b" }}]

[[routes]]
prefix = "44"
strategy = "priority"
targets = [{{ gateway = "B", deck = "b" }}, {{ gateway = "A", deck = "a", priority = 1 }}]
windows = [{{ days = "sat,sun", tz = "Europe/London" }},
           {{ days = "mon-fri", from = 18:00:00, to = "08:00", tz = "Europe/London" }}]
"""
    )

    def order(at: str, *extra: str) -> list[str]:
        args = ("route", "4420", "--table", str(table), "--at", at, *extra)
        out = run(*args).stdout
        assert run(*args, "--reference").stdout == out
        return [line.split("\t")[0] for line in out.splitlines()]

    assert order("2026-01-15T10:00:00+00:00") == ["A", "B"]  # Thursday, no window: lcr
    assert order("2026-01-15T20:00:00+00:00") == ["B", "A"]  # Thursday night: priority
    assert order("2026-01-17T10:00:00+00:00") == ["B", "A"]  # Saturday
    assert order("2026-01-15T20:00:00+00:00", "--sell", str(sell)) == ["A"]
    explained = run(
        "route",
        "4420",
        "--table",
        str(table),
        "--at",
        "2026-01-15T20:00:00+00:00",
        "--sell",
        str(sell),
        "--explain",
    ).stdout
    assert "below_margin_at" in explained
    assert "call of 30 s" in explained

    good = table.read_text()
    for old, new, message in (
        (
            'tz = "Europe/London" }]',
            'tz = "Europe/Londn" }]',
            "routes[1].windows[1]: TimeWindow tz",
        ),
        ("from = 18:00:00", "from_ = 18:00:00", "routes[1].windows[1]: unknown key 'from_'"),
        ("from = 18:00:00", "from = 18:00:30", "windows[1]: TimeWindow start: expected HH:MM"),
        ("[30]", '["30"]', "margin_duration takes whole seconds, got '30'"),
        ("[30]", "[0]", "margin_duration must be whole seconds 1..=86400"),
        ("min_margin =", "min_margins =", "unknown key 'min_margins'"),
    ):
        table.write_text(good.replace(old, new, 1))
        failed = run("route", "4420", "--table", str(table), check=False)
        assert failed.returncode == 2, message
        assert f"error: {table}: " in failed.stderr, failed.stderr
        assert message in failed.stderr, failed.stderr


def test_rate_job_rerates_cdrs_with_progress(decks: dict[str, Path], tmp_path: Path) -> None:
    cdrs = tmp_path / "cdrs.csv"
    cdrs.write_text(
        "call_id,number,start,duration\n"
        "c1,447911,2026-01-15T10:00:00Z,61\n"
        "c2,447911,2026-03-15T10:00:00Z,61\n"
        "c3,33,2026-01-15T10:00:00Z,10\n"
        "c4,44x,2026-01-15T10:00:00Z,10\n"
        "c5,4420,2026-01-15T10:00:00Z,-5\n"
    )
    out = tmp_path / "rated.csv"
    result = run("rate", str(cdrs), "--deck", str(decks["a"]), "-o", str(out), "--progress")
    assert "rating" in result.stderr
    assert "rated 2 CDRs, 3 not rated" in result.stderr
    with out.open(newline="") as handle:
        rows = {r["call_id"]: r for r in csv.DictReader(handle)}
    assert (rows["c1"]["prefix"], rows["c1"]["cost"]) == ("447", "0.081334")
    assert (rows["c2"]["prefix"], rows["c2"]["cost"]) == ("44", "0.010167")
    assert rows["c3"]["error"] == "no rate in force"
    assert "invalid number" in rows["c4"]["error"]
    assert "negative duration" in rows["c5"]["error"]


def test_bad_deck_is_reported_with_file_line_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "44,UK,0.01,,,,,\n45,X,zero,,,,,\n46,Y,0.1,,0,,,\n")
    strict = run("lookup", str(bad), "44", check=False)
    assert strict.returncode == 2
    assert f"{bad}:3: column 'rate': not a decimal number: 'zero'" in strict.stderr
    check = run("check", str(bad), check=False)
    assert check.returncode == 1
    assert f"{bad}:4: column 'initial_increment'" in check.stderr
    assert "1 rows, 1 prefixes, 2 errors" in check.stdout


def test_rate_job_handles_large_files_bom_and_bad_input(
    decks: dict[str, Path], tmp_path: Path
) -> None:
    cdrs = tmp_path / "big.csv"
    lines = ["\ufeffnumber,start,duration"]
    lines += [f"4420{i:06d},2026-01-15T10:00:00Z,{i % 120}" for i in range(60_000)]
    lines += ["4420,2026-01-15T10:00:00Z,6_1", "4420,2026-01-15T10:00:00Z,６"]
    cdrs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "rated.csv"
    result = run("rate", str(cdrs), "--deck", str(decks["a"]), "-o", str(out))
    assert "rated 60000 CDRs, 2 not rated" in result.stderr
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60_002
    assert rows[61]["cost"] == "0.010167"
    assert "not whole seconds" in rows[-1]["error"]
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"number,start,duration\n44\xff,2026-01-15,1\n")
    bad = run("rate", str(binary), "--deck", str(decks["a"]), "-o", str(out), check=False)
    assert bad.returncode == 2
    assert "not valid UTF-8" in bad.stderr


def test_cli_input_errors_are_reported_not_raised(decks: dict[str, Path], tmp_path: Path) -> None:
    sell = run("route", "4420", "--deck", f"A={decks['a']}", "--sell-rate", "abc", check=False)
    assert (sell.returncode, "not a decimal number" in sell.stderr) == (2, True)
    table = tmp_path / "t.toml"
    table.write_text("[[routes]]\nprefix = 44\n")
    numeric = run("route", "4420", "--table", str(table), check=False)
    assert (numeric.returncode, "must be a quoted string" in numeric.stderr) == (2, True)
    table.write_text("[[routes]\n")
    broken = run("route", "4420", "--table", str(table), check=False)
    assert broken.returncode == 2
    assert str(table) in broken.stderr
    assert "Traceback" not in broken.stderr + numeric.stderr + sell.stderr
