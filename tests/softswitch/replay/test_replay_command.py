"""``softswitch replay`` on five hand-made CDRs (``replay_support``): exact figures."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from replay_support import DAY, HEADER, records, write_cdrs, write_config

from softswitch.cdr import CdrRecord, CdrStore, write_csv
from softswitch.cli import main
from softswitch.replay.command import replay

COLUMNS = [
    "destination",
    "gateway",
    "calls_before",
    "minutes_before",
    "revenue_before",
    "cost_before",
    "margin_before",
    "calls_after",
    "minutes_after",
    "revenue_after",
    "cost_after",
    "margin_after",
]


@pytest.fixture
def switch(tmp_path: Path) -> tuple[Path, Path]:
    return write_config(tmp_path), write_cdrs(tmp_path / "cdr.sqlite")


def run(config: Path, cdrs: Path, *args: str, **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = replay(str(config), str(cdrs), list(args), out=out, err=err, **kw)  # type: ignore[arg-type]
    return status, out.getvalue(), err.getvalue()


def table(config: Path, cdrs: Path, *decks: str, **kw: object) -> dict[tuple[str, str], list[str]]:
    """The CSV table as (destination, gateway) -> the ten figures."""
    out, err = io.StringIO(), io.StringIO()
    status = replay(str(config), str(cdrs), list(decks), csv_out="-", out=out, err=err, **kw)  # type: ignore[arg-type]
    assert status == 0, err.getvalue()
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == COLUMNS
    return {(r[0], r[1]): r[2:] for r in rows[1:]}


def deck(folder: Path, name: str, rows: str) -> str:
    (folder / name).write_text(HEADER + rows)
    return str(folder / name)


UNCHANGED = {
    ("(unknown)", "(refused)"): ["1", "0.00", "0", "0", "0", "1", "0.00", "0", "0", "0"],
    ("Germany", "b"): [
        *("1", "1.50", "0.060000", "0.021000", "0.039000"),
        *("1", "1.50", "0.060000", "0.021000", "0.039000"),
    ],
    ("United Kingdom", "a"): [
        *("3", "2.50", "0.060000", "0.030000", "0.030000"),
        *("3", "2.50", "0.060000", "0.030000", "0.030000"),
    ],
}


def test_same_decks_give_the_recorded_figures(switch: tuple[Path, Path]) -> None:
    assert table(*switch) == UNCHANGED
    status, out, _ = run(*switch)
    assert status == 0
    assert "5 calls replayed: 0 to a different first gateway, 0 refused" in out
    assert "margin 0.069000 -> 0.069000 (+0.000000)" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split() == [
        *("total", "5", "4.00", "0.120000", "0.051000", "0.069000"),
        *("5", "4.00", "0.120000", "0.051000", "0.069000"),
    ]


def test_a_dearer_rate_that_keeps_the_route_changes_cost_and_margin_exactly(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    new = deck(tmp_path, "a-new.csv", "44,United Kingdom,0.011,0,60,60\n49,Germany,0.015,0,60,60\n")
    found = table(*switch, f"a={new}")
    # c1: 2 minutes at 0.011; c2: 30 s billed as one minute.
    assert found[("United Kingdom", "a")] == [
        *("3", "2.50", "0.060000", "0.030000", "0.030000"),
        *("3", "2.50", "0.060000", "0.033000", "0.027000"),
    ]
    assert found[("Germany", "b")] == UNCHANGED[("Germany", "b")]
    _, out, _ = run(*switch, f"a={new}")
    assert "margin 0.069000 -> 0.066000 (-0.003000)" in out


def test_a_rate_above_the_other_carrier_moves_the_calls(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    new = deck(tmp_path, "a-new.csv", "44,United Kingdom,0.015,0,60,60\n49,Germany,0.015,0,60,60\n")
    found = table(*switch, f"a={new}")
    assert found[("United Kingdom", "a")] == [
        *("3", "2.50", "0.060000", "0.030000", "0.030000"),
        *("0", "0.00", "0", "0", "0"),
    ]
    # On b per second at 0.014: 120 s = 0.028, 30 s = 0.007; c4 (unanswered) moves too.
    assert found[("United Kingdom", "b")] == [
        *("0", "0.00", "0", "0", "0"),
        *("3", "2.50", "0.060000", "0.035000", "0.025000"),
    ]
    _, out, _ = run(*switch, f"a={new}")
    assert "5 calls replayed: 3 to a different first gateway, 0 refused" in out
    sample = [line.split() for line in out.splitlines() if line.startswith("  2026")]
    assert [(s[1], s[-3], s[-1]) for s in sample] == [
        ("c1", "a", "b"),
        ("c2", "a", "b"),
        ("c4", "a", "b"),
    ]


def test_a_prefix_removed_from_every_carrier_refuses_its_calls(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    a = deck(tmp_path, "a-new.csv", "44,United Kingdom,0.010,0,60,60\n")
    b = deck(tmp_path, "b-new.csv", "44,United Kingdom,0.014,0,1,1\n")
    found = table(*switch, f"a={a}", f"b={b}")
    assert found[("Germany", "b")] == [
        *("1", "1.50", "0.060000", "0.021000", "0.039000"),
        *("0", "0.00", "0", "0", "0"),
    ]
    assert found[("Germany", "(refused)")] == [
        *("0", "0.00", "0", "0", "0"),
        *("1", "0.00", "0", "0", "0"),
    ]
    _, out, _ = run(*switch, f"a={a}", f"b={b}")
    assert "5 calls replayed: 0 to a different first gateway, 1 refused" in out
    assert "c3  cust  4930123456  b -> (refused) no_route: a: no_rate, b: no_rate" in out


def test_a_sell_deck_without_the_prefix_refuses_with_no_rate(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    sell = deck(tmp_path, "sell-new.csv", "44,United Kingdom,0.020,0,60,60\n")
    _, out, _ = run(*switch, f"sell={sell}")
    assert "b -> (refused) no_rate: deck 'sell' has no rate for 4930123456" in out


def test_the_period_limits_the_calls(switch: tuple[Path, Path]) -> None:
    from softswitch.commands import parse_time

    found = table(
        *switch, since=parse_time("2026-11-02T09:02"), until=parse_time("2026-11-02T09:04")
    )
    assert set(found) == {("United Kingdom", "a"), ("Germany", "b")}
    assert found[("United Kingdom", "a")][:5] == ["1", "0.50", "0.020000", "0.010000", "0.010000"]


def test_a_csv_export_replays_like_the_database(switch: tuple[Path, Path], tmp_path: Path) -> None:
    export = tmp_path / "cdrs.csv"
    with export.open("w", newline="") as handle:
        write_csv(records(), handle)
    new = deck(tmp_path, "a-new.csv", "44,United Kingdom,0.015,0,60,60\n49,Germany,0.015,0,60,60\n")
    config, database = switch
    assert table(config, export, f"a={new}") == table(config, database, f"a={new}")


def test_the_csv_file_and_the_command_line(
    switch: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, database = switch
    out_file = tmp_path / "out.csv"
    argv = ["replay", "--config", str(config), "--cdrs", str(database), "--csv", str(out_file)]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert shown.splitlines()[0].split() == COLUMNS
    with out_file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["destination"], r["gateway"], r["margin_after"]) for r in rows] == [
        ("(unknown)", "(refused)", "0"),
        ("Germany", "b", "0.039000"),
        ("United Kingdom", "a", "0.030000"),
    ]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("carrier", "--deck 'carrier': expected ID=FILE"),
        ("=x.csv", "--deck '=x.csv': expected ID=FILE"),
        ("zz={dir}/a.csv", "the configuration has no deck 'zz' (its decks: sell, a, b)"),
        ("a={dir}/missing.csv", "missing.csv: no such file"),
    ],
)
def test_bad_deck_arguments_name_the_problem(
    switch: tuple[Path, Path], tmp_path: Path, arg: str, message: str
) -> None:
    status, out, err = run(*switch, arg.format(dir=tmp_path))
    assert status == 1
    assert message in err
    assert out == ""


def test_a_deck_given_twice_and_a_bad_candidate_row(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    status, _, err = run(*switch, f"a={tmp_path}/a.csv", f"a={tmp_path}/b.csv")
    assert status == 1
    assert "deck 'a' given twice" in err
    bad = deck(tmp_path, "a-bad.csv", "44,United Kingdom,cheap,0,60,60\n")
    status, _, err = run(*switch, f"a={bad}")
    assert status == 1
    assert "a-bad.csv:2: rate_decks[1]: column 'rate': not a decimal number" in err


def test_a_file_that_is_no_cdrs_is_refused(switch: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = switch
    other = tmp_path / "other.csv"
    other.write_text("number,duration\n44,60\n")
    status, _, err = run(config, other)
    assert status == 1
    assert "not a CDR export (softswitch cdr --csv): no column 'call_id'" in err
    status, _, err = run(config, tmp_path / "nothing.sqlite")
    assert status == 1
    assert "nothing.sqlite: no such file" in err


def test_caller_prefix_routes_and_time_windows_are_replayed(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    """The recorded callers (441234567890) match a caller_prefix route to b; the UK calls
    were made on a Monday at 09:0x UTC, inside a weekday window that sends Germany to a."""
    config, database = switch
    config.write_text(
        config.read_text()
        + '\n[[routes]]\nplan = "main"\nprefix = "44"\ngateways = ["b"]\ncaller_prefix = "4412"\n'
        + '\n[[routes]]\nplan = "main"\nprefix = "49"\ngateways = ["a"]\n'
        + 'time = [{ days = "mon-fri", from = "09:00", to = "10:00", tz = "UTC" }]\n'
    )
    found = table(config, database)
    # b per second at 0.014: 120 s = 0.028, 30 s = 0.007; a per minute: 90 s = 2 x 0.015.
    assert found[("United Kingdom", "b")][5:] == ["3", "2.50", "0.060000", "0.035000", "0.025000"]
    assert found[("Germany", "a")][5:] == ["1", "1.50", "0.060000", "0.030000", "0.030000"]


def test_min_margin_is_checked_with_each_calls_sell_rate(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    """min_margin 0.009: the UK (sold at 0.020) keeps a (0.010) and loses b (0.014);
    Germany (0.030) keeps both. Carrier a at 0.015 then leaves the UK no carrier."""
    config, database = switch
    config.write_text(config.read_text() + "min_margin = 0.009\n")
    assert table(config, database) == UNCHANGED
    new = deck(tmp_path, "a-new.csv", "44,United Kingdom,0.015,0,60,60\n49,Germany,0.015,0,60,60\n")
    _, out, _ = run(config, database, f"a={new}")
    assert "5 calls replayed: 0 to a different first gateway, 3 refused" in out
    assert (
        "c1  cust  442071234567  a -> (refused) no_route: a: below_min_margin, b: below_min_margin"
    ) in out


def _refused(call_id: str, number: str, end_reason: str, status: int) -> CdrRecord:
    at = DAY + dt.timedelta(minutes=7)
    return CdrRecord(
        call_id=call_id,
        account_id="cust",
        source="10.0.0.1:5060",
        caller="441234567890",
        callee_dialed=number,
        invite_at=at,
        end_at=at,
        end_reason=end_reason,
        status=status,
        q850=21,
    )


def test_the_accounts_allow_and_deny_lists_are_applied_before_routing(
    switch: tuple[Path, Path],
) -> None:
    """The switch refused c6 forbidden_destination (deny 4420) before routing it: the
    replay refuses it the same way, so it is not a change."""
    config, database = switch
    config.write_text(
        config.read_text().replace(
            'routing_plan = "main"\n', 'routing_plan = "main"\ndeny = ["4420"]\n', 1
        )
    )
    with CdrStore(database) as store:
        store.write(_refused("c6", "442079460000", "forbidden_destination", 403))
    # c1, c2 and c4 are 4420 numbers too: recorded as routed, the deny list now refuses them.
    _, out, _ = run(config, database)
    assert "6 calls replayed: 0 to a different first gateway, 3 refused" in out
    assert "c6" not in out
    assert "c1  cust  442071234567  a -> (refused) forbidden_destination: 442071234567" in out


def test_calls_refused_for_live_state_are_not_counted_as_changed(
    switch: tuple[Path, Path],
) -> None:
    config, database = switch
    with CdrStore(database) as store:
        store.write(_refused("c6", "442079460000", "limit_exceeded", 503))
        store.write(_refused("c7", "442079460001", "insufficient_balance", 402))
        store.write(_refused("c8", "442079460002", "no_route", 404))
    _, out, _ = run(config, database)
    # c8's no_route the replay does reproduce: the configuration routes it now, a change.
    assert "8 calls replayed: 1 to a different first gateway, 0 refused" in out
    assert (
        "2 calls the switch refused for its live state (limits, balance, no gateway up...)"
        " would route: not counted as changed"
    ) in out
    assert "c8  cust  442079460002  (refused) no_route -> a" in out
    assert "c6" not in out
    assert "c7" not in out


def _export(database: Path, folder: Path) -> list[str]:
    """The CDRs as ``softswitch cdr --csv`` writes them, one string per record."""
    from softswitch.cdr import query_file

    buffer = io.StringIO()
    write_csv(query_file(database, None), buffer)
    return buffer.getvalue().splitlines(keepends=True)


def test_a_csv_field_longer_than_the_csv_modules_default_is_read(
    switch: tuple[Path, Path], tmp_path: Path
) -> None:
    config, database = switch
    lines = _export(database, tmp_path)
    header = next(csv.reader([lines[0]]))
    row = next(csv.reader([lines[1]]))
    row[header.index("detail")] = "x" * 200_000  # Python's csv refuses > 131072 by default
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    big = tmp_path / "big.csv"
    big.write_text(lines[0] + buffer.getvalue() + "".join(lines[2:]))
    assert run(config, big) == run(config, database)


def test_csv_errors_name_the_physical_line(switch: tuple[Path, Path], tmp_path: Path) -> None:
    config, database = switch
    lines = _export(database, tmp_path)
    header = next(csv.reader([lines[0]]))
    row = next(csv.reader([lines[1]]))
    row[header.index("detail")] = "two\nlines"  # a quoted field over two physical lines
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    bad_row = lines[2].replace(",normal_clearing,", ",normal_clearing,,", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text(lines[0] + buffer.getvalue() + bad_row)
    status, _, err = run(config, bad)
    assert status == 1
    # Record 2 of the file starts on physical line 4 (the first record took lines 2-3).
    fields = len(header)
    assert err == f"error: {bad}: line 4: {fields + 1} fields, the header has {fields}\n"
    stray = tmp_path / "stray.csv"
    stray.write_text(lines[0] + lines[1] + 'a,"b"c\n')
    status, _, err = run(config, stray)
    assert status == 1
    assert err.startswith(f"error: {stray}: line 3: ")


def test_a_malformed_attempts_json_in_the_database_is_named(switch: tuple[Path, Path]) -> None:
    import sqlite3

    config, database = switch
    conn = sqlite3.connect(database)
    conn.execute("UPDATE cdrs SET attempts = '[{\"gateway_id\": ' WHERE call_id = 'c2'")
    conn.commit()
    conn.close()
    status, _, err = run(config, database)
    assert status == 1
    assert err.startswith(
        f"error: {database}: CDR id 2 (call_id 'c2'): attempts: not the JSON array of attempts"
    )
