"""Rate decks through the public API, for the Rust core and the reference alike."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import lcr

UTC = dt.UTC
JAN = dt.datetime(2026, 1, 1, tzinfo=UTC)
FEB = dt.datetime(2026, 2, 1, tzinfo=UTC)
HEADER = (
    "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,"
    "effective_from,effective_to\n"
)


def deck_of(impl: ModuleType, *rows: object, **options: object) -> lcr.RateDeck:
    deck: lcr.RateDeck = impl.RateDeck.from_rows(list(rows), **options)
    return deck


def test_longest_prefix_and_plus(impl: ModuleType) -> None:
    deck = deck_of(
        impl,
        {"prefix": "44", "destination": "UK", "rate": "0.01"},
        {"prefix": "447", "destination": "UK Mobile", "rate": "0.05"},
        {"prefix": "4479", "destination": "UK Mobile X", "rate": Decimal("0.09")},
    )
    for number, prefix in [("+447912", "4479"), ("447812", "447"), ("4420", "44")]:
        rate = deck.lookup(number, JAN)
        assert rate is not None
        assert rate.prefix == prefix
    assert deck.lookup("33", JAN) is None
    rate = deck.lookup("447812", JAN)
    assert rate is not None
    assert (rate.destination, rate.rate, rate.connect_fee) == ("UK Mobile", Decimal("0.05"), 0)
    assert (rate.initial_increment, rate.subsequent_increment) == (60, 60)


def test_empty_prefix_is_a_default_route(impl: ModuleType) -> None:
    deck = deck_of(impl, ("", "World", "1"), ("1", "US", "0.01"))
    rate = deck.lookup("999", JAN)
    assert rate is not None
    assert (rate.prefix, rate.destination) == ("", "World")


@pytest.mark.parametrize("bad", ["44a1", "++44", " 44", "４４"])
def test_non_digit_numbers_are_refused(impl: ModuleType, bad: str) -> None:
    deck = deck_of(impl, ("44", "UK", "0.01"))
    with pytest.raises(lcr.LcrError, match="invalid number"):
        deck.lookup(bad, JAN)


def test_effective_dating(impl: ModuleType) -> None:
    deck = deck_of(
        impl,
        ("44", "UK", "0.01"),
        ("447", "UK Mobile old", "0.05", None, 1, 1, None, FEB),
        ("447", "UK Mobile new", "0.04", None, 1, 1, FEB),
        ("4479", "UK future only", "0.09", None, 1, 1, "2027-01-01"),
    )
    before = deck.lookup("447912", JAN)
    after = deck.lookup("447912", FEB)
    assert before is not None
    assert after is not None
    assert (before.prefix, before.rate) == ("447", Decimal("0.05"))
    assert (after.prefix, after.rate, after.effective_from) == ("447", Decimal("0.04"), FEB)
    # A prefix whose only version is in the future does not match; the shorter one does.
    assert before.effective_to == FEB
    later = deck.lookup("447912", dt.datetime(2027, 1, 1))
    assert later is not None
    assert later.prefix == "4479"


def test_newest_open_version_supersedes(impl: ModuleType) -> None:
    deck = deck_of(impl, ("1", "US", "0.01", None, 1, 1, JAN), ("1", "US", "0.02", None, 1, 1, FEB))
    assert deck.cost("1", 60, FEB) == Decimal("0.02")
    assert deck.cost("1", 60, FEB - dt.timedelta(seconds=1)) == Decimal("0.01")
    with pytest.raises(lcr.NoRateError):
        deck.cost("1", 60, JAN - dt.timedelta(seconds=1))


@pytest.mark.parametrize(
    ("increments", "duration", "billed"),
    [
        ((60, 60), 0, 0),
        ((60, 60), 1, 60),
        ((60, 60), 61, 120),
        ((6, 6), 7, 12),
        ((30, 6), 29, 30),
        ((30, 6), 31, 36),
        ((1, 1), 37, 37),
    ],
)
def test_billing_increments(
    impl: ModuleType, increments: tuple[int, int], duration: int, billed: int
) -> None:
    deck = deck_of(impl, ("1", "US", "0.6", "0.01", *increments))
    rate = deck.lookup("1", JAN)
    assert rate is not None
    assert rate.billed_seconds(duration) == billed
    assert deck.cost("1", duration, JAN) == Decimal("0.01") + Decimal("0.01") * billed


@pytest.mark.parametrize(
    ("rounding", "expected"), [("up", "0.001167"), ("down", "0.001166"), ("half_up", "0.001167")]
)
def test_rounding_is_declared(impl: ModuleType, rounding: str, expected: str) -> None:
    deck = deck_of(impl, ("1", "US", "0.01", None, 1, 1), rounding=rounding)
    assert deck.cost("1", 7, JAN) == Decimal(expected)
    assert deck.rounding == rounding


def test_precision_refuses_silent_rounding(impl: ModuleType) -> None:
    with pytest.raises(lcr.DeckError, match="more than 4 decimal places") as info:
        deck_of(impl, ("1", "US", "0.00001"), precision=4)
    assert (info.value.line, info.value.column) == (1, "rate")
    assert deck_of(impl, ("1", "US", "0.00001"), precision=9).cost("1", 60, JAN) == Decimal(
        "0.000010000"
    )


def test_floats_are_refused_for_money(impl: ModuleType) -> None:
    with pytest.raises(lcr.DeckError, match="floats are refused"):
        deck_of(impl, ("1", "US", 0.01))


def test_batches_with_one_or_many_moments(impl: ModuleType) -> None:
    deck = deck_of(
        impl, ("1", "US", "0.6", None, 1, 1, None, FEB), ("1", "US", "1.2", None, 1, 1, FEB)
    )
    numbers = ["1555", "+1555", "44"]
    assert [r and r.rate for r in deck.lookup_many(numbers, JAN)] == [
        Decimal("0.6"),
        Decimal("0.6"),
        None,
    ]
    assert deck.cost_many(numbers, [10, 20, 30], [JAN, FEB, FEB]) == [
        Decimal("0.1"),
        Decimal("0.4"),
        None,
    ]
    with pytest.raises(lcr.LcrError, match=r"numbers\[1\]"):
        deck.lookup_many(["1", "x"], JAN)
    with pytest.raises(lcr.LcrError, match="2 numbers but 1 durations"):
        deck.cost_many(["1", "1"], [1], JAN)
    with pytest.raises(lcr.LcrError, match="must be >= 0"):
        deck.cost_many(["1"], [-1], JAN)


def test_large_batches_match_single_lookups(impl: ModuleType) -> None:
    """Past the core's chunk (8,192 numbers) and lane sizes, from a tuple and a generator,
    at one moment (a deck with few tariffs and many numbers) and at one moment per number."""
    rows: list[tuple[object, ...]] = [("", "World", "0.9")]
    for k in range(300):
        prefix = str(100 + k)
        rows.append((prefix, f"D{k % 7}", f"0.{k % 7 + 1}", None, 1, 1, None, FEB))
        rows.append((prefix, f"D{k % 7}", f"0.{k % 5 + 1}1", None, 1, 1, FEB))
        rows.append((prefix + "55", "Deep", "0.02"))
    deck = deck_of(impl, *rows)
    numbers = [f"{'+' if i % 3 == 0 else ''}{100 + i % 320}{i % 97:02d}{i}" for i in range(20_000)]
    moments = [JAN if i % 2 else FEB for i in range(len(numbers))]

    def view(rate: lcr.Rate | None) -> tuple[str, Decimal] | None:
        return rate and (rate.prefix, rate.rate)

    single = [view(deck.lookup(n, JAN)) for n in numbers]
    for given in (numbers, tuple(numbers), iter(numbers)):
        batch = deck.lookup_many(given, JAN)
        assert [view(r) for r in batch] == single
        assert [view(r) for r in batch[-3:]] == single[-3:]
    per_moment = deck.lookup_many(numbers, moments)
    assert [view(r) for r in per_moment] == [
        view(deck.lookup(n, m)) for n, m in zip(numbers, moments, strict=True)
    ]


def test_batch_errors_name_the_first_bad_number(impl: ModuleType) -> None:
    deck = deck_of(impl, ("1", "US", "0.6"))
    numbers: list[Any] = ["1555"] * 20_000
    numbers[15_000] = "15x"
    numbers[9_000] = "1 5"
    with pytest.raises(lcr.LcrError, match=r"numbers\[9000\]: invalid number '1 5'"):
        deck.lookup_many(numbers, JAN)
    numbers[100] = 15
    with pytest.raises(TypeError, match=r"numbers\[100\] is not a str"):
        deck.lookup_many(numbers, JAN)
    # The reference's order: the moments first, then each number in turn, whatever is wrong.
    with pytest.raises(lcr.LcrError, match="1 numbers but 2 moments in at"):
        deck.lookup_many(["x1"], [JAN, JAN])
    with pytest.raises(lcr.LcrError, match=r"2 numbers but 1 moments in at"):
        deck.cost_many(["x1", 5], [1, 1], [JAN])  # type: ignore[list-item]
    with pytest.raises(lcr.LcrError, match=r"numbers\[0\]: invalid number"):
        deck.lookup_many(["1x", 5], JAN)  # type: ignore[list-item]
    with pytest.raises(lcr.LcrError, match=r"numbers\[1\]: invalid number '1\\ud800'"):
        deck.lookup_many(["1", "1\ud800", 5], JAN)  # type: ignore[list-item]
    late: list[Any] = ["1555"] * 20_000
    late[17_000] = "1\ud800"
    late[19_000] = None
    with pytest.raises(lcr.LcrError, match=r"numbers\[17000\]: invalid number '1\\ud800'"):
        deck.lookup_many(late, JAN)
    late[17_000] = "+1555"
    with pytest.raises(TypeError, match=r"numbers\[19000\] is not a str"):
        deck.lookup_many(late, JAN)
    with pytest.raises(TypeError, match=r"numbers\[1000\] is not a str"):
        deck.cost_many(late[18_000:], [1] * 2_000, JAN)


def test_csv_default_layout(impl: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "deck.csv"
    path.write_text(
        HEADER
        + "44,UK,0.0100,0,60,60,2026-01-01,\n"
        + "\n"
        + '447,"UK, Mobile",0.05,0.001,1,1,,2026-02-01T00:00:00Z\n'
    )
    deck = impl.RateDeck.from_csv(path)
    assert (len(deck), deck.prefix_count, deck.path) == (2, 2, str(path))
    rate = deck.lookup("4479", JAN)
    assert rate is not None
    assert (rate.destination, rate.connect_fee) == ("UK, Mobile", Decimal("0.001"))
    assert deck.lookup("4479", FEB) is not None  # falls back to 44
    assert deck.lookup("4479", FEB).prefix == "44"


def test_csv_carrier_layout(impl: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "carrier.csv"
    path.write_text("\ufeffCountry;Code;Price (USD);Billing\nUK;+44;0.0100;x\n")
    deck = impl.RateDeck.from_csv(
        path,
        columns={"prefix": "Code", "destination": "Country", "rate": "Price (USD)"},
        delimiter=";",
    )
    rate = deck.lookup("4420", JAN)
    assert rate is not None
    assert (rate.prefix, rate.destination, rate.rate) == ("44", "UK", Decimal("0.01"))
    headerless = tmp_path / "plain.csv"
    headerless.write_text("44,0.5\n")
    deck = impl.RateDeck.from_csv(headerless, has_header=False, columns={"prefix": 0, "rate": 1})
    assert deck.cost("44", 60, JAN) == Decimal("0.5")


def test_bad_rows_name_file_line_and_column(impl: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "Code,Price,From\n"
        "44,0.01,2026-01-01\n"
        "33,abc,2026-01-01\n"
        "3x,0.1,2026-01-01\n"
        "34,0.1,2026-13-01\n"
        "44,0.02,2026-01-01\n"
    )
    columns = {"prefix": "Code", "rate": "Price", "effective_from": "From"}
    with pytest.raises(lcr.DeckError) as info:
        impl.RateDeck.from_csv(path, columns=columns)
    error = info.value
    assert (error.path, error.line, error.column) == (str(path), 3, "Price")
    assert "not a decimal number" in error.reason
    assert str(error).startswith(f"{path}:3: column 'Price': ")
    deck = impl.RateDeck.from_csv(path, columns=columns, strict=False)
    assert len(deck) == 1
    assert [(e.line, e.column) for e in deck.errors] == [
        (3, "Price"),
        (4, "Code"),
        (5, "From"),
        (6, "Code"),
    ]
    assert "duplicate of line 2" in deck.errors[-1].reason


def test_missing_file_and_missing_column(impl: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(lcr.DeckError, match="cannot open"):
        impl.RateDeck.from_csv(tmp_path / "nope.csv")
    path = tmp_path / "d.csv"
    path.write_text("prefix,destination\n44,UK\n")
    with pytest.raises(lcr.DeckError, match="required column 'rate'"):
        impl.RateDeck.from_csv(path)


def test_rows_and_errors_are_inspectable(impl: ModuleType) -> None:
    deck = deck_of(
        impl, ("2", "B", "1"), ("1", "A", "1"), ("1", "A", "2", None, None, None, JAN), strict=False
    )
    assert [(r.prefix, r.rate) for r in deck.rows()] == [
        ("1", Decimal("2")),
        ("1", Decimal("1")),
        ("2", Decimal("1")),
    ]
    assert deck.errors == []


def test_progress_is_reported(impl: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "".join(f"{n},X,0.01,,,,,\n" for n in range(100_000, 170_000)))
    calls: list[tuple[int, int, int]] = []
    deck = impl.RateDeck.from_csv(path, progress=lambda *a: calls.append(a))
    assert len(deck) == 70_000
    assert calls
    assert calls[-1][1] == calls[-1][2] == path.stat().st_size


def test_limits_are_errors_not_crashes(impl: ModuleType) -> None:
    with pytest.raises(lcr.DeckError, match="longer than 32 digits"):
        deck_of(impl, ("1" * 2_000_000, "x", "1"))
    with pytest.raises(lcr.DeckError, match="not an ISO 8601") as info:
        deck_of(impl, ("1", "x", "1", None, None, None, "0000-01-01"))
    assert info.value.column == "effective_from"
    huge = deck_of(impl, ("1", "x", "9000000000000"))
    with pytest.raises(lcr.LcrError, match="cost too large"):
        huge.cost("1", 10**9, JAN)


def test_batches_are_sequences(impl: ModuleType) -> None:
    from collections.abc import Sequence

    deck = deck_of(impl, ("1", "US", "0.6"))
    batch = deck.lookup_many(["1", "2", "15"], JAN)
    assert isinstance(batch, Sequence)
    assert [r and r.prefix for r in batch[1:]] == [None, "1"]
    assert [r and r.prefix for r in batch[::-2]] == ["1", "1"]
    assert batch[-1] is not None


def test_times_are_exact_far_from_1970(impl: ModuleType) -> None:
    deck = deck_of(impl, ("1", "US", "0.6", None, None, None, None, "2600-01-01"))
    just_before = dt.datetime(2599, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert deck.lookup("1", just_before) is not None
    assert deck.lookup("1", just_before + dt.timedelta(microseconds=1)) is None


def test_strict_raises_the_first_bad_row_whatever_its_kind(impl: ModuleType) -> None:
    rows = [("44", "UK", "0.01"), ("44", "UK", "0.02"), ("45", "X", "bad")]
    with pytest.raises(lcr.DeckError, match="duplicate of line 1") as info:
        deck_of(impl, *rows)
    assert info.value.line == 2
    with pytest.raises(lcr.DeckError, match="not a decimal number") as later:
        deck_of(impl, rows[2], *rows[:2])
    assert later.value.line == 1
