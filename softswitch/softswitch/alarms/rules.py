"""What an alarm rule measures, and when it is raised and cleared: pure functions of a rule
and a statistics summary, so every edge is testable without a switch or a clock.

A rule (``config.AlarmRule``) reads one metric of one series of ``Statistics`` over its
window:

    metric             read from the window's summary (docs/statistics.md)   unit
    asr                answered / attempts                                   ratio 0-1
    ner                network-effectiveness successes / attempts            ratio 0-1
    acd                average answered duration                             seconds
    pdd_avg            average post-dial delay                               seconds
    pdd_p95            95th percentile of the post-dial delay                seconds
    attempts           attempts (a gateway's: its seizures)                  count
    concurrent_calls   highest level of calls in progress in the window      count
    cps                highest calls per second in the window                count

The levels (concurrent calls, CPS) are the window's peaks, not the level of the moment the
rule happens to be evaluated: a burst between two evaluations still counts, and an alarm on
one lasts until the burst has left the window.

The judgement, with hysteresis:

* A reading is **judged** only when the metric has a value (an ASR needs attempts, a PDD a
  call that rang) and the window holds at least ``min_attempts`` attempts.
* An alarm is **raised** when a judged value is past the threshold: strictly below
  ``below``, or strictly above ``above``.
* A raised alarm **clears** when a judged value is back past ``clear`` (at or above it for a
  ``below`` rule, at or below it for an ``above`` rule; ``clear`` defaults to the threshold),
  or when the reading is no longer judged: too few attempts left in the window are no
  evidence to hold an alarm on. That is how a gateway an alarm disabled comes back: it takes
  no calls, its failures age out of the window, and once fewer than ``min_attempts`` remain
  it is selected again; if it still fails, the alarm is raised again as soon as the window
  holds ``min_attempts`` attempts once more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from softswitch.config import AlarmRule
from softswitch.stats import Summary

__all__ = ["METRICS", "Reading", "active_after", "breached", "judged", "read", "recovered"]


def _count(value: int) -> float:
    return float(value)


#: How each metric is read off a window's summary (None: nothing to measure).
METRICS: Final[dict[str, Callable[[Summary], float | None]]] = {
    "asr": lambda s: s["asr"],
    "ner": lambda s: s["ner"],
    "acd": lambda s: s["acd"],
    "pdd_avg": lambda s: s["pdd"]["avg"],
    "pdd_p95": lambda s: s["pdd"]["p95"],
    "attempts": lambda s: _count(s["attempts"]),
    "concurrent_calls": lambda s: _count(s["concurrent"]["peak"]),
    "cps": lambda s: _count(s["cps"]["peak"]),
}


@dataclass(frozen=True, slots=True)
class Reading:
    """A rule's metric for one key at one moment, and the attempts it stands on."""

    value: float | None
    attempts: int


def read(rule: AlarmRule, summary: Summary) -> Reading:
    return Reading(METRICS[rule.metric](summary), summary["attempts"])


def judged(rule: AlarmRule, reading: Reading) -> bool:
    """Whether the reading is evidence at all (a value, over enough attempts)."""
    return reading.value is not None and reading.attempts >= rule.min_attempts


def breached(rule: AlarmRule, value: float) -> bool:
    """Past the threshold: the alarm is raised."""
    if rule.below is not None:
        return value < rule.below
    return value > rule.threshold


def recovered(rule: AlarmRule, value: float) -> bool:
    """Back past ``clear``: a raised alarm clears."""
    if rule.below is not None:
        return value >= rule.clear_at
    return value <= rule.clear_at


def active_after(rule: AlarmRule, reading: Reading, active: bool) -> bool:
    """Whether the alarm is raised after this reading, given whether it was before."""
    if reading.value is None or not judged(rule, reading):
        return False
    if active:
        return not recovered(rule, reading.value)
    return breached(rule, reading.value)
