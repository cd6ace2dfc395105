"""Replay a period of recorded calls with candidate rate decks (``softswitch replay``).

An operator about to take a carrier's new deck, or to change a sell deck, wants to know
what it would have done to last month's traffic: which calls move to another carrier, which
are refused, and what revenue, cost and margin become per destination and gateway. The
package reads the CDRs (``source``), swaps the candidate decks into the configuration
(``candidates``), re-routes and re-rates the calls with ``lcr``'s batch calls as the switch
would have (``reroute``), sums the figures (``report``) and is run by ``command``.
docs/replay.md is the operator's page.
"""

from __future__ import annotations

from .candidates import CandidateError, parse_deck_args, with_candidates
from .report import Report
from .reroute import Outcomes, replay_batch
from .source import Recorded, ReplaySourceError, read_cdrs

__all__ = [
    "CandidateError",
    "Outcomes",
    "Recorded",
    "ReplaySourceError",
    "Report",
    "parse_deck_args",
    "read_cdrs",
    "replay_batch",
    "with_candidates",
]
