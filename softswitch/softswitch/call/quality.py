"""Quality routing, part of the select stage: a route's ``quality`` moves gateways whose live
ASR is poor to the end of the candidate list.

OpenSIPS qrouting's idea, without its exclusion: a carrier that answers one call in ten is
tried last, not never, since on some numbers it may be the only one that completes, and it
must carry calls again for its figures to recover. A gateway is demoted when, over the
route's ``window``, it had at least ``min_attempts`` seizures and answered fewer than
``min_asr`` of them; with fewer seizures there is no evidence and it keeps its place. The
demoted keep their relative order (a stable partition), so the route's strategy still
decides among them, and among the others.

The figures are the switch's live statistics (``softswitch.stats``: the gateway dimension,
seizures and answers), read through :class:`GatewayAnswers` so that this module needs
nothing from the stats package. A route without ``quality`` costs one dict look-up; one with
it, a sum over the window's buckets per candidate (15 for ``15m``).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ..config import Account, RouteQuality
from .routing import RoutePlan
from .snapshot import Snapshot

__all__ = ["GatewayAnswers", "demote", "describe", "quality_of"]


class GatewayAnswers(Protocol):
    """What demotion reads of the statistics (``Statistics.answers``)."""

    def answers(self, dimension: str, key: str, window: str, now: float) -> tuple[int, int]: ...


def quality_of(snapshot: Snapshot, account: Account, plan: RoutePlan) -> RouteQuality | None:
    """The ``quality`` of the route the plan came from (its routing plan and prefix)."""
    qualities = snapshot.qualities
    if not qualities or plan.prefix is None:
        return None
    return qualities.get((account.routing_plan, plan.prefix))


def describe(quality: RouteQuality) -> str:
    """The rule in an operator's words, for explanations."""
    return (
        f"gateways with ASR below {quality.min_asr:g} over {quality.window}"
        f" (at least {quality.min_attempts} attempts) go last"
    )


def demote(
    snapshot: Snapshot, account: Account, plan: RoutePlan, stats: GatewayAnswers, now: float
) -> RoutePlan:
    """The plan with its poor gateways moved to the end, and why each (``plan.demoted``);
    the plan itself when its route has no ``quality`` or no gateway is demoted.

    ``now`` is the statistics' monotonic clock.
    """
    quality = quality_of(snapshot, account, plan)
    if quality is None:
        return plan
    kept = []
    demoted = []
    why: list[tuple[str, str]] = []
    window, floor, enough = quality.window, quality.min_asr, quality.min_attempts
    for candidate in plan.candidates:
        attempts, answered = stats.answers("gateway", candidate.gateway, window, now)
        if attempts >= enough and attempts > 0 and (asr := answered / attempts) < floor:
            demoted.append(candidate)
            why.append(
                (
                    candidate.gateway,
                    f"ASR {asr:.2f} < {floor:g} over {window} ({answered}/{attempts} answered)",
                )
            )
        else:
            kept.append(candidate)
    if not demoted:
        return plan
    return dataclasses.replace(plan, candidates=(*kept, *demoted), demoted=tuple(why))
