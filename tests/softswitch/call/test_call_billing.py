"""Sell and buy costs through lcr: increments, connect fee, missing decks and rates."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from softswitch.call.billing import call_costs
from softswitch.call.snapshot import Snapshot

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_sell_and_buy(snapshot: Snapshot) -> None:
    sell, buy = call_costs(
        snapshot, snapshot.accounts["ipcust"], snapshot.gateways["gwa"], "447911", AT, 61
    )
    # sell 0.20/min in 60/1 increments: 61 s; buy 0.15/min in 1/1: 61 s.
    assert sell == Decimal("0.203334")  # 0.20 * 61 / 60 = 0.2033333.. rounded up at 1e-6
    assert buy == Decimal("0.152500")


def test_initial_increment_and_connect_fee(snapshot: Snapshot) -> None:
    sell, buy = call_costs(
        snapshot, snapshot.accounts["ipcust"], snapshot.gateways["gwa"], "1555", AT, 1
    )
    # sell: 0.05 connect + 0.01/min * 6 s; buy 0.004/min * 1 s.
    assert sell == Decimal("0.051000")
    assert buy == Decimal("0.000067")


def test_missing_decks_and_rates_are_none_not_zero(snapshot: Snapshot) -> None:
    assert call_costs(snapshot, snapshot.accounts["tech1"], None, "44", AT, 60) == (None, None)
    sell, buy = call_costs(
        snapshot, snapshot.accounts["ipcust"], snapshot.gateways["gwb"], "1555", AT, 60
    )
    assert sell is not None
    assert buy is None  # carrier b has no rate for 1
