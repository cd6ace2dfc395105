"""Live statistics: windowed counters per switch, account, gateway, destination and route
prefix, fed by call events and read by ``Statistics.query`` (docs/statistics.md), plus their
Prometheus face (``prometheus.Metrics``).

One job per module, bottom up:

    definitions   what counts as an answer and a network success (NER), in one place
    histogram     PDD's fixed bins and the p95 rule
    aggregate     one time bucket's counters, and a window's sum of them as a summary
    windows       the 5m/15m/1h/24h windows, read from three rings of time buckets
    series        one key's rings, concurrency and calls per second
    events        the call moments the switch feeds in, built from its Call and route plan
    statistics    ``Statistics``: the dimensions, the events applied, ``query`` and ``keys``
    prometheus    ``Metrics``: counters, gauges and histograms on a registry of their own

Everything takes ``now`` (a monotonic clock, in seconds) and nothing reads a clock, so a test
drives time by hand. ``prometheus`` is not imported here: the statistics work without it.
"""

from __future__ import annotations

from .aggregate import Summary
from .events import CallEnded, CallRefused, CallStarted, GatewayAttempt
from .statistics import DIMENSIONS, SWITCH_KEY, Statistics
from .windows import WINDOWS, Window

__all__ = [
    "DIMENSIONS",
    "SWITCH_KEY",
    "WINDOWS",
    "CallEnded",
    "CallRefused",
    "CallStarted",
    "GatewayAttempt",
    "Statistics",
    "Summary",
    "Window",
]
