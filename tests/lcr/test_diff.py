"""``lcr.diff`` and ``lcr diff``: what a new deck changes, kind by kind, and the CLI around it."""

from __future__ import annotations

import csv
import datetime as dt
import io
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lcr
import lcr.reference
from lcr.cli import main
from lcr.diff import Change, DeckDiff, diff, percent_text, table_lines, write_csv

HEADER = (
    "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,"
    "effective_from,effective_to\n"
)
AT = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
Row = tuple[object, ...]


def deck(impl: ModuleType, *rows: Row, precision: int = 6) -> Any:
    return impl.RateDeck.from_rows(list(rows), precision=precision)


def kinds(result: DeckDiff) -> list[tuple[str, str]]:
    return [(c.kind, c.prefix) for c in result.changes]


def only(result: DeckDiff) -> Change:
    assert len(result.changes) == 1, result.changes
    return result.changes[0]


# --- each kind of change -----------------------------------------------------------------------


def test_added_removed_and_rates_up_and_down(impl: ModuleType) -> None:
    old = deck(impl, ("44", "UK", "0.03"), ("33", "FR", "0.03"), ("49", "DE", "0.02"))
    new = deck(impl, ("44", "UK", "0.04"), ("33", "FR", "0.02"), ("39", "IT", "0.05"))
    result = diff(old, new, AT)
    assert kinds(result) == [
        ("added", "39"),
        ("removed", "49"),
        ("rate_up", "44"),
        ("rate_down", "33"),
    ]
    cells = [c.cells() for c in result.changes]
    assert cells[0] == ("added", "39", "IT", "", "0.050000", "")
    assert cells[1] == ("removed", "49", "DE", "0.020000", "", "")
    assert cells[2] == ("rate_up", "44", "UK", "0.030000", "0.040000", "+33.33%")
    assert cells[3] == ("rate_down", "33", "FR", "0.030000", "0.020000", "-33.33%")
    assert result.changes[2].percent == Fraction(100, 3)
    assert result.counts()["rate_up"] == 1
    assert result.summary().startswith("1 added, 1 removed, 1 rate_up, 1 rate_down (3 -> 3 rows;")


def test_a_tiny_rate_move_is_reported_with_its_exact_percentage(impl: ModuleType) -> None:
    old = deck(impl, ("1", "US", "0.100000"), ("2", "X", "0.010000"), ("3", "Y", "0.06"))
    new = deck(impl, ("1", "US", "0.100001"), ("2", "X", "0.010001"), ("3", "Y", "0.1"))
    result = diff(old, new, AT)
    assert [c.kind for c in result.changes] == ["rate_up"] * 3
    by_prefix = {c.prefix: c for c in result.changes}
    assert by_prefix["1"].percent == Fraction(1, 1000)
    assert by_prefix["1"].cells()[5] == "+0.0010%"  # never shown as 0.00%
    assert by_prefix["2"].cells()[5] == "+0.01%"
    assert by_prefix["3"].percent == Fraction(200, 3)
    assert by_prefix["3"].cells()[5] == "+66.67%"


def test_percent_text_rounds_exactly_half_away_from_zero() -> None:
    assert percent_text(Fraction(1, 200)) == "+0.01%"
    assert percent_text(Fraction(-1, 200)) == "-0.01%"
    assert percent_text(Fraction(-1, 201)) == "-0.0050%"
    assert percent_text(Fraction(12345, 1000)) == "+12.35%"
    assert percent_text(Fraction(49, 100000)) == "+0.00049%"
    assert percent_text(Fraction(-100)) == "-100.00%"


def test_a_rate_from_zero_has_no_percentage(impl: ModuleType) -> None:
    change = only(diff(deck(impl, ("44", "UK", "0")), deck(impl, ("44", "UK", "0.01")), AT))
    assert (change.kind, change.percent, change.cells()[5]) == ("rate_up", None, "")


def test_increments_connect_fee_and_destination(impl: ModuleType) -> None:
    old = deck(
        impl,
        ("44", "UK", "0.01", "", "", ""),  # empty increments mean 60/60
        ("33", "FR", "0.01", "", "1", "1"),
        ("49", "DE", "0.01", "0", "1", "1"),
    )
    new = deck(
        impl,
        ("44", "UK", "0.01", "", "1", "1"),
        ("33", "FR", "0.01", "0.05", "1", "1"),
        ("49", "Germany", "0.012", "", 1, 1),
    )
    result = diff(old, new, AT)
    assert kinds(result) == [
        ("rate_up", "49"),
        ("increment", "44"),
        ("connect_fee", "33"),
        ("destination", "49"),
    ]
    cells = {c.kind: c.cells() for c in result.changes}
    assert cells["increment"] == ("increment", "44", "UK", "60/60", "1/1", "")
    assert cells["connect_fee"] == ("connect_fee", "33", "FR", "0.000000", "0.050000", "")
    assert cells["destination"] == ("destination", "49", "Germany", "DE", "Germany", "")


