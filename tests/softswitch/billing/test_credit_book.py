"""The credit book's rules against hand-computed values (docs/billing.md), and the money
edge: operators' amounts parsed and printed at a deck's precision, exactly."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

import lcr
from softswitch.billing.credit import CreditBook, Decision, Terms
from softswitch.billing.money import (
    NANO,
    AmountError,
    format_amount,
    from_nanos,
    parse_amount,
    to_nanos,
)

ACCT = "acme"


def rate(
    per_minute: str,
    fee: str = "0",
    initial: int = 6,
    subsequent: int = 6,
    precision: int = 6,
) -> lcr.Rate:
    deck = lcr.RateDeck.from_rows(
        [("44", "UK", per_minute, fee, initial, subsequent)], precision=precision
    )
    found = deck.lookup("447911123456")
    assert found is not None
    return found


def n(text: str) -> int:
    """Nano-units of a decimal written as text."""
    return to_nanos(Decimal(text))


def book_with(
    balance: str,
    *,
    mode: str = "prepaid",
    limit: str = "0",
    low: str | None = None,
    slice: int = 60,
) -> CreditBook:
    terms = Terms(
        mode="postpaid" if mode == "postpaid" else "prepaid",
        credit_limit=n(limit),
        low_balance=None if low is None else n(low),
    )
    book = CreditBook({ACCT: terms}, slice=slice)
    book.load({ACCT: n(balance)})
    return book


# The worked example of docs/billing.md: 0.06/min, connect fee 0.01, 6/6.
UK = rate("0.060000", "0.010000")
UK_NO_FEE = rate("0.060000")


def test_the_deck_costs_the_tests_rely_on() -> None:
    assert [UK.cost(s) for s in (0, 1, 6, 7, 12, 13, 60)] == [
        Decimal(v)
        for v in ("0.010000", "0.016000", "0.016000", "0.022000", "0.022000", "0.028000", "0.070")
    ]


# ---------------------------------------------------------------------------- admission


def test_admission_at_exactly_cost_1_holds_it() -> None:
    book = book_with("0.016")  # UK.cost(1): connect fee + first 6 s
    assert book.admit("c1", ACCT, UK, 3600)
    assert book.reserved(ACCT) == n("0.016")
    assert book.available(ACCT) == 0
    hold = book.hold("c1")
    assert hold is not None
    assert (hold.reserved, hold.answered_at, hold.extent) == (n("0.016"), None, 0)
    assert not book.admit("c2", ACCT, UK, 3600)  # nothing left for a second call
    assert book.hold("c2") is None
    assert book.reserved(ACCT) == n("0.016")


def test_admission_one_nano_unit_short_is_refused_and_holds_nothing() -> None:
    book = book_with("0.016")
    book.apply([(ACCT, -1)])
    assert book.available(ACCT) == n("0.016") - 1
    assert not book.admit("c1", ACCT, UK, 3600)
    assert book.hold("c1") is None
    assert (book.reserved(ACCT), book.balance(ACCT)) == (0, n("0.016") - 1)


def test_an_account_without_terms_or_balance_is_refused() -> None:
    book = CreditBook({ACCT: Terms("prepaid")})
    assert not book.billed("stranger")
    assert not book.admit("c1", ACCT, UK, 60)  # balance 0, cost(1) 0.016


# ------------------------------------------------------------------------------ slices


@pytest.mark.parametrize(
    ("increments", "slice", "extents"),
    [
        # 60/60: the first slice is the first minute, the next the second, checked 2 s early.
        ((60, 60), 60, [(60, 58.0), (120, 118.0)]),
        # a 30 s slice on a 60/60 deck is rounded up to the minute increment
        ((60, 60), 30, [(60, 58.0), (120, 118.0)]),
        # 6/6 with a 10 s slice: 10 rounds up to 12; the check at 10 takes 10 + 10 -> 24
        ((6, 6), 10, [(12, 10.0), (24, 22.0)]),
        # 1/1: to the second; slice 1 leads by half a second
        ((1, 1), 1, [(1, 0.5), (2, 1.5), (3, 2.5)]),
        # 30/6: a first increment longer than the slice
        ((30, 6), 6, [(30, 28.0), (36, 34.0)]),
    ],
)
def test_slices_extend_at_the_deck_increments(
    increments: tuple[int, int], slice: int, extents: list[tuple[int, float]]
) -> None:
    tariff = rate("0.600000", "0.050000", *increments)
    book = book_with("100", slice=slice)
    assert book.admit("c1", ACCT, tariff, 3600)
    t0 = 1000.0
    decisions = book.answer("c1", t0)
    for i, (extent, at) in enumerate(extents):
        expected_reserved = to_nanos(tariff.cost(extent))
        assert decisions == [Decision("c1", t0 + at, False, extent, expected_reserved)]
        assert book.reserved(ACCT) == expected_reserved
        assert book.available(ACCT) == n("100") - expected_reserved
        if i + 1 < len(extents):
            decisions = book.check("c1", t0 + at)


def test_a_slice_with_a_connect_fee_holds_the_fee_once() -> None:
    book = book_with("1")
    assert book.admit("c1", ACCT, UK, 3600)
    (first,) = book.answer("c1", 0.0)
    # connect fee 0.01 + 60 s at 0.06/min
    assert (first.extent, first.reserved, first.at, first.cut) == (60, n("0.070"), 58.0, False)
    (second,) = book.check("c1", 58.0)
    assert (second.extent, second.reserved, second.at) == (120, n("0.130"), 118.0)


def test_the_last_slice_stops_at_the_cap_with_no_more_checks() -> None:
    book = book_with("100")
    assert book.admit("c1", ACCT, UK, 90)
    (first,) = book.answer("c1", 0.0)
    assert (first.extent, first.at) == (60, 58.0)
    (second,) = book.check("c1", 58.0)
    # 118 s is past the 90 s cap: the hold covers the cap and max_duration ends the call
    assert (second.extent, second.at, second.cut) == (90, None, False)
    assert second.reserved == to_nanos(UK.cost(90))


# -------------------------------------------------------------------------------- cuts


def test_one_call_is_cut_at_the_last_increment_its_credit_pays_for() -> None:
    """0.06/min 6/6 and credit for 15 s (0.015): 12 s cost 0.012, 18 s would cost 0.018."""
    book = book_with("0.015")
    assert book.admit("c1", ACCT, UK_NO_FEE, 3600)
    t0 = 500.0
    assert book.answer("c1", t0) == [Decision("c1", t0 + 12, True, 12, n("0.012"))]
    hold = book.hold("c1")
    assert hold is not None
    assert (hold.cut, hold.extent) == (True, 12)
    # the cut check finds no top-up: hang up now
    assert book.check("c1", t0 + 12) == [Decision("c1", t0 + 12, True, 12, n("0.012"))]
    book.settle("c1", to_nanos(UK_NO_FEE.cost(12)))
    assert (book.balance(ACCT), book.reserved(ACCT)) == (n("0.003"), 0)


def test_the_worked_example_with_a_connect_fee() -> None:
    """docs/billing.md: balance 0.025, fee 0.010 + 0.001/s in 6 s steps: cut at 12 s."""
    book = book_with("0.025")
    assert book.admit("c1", ACCT, UK, 3600)
    assert book.reserved(ACCT) == n("0.016")
    assert book.answer("c1", 0.0) == [Decision("c1", 12.0, True, 12, n("0.022"))]
    book.settle("c1", to_nanos(UK.cost(12)))
    assert book.balance(ACCT) == n("0.003")
    assert not book.admit("c2", ACCT, UK, 3600)  # 0.003 < cost(1) 0.016


def test_a_60_60_call_is_cut_on_the_minute() -> None:
    book = book_with("0.07")  # one minute and a bit: 0.06/min, no fee
    tariff = rate("0.060000", initial=60, subsequent=60)
    assert book.admit("c1", ACCT, tariff, 3600)
    assert book.answer("c1", 0.0) == [Decision("c1", 58.0, False, 60, n("0.06"))]
    # the second minute cannot be had: cut at the end of the first (paid for anyway)
    assert book.check("c1", 58.0) == [Decision("c1", 60.0, True, 60, n("0.06"))]


def test_a_call_whose_credit_runs_out_at_its_check_is_cut_at_the_end_of_its_hold() -> None:
    """1/1 at 0.001/s, balance 0.060: the first slice takes all of it; the check at 58 s
    (2 s lead) finds no more and cuts the call at 60 s, the last second it holds. At the cut
    check there is still nothing: hang up now."""
    tariff = rate("0.060000", initial=1, subsequent=1)
    book = book_with("0.06")
    assert book.admit("c1", ACCT, tariff, 3600)
    assert book.answer("c1", 0.0) == [Decision("c1", 58.0, False, 60, n("0.06"))]
    assert book.check("c1", 58.0) == [Decision("c1", 60.0, True, 60, n("0.06"))]
    assert book.check("c1", 60.0) == [Decision("c1", 60.0, True, 60, n("0.06"))]


def test_two_calls_are_cut_together_within_a_second_of_each_other() -> None:
    """0.001/s to the second, balance 0.100. A up since 0.0 holds 60 s; B answered at
    10.4 cannot take a slice: the latest T with A(10 + k) + B(k) <= 0.100 is k = 45."""
    tariff = rate("0.060000", initial=1, subsequent=1)
    book = book_with("0.100")
    assert book.admit("a", ACCT, tariff, 3600)
    assert book.answer("a", 0.0) == [Decision("a", 58.0, False, 60, n("0.060"))]
    assert book.admit("b", ACCT, tariff, 3600)
    decisions = {d.key: d for d in book.answer("b", 10.4)}
    assert decisions == {
        "a": Decision("a", 55.0, True, 55, n("0.055")),
        "b": Decision("b", 10.4 + 45, True, 45, n("0.045")),
    }
    cut_at = [d.at for d in decisions.values()]
    assert all(at is not None for at in cut_at)
    assert max(cut_at) - min(cut_at) < 1.0  # type: ignore[operator]
    # all of the credit and no more: one second more each would cost 0.102
    assert book.reserved(ACCT) == n("0.100")
    assert book.available(ACCT) == 0
    assert tariff.cost(56) + tariff.cost(46) > Decimal("0.100")
    book.settle("a", to_nanos(tariff.cost(55)))
    book.settle("b", to_nanos(tariff.cost(45)))
    assert (book.balance(ACCT), book.reserved(ACCT)) == (0, 0)


def test_a_second_only_some_of_the_calls_can_have_is_used() -> None:
    """As above with 0.101: at +45 s both fit (0.100), at +46 s they do not (0.102); A
    enters its 57th second at 56.0, before B its 46th at 56.4: A gets that second."""
    tariff = rate("0.060000", initial=1, subsequent=1)
    book = book_with("0.101")
    assert book.admit("a", ACCT, tariff, 3600)
    book.answer("a", 0.0)
    assert book.admit("b", ACCT, tariff, 3600)
    decisions = {d.key: d for d in book.answer("b", 10.4)}
    assert decisions == {
        "a": Decision("a", 56.0, True, 56, n("0.056")),
        "b": Decision("b", 10.4 + 45, True, 45, n("0.045")),
    }
    assert book.available(ACCT) == 0


def test_a_ringing_call_keeps_its_hold_out_of_the_cut() -> None:
    tariff = rate("0.060000", initial=1, subsequent=1)
    book = book_with("0.030")
    assert book.admit("ringing", ACCT, tariff, 3600)  # holds 0.001
    assert book.admit("up", ACCT, tariff, 3600)
    # 0.029 left for the answered call: 29 s
    assert book.answer("up", 0.0) == [Decision("up", 29.0, True, 29, n("0.029"))]
    book.release("ringing")
    assert book.available(ACCT) == n("0.001")


def test_a_top_up_before_the_cut_lets_the_call_go_on() -> None:
    book = book_with("0.015")
    assert book.admit("c1", ACCT, UK_NO_FEE, 3600)
    assert book.answer("c1", 0.0) == [Decision("c1", 12.0, True, 12, n("0.012"))]
    book.apply([(ACCT, n("1"))])  # the switch's ledger sync picks up a top-up
    # the cut check at 12 s takes a slice instead: 12 + 60 = 72 s, next check at 70
    assert book.check("c1", 12.0) == [Decision("c1", 70.0, False, 72, n("0.072"))]
    hold = book.hold("c1")
    assert hold is not None
    assert not hold.cut


# --------------------------------------------------------------------- release, settle


def test_release_returns_the_hold() -> None:
    book = book_with("1")
    assert book.admit("c1", ACCT, UK, 3600)
    assert book.available(ACCT) == n("1") - n("0.016")
    book.release("c1")
    assert (book.available(ACCT), book.reserved(ACCT), book.balance(ACCT)) == (n("1"), 0, n("1"))
    assert book.hold("c1") is None
    book.release("c1")  # twice, or a key never held: nothing
    book.release("nobody")
    assert book.available(ACCT) == n("1")


def test_settle_debits_the_cost_and_frees_the_hold() -> None:
    book = book_with("1")
    assert book.admit("c1", ACCT, UK, 3600)
    book.answer("c1", 0.0)
    assert book.reserved(ACCT) == n("0.070")
    book.settle("c1", to_nanos(UK.cost(37)))  # 42 s billed: 0.010 + 0.042
    assert (book.balance(ACCT), book.reserved(ACCT)) == (n("0.948"), 0)
    assert book.available(ACCT) == n("0.948")
    book.settle("c1", 10**9)  # a second settle of the same call debits nothing
    assert book.balance(ACCT) == n("0.948")
    assert book.check("c1", 58.0) == []


def test_postpaid_calls_run_down_to_minus_the_credit_limit() -> None:
    book = book_with("0", mode="postpaid", limit="0.015")
    assert book.available(ACCT) == n("0.015")
    assert book.admit("c1", ACCT, UK_NO_FEE, 3600)
    assert book.answer("c1", 0.0) == [Decision("c1", 12.0, True, 12, n("0.012"))]
    book.settle("c1", to_nanos(UK_NO_FEE.cost(12)))
    assert book.balance(ACCT) == -n("0.012")
    assert book.available(ACCT) == n("0.003")
    assert not book.admit("c2", ACCT, UK_NO_FEE, 3600)  # cost(1) 0.006 > 0.003


def test_a_prepaid_account_has_no_credit_below_zero() -> None:
    book = book_with("0")
    assert book.available(ACCT) == 0
    assert not book.admit("c1", ACCT, UK_NO_FEE, 3600)


# -------------------------------------------------------------------------- low balance


def _low_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "low_balance"]


def test_low_balance_is_logged_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="softswitch.billing")
    book = book_with("0.050", low="0.030")
    assert _low_warnings(caplog) == []
    for key in ("c1", "c2"):  # 0.022 each: the first takes it below, the second stays below
        assert book.admit(key, ACCT, UK, 3600)
        book.answer(key, 0.0)
        book.settle(key, to_nanos(UK.cost(12)))
    assert book.balance(ACCT) == n("0.006")
    (first,) = _low_warnings(caplog)
    assert first.levelno == logging.WARNING
    assert first.getMessage() == "account acme: balance 0.028000 is below its low_balance 0.030000"
    book.apply([(ACCT, n("0.001"))])  # still below: no new warning
    assert len(_low_warnings(caplog)) == 1
    book.apply([(ACCT, n("0.023"))])  # exactly at low_balance: not below
    assert len(_low_warnings(caplog)) == 1
    book.apply([(ACCT, -n("0.000001"))])  # and below again: a second warning
    second = _low_warnings(caplog)[1]
    assert second.getMessage() == "account acme: balance 0.029999 is below its low_balance 0.030000"
    assert len(_low_warnings(caplog)) == 2


# ------------------------------------------------------------------ negative adjustment


def test_a_negative_adjustment_below_zero_stops_admission_not_the_call_up() -> None:
    tariff = rate("0.060000", initial=1, subsequent=1)
    book = book_with("1")
    assert book.admit("up", ACCT, tariff, 3600)
    assert book.answer("up", 0.0) == [Decision("up", 58.0, False, 60, n("0.060"))]
    book.apply([(ACCT, -n("0.990"))])  # the operator takes more than is free
    assert book.balance(ACCT) == n("0.010")
    assert book.available(ACCT) == n("0.010") - n("0.060") < 0
    assert not book.admit("next", ACCT, tariff, 3600)
    # the call up keeps what it holds: at its next check it is cut at the end of it
    hold = book.hold("up")
    assert hold is not None
    assert hold.reserved == n("0.060")
    (cut,) = book.check("up", 58.0)
    assert (cut.cut, cut.at) == (True, 60.0)
    assert (cut.extent, cut.reserved) == (60, n("0.060"))
    book.settle("up", to_nanos(tariff.cost(60)))
    assert book.balance(ACCT) == n("0.010") - n("0.060")
    assert not book.admit("next", ACCT, tariff, 3600)


# -------------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("text", "precision", "nanos"),
    [
        ("25", 6, 25 * NANO),
        ("12.50", 1, 12_500_000_000),  # the trailing zero is not a decimal that counts
        ("12.5", 1, 12_500_000_000),
        (" 0.000001 ", 6, 1000),
        ("0.000000001", 9, 1),
        ("100", 0, 100 * NANO),
        ("+7", 2, 7 * NANO),
        ("12.", 2, 12 * NANO),
        (".5", 1, NANO // 2),
        ("9223372036.854775807", 9, 2**63 - 1),
    ],
)
def test_parse_amount(text: str, precision: int, nanos: int) -> None:
    assert parse_amount(text, precision) == nanos


@pytest.mark.parametrize(
    ("text", "precision", "reason"),
    [
        ("12.55", 1, "has 2 decimal places; this account's deck has 1"),
        ("1.0000001", 6, "has 7 decimal places"),
        ("0.5", 0, "has 1 decimal places; this account's deck has 0"),
        ("-5", 2, "is negative"),
        ("0", 2, "is zero"),
        ("0.000", 6, "is zero"),
        ("", 2, "is not a decimal amount"),
        ("   ", 2, "is not a decimal amount"),
        ("abc", 2, "is not a decimal amount"),
        ("1.2.3", 2, "is not a decimal amount"),
        (".", 2, "is not a decimal amount"),
        ("-", 2, "is not a decimal amount"),
        ("1e3", 2, "is not a decimal amount"),
        ("1,50", 2, "is not a decimal amount"),
        ("NaN", 2, "is not a decimal amount"),
        ("--5", 2, "is not a decimal amount"),
        ("9223372036.854775808", 9, "too large"),
        ("10000000000", 0, "too large"),
    ],
)
def test_parse_amount_refuses(text: str, precision: int, reason: str) -> None:
    with pytest.raises(AmountError, match=reason.replace(".", r"\.")):
        parse_amount(text, precision)


def test_parse_signed_amounts() -> None:
    assert parse_amount("-5.25", 2, signed=True) == -5_250_000_000
    assert parse_amount("+5.25", 2, signed=True) == 5_250_000_000
    assert parse_amount("5", 2, signed=True) == 5 * NANO
    for zero in ("-0", "+0.00", "0"):
        with pytest.raises(AmountError, match="is zero"):
            parse_amount(zero, 2, signed=True)
    with pytest.raises(AmountError, match="has 3 decimal places"):
        parse_amount("-0.001", 2, signed=True)


def test_to_nanos_never_rounds() -> None:
    assert to_nanos(Decimal("1.000000001")) == NANO + 1
    assert to_nanos(Decimal("-0.5")) == -NANO // 2
    assert to_nanos(Decimal("0E-20")) == 0
    assert to_nanos(Decimal("1.50000000000000")) == 1_500_000_000  # zeros past 9 decimals
    assert to_nanos(Decimal("2E+3")) == 2000 * NANO
    with pytest.raises(AmountError, match="more than 9 decimal places"):
        to_nanos(Decimal("1.0000000000000000000000000001"))
    for bad in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(AmountError, match="is not an amount"):
            to_nanos(Decimal(bad))
    with pytest.raises(AmountError, match="too large"):
        to_nanos(Decimal("1E+10"))


@pytest.mark.parametrize(
    ("nanos", "precision", "text"),
    [
        (-12_500_000_000, 6, "-12.500000"),
        (12_500_000_000, 1, "12.5"),
        (0, 0, "0"),
        (0, 6, "0.000000"),
        (1, 9, "0.000000001"),
        (-1, 9, "-0.000000001"),
        (7 * NANO, 0, "7"),
        (2**63 - 1, 9, "9223372036.854775807"),
        (-1000, 6, "-0.000001"),
    ],
)
def test_format_amount(nanos: int, precision: int, text: str) -> None:
    assert format_amount(nanos, precision) == text
    assert "E" not in text
    assert from_nanos(nanos, precision) == Decimal(text)


def test_parse_and_format_round_trip_at_the_deck_precision() -> None:
    for precision in range(1, 10):
        for text in ("1", "123.4", "0.5", "-7.1"):
            nanos = parse_amount(text, precision, signed=True)
            back = format_amount(nanos, precision)
            assert len(back.partition(".")[2]) == precision
            assert parse_amount(back, precision, signed=True) == nanos
