"""The account stage: one CDR per call attempt, built from the call's state, costed by ``lcr``.

The engine calls the pipeline once when a call ends (answered, failed, cancelled) and once
for each INVITE refused before a call existed (403, 404, 503 ..., and the malformed INVITEs
the transport answers statelessly); both land here. A refused INVITE is recorded from a
:class:`RefusedInvite`: read from the parsed request, or salvaged from what the transport
could read of a malformed one (:meth:`RefusedInvite.salvaged`). Costs
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
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from softswitch.call.billing import call_costs
from softswitch.call.cli import Identity
from softswitch.call.refusal import END_REASONS, EndReason, q850_for_status
from softswitch.call.routing import RoutePlan
from softswitch.call.snapshot import Snapshot
from softswitch.cdr import CdrAttempt, CdrRecord
from softswitch.config import Account
from softswitch.sip import Request, SipParseError, SipURI, parse_uri, unescape
from softswitch.sip.fields import parse_name_addr
from softswitch.transport import Flow, Malformed

from .calls import Attempt, Call
from .engine import Reply

__all__ = [
    "CdrMemo",
    "RefusedInvite",
    "Retransmissions",
    "bare_cdr",
    "billed_duration",
    "build_cdr",
    "refusal_cdr",
    "routing_trace",
]

#: End reasons whose Q.850 cause is the gateway's answer's, not a fixed one.
_CAUSE_FROM_STATUS = frozenset({EndReason.ALL_GATEWAYS_FAILED, EndReason.GATEWAY_REJECTED})


def _at(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def _at_required(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _user(uri: object) -> str:
    if isinstance(uri, SipURI):
        return unescape(uri.user or "")
    return str(uri)


def _caller_id(call: Call) -> str | None:
    """The caller-ID the switch routed the call on (the pipeline's ``CallContext.identity``:
    ``call.cli``, the account's rules applied): ``""`` when it had none, None when the call
    carries no identity (a context built without one)."""
    identity = getattr(call.admission.policy, "identity", None)
    if not isinstance(identity, Identity):
        return None
    return identity.number or ""


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
    a second. So does a billed call's ``billed_cap``, the seconds its credit covers (its
    cut-off). Unanswered calls are 0 and 0.
    """
    if call.answer_at is None:
        return 0.0, 0
    end = call.end_at if call.end_at is not None else call.answer_at
    duration = max(0.0, round(end - call.answer_at, 3))
    cap = call.admission.max_duration
    if cap > 0:
        duration = min(duration, round(cap, 3))
    if call.billed_cap is not None:
        duration = min(duration, round(call.billed_cap, 3))
    return duration, math.ceil(duration)


def _q850(end_reason: EndReason, status: int) -> int:
    if end_reason in END_REASONS and end_reason not in _CAUSE_FROM_STATUS:
        return END_REASONS[end_reason][1]
    return q850_for_status(status)


def _end_reason(call: Call) -> EndReason:
    """The call's end reason; a call that ends without one is our bug, said as such."""
    return call.end_reason or EndReason.INTERNAL_ERROR


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


class CdrMemo:
    """What an answered call's two records (its ``CallStart`` at the answer, its CDR at the
    end) share, worked out once: the fields that cannot change once the call is answered,
    and each attempt's record. Reused only while what they were read from is unchanged
    (``key``; an attempt's record, while the attempt's fields are)."""

    __slots__ = ("attempts", "fixed", "key")

    def __init__(self) -> None:
        self.key: tuple[object, ...] | None = None
        self.fixed: _Fixed | None = None
        self.attempts: dict[int, tuple[tuple[object, ...], CdrAttempt]] = {}

    def attempt(self, a: Attempt) -> CdrAttempt:
        """``_attempt(a)``, or its record from the last build when ``a`` is as it was."""
        state = (
            a.gateway_id,
            a.status,
            a.outcome,
            a.started_at,
            a.ended_at,
            a.request_uri,
            a.ring_at,
        )
        known = self.attempts.get(id(a))
        if known is not None and known[0] == state:
            return known[1]
        record = _attempt(a)
        self.attempts[id(a)] = (state, record)
        return record


class _Fixed:
    """The record's fields that ``build_cdr`` derives from the call, its account and its plan
    and that no later event of an answered call changes."""

    __slots__ = (
        "answer_at",
        "buy_rate",
        "caller",
        "caller_id",
        "invite_at",
        "pdd",
        "ring_at",
        "source",
        "trace",
    )

    def __init__(
        self,
        source: str,
        caller: str,
        invite_at: dt.datetime,
        ring_at: dt.datetime | None,
        answer_at: dt.datetime | None,
        pdd: float | None,
        buy_rate: Decimal | None,
        trace: str,
        caller_id: str | None,
    ) -> None:
        self.source, self.caller, self.caller_id = source, caller, caller_id
        self.invite_at, self.ring_at, self.answer_at = invite_at, ring_at, answer_at
        self.pdd, self.buy_rate, self.trace = pdd, buy_rate, trace


def _fixed(call: Call, plan: RoutePlan, skipped: Sequence[tuple[str, str]]) -> _Fixed:
    invite_at = _at_required(call.invite_at)
    ring_at = _at(call.ring_at)
    buy_rate = None
    if call.answered_gateway is not None:
        buy_rate = next(
            (c.rate for c in plan.candidates if c.gateway == call.answered_gateway), None
        )
    return _Fixed(
        source=_source(call.caller_flow),
        caller=_caller(call.invite),
        invite_at=invite_at,
        ring_at=ring_at,
        answer_at=_at(call.answer_at),
        # ``CdrRecord``'s own rule (``seconds_between``), on datetimes already in UTC.
        pdd=None if ring_at is None else max(0.0, round((ring_at - invite_at).total_seconds(), 3)),
        buy_rate=buy_rate,
        trace=routing_trace(plan, skipped),
        caller_id=_caller_id(call),
    )


def routing_trace(plan: RoutePlan, skipped: Sequence[tuple[str, str]]) -> str:
    """The routing decision in one line (DESIGN.md principle 7): the candidates in order, each
    gateway ``lcr`` rejected, each one quality routing moved last and each one selection
    skipped, with the reason."""
    parts = [f"route {plan.prefix!r}: " + (", ".join(plan.gateway_ids) or "-")]
    if plan.rejected:
        parts.append("rejected " + ", ".join(f"{g}: {why}" for g, why in plan.rejected))
    if plan.demoted:
        parts.append("demoted " + ", ".join(f"{g}: {why}" for g, why in plan.demoted))
    if skipped:
        parts.append("skipped " + ", ".join(f"{g}: {why}" for g, why in skipped))
    return "; ".join(parts)


def build_cdr(
    call: Call,
    snapshot: Snapshot,
    account: Account,
    plan: RoutePlan,
    skipped: Sequence[tuple[str, str]] = (),
    *,
    costed: bool = True,
    memo: CdrMemo | None = None,
) -> CdrRecord:
    """The CDR of an admitted call (answered or not), costed for ``billed_duration``
    (``costed=False``: without costs, for a call-start record that is re-rated anyway).
    ``memo``: the call's own, to share the work with its other record (``CdrMemo``)."""
    end_at = _at_required(call.end_at if call.end_at is not None else call.invite_at)
    duration, billsec = billed_duration(call)
    sell = buy = None
    gateway = None
    if call.answered_gateway is not None:
        gateway = snapshot.gateways.get(call.answered_gateway)
    if memo is None:
        fixed = _fixed(call, plan, skipped)
        attempts = tuple([_attempt(a) for a in call.attempts])
    else:
        key = (
            call.ring_at,
            call.answer_at,
            call.answered_gateway,
            call.caller_flow,
            id(call.invite),
            id(plan),
            len(skipped),
            id(call.admission.policy),
        )
        if memo.key != key or memo.fixed is None:
            memo.fixed, memo.key = _fixed(call, plan, skipped), key
        fixed = memo.fixed
        attempts = tuple([memo.attempt(a) for a in call.attempts])
    answer_at = fixed.answer_at
    end_reason = _end_reason(call)
    status = call.final_status or 500
    record = CdrRecord(
        call_id=call.call_id,
        account_id=account.id,
        source=fixed.source,
        caller=fixed.caller,
        callee_dialed=call.admission.number_dialed,
        callee_normalised=call.admission.number,
        callee_sent=call.number_sent,
        gateway_id=call.answered_gateway,
        route_prefix=plan.prefix,
        invite_at=fixed.invite_at,
        ring_at=fixed.ring_at,
        answer_at=answer_at,
        end_at=end_at,
        duration=duration,
        billsec=billsec,
        pdd=fixed.pdd,
        hangup_side=call.hangup_side if answer_at is not None else None,
        end_reason=end_reason,
        status=status,
        q850=_q850(end_reason, status),
        attempts=attempts,
        sell_rate=plan.sell_rate,
        buy_rate=fixed.buy_rate,
        detail=_detail(fixed.trace, call.end_detail),
        caller_id=fixed.caller_id,
    )
    if answer_at is not None and costed:
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
        end_reason=_end_reason(call),
        status=call.final_status or 500,
        q850=_q850(_end_reason(call), call.final_status or 500),
        attempts=tuple(_attempt(a) for a in call.attempts),
        detail="costing failed; see the log",
        caller_id=_caller_id(call),
    )