def test_effective_dates_moved_of_the_row_in_force(impl: ModuleType) -> None:
    old = deck(impl, ("44", "UK", "0.01", "", "", "", "2026-01-01", ""))
    new = deck(impl, ("44", "UK", "0.01", "", "", "", "2025-12-01", "2026-06-01"))
    change = only(diff(old, new, AT))
    assert change.kind == "dates"
    assert change.cells()[3:] == ("2026-01-01.. 0.010000", "2025-12-01..2026-06-01 0.010000", "")


def test_dated_rows_of_one_prefix(impl: ModuleType) -> None:
    """Several versions per prefix: prices at `at`, the rest of the schedule as `dates`."""
    old = deck(
        impl,
        ("44", "UK", "0.01", "", "", "", "", "2026-03-01"),
        ("44", "UK", "0.02", "", "", "", "2026-03-01", ""),
        ("33", "FR", "0.05", "", "", "", "", ""),
    )
    new = deck(
        impl,
        ("44", "UK", "0.01", "", "", "", "", "2026-03-01"),
        ("44", "UK", "0.025", "", "", "", "2026-03-01", ""),  # the scheduled rise re-priced
        ("33", "FR", "0.05", "", "", "", "", "2026-02-01T12:00:00Z"),
        ("33", "FR", "0.06", "", "", "", "2026-02-01T12:00:00Z", ""),  # a rise scheduled
    )
    now = diff(old, new, AT)
    assert kinds(now) == [("dates", "33"), ("dates", "44")]
    assert now.changes[0].cells()[3:5] == (
        ".. 0.050000",
        "..2026-02-01T12:00:00Z 0.050000; 2026-02-01T12:00:00Z.. 0.060000",
    )
    assert now.next_start == dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
    later = diff(old, new, dt.datetime(2026, 3, 15))  # naive: UTC
    assert kinds(later) == [("rate_up", "33"), ("rate_up", "44"), ("dates", "33")]
    assert later.changes[1].cells()[3:] == ("0.020000", "0.025000", "+25.00%")


def test_a_deck_not_yet_in_force_shows_removed_now_and_the_rise_at_go_live(
    impl: ModuleType,
) -> None:
    old = deck(impl, ("44", "UK", "0.01", "", "", "", "2025-12-01", ""))
    new = deck(impl, ("44", "UK", "0.012", "", "", "", "2026-02-01", ""))
    now = diff(old, new, AT)
    assert kinds(now) == [("removed", "44"), ("dates", "44")]
    assert now.next_start == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert kinds(diff(old, new, now.next_start)) == [("rate_up", "44"), ("dates", "44")]


def test_same_values_in_another_form_are_no_difference(impl: ModuleType) -> None:
    old = deck(impl, ("44", "UK", "0.01", "", "", "", "2026-01-01T00:00:00Z"), ("33", "FR", "1"))
    new = deck(impl, ("33", "FR", "1.0"), ("44", "UK", "0.010", "0", 60, 60, "2026-01-01"))
    assert not diff(old, new, AT)
    # Another precision: the rows differ as objects, not in value.
    coarse = deck(
        impl, ("33", "FR", "1"), ("44", "UK", "0.01", "", "", "", "2026-01-01"), precision=2
    )
    assert not diff(old, coarse, AT)
    open_start = deck(impl, ("44", "UK", "0.01"))
    assert kinds(diff(old, open_start, AT)) == [("removed", "33"), ("dates", "44")]


