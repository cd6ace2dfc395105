"""The normalise stage: leading '+', ordered rewrite rules, digits only."""

from __future__ import annotations

import pytest

from softswitch.call.normalise import normalise
from softswitch.call.refusal import EndReason, Refusal
from softswitch.call.snapshot import Snapshot


@pytest.mark.parametrize(
    ("dialed", "expected"),
    [
        ("+447911123456", "447911123456"),
        ("00447911123456", "447911123456"),  # regex ^00 -> ''
        ("07911123456", "447911123456"),  # prefix 0: strip 1, add 44
        ("447911123456", "447911123456"),
        ("+00447911", "447911"),  # '+' goes first, then the rules
    ],
)
def test_rules_apply_in_order(snapshot: Snapshot, dialed: str, expected: str) -> None:
    assert normalise(snapshot.accounts["ipcust"], dialed) == expected


def test_account_without_rules_only_drops_plus(snapshot: Snapshot) -> None:
    assert normalise(snapshot.accounts["tech1"], "+0044") == "0044"


@pytest.mark.parametrize("dialed", ["", "+", "44abc", "44*1", "٤٤"])
def test_not_a_number_is_484(snapshot: Snapshot, dialed: str) -> None:
    out = normalise(snapshot.accounts["tech1"], dialed)
    assert isinstance(out, Refusal)
    assert (out.status, out.end_reason) == (484, EndReason.INVALID_NUMBER)