def _detail(trace: str, end_detail: str | None) -> str:
    """The routing trace, then why the switch ended the call when it says more."""
    if not end_detail:
        return trace
    return f"{trace}; {end_detail}" if trace else end_detail


def _source(flow: Flow) -> str:
    host, port = flow.origin
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class RefusedInvite:
    """What the CDR of a refused INVITE records of the INVITE itself, as received: its
    Call-ID, the caller (the From URI's user) and the number dialled (the Request-URI's
    user, tech prefix included); each is empty when it cannot be read."""

    call_id: str
    caller: str
    callee_dialed: str

    @classmethod
    def of(cls, request: Request) -> RefusedInvite:
        """From a parsed INVITE (a malformed From leaves the caller empty, no more)."""
        return cls(request.call_id or "", _caller(request), _user(request.uri))

    @classmethod
    def salvaged(cls, malformed: Malformed) -> RefusedInvite:
        """From an INVITE the transport refused: the parsed message when there is one, else
        the header lines it read before the parse error and the Request-Line's URI."""
        message = malformed.message
        if isinstance(message, Request):
            return cls.of(message)
        found: dict[str, str] = {}
        for name, value in malformed.partial:
            found.setdefault(name, value)
        caller = _salvaged_caller(found.get("From", ""))
        return cls(found.get("Call-ID", ""), caller, _dialed(malformed.start_line))


