"""The select stage: of the routed candidates, which gateways can take a call right now.

VOS3000's "routing gateways". A candidate is skipped, with its reason, when it is:

* ``disabled`` in the configuration, or ``disabled (operator)`` at run time (``LiveState``),
* taken out by an active alarm with action ``disable``: ``alarm <rule id>``
  (``softswitch.alarms``, until the alarm clears),
* ``down``: marked down by OPTIONS probing,
* at ``capacity`` (concurrent calls) or over its ``max_cps``.

This is a filter at the moment routing is decided; it counts nothing. Capacity can change
while earlier candidates are being tried, so the engine claims each gateway with
``admit_gateway`` right before sending it the INVITE (and releases it when the attempt or
the call ends), moving on to the next one if the claim fails.
"""

from __future__ import annotations

from ..config import Gateway
from .live import LiveState
from .routing import RoutePlan
from .snapshot import Snapshot

__all__ = [
    "OPERATOR_DISABLED",
    "admit_gateway",
    "alarm_reason",
    "gateway_unusable",
    "select_gateways",
]

#: Why a gateway an operator disabled at run time is skipped.
OPERATOR_DISABLED = "disabled (operator)"


def alarm_reason(rule_id: str) -> str:
    """Why a gateway an alarm took out is skipped."""
    return f"alarm {rule_id}"


def gateway_unusable(gateway: Gateway, live: LiveState, now: float) -> str | None:
    """Why the gateway cannot take a new call now, or None."""
    if not gateway.enabled:
        return "disabled"
    if live.gateway_disabled(gateway.id):
        return OPERATOR_DISABLED
    if (alarm := live.gateway_alarm(gateway.id)) is not None:
        return alarm_reason(alarm)
    if not live.gateway_is_up(gateway.id):
        return "down"
    return live.gateway_has_room(
        gateway.id, now, capacity=gateway.capacity, max_cps=gateway.max_cps
    )


def select_gateways(
    snapshot: Snapshot, plan: RoutePlan, live: LiveState, now: float
) -> tuple[list[Gateway], list[tuple[str, str]]]:
    """(usable gateways in the plan's order, [(gateway id, reason skipped)])."""
    usable: list[Gateway] = []
    skipped: list[tuple[str, str]] = []
    for candidate in plan.candidates:
        gateway = snapshot.gateways.get(candidate.gateway)
        if gateway is None:
            skipped.append((candidate.gateway, "unknown"))
            continue
        why = gateway_unusable(gateway, live, now)
        if why is None:
            usable.append(gateway)
        else:
            skipped.append((gateway.id, why))
    return usable, skipped


def admit_gateway(gateway: Gateway, live: LiveState, now: float) -> str | None:
    """Claim one call on the gateway (None = claimed, else why not); pair with
    ``live.gateway_release(gateway.id)``."""
    if not gateway.enabled:
        return "disabled"
    if live.gateway_disabled(gateway.id):
        return OPERATOR_DISABLED
    if (alarm := live.gateway_alarm(gateway.id)) is not None:
        return alarm_reason(alarm)
    if not live.gateway_is_up(gateway.id):
        return "down"
    return live.gateway_admit(gateway.id, now, capacity=gateway.capacity, max_cps=gateway.max_cps)
