"""Stage 10: one CDR per call attempt, built from the call's state, costed by ``lcr``.

The engine calls the pipeline once when a call ends (answered, failed, cancelled) and once
for each INVITE refused before a call existed (403, 404, 503 ...); both land here. Costs
come from ``call.billing.call_costs`` with the snapshot the call started with, so a reload
during the call does not re-price it. Writing is ``cdr.CdrStore``'s job, in its own thread:
``write`` only queues, so the signalling path never waits for the disk.

The duration billed never exceeds the call's ``max_duration``: the switch's BYE leaves a few
milliseconds after the cut-off timer, and rounding ``3.003`` s up must not bill a call cut at
3 s as 4 s (``billed_duration``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from softswitch.call.billing import call_costs
from softswitch.call.refusal import END_REASONS, q850_for_status
from softswitch.call.routing import RoutePlan
from softswitch.call.snapshot import Snapshot
from softswitch.cdr import CdrAttempt, CdrRecord
from softswitch.config import Account
from softswitch.sip import Request, SipParseError, SipURI, unescape
from softswitch.transport import Flow

from .calls import Attempt, Call
from .engine import Reply

__all__ = ["bare_cdr", "billed_duration", "build_cdr", "refusal_cdr", "routing_trace"]

#: End reasons whose Q.850 cause is the gateway's answer's, not a fixed one.
_CAUSE_FROM_STATUS = frozenset({"all_gateways_failed", "gateway_rejected"})


def _at(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def _at_required(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _user(uri: object) -> str:
    if isinstance(uri, SipURI):
        return unescape(uri.user or "")
    return str(uri)


def _caller(request: Request) -> str:
    try:
        from_ = request.from_
    except SipParseError:  # a malformed From must not cost the refused INVITE its CDR
        return ""
    return _user(from_.uri) if from_ is not None else ""


def billed_duration(call: Call) -> tuple[float, int]:
    """The CDR's ``duration`` (seconds answered, to the millisecond) and ``billsec`` (that
    rounded up to whole seconds), never more than the call's ``max_duration``.

    The cap holds whatever the end reason: a call cut at its maximum is billed exactly the
    maximum, and neither the lag of the switch's own BYE nor a BYE racing the cut-off adds
    a second. Unanswered calls are 0 and 0.
    """
    if call.answer_at is None:
        return 0.0, 0
    end = call.end_at if call.end_at is not None else call.answer_at
    duration = max(0.0, round(end - call.answer_at, 3))
    cap = call.admission.max_duration
    if cap > 0:
        duration = min(duration, round(cap, 3))
    return duration, math.ceil(duration)


def _q850(end_reason: str, status: int) -> int:
    if end_reason in END_REASONS and end_reason not in _CAUSE_FROM_STATUS:
        return END_REASONS[end_reason][1]
    return q850_for_status(status)


def _attempt(a: Attempt) -> CdrAttempt:
    return CdrAttempt(
        gateway_id=a.gateway_id,
        status=a.status,
        outcome=a.outcome,
        started_at=_at(a.started_at),
        ended_at=_at(a.ended_at),
        request_uri=a.request_uri,
        ring_at=_at(a.ring_at),
    )


def routing_trace(plan: RoutePlan, skipped: Sequence[tuple[str, str]]) -> str:
    """The routing decision in one line (DESIGN.md principle 7): the candidates in order, each
    gateway ``lcr`` rejected and each one selection skipped, with the reason."""
    parts = [f"route {plan.prefix!r}: " + (", ".join(plan.gateway_ids) or "-")]
    if plan.rejected:
        parts.append("rejected " + ", ".join(f"{g}: {why}" for g, why in plan.rejected))
    if skipped:
        parts.append("skipped " + ", ".join(f"{g}: {why}" for g, why in skipped))
    return "; ".join(parts)


def build_cdr(
    call: Call,
    snapshot: Snapshot,
    account: Account,
    plan: RoutePlan,
    skipped: Sequence[tuple[str, str]] = (),
) -> CdrRecord:
    """The CDR of an admitted call (answered or not), costed for ``billed_duration``."""
    end_at = _at_required(call.end_at if call.end_at is not None else call.invite_at)
    answer_at = _at(call.answer_at)
    duration, billsec = billed_duration(call)
    sell = buy = buy_rate = None
    gateway = None
    if call.answered_gateway is not None:
        gateway = snapshot.gateways.get(call.answered_gateway)
        buy_rate = next(
            (c.rate for c in plan.candidates if c.gateway == call.answered_gateway), None
        )
    record = CdrRecord(
        call_id=call.call_id,
        account_id=account.id,
        source=_source(call.caller_flow),
        caller=_caller(call.invite),
        callee_dialed=call.admission.number_dialed,
        callee_normalised=call.admission.number,
        callee_sent=call.number_sent,
        gateway_id=call.answered_gateway,
        route_prefix=plan.prefix,
        invite_at=_at_required(call.invite_at),
        ring_at=_at(call.ring_at),
        answer_at=answer_at,
        end_at=end_at,
        duration=duration,
        billsec=billsec,
        hangup_side=call.hangup_side if answer_at is not None else None,
        end_reason=call.end_reason or "internal_error",
        status=call.final_status or 500,
        q850=_q850(call.end_reason or "internal_error", call.final_status or 500),
        attempts=tuple(_attempt(a) for a in call.attempts),
        sell_rate=plan.sell_rate,
        buy_rate=buy_rate,
        detail=routing_trace(plan, skipped),
    )
    if answer_at is not None:
        sell, buy = call_costs(
            snapshot, account, gateway, call.admission.number, answer_at, billsec
        )
        record.sell_cost, record.buy_cost = sell, buy
    return record


def bare_cdr(call: Call, account: Account) -> CdrRecord:
    """The record without costs, for when costing failed: what happened is still known."""
    duration, billsec = billed_duration(call)
    return CdrRecord(
        call_id=call.call_id,
        account_id=account.id,
        source=_source(call.caller_flow),
        caller=_caller(call.invite),
        callee_dialed=call.admission.number_dialed,
        callee_normalised=call.admission.number,
        callee_sent=call.number_sent,
        gateway_id=call.answered_gateway,
        invite_at=_at_required(call.invite_at),
        ring_at=_at(call.ring_at),
        answer_at=_at(call.answer_at),
        end_at=_at_required(call.end_at if call.end_at is not None else call.invite_at),
        duration=duration,
        billsec=billsec,
        end_reason=call.end_reason or "internal_error",
        status=call.final_status or 500,
        q850=_q850(call.end_reason or "internal_error", call.final_status or 500),
        attempts=tuple(_attempt(a) for a in call.attempts),
        detail="costing failed; see the log",
    )


def _source(flow: Flow) -> str:
    host, port = flow.remote
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def refusal_cdr(request: Request, flow: Flow, refused: Reply, now: float) -> CdrRecord:
    """The CDR of an INVITE turned away before any gateway was tried."""
    at = _at_required(now)
    return CdrRecord(
        call_id=request.call_id or "",
        account_id=refused.account_id,
        source=_source(flow),
        caller=_caller(request),
        callee_dialed=_user(request.uri),
        invite_at=at,
        end_at=at,
        end_reason=refused.end_reason,
        status=refused.status,
        q850=_q850(refused.end_reason, refused.status),
        detail=refused.detail,
    )