def _salvaged_caller(from_value: str) -> str:
    """The user of a From header field's URI, read on its own; empty if it is unreadable."""
    if not from_value:
        return ""
    try:
        return _user(parse_name_addr(from_value).uri)
    except SipParseError:
        return ""


def _dialed(start_line: str | None) -> str:
    """The user of a Request-Line's URI, even when the line as a whole is malformed."""
    words = start_line.split() if start_line is not None else []
    if len(words) < 2:
        return ""
    try:
        return _user(parse_uri(words[1]))
    except SipParseError:
        return ""


class Retransmissions:
    """The malformed INVITEs recorded in the last ``window`` seconds, so that a copy of one
    (a UDP retransmission: the same bytes from the same source, answered statelessly by the
    transport each time) is not a second call attempt with a second CDR.

    ``window`` is 64*T1 (32 s), the longest an INVITE client retransmits (RFC 3261 17.1.1.2).
    At most ``max_entries`` are held; past that the oldest are forgotten first. Only
    customers' INVITEs get here, never a stranger's garbage.
    """

    def __init__(self, window: float = 32.0, max_entries: int = 4096) -> None:
        self.window = window
        self.max_entries = max_entries
        self._until: dict[Hashable, float] = {}

    def first(self, key: Hashable, now: float) -> bool:
        """True the first time ``key`` is seen within the window (``now`` is monotonic)."""
        until = self._until
        # Insertion order is expiry order: the window is the same for every key.
        while until:
            oldest = next(iter(until))
            if until[oldest] > now and len(until) < self.max_entries:
                break
            del until[oldest]
        if key in until:
            return False
        until[key] = now + self.window
        return True


def refusal_cdr(
    invite: Request | RefusedInvite, flow: Flow, refused: Reply, now: float
) -> CdrRecord:
    """The CDR of an INVITE turned away before any gateway was tried."""
    if isinstance(invite, Request):
        invite = RefusedInvite.of(invite)
    end_reason = refused.end_reason or EndReason.INTERNAL_ERROR  # None: no attempt (a 407)
    at = _at_required(now)
    return CdrRecord(
        call_id=invite.call_id,
        account_id=refused.account_id,
        source=_source(flow),
        caller=invite.caller,
        callee_dialed=invite.callee_dialed,
        invite_at=at,
        end_at=at,
        end_reason=end_reason,
        status=refused.status,
        q850=_q850(end_reason, refused.status),
        detail=refused.detail,
    )
