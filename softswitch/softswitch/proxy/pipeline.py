"""The call flow, stage by stage, as an operator explains a call.

    1. receive      an INVITE over UDP or TCP: 100 Trying at once, sanity checks
                    (Max-Forwards -> 483, a loop -> 482, missing headers -> 400)
    2. authorise    which customer account is calling (source IP, digest, tech prefix)
    3. normalise    the dialed number as routing and billing see it
    4. limits       the account may place this call now (enabled, allow/deny, calls, CPS)
    5. route        lcr: the account's plan's candidate gateways, in order, with rejections
    6. select       skip gateways disabled, down, full or over CPS; claim the next one
    7. forward      the INVITE to the gateway: Request-URI rewritten, Via, Record-Route
    8. fail over    408/5xx or no answer within the setup timeout: CANCEL, try the next
    9. connect      18x/2xx back to the caller; the dialog; the maximum duration
   10. account      exactly one CDR per call attempt, with sell and buy costs

Stages 1 and 7-9 are SIP machinery and live in ``engine`` (with ``forward`` and
``failover``); this module is the policy the engine asks at fixed points, and each stage
here is one call into ``softswitch.call``. Normalising runs before the limits because the
account's allow/deny lists are written in the normalised form (``call.limits``).

A refusal at any stage is a value (``call.refusal.Refusal``): it becomes the SIP final
response (with a ``Reason`` header) and the CDR's end reason, in one place (:func:`reply`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import cast

from softswitch.call.authorise import Challenge, authorise
from softswitch.call.limits import check_limits
from softswitch.call.live import LiveState
from softswitch.call.normalise import normalise
from softswitch.call.refusal import Refusal, q850_for_status, refuse
from softswitch.call.rewrite import gateway_request_uri, sent_number
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.select import admit_gateway, select_gateways
from softswitch.call.snapshot import Snapshot
from softswitch.cdr import CdrSink
from softswitch.config import Account, Gateway
from softswitch.sip import Request
from softswitch.sip.digest import DigestAuthenticator
from softswitch.transport import Flow, Transport

from .accounting import bare_cdr, build_cdr, refusal_cdr, routing_trace
from .calls import Admission, Call, Target
from .engine import Reply

__all__ = ["CallContext", "Pipeline", "reply"]

logger = logging.getLogger("softswitch.proxy.pipeline")

#: Answered calls without any limit still end: a day, so a lost BYE never bills forever.
UNLIMITED_DURATION = 86400.0


def reply(refusal: Refusal, *, account_id: str | None = None) -> Reply:
    """A stage's refusal as the engine's final response: status, Reason header, end reason."""
    return Reply.of(refusal, account_id=account_id)


@dataclass(slots=True)
class CallContext:
    """What the pipeline keeps per admitted call: the snapshot it started with (a reload
    never changes the rules under a call), the account, the route plan and the next
    candidate to claim."""

    snapshot: Snapshot
    account: Account
    dialed: str
    number: str
    plan: RoutePlan
    next_index: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    claimed: dict[str, Gateway] = field(default_factory=dict)


class Pipeline:
    """The policy behind ``engine.CallPolicy``. ``snapshot`` is swapped whole on reload."""

    def __init__(
        self,
        snapshot: Snapshot,
        live: LiveState,
        nonces: DigestAuthenticator,
        cdrs: CdrSink,
    ) -> None:
        self.snapshot = snapshot
        self.live = live
        self.nonces = nonces
        self.cdrs = cdrs
        self.draining = False

    # -- stages 2-5: admit a new INVITE ---------------------------------------------------

    def admit(self, request: Request, flow: Flow, now: float) -> Admission | Reply:
        snapshot = self.snapshot  # this call's rules, whatever a reload does meanwhile
        if self.draining:
            return reply(refuse("system_shutdown", "SIGTERM: draining calls"))

        # 2. authorise
        who = authorise(snapshot, request, flow.remote, self.live, now, self.nonces)
        if isinstance(who, Challenge):
            return Reply(who.status, headers=tuple(who.headers()), end_reason="", cdr=False)
        if isinstance(who, Refusal):
            return reply(who)
        account = who.account

        # 3. normalise
        number = normalise(account, who.number)
        if isinstance(number, Refusal):
            return reply(number, account_id=account.id)

        # 4. limits (counts the call against the account when it passes)
        refusal = check_limits(account, number, self.live, now)
        if refusal is not None:
            return reply(refusal, account_id=account.id)

        # 5. route
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        plan = route_call(snapshot, account, number, at, request.call_id or "")
        if isinstance(plan, Refusal):
            self.live.account_release(account.id)
            return reply(plan, account_id=account.id)

        # 6. select: fail fast when no candidate can take a call now
        usable, skipped = select_gateways(snapshot, plan, self.live, now)
        if not usable:
            self.live.account_release(account.id)
            detail = ", ".join(f"{g}: {why}" for g, why in skipped)
            return reply(refuse("no_gateway", detail), account_id=account.id)

        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "call_id=%s account=%s %s",
                request.call_id,
                account.id,
                routing_trace(plan, skipped),
                extra={"call_id": request.call_id},
            )
        defaults = snapshot.config.defaults
        max_duration = account.max_duration
        if max_duration is None:
            max_duration = defaults.max_duration
        context = CallContext(snapshot, account, who.dialed, number, plan)
        return Admission(
            account_id=account.id,
            number_dialed=who.dialed,
            number=number,
            max_duration=float(max_duration) if max_duration else UNLIMITED_DURATION,
            attempt_cap=defaults.max_attempts,
            time_budget=defaults.call_budget,
            policy=context,
        )

    # -- stage 6: the next gateway, claimed -----------------------------------------------

    def next_target(self, call: Call, now: float) -> Target | Reply | None:
        context = _context(call)
        candidates = context.plan.candidates
        while context.next_index < len(candidates):
            gateway_id = candidates[context.next_index].gateway
            context.next_index += 1
            gateway = context.snapshot.gateways.get(gateway_id)
            if gateway is None:
                context.skipped.append((gateway_id, "unknown"))
                continue
            why = admit_gateway(gateway, self.live, now)
            if why is not None:
                context.skipped.append((gateway_id, why))
                continue
            context.claimed[gateway_id] = gateway
            # 7. forward: the pure part, the Request-URI this gateway gets
            uri = gateway_request_uri(gateway, context.number)
            return Target(
                gateway_id=gateway.id,
                transport=Transport.TCP if gateway.transport == "tcp" else Transport.UDP,
                address=gateway.address,
                request_uri=str(uri),
                number_sent=sent_number(gateway, context.number),
                setup_timeout=gateway.setup_timeout,
                failover_codes=gateway.failover_codes,
            )
        if not call.attempts:
            detail = ", ".join(f"{g}: {why}" for g, why in context.skipped)
            return reply(refuse("no_gateway", detail), account_id=context.account.id)
        return None

    def release_target(self, call: Call, target: Target) -> None:
        if _context(call).claimed.pop(target.gateway_id, None) is not None:
            self.live.gateway_release(target.gateway_id)

    # -- stage 8: every candidate failed --------------------------------------------------

    def exhausted(self, call: Call, status: int) -> Reply:
        """``status`` is the best final response collected (RFC 3261 16.7, 503 -> 500)."""
        tried = ", ".join(f"{a.gateway_id}: {a.status} {a.outcome}" for a in call.attempts)
        if not call.responses:
            refusal = refuse("gateway_timeout", tried)
        else:
            refusal = refuse("all_gateways_failed", tried, status=status)
            refusal = Refusal(
                refusal.status, refusal.reason, refusal.end_reason, q850_for_status(status), tried
            )
        return reply(refusal, account_id=call.admission.account_id)

    # -- stage 10: account ----------------------------------------------------------------

    def account(self, call: Call) -> None:
        """The call's CDR first (it must never be lost), then its counters released."""
        context = _context(call)
        try:
            record = build_cdr(
                call, context.snapshot, context.account, context.plan, context.skipped
            )
        except Exception:  # a costing bug must not cost us the record
            logger.exception("CDR costing failed", extra={"call_id": call.call_id})
            record = bare_cdr(call, context.account)
        self.cdrs.enqueue(record)
        self.live.account_release(context.account.id)
        for gateway_id in list(context.claimed):
            self.live.gateway_release(gateway_id)
        context.claimed.clear()

    def account_refusal(self, request: Request, flow: Flow, refused: Reply, now: float) -> None:
        self.cdrs.enqueue(refusal_cdr(request, flow, refused, now))


def _context(call: Call) -> CallContext:
    return cast(CallContext, call.admission.policy)
