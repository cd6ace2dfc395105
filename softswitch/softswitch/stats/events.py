"""The moments of a call that statistics and metrics are fed with, as small frozen values.

The pipeline builds them from what it already holds (the ``Call``, its route plan, a
refusal's reply) with the ``*_of`` functions here, so the stats never reach into the engine
and a test can feed them by hand. Only what the counters need is copied: ids, statuses, and
timings as whole milliseconds.

* :class:`CallStarted`: a call was admitted (it holds a slot until its end).
* :class:`CallEnded`: an admitted call's CDR was written; it carries one
  :class:`GatewayAttempt` per INVITE sent to a gateway.
* :class:`CallRefused`: a refusal before admission that got a CDR.

Gateway seizures and releases (channel occupancy) need no value: a gateway id is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from softswitch.call.refusal import EndReason
from softswitch.proxy.accounting import billed_duration

from .definitions import ms

if TYPE_CHECKING:
    from softswitch.call.routing import RoutePlan
    from softswitch.proxy.calls import Attempt, Call
    from softswitch.proxy.policy import Reply

__all__ = [
    "CallEnded",
    "CallRefused",
    "CallStarted",
    "GatewayAttempt",
    "destination_of",
    "ended_of",
    "refused_of",
    "started_of",
]


@dataclass(frozen=True, slots=True)
class CallStarted:
    account: str
    destination: str | None
    prefix: str | None


@dataclass(frozen=True, slots=True)
class GatewayAttempt:
    """One INVITE sent to a gateway (a seizure) and how it ended."""

    gateway: str
    #: The gateway's final status; None when none came (timeout, transport error).
    status: int | None
    #: ``answered``, ``failed``, ``timeout``, ``cancelled``, ``transport_error`` (CDR's).
    outcome: str
    #: A 18x came from this gateway before its final answer.
    rang: bool
    #: INVITE sent -> first 18x (or the 2xx when none came first); None when neither came.
    pdd_ms: int | None
    #: The call's answered duration when this attempt answered; 0 otherwise.
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class CallEnded:
    account: str
    destination: str | None
    prefix: str | None
    #: The final status the caller got (200 for an answered call), as in the CDR.
    status: int
    #: The CDR's end reason.
    end_reason: str
    answered: bool
    #: The caller got a 18x before the final answer.
    rang: bool
    #: The CDR's ``duration`` (answered seconds, capped at max_duration), in ms.
    duration_ms: int
    #: The call's PDD: INVITE -> first 18x (or the 2xx when none came first).
    pdd_ms: int | None
    attempts: tuple[GatewayAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class CallRefused:
    #: The account named by the refusal; None when none was known (unknown source...).
    account: str | None
    status: int
    end_reason: str


def destination_of(plan: RoutePlan) -> str | None:
    """The destination name for the call: the account's sell deck's, or, for an account
    without a sell deck, the first candidate's buy deck's; None when neither names one."""
    if plan.sell is not None:
        return plan.sell.destination or None
    if plan.candidates:
        return plan.candidates[0].destination or None
    return None


def started_of(account_id: str, plan: RoutePlan) -> CallStarted:
    return CallStarted(account_id, destination_of(plan), plan.prefix)


def _attempt(a: Attempt, call_duration_ms: int) -> GatewayAttempt:
    first = a.ring_at if a.ring_at is not None else a.answer_at
    answered = a.outcome == "answered"
    return GatewayAttempt(
        gateway=a.gateway_id,
        status=a.status,
        outcome=a.outcome,
        rang=a.ring_at is not None,
        pdd_ms=None if first is None else ms(first - a.started_at),
        duration_ms=call_duration_ms if answered else 0,
    )


def ended_of(call: Call, plan: RoutePlan) -> CallEnded:
    """The call's end as the CDR states it (status, end reason, duration)."""
    duration_ms = ms(billed_duration(call)[0])
    return CallEnded(
        account=call.admission.account_id,
        destination=destination_of(plan),
        prefix=plan.prefix,
        status=call.final_status or 500,
        end_reason=str(call.end_reason or EndReason.INTERNAL_ERROR),
        answered=call.answer_at is not None,
        rang=call.ring_at is not None,
        duration_ms=duration_ms,
        pdd_ms=None if call.pdd is None else ms(call.pdd),
        attempts=tuple(_attempt(a, duration_ms) for a in call.attempts),
    )


def refused_of(refused: Reply) -> CallRefused:
    """A refusal's reply as the CDR states it (status, end reason, account)."""
    reason = refused.end_reason or EndReason.INTERNAL_ERROR
    return CallRefused(refused.account_id, refused.status, str(reason))
