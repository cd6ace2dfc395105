"""Money as the ledger keeps it: integers of nano-units (10**-9 of the currency unit).

Decks price at their own precision (0 to 9 decimals, ``lcr``), so one fixed sub-unit fine
enough for every deck lets a single integer column hold every account's amounts and makes
``SUM(amount)`` exact in SQL. ``Decimal`` is only the edge: what operators type and read.
An amount more precise than the account's deck (``topup 1.0000001`` on a 6-decimal deck) is
refused rather than rounded: a ledger that silently rounds a top-up is not exact.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["NANO", "AmountError", "format_amount", "from_nanos", "parse_amount", "to_nanos"]

#: Nano-units per currency unit.
NANO = 10**9
_MAX = 2**63 - 1


class AmountError(ValueError):
    """An amount an operator typed that cannot be booked, with the reason."""


def to_nanos(value: Decimal) -> int:
    """An exact ``Decimal`` in nano-units; more than 9 decimals is an error, never rounded.

    Integer arithmetic on the digits: ``value * NANO`` would round to the context's 28
    digits first (``1.0000000000000000000000000001`` became exactly one unit).
    """
    if not value.is_finite():
        raise AmountError(f"{value} is not an amount")
    if value.is_zero():
        return 0
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    shift = exponent + 9
    if len(digits) + shift > 19:  # 20 digits or more of nano-units: beyond 2**63 - 1
        raise AmountError(f"{value} is too large")
    coefficient = int("".join(map(str, digits)))
    scale: int = 10 ** abs(shift)
    if shift >= 0:
        units = coefficient * scale
    else:
        units, rest = divmod(coefficient, scale)
        if rest:
            raise AmountError(f"{value} has more than 9 decimal places")
    if units > _MAX:
        raise AmountError(f"{value} is too large")
    return -units if sign else units


def from_nanos(units: int, precision: int = 9) -> Decimal:
    """``units`` nano-units as a ``Decimal`` with exactly ``precision`` decimals (the value
    must be a multiple of ``10**-precision``: every ledger amount of an account is)."""
    value = Decimal(units).scaleb(-9)
    return value.quantize(Decimal(1).scaleb(-precision))


def format_amount(units: int, precision: int) -> str:
    """Plain decimal text (no exponent), ``precision`` decimals, e.g. ``-12.500000``."""
    return f"{from_nanos(units, precision):f}"


def parse_amount(text: str, precision: int, *, signed: bool = False) -> int:
    """An operator's amount in nano-units: a plain decimal with at most ``precision``
    decimals, positive (or, when ``signed``, non-zero with an optional sign)."""
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    if not body or not all(c in "0123456789." for c in body) or body.count(".") > 1:
        raise AmountError(f"{text!r} is not a decimal amount (write e.g. 25 or 12.50)")
    if body == ".":
        raise AmountError(f"{text!r} is not a decimal amount (write e.g. 25 or 12.50)")
    try:
        value = Decimal(stripped)
    except InvalidOperation:
        raise AmountError(f"{text!r} is not a decimal amount") from None
    if stripped[:1] == "-" and not signed:
        raise AmountError(f"{text!r} is negative; the amount must be positive")
    if value == 0:
        raise AmountError(f"{text!r} is zero; nothing to book")
    exponent = value.normalize().as_tuple().exponent  # 12.50 has 1 decimal that counts
    assert isinstance(exponent, int)
    if -exponent > precision:
        raise AmountError(
            f"{text!r} has {-exponent} decimal places; this account's deck has {precision}"
        )
    return to_nanos(value)