def test_csv_and_table_rendering(impl: ModuleType) -> None:
    old = deck(impl, ("44", "UK, mobile", "0.03"))
    new = deck(impl, ("44", "UK, mobile", "0.04"), ("1", "US", "0.001"))
    result = diff(old, new, AT)
    out = io.StringIO()
    write_csv(result, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows == [
        {"change": "added", "prefix": "1", "destination": "US", "old": "", "new": "0.001000",
         "percent": ""},
        {"change": "rate_up", "prefix": "44", "destination": "UK, mobile", "old": "0.030000",
         "new": "0.040000", "percent": "+33.33%"},
    ]  # fmt: skip
    lines = list(table_lines(result))
    assert lines[0].split() == ["change", "prefix", "destination", "old", "new", "percent"]
    assert lines[2].split() == ["rate_up", "44", "UK,", "mobile", "0.030000", "0.040000", "+33.33%"]
    assert lines[1].index("0.001000") == lines[0].index("new")


# --- properties --------------------------------------------------------------------------------

PREFIXES = ["", "1", "12", "2", "21"]
DATES = [
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
]
MOMENTS = [
    dt.datetime(2025, 12, 1, tzinfo=dt.UTC),
    *DATES,
    dt.datetime(2026, 2, 15, tzinfo=dt.UTC),
]
version = st.tuples(
    st.sampled_from(["A", "B"]),
    st.sampled_from(["0", "0.01", "0.010001", "0.02", "0.5"]),
    st.sampled_from(["", "0", "0.01"]),
    st.sampled_from(["", "1", "60"]),
    st.sampled_from(["", "1", "60"]),
    st.sampled_from([None, *DATES]),
)
schedule = st.dictionaries(st.sampled_from([None, *DATES]), version, max_size=3)
decks = st.dictionaries(st.sampled_from(PREFIXES), schedule, max_size=len(PREFIXES))


def build(impl: ModuleType, spec: dict[str, dict[Any, Any]]) -> Any:
    rows = []
    for prefix, versions in spec.items():
        for start, (dest, rate, fee, first, next_, end) in versions.items():
            if start is not None and end is not None and end <= start:
                end = None
            rows.append((prefix, dest, rate, fee, first, next_, start, end))
    return impl.RateDeck.from_rows(rows)


def prices(deck: Any, at: dt.datetime) -> dict[str, dict[str, object]]:
    """Each prefix's own row in force at ``at``, found through the deck's own lookup."""
    found = {}
    for prefix in PREFIXES:
        rate = deck.lookup(prefix, at)
        if rate is not None and rate.prefix == prefix:
            found[prefix] = {
                "rate": rate.rate,
                "connect_fee": rate.connect_fee,
                "increments": (rate.initial_increment, rate.subsequent_increment),
                "destination": rate.destination,
            }
    return found


def values(deck: Any) -> frozenset[tuple[object, ...]]:
    return frozenset(
        (r.prefix, r.destination, r.rate, r.connect_fee, r.initial_increment,
         r.subsequent_increment, r.effective_from, r.effective_to)
        for r in deck.rows()
    )  # fmt: skip


@pytest.mark.parametrize("impl", [lcr, lcr.reference], ids=["rust", "reference"])
@given(a=decks, b=decks, at=st.sampled_from(MOMENTS))
def test_diff_properties(impl: ModuleType, a: Any, b: Any, at: dt.datetime) -> None:
    old, new = build(impl, a), build(impl, b)
    assert not diff(old, old, at)
    forward, backward = diff(old, new, at), diff(new, old, at)
    # Empty exactly when the decks hold the same rows.
    assert bool(forward) == (values(old) != values(new))

    def of(result: DeckDiff, kind: str) -> list[str]:
        return [c.prefix for c in result.changes if c.kind == kind]

    assert of(forward, "added") == of(backward, "removed")
    assert of(forward, "removed") == of(backward, "added")
    assert of(forward, "rate_up") == of(backward, "rate_down")
    assert of(forward, "dates") == of(backward, "dates")
    # Applying the listed price changes to OLD's prefix -> price map gives NEW's.
    state = prices(old, at)
    for change in forward.changes:
        current, target = change.old, change.new
        if change.kind == "dates":
            continue
        if change.kind == "removed":
            assert current is not None
            assert target is None
            del state[change.prefix]
            continue
        assert target is not None
        if change.kind == "added":
            assert change.prefix not in state
            state[change.prefix] = {
                "rate": target.rate,
                "connect_fee": target.connect_fee,
                "increments": (target.initial_increment, target.subsequent_increment),
                "destination": target.destination,
            }
            continue
        assert current is not None
        entry = state[change.prefix]
        if change.kind in ("rate_up", "rate_down"):
            assert entry["rate"] == current.rate
            assert (target.rate > current.rate) == (change.kind == "rate_up")
            entry["rate"] = target.rate
            if current.rate:
                assert change.percent == (
                    (Fraction(target.rate) - Fraction(current.rate)) * 100 / Fraction(current.rate)
                )
        elif change.kind == "increment":
            entry["increments"] = (target.initial_increment, target.subsequent_increment)
        elif change.kind == "connect_fee":
            entry["connect_fee"] = target.connect_fee
        else:
            assert change.kind == "destination"
            entry["destination"] = target.destination
    assert state == prices(new, at)


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    old = tmp_path / "old.csv"
    old.write_text(
        HEADER
        + "44,UK,0.030,,60,60,2026-01-01,\n"
        + "447,UK Mobile,0.080,,1,1,2026-01-01,\n"
        + "33,FR,0.02,,1,1,2026-01-01,\n"
    )
    new = tmp_path / "new.csv"
    new.write_text(
        HEADER
        + "44,UK,0.040,,1,1,2026-01-01,\n"
        + "447,UK Mobile,0.080,,1,1,2026-01-01,2026-02-01\n"
        + "447,UK Mobile,0.090,,1,1,2026-02-01,\n"
        + "49,DE,0.01,0.05,1,1,2026-01-01,\n"
    )
    return {"old": old, "new": new}


def test_cli_table_summary_and_exit_status(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["diff", str(files["old"]), str(files["new"]), "--at", "2026-01-15"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["change", "prefix", "destination", "old", "new", "percent"]
    assert [line.split()[:2] for line in lines[1:-1]] == [
        ["added", "49"],
        ["removed", "33"],
        ["rate_up", "44"],
        ["increment", "44"],
        ["dates", "447"],
    ]
    assert "+33.33%" in lines[3]
    assert lines[4].split()[3:] == ["60/60", "1/1"]
    assert lines[-1] == (
        "1 added, 1 removed, 1 rate_up, 1 increment, 1 dates "
        "(3 -> 4 rows; prices in force at 2026-01-15)"
    )
    assert "note: changed rows start later, first at 2026-02-01T00:00:00Z" in err
    assert main(["diff", str(files["old"]), str(files["old"])]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("no differences (3 -> 3 rows; prices in force at ")
    assert err == ""


def test_cli_csv_and_only(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["diff", str(files["old"]), str(files["new"]), "--at", "2026-02-01T00:00:00Z"]
    assert main([*args, "--csv"]) == 1
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["change"], r["prefix"], r["old"], r["new"], r["percent"]) for r in rows] == [
        ("added", "49", "", "0.010000", ""),
        ("removed", "33", "0.020000", "", ""),
        ("rate_up", "44", "0.030000", "0.040000", "+33.33%"),
        ("rate_up", "447", "0.080000", "0.090000", "+12.50%"),
        ("increment", "44", "60/60", "1/1", ""),
        ("dates", "447", "2026-01-01.. 0.080000",
         "2026-01-01..2026-02-01 0.080000; 2026-02-01.. 0.090000", ""),
    ]  # fmt: skip
    assert "1 added, 1 removed, 2 rate_up, 1 increment, 1 dates" in err
    assert main([*args, "--only", "rate_up,rate_down", "--csv"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["prefix"] for r in rows] == ["44", "447"]
    assert main([*args, "--only", "destination"]) == 0
    assert capsys.readouterr().out.startswith("no differences")
    assert main([*args, "--only", "cheaper"]) == 2
    assert "unknown change kind 'cheaper'" in capsys.readouterr().err


def test_cli_deck_options_apply_to_both_decks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.csv"
    old.write_text("Code;Price\n44;0.01\n")
    new = tmp_path / "new.csv"
    new.write_text("Code;Price\n44;0.0125\n")
    opts = ["--delimiter", ";", "--column", "prefix=Code", "--column", "rate=Price"]
    assert main(["diff", str(old), str(new), *opts, "--precision", "4", "--csv"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["old"], r["new"], r["percent"]) for r in rows] == [("0.0100", "0.0125", "+25.00%")]


def test_cli_bad_deck_line_is_reported_with_file_line_and_field(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "44,UK,0.01,,,,,\n45,X,zero,,,,,\n")
    assert main(["diff", str(files["old"]), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"error: {bad}:3: column 'rate': not a decimal number: 'zero'" in err
    assert main(["diff", str(files["old"]), str(bad), "--lenient"]) == 1
    assert f"warning: {bad}:3: column 'rate'" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "missing.csv"), str(bad)]) == 2
    assert "missing.csv:0: cannot open" in capsys.readouterr().err
    assert main(["diff", str(files["old"]), str(files["new"]), "--at", "soon"]) == 2
    assert "not an ISO 8601 time: 'soon'" in capsys.readouterr().err


def test_cli_reference_implementation_gives_the_same_output(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["diff", str(files["old"]), str(files["new"]), "--at", "2026-01-15", "--csv"]
    assert main(args) == 1
    rust = capsys.readouterr()
    assert main([*args, "--reference"]) == 1
    assert capsys.readouterr() == rust
