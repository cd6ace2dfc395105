"""The account stage's money: what the call costs the customer and what it costs us.

``sell`` is rated with the account's deck, ``buy`` with the answering gateway's deck, both
for the *normalised* number (the destination, not the digits a carrier's prefix adds) and at
``start``, the answer time (a rate change during a call does not re-price it). Billing
increments, connect fees and rounding are the deck's, applied by ``lcr`` exactly as
documented in the README. Only answered calls are costed; the CDR of an unanswered call has
no costs. A missing deck or a number without a rate in force gives None, never zero.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import lcr

from ..config import Account, Gateway
from .snapshot import Snapshot

__all__ = ["call_costs", "deck_cost"]


def deck_cost(
    snapshot: Snapshot, deck_id: str | None, number: str, start: dt.datetime, duration_s: int
) -> Decimal | None:
    if deck_id is None:
        return None
    deck = snapshot.decks.get(deck_id)
    if deck is None:
        return None
    try:
        return deck.cost(number, duration_s, start)
    except lcr.NoRateError:
        return None


def call_costs(
    snapshot: Snapshot,
    account: Account,
    gateway: Gateway | None,
    number: str,
    start: dt.datetime,
    duration_s: int,
) -> tuple[Decimal | None, Decimal | None]:
    """(sell cost, buy cost) of an answered call of ``duration_s`` whole seconds."""
    sell = deck_cost(snapshot, account.rate_deck, number, start, duration_s)
    buy = (
        None
        if gateway is None
        else deck_cost(snapshot, gateway.rate_deck, number, start, duration_s)
    )
    return sell, buy
