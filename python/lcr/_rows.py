"""Turns the rows a Python caller hands to ``RateDeck.from_rows`` into deck text fields.

Both implementations read rows through this one function, so a row means the same thing to
both; the text is then parsed by each implementation's own deck grammar. Floats are refused:
money is never a float.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from decimal import Decimal

from .errors import DeckError

__all__ = ["FIELDS", "row_fields"]

#: The deck fields, in the default CSV column order.
FIELDS = (
    "prefix",
    "destination",
    "rate",
    "connect_fee",
    "initial_increment",
    "subsequent_increment",
    "effective_from",
    "effective_to",
)


def _text(value: object, line: int, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise DeckError("<rows>", line, field, "a bool is not a deck value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise DeckError("<rows>", line, field, f"not a finite number: {value}")
        return format(value, "f")
    if isinstance(value, float):
        raise DeckError("<rows>", line, field, "floats are refused for money; use Decimal or str")
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="seconds")
    if isinstance(value, _dt.date):
        return value.isoformat()
    raise DeckError("<rows>", line, field, f"unsupported value type {type(value).__name__}")


def row_fields(row: Mapping[str, object] | Sequence[object], line: int) -> list[str]:
    """The eight text fields of ``row`` (a mapping by field name, or a sequence in order)."""
    if isinstance(row, Mapping):
        unknown = [k for k in row if k not in FIELDS]
        if unknown:
            raise DeckError("<rows>", line, str(unknown[0]), "unknown field")
        return [_text(row.get(f), line, f) for f in FIELDS]
    if isinstance(row, str | bytes) or not isinstance(row, Sequence):
        raise DeckError("<rows>", line, None, "a row must be a mapping or a sequence of fields")
    if len(row) > len(FIELDS):
        raise DeckError("<rows>", line, None, f"more than {len(FIELDS)} fields")
    values = list(row) + [None] * (len(FIELDS) - len(row))
    return [_text(v, line, f) for v, f in zip(values, FIELDS, strict=True)]
