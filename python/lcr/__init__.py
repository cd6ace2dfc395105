"""``lcr``: longest-prefix routing, least-cost carrier ordering and exact call rating.

The classes here are the Rust core (``lcr._core``); ``lcr.reference`` has the same API in
plain Python and is the specification the core is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._core import Candidate, Rate, RateBatch, RateDeck, Rejection, RouteResult
from .errors import DeckError, LcrError, NoRateError
from .plan import RouteEntry, Strategy, Target
from .route_table import RouteTable
from .windows import TimeWindow

# A RateBatch behaves as a read-only sequence; let isinstance() say so.
Sequence.register(RateBatch)

__all__ = [
    "Candidate",
    "DeckError",
    "LcrError",
    "NoRateError",
    "Rate",
    "RateBatch",
    "RateDeck",
    "Rejection",
    "RouteEntry",
    "RouteResult",
    "RouteTable",
    "Strategy",
    "Target",
    "TimeWindow",
]

__version__ = "0.1.0"
