"""The call flow, stage by stage, as an operator explains a call.

    receive      an INVITE over UDP or TCP: 100 Trying at once, sanity checks
                 (Max-Forwards -> 483, a loop -> 482, Proxy-Require -> 420); a malformed
                 one is answered 400/416/505 by the transport, statelessly
    authorise    which customer account is calling (source IP, digest, tech prefix)
    normalise    the dialed number as routing and billing see it
    limits       the account may place this call now (enabled, allow/deny, calls, CPS);
                 with ``[server] shared_state``, calls and CPS across every node too
                 (``shared_admit``, awaited by the engine before it hunts)
    route        lcr: the account's plan's candidate gateways, in order, with rejections;
                 the caller-ID (the account's cli rules applied) picks a plan's CLI or
                 non-CLI routes
    credit       a prepaid or postpaid account's credit covers the first increment: held
    select       poor live ASR last (a route's quality); skip gateways disabled (or by
                 an alarm), down, full or over CPS; claim the next one
    forward      the INVITE to the gateway: Request-URI rewritten, Via, Record-Route,
                 the caller-ID as the gateway's cli rules make it
    fail over    408/5xx or no answer within the setup timeout: CANCEL, try the next
    connect      18x/2xx back to the caller; the dialog; the maximum duration; a billed
                 call takes its credit slice by slice and is cut when it runs out
    account      exactly one CDR per call attempt, with sell and buy costs; a billed
                 call's debit in the same transaction

This list is the one table of contents: the stages are named, never numbered, everywhere
else (``softswitch.call``, the engine, ``docs/call-flow.md``). Receive, forward, fail over
and connect are SIP machinery and live in ``engine`` (with ``forward`` and ``failover``);
this module is the policy the engine asks at fixed points, and each stage here is one call
into ``softswitch.call`` (authorise, normalise, limits, route in ``routing``, select, the
pure part of forward in ``rewrite`` and ``cli``, the costs of account in ``billing``).
Normalising runs
before the limits because the account's allow/deny lists are written in the normalised form
(``call.limits``).

A refusal at any stage is a value (``call.refusal.Refusal``): it becomes the SIP final
response (with a ``Reason`` header) and the CDR's end reason, in one place (:func:`reply`).
What the transport refuses as malformed never becomes a call; :meth:`Pipeline.malformed`
gives a customer's malformed INVITE its CDR all the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, cast

import lcr
from softswitch.billing.meter import CreditMeter
from softswitch.call.authorise import Challenge, authorise, has_credentials
from softswitch.call.cli import Identity, header_edits, identity_of, rewrite
from softswitch.call.limits import check_limits, shared_refusal
from softswitch.call.live import LiveState
from softswitch.call.normalise import normalise
from softswitch.call.quality import demote
from softswitch.call.refusal import EndReason, Refusal, q850_for_status, refuse
from softswitch.call.rewrite import gateway_request_uri, sent_number
from softswitch.call.routing import RoutePlan, live_acd, route_call
from softswitch.call.select import admit_gateway, select_gateways
from softswitch.call.snapshot import Snapshot
from softswitch.cdr import CallStart, CdrSink
from softswitch.config import Account, Gateway, fails_over_on_no_answer, no_answer_timeout
from softswitch.media.offer import offer_allowed, offered_codecs
from softswitch.media.policy import MediaPolicy, media_policy
from softswitch.registrar import Registrations, screen_register
from softswitch.security import Screen, SourceGuard, gateway_addresses
from softswitch.security.proxies import UNIDENTIFIED, TrustedProxies
from softswitch.sip import Request, escape
from softswitch.sip.digest import DigestAuthenticator
from softswitch.stats import Statistics
from softswitch.stats.events import ended_of, refused_of, started_of
from softswitch.transport import Address, Flow, Malformed, Transport

from .accounting import (
    CdrMemo,
    RefusedInvite,
    Retransmissions,
    bare_cdr,
    build_cdr,
    refusal_cdr,
    routing_trace,
)
from .calls import Admission, Call, Target
from .engine import Reply

if TYPE_CHECKING:  # only a switch with [server] shared_state loads redis
    from softswitch.cluster.admission import SharedLimits

__all__ = ["CallContext", "Pipeline", "reply"]

logger = logging.getLogger("softswitch.proxy.pipeline")

#: Why a gateway was passed over for a call whose offer has no codec its policy allows.
_CODECS_SKIPPED = "no codec in common with the offer"

#: Answered calls without any limit still end: a day, so a lost BYE never bills forever.
UNLIMITED_DURATION = 86400.0


def reply(refusal: Refusal, *, account_id: str | None = None) -> Reply:
    """A stage's refusal as the engine's final response: status, Reason header, end reason."""
    return Reply.of(refusal, account_id=account_id)


@dataclass(eq=False, slots=True)
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
    #: A ``registered:`` gateway's contacts not tried yet, in order (``_contact_targets``).
    pending: list[Target] = field(default_factory=list)
    #: The caller's identity after the account's ``cli`` rules (None: as received).
    identity: Identity | None = None
    #: The call holds a slot of the account's ``max_calls`` across nodes (``shared_admit``),
    #: given back once, at its end.
    shared_held: bool = False
    #: Gateways whose ``capacity`` across nodes the call holds a slot of (``shared_claim``),
    #: each given back when its branch ends.
    shared_gateways: set[str] = field(default_factory=set)
    #: An answered call's record work shared by its ``CallStart`` and its CDR (None until
    #: the answer: a call's only record needs none).
    cdr_memo: CdrMemo | None = None


def _customer_rule(snapshot: Snapshot) -> Callable[[str, int], bool]:
    def customer(ip: str, port: int) -> bool:
        return bool(snapshot.accounts_for_source(ip, port))

    return customer


class Pipeline:
    """The policy behind ``engine.CallPolicy``. Swap the snapshot with :meth:`use`."""

    def __init__(
        self,
        snapshot: Snapshot,
        live: LiveState,
        nonces: DigestAuthenticator,
        cdrs: CdrSink,
        guard: SourceGuard | None = None,
        meter: CreditMeter | None = None,
        stats: Statistics | None = None,
        registrations: Registrations | None = None,
    ) -> None:
        self.live = live
        #: Registered contacts (``softswitch.registrar``): None, no registrar at all.
        self.registrations = registrations
        self._registering = False
        self.stats = stats
        self.nonces = nonces
        self.cdrs = cdrs
        self.meter = meter
        self.draining = False
        #: ``[server] shared_state``: the account limits across nodes (None: this node's
        #: own only). Set, the engine awaits :meth:`shared_admit` before it hunts.
        self.shared: SharedLimits | None = None
        #: Customers' malformed INVITEs already recorded: a retransmission is no new attempt.
        self._recorded_malformed = Retransmissions()
        self.guard = guard or SourceGuard(snapshot.config.security, blocks=live.blocks)
        #: ``[server] trusted_proxies`` of the snapshot in use (``origin``); None: none.
        self.proxies: TrustedProxies | None = None
        self.snapshot = snapshot
        self.use(snapshot)

    def use(self, snapshot: Snapshot) -> None:
        """Take a new snapshot (start, reload): new calls follow it, calls in progress keep
        theirs, and the guard learns the new known sources and ``[security]``."""
        gateways = gateway_addresses([g.host for g in snapshot.config.gateways])
        rules = snapshot.config.server.trusted_proxies
        proxies = TrustedProxies(rules) if rules else None
        self.guard.configure(
            snapshot.config.security,
            _customer_rule(snapshot),
            gateways,
            None if proxies is None else proxies.trusts,
        )
        self.proxies = proxies
        if self.meter is not None:
            self.meter.configure(snapshot.config)
        self._registering = any(a.register for a in snapshot.config.accounts)
        self.snapshot = snapshot
        self.trust_registrations()

    def trust_registrations(self) -> None:
        """The guard trusts the addresses live contacts registered from (a reload forgets
        whom it trusted; a registered contact must not be challenged or counted by pike
        until it re-registers)."""
        if self.registrations is None or not self._registering:
            return
        accounts = self.snapshot.accounts
        now = time.time()
        for binding in self.registrations:
            account = accounts.get(binding.account_id)
            if account is not None and account.register and binding.live(now):
                self.guard.trust(binding.source_ip)

    # -- before any state: strangers are answered statelessly --------------------------------

    def origin(self, request: Request, flow: Flow) -> Flow:
        """``flow`` with the client behind a trusted proxy filled in (``Flow.client``).

        The proxy is a known source, so what it forwards passed the per-packet checks
        unseen; its client is counted by pike here instead (``SourceGuard.forwarded``), and
        ``screen`` answers it as it would the client."""
        proxies = self.proxies
        if proxies is None:
            return flow
        proxied = proxies.flow_of(request, flow)
        client = proxied.client
        if client is not None and client != UNIDENTIFIED:
            self.guard.forwarded(client)
        return proxied

    def screen(self, request: Request, flow: Flow) -> Screen | None:
        """``SourceGuard.screen`` with this snapshot's realm and digest challenge, by who
        sent the request (``Flow.origin``); for a client behind a trusted proxy, a drop is
        answered 403 instead."""
        if flow.client == UNIDENTIFIED:
            # The proxy named its client twice, wrongly or not at all (an INVITE or a
            # REGISTER), or named a proxy: nobody's request for sure.
            self.guard.refusals.note(flow.remote[0], "proxy_client_unknown", time.monotonic())
            return Screen(403, "proxy_client_unknown")
        screen = self._screen(request, flow)
        if screen is not None and screen.status is None and flow.client is not None:
            # Never silence a trusted proxy: its transaction would time out, and a
            # balancer takes a node that does not answer for a dead one.
            return Screen(403, screen.why)
        return screen

    def _screen(self, request: Request, flow: Flow) -> Screen | None:
        snapshot = self.snapshot
        realm = snapshot.config.server.realm

        if request.method == "REGISTER" and self._registering:
            return screen_register(
                request,
                flow.origin,
                self.guard,
                realm=realm,
                challenge=lambda: self.nonces.challenges(time.time()),
            )

        def challenge() -> list[tuple[str, str]]:
            return [("Proxy-Authenticate", v) for v in self.nonces.challenges(time.time())]

        return self.guard.screen(
            request,
            flow.origin,
            has_credentials=lambda r: has_credentials(r, realm),
            challenge=challenge if snapshot.digest_only else None,
        )

    # -- authorise, normalise, limits, route, select: admit a new INVITE -------------------

    def admit(self, request: Request, flow: Flow, now: float) -> Admission | Reply:
        """``now`` is wall-clock time (nonces, rating); live counters run on a monotonic clock."""
        snapshot = self.snapshot  # this call's rules, whatever a reload does meanwhile
        if self.draining:
            return reply(refuse(EndReason.SYSTEM_SHUTDOWN, "SIGTERM: draining calls"))
        mono = time.monotonic()

        # authorise
        registered = self._registered_source(now, flow)
        who = authorise(
            snapshot,
            request,
            flow.origin,
            self.live,
            now,
            self.nonces,
            clock=mono,
            registered=registered,
            shared=self.shared.blocks if self.shared is not None else None,
        )
        if isinstance(who, Challenge):
            return Reply(who.status, headers=tuple(who.headers()), end_reason=None, cdr=False)
        if isinstance(who, Refusal):
            return reply(who)
        account = who.account
        if who.method == "digest":
            self.guard.trust(flow.origin[0])

        # normalise
        number = normalise(account, who.number)
        if isinstance(number, Refusal):
            return reply(number, account_id=account.id)

        # limits (counts the call against the account when it passes)
        refusal = check_limits(account, number, self.live, mono)
        if refusal is not None:
            return reply(refusal, account_id=account.id)

        # From here the call holds one of the account's slots. Every way out but an
        # Admission gives it back, an exception included: a leaked slot would shrink the
        # account's max_calls until a restart. A bug here is the account's refused call
        # (500 internal_error, with its CDR), not the engine's anonymous one.
        admission: Admission | None = None
        held: CallContext | None = None
        try:
            # route: by the number, and on a plan with caller-ID routes by whether the
            # call has one (after the account's cli rules)
            identity = rewrite(identity_of(request), account.cli)
            at = dt.datetime.fromtimestamp(now, dt.UTC)
            plan = route_call(
                snapshot,
                account,
                number,
                at,
                request.call_id or "",
                cli=identity.present,
                caller=identity.number,
                acd=None if self.stats is None else live_acd(self.stats, mono),
            )
            if isinstance(plan, Refusal):
                return reply(plan, account_id=account.id)

            # select: the route's quality moves poor gateways last; fail fast when no
            # candidate can take a call now
            if self.stats is not None:
                plan = demote(snapshot, account, plan, self.stats, mono)
            usable, skipped = select_gateways(snapshot, plan, self.live, mono)
            if not usable:
                detail = ", ".join(f"{g}: {why}" for g, why in skipped)
                return reply(refuse(EndReason.NO_GATEWAY, detail), account_id=account.id)

            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "call_id=%s account=%s cli=%s %s",
                    request.call_id,
                    account.id,
                    identity.number or "none",
                    routing_trace(plan, skipped),
                    extra={"call_id": request.call_id},
                )
            defaults = snapshot.config.defaults
            max_duration = account.max_duration
            if max_duration is None:
                max_duration = defaults.max_duration
            cap = float(max_duration) if max_duration else UNLIMITED_DURATION
            context = CallContext(snapshot, account, who.dialed, number, plan, identity=identity)

            # credit: a billed account's first increment and connect fee, held
            meter = self.meter
            if meter is not None and meter.billed(account.id) and plan.sell is not None:
                if not meter.admit(context, account.id, plan.sell, int(cap)):
                    refusal = refuse(
                        EndReason.INSUFFICIENT_BALANCE,
                        f"available credit {meter.available_text(account.id)} does not cover"
                        f" the first increment of {plan.sell.prefix} ({plan.sell.cost(1)})",
                    )
                    return reply(refusal, account_id=account.id)
                held = context

            admission = Admission(
                account_id=account.id,
                number_dialed=who.dialed,
                number=number,
                max_duration=cap,
                attempt_cap=defaults.max_attempts,
                time_budget=defaults.call_budget,
                policy=context,
                realm=snapshot.config.server.realm,
                ack_timeout=defaults.ack_timeout,
            )
        except Exception:
            logger.exception(
                "admission failed after the limits; the account's slot is released",
                extra={"call_id": request.call_id},
            )
            detail = "admission failed after the limits; see the log"
            return reply(refuse(EndReason.INTERNAL_ERROR, detail), account_id=account.id)
        finally:
            if admission is None:
                self.live.account_release(account.id)
                if held is not None and self.meter is not None:
                    self.meter.release(held)
        if self.stats is not None:
            self.stats.call_started(started_of(account.id, plan), mono)
        return admission

    async def shared_admit(self, call: Call) -> Reply | None:
        """The limits stage across nodes, after this node's (``admit``): None when the call
        may hunt, else its refusal (503 ``limit_exceeded``, as the node's own limits).

        A call that ended while Redis answered (CANCEL, shutdown) gives back at once what
        the check took; otherwise :meth:`account` does at the call's end."""
        shared = self.shared
        if shared is None:
            return None
        context = _context(call)
        account = context.account
        verdict = await shared.admit(account.id, account.max_calls, account.max_cps)
        if verdict.held:
            if call.finished:
                shared.release(account.id)
            else:
                context.shared_held = True
        refusal = shared_refusal(account, verdict.value)
        if refusal is None and self.meter is not None and not call.finished:
            # credit: the first hold across nodes (fails closed when Redis is down)
            refusal = await self.meter.admit_across(context)
        return None if refusal is None else reply(refusal, account_id=account.id)

    def _registered_source(self, now: float, flow: Flow) -> Callable[[str, int], str | None] | None:
        """authorise's question "whose registration came from this address, over this
        transport?" (None when no account registers)."""
        registrations = self.registrations
        if registrations is None or not self._registering:
            return None
        transport = "tcp" if flow.transport is Transport.TCP else "udp"
        return lambda ip, port: registrations.account_at(ip, port, now, transport)

    # -- select: the next gateway, claimed ------------------------------------------------

    def next_target(self, call: Call, now: float) -> Target | Reply | None:
        """``now`` is monotonic seconds (the gateways' CPS windows)."""
        context = _context(call)
        candidates = context.plan.candidates
        while context.pending or context.next_index < len(candidates):
            if context.pending:
                # The next contact of a registered: gateway, claimed like a gateway.
                target = context.pending.pop(0)
                pending_gateway = context.snapshot.gateways[target.gateway_id]
                why = admit_gateway(pending_gateway, self.live, now)
                if why is not None:
                    context.skipped.append((target.gateway_id, why))
                    context.pending.clear()
                    continue
                context.claimed[target.gateway_id] = pending_gateway
                if self.stats is not None:
                    self.stats.gateway_seized(target.gateway_id, now)
                return target
            gateway_id = candidates[context.next_index].gateway
            context.next_index += 1
            gateway = context.snapshot.gateways.get(gateway_id)
            if gateway is None:
                context.skipped.append((gateway_id, "unknown"))
                continue
            media = media_policy(context.account, gateway)
            if media.codecs and not offer_allowed(
                call.invite, media.codecs, transcode=media.transcode
            ):
                context.skipped.append((gateway_id, _CODECS_SKIPPED))
                continue
            if gateway.registered is not None:
                targets = self._contact_targets(call, context, gateway, media)
                if not targets:
                    context.skipped.append((gateway_id, "not registered"))
                context.pending.extend(targets)
                continue
            why = admit_gateway(gateway, self.live, now)
            if why is not None:
                context.skipped.append((gateway_id, why))
                continue
            context.claimed[gateway_id] = gateway
            if self.stats is not None:
                self.stats.gateway_seized(gateway_id, now)
            # forward: the pure part, the Request-URI and the caller-ID this gateway gets
            uri = gateway_request_uri(gateway, context.number)
            edits = _cli_edits(call, context, gateway)
            return Target(
                gateway_id=gateway.id,
                transport=Transport.TCP if gateway.transport == "tcp" else Transport.UDP,
                address=gateway.address,
                request_uri=str(uri),
                number_sent=sent_number(gateway, context.number),
                setup_timeout=gateway.setup_timeout,
                failover_codes=gateway.failover_codes,
                no_answer_timeout=no_answer_timeout(context.account, gateway),
                failover_on_no_answer=fails_over_on_no_answer(
                    context.snapshot.config.defaults, context.account, gateway
                ),
                media=media,
                replace_headers=edits,
                follow_contact=gateway.dialog_target == "contact",
            )
        if not call.attempts:
            detail = ", ".join(f"{g}: {why}" for g, why in context.skipped)
            if context.skipped and all(why == _CODECS_SKIPPED for _, why in context.skipped):
                offer = offered_codecs(call.invite)
                refusal = refuse(EndReason.CODEC_MISMATCH, f"{offer}; {detail}")
                return reply(refusal, account_id=context.account.id)
            return reply(refuse(EndReason.NO_GATEWAY, detail), account_id=context.account.id)
        return None

    def _contact_targets(
        self, call: Call, context: CallContext, gateway: Gateway, media: MediaPolicy
    ) -> list[Target]:
        """One target per live contact of the gateway's account, in the order they are
        tried (``Registrations.contacts``): each reached where its binding says (the first
        hop of its Path, with the Path as the Route set; else the REGISTER's source address
        when NAT'd), with the number sent in the contact's URI and the caller-ID as for any
        gateway."""
        registrations = self.registrations
        account = context.snapshot.accounts.get(gateway.registered or "")
        if registrations is None or account is None or not account.register:
            return []
        if not account.enabled:  # a disabled customer takes no calls either
            return []
        sent = sent_number(gateway, context.number)
        edits = _cli_edits(call, context, gateway)
        targets: list[Target] = []
        for binding in registrations.contacts(account.id, time.time()):
            uri = binding.request_uri(escape(sent))
            destination = binding.destination
            if uri is None or destination is None:
                continue
            transport, address = destination
            targets.append(
                Target(
                    gateway_id=gateway.id,
                    transport=transport,
                    address=address,
                    request_uri=str(uri),
                    number_sent=sent,
                    setup_timeout=gateway.setup_timeout,
                    failover_codes=gateway.failover_codes,
                    no_answer_timeout=no_answer_timeout(context.account, gateway),
                    failover_on_no_answer=fails_over_on_no_answer(
                        context.snapshot.config.defaults, context.account, gateway
                    ),
                    media=media,
                    replace_headers=edits,
                    route=binding.route,
                )
            )
        return targets

    async def shared_claim(self, call: Call, target: Target) -> bool:
        """The gateway ``next_target`` claimed on this node, against every node's calls to
        it (``capacity``, ``max_cps``): True when the branch may go; False, the claim is
        released and the gateway skipped (``... across nodes``), and the hunt goes on. Redis
        unavailable: the node's own claim stands (the failure policy of ``max_calls``)."""
        shared = self.shared
        context = _context(call)
        gateway = context.claimed.get(target.gateway_id)
        if shared is None or gateway is None:
            return True
        verdict = await shared.claim_gateway(gateway.id, gateway.capacity, gateway.max_cps)
        if verdict.held:
            if call.finished or target.gateway_id not in context.claimed:
                shared.release_gateway(gateway.id)  # the call or its claim ended meanwhile
            else:
                context.shared_gateways.add(gateway.id)
            return True
        limits = {
            "max_calls": f"capacity {gateway.capacity}",
            "max_cps": f"max_cps {gateway.max_cps}",
        }
        limit = limits.get(verdict.value)
        if limit is None:
            return True
        context.skipped.append((gateway.id, f"{limit} across nodes"))
        self.release_target(call, target)
        return False

    def release_target(self, call: Call, target: Target) -> None:
        context = _context(call)
        if context.claimed.pop(target.gateway_id, None) is not None:
            self.live.gateway_release(target.gateway_id)
            if self.stats is not None:
                self.stats.gateway_released(target.gateway_id, time.monotonic())
        if target.gateway_id in context.shared_gateways and self.shared is not None:
            context.shared_gateways.discard(target.gateway_id)
            self.shared.release_gateway(target.gateway_id)

    def dialog_peer(self, address: Address) -> None:
        """A gateway's answer sent its dialog to ``address``: the carrier's (``guard.peer``)."""
        self.guard.peer(address[0])

    # -- fail over: every candidate failed ------------------------------------------------

    def exhausted(self, call: Call, status: int) -> Reply:
        """``status`` is the best final response collected (RFC 3261 16.7, 503 -> 500)."""
        tried = ", ".join(f"{a.gateway_id}: {a.status} {a.outcome}" for a in call.attempts)
        if not call.responses:
            refusal = refuse(EndReason.GATEWAY_TIMEOUT, tried)
        else:
            # The cause (and so the Reason text) follows the status sent (RFC 3398).
            refusal = refuse(EndReason.ALL_GATEWAYS_FAILED, tried, status=status)
            refusal = refusal.with_cause(q850_for_status(status))
        return reply(refusal, account_id=call.admission.account_id)

    # -- connect: the answered call's durable mark ----------------------------------------

    def answered(self, call: Call) -> None:
        """The call is up: queue its ``CallStart`` (the CDR as it must read if the switch dies
        before the call ends), so that the next start still writes the call's CDR, as
        ``system_failure`` billed to the dead run's last heartbeat. Its CDR deletes it.

        Only queues (the store's writer thread commits it with its next group commit) and
        never raises: failing to write the mark must not fail the call.
        """
        context = _context(call)
        covered = None
        # A call that holds no credit is not metered (``CreditMeter.answered`` answers None
        # at once): no rate to look up for it.
        if self.meter is not None and self.meter.book.hold(context) is not None:
            try:
                rate = _answer_rate(context, call)
            except Exception:  # metered at the admission's rate instead
                logger.exception("rating the answer failed", extra={"call_id": call.call_id})
                rate = None
            try:
                covered = self.meter.answered(context, call, rate)
            except Exception:
                # A bug here must not leave the call unmetered without a trace; the call goes
                # on and is billed at its end as any call is.
                logger.exception(
                    "metering the answered call failed", extra={"call_id": call.call_id}
                )
        try:
            try:
                memo = context.cdr_memo = CdrMemo()
                record = build_cdr(
                    call,
                    context.snapshot,
                    context.account,
                    context.plan,
                    context.skipped,
                    costed=False,
                    memo=memo,
                )
            except Exception:  # a bug: the mark still says what is known
                record = bare_cdr(call, context.account)
            failure = refuse(EndReason.SYSTEM_FAILURE)
            record.end_reason, record.q850 = failure.end_reason, failure.q850
            record.hangup_side = "switch"
            record.end_at = record.answer_at or record.end_at
            record.sell_cost = record.buy_cost = None
            gateway = context.snapshot.gateways.get(call.answered_gateway or "")
            self.cdrs.open_call(
                CallStart(
                    record,
                    sell_deck=context.account.rate_deck,
                    buy_deck=gateway.rate_deck if gateway is not None else None,
                    max_duration=call.admission.max_duration,
                    billed_account=context.account.id if covered is not None else None,
                    billed_until=covered.extent if covered is not None else None,
                    reserved=covered.reserved if covered is not None else 0,
                )
            )
        except Exception:
            logger.exception(
                "call start not recorded: a crash before the call ends would lose its CDR",
                extra={"call_id": call.call_id},
            )

    # -- account --------------------------------------------------------------------------

    def account(self, call: Call) -> None:
        """The call's CDR first (it must never be lost), then its counters released."""
        context = _context(call)
        try:
            record = build_cdr(
                call,
                context.snapshot,
                context.account,
                context.plan,
                context.skipped,
                memo=context.cdr_memo,
            )
        except Exception:  # a costing bug must not cost us the record
            logger.exception("CDR costing failed", extra={"call_id": call.call_id})
            record = bare_cdr(call, context.account)
        debit = None
        if self.meter is not None:
            try:
                debit = self.meter.ended(context, call, record.sell_cost, record.billsec or 0)
                if debit is not None and record.sell_cost is None:
                    # Costing failed; the CDR says what the ledger debits.
                    cost = self.meter.amount_text(debit.account_id, -debit.amount)
                    record.sell_cost = Decimal(cost)
                    record.detail += "; sell cost at the metered rate"
            except Exception:
                logger.exception("settling the call failed", extra={"call_id": call.call_id})
        if debit is None:
            self.cdrs.enqueue(record)
        else:
            self.cdrs.enqueue(record, debit)
        self.live.account_release(context.account.id)
        if context.shared_held and self.shared is not None:
            context.shared_held = False
            self.shared.release(context.account.id)
        for gateway_id in list(context.claimed):
            self.live.gateway_release(gateway_id)
            if self.stats is not None:
                self.stats.gateway_released(gateway_id, time.monotonic())
        context.claimed.clear()
        if self.shared is not None:
            for gateway_id in context.shared_gateways:
                self.shared.release_gateway(gateway_id)
        context.shared_gateways.clear()
        if self.stats is not None:
            self.stats.call_ended(ended_of(call, context.plan), time.monotonic())

    def account_refusal(
        self, request: Request | RefusedInvite, flow: Flow, refused: Reply, now: float
    ) -> None:
        """A CDR when the source is a customer's address or the refusal names an account;
        a stranger's refusal (a failed digest guess, say) is only counted, never a row."""
        ip, port = flow.origin
        if refused.account_id is None and not self.guard.is_account_address(ip, port):
            reason = refused.end_reason or EndReason.INTERNAL_ERROR
            self.guard.refusals.note(ip, reason, time.monotonic())
            return
        self.cdrs.enqueue(refusal_cdr(request, flow, refused, now))
        if self.stats is not None:
            self.stats.call_refused(refused_of(refused), time.monotonic())

    def malformed(self, malformed: Malformed) -> bool:
        """What the transport refused as malformed, before the receive stage.

        The source address decides first, from the guard's cache: a stranger's message is
        only counted per source (``malformed``) and nothing more of it is read. So is a
        customer's that is not an INVITE (its method is read, no more). A customer's INVITE
        is a refused call attempt:
        ``account_refusal`` writes its CDR, end reason ``invalid_request`` with the status
        the transport sent (400, 416 or 505), from what could be read of it. A copy of one
        already recorded (a UDP retransmission) writes nothing. True when a CDR was written.
        Through a trusted proxy the client it names decides, when the message could be
        parsed (refused by validation only); else the proxy, for whom it is only counted.
        """
        flow = malformed.flow
        message = malformed.message
        if self.proxies is not None and isinstance(message, Request):
            flow = self.proxies.flow_of(message, flow)
            if flow.client == UNIDENTIFIED:
                flow = malformed.flow
        ip, port = flow.origin
        guard = self.guard
        if not guard.is_account_address(ip, port) or malformed.method != "INVITE":
            guard.refusals.note(ip, "malformed", guard.clock())
            return False
        # Keyed by a hash of the bytes, never the bytes: 4096 kept INVITEs of up to 64 KiB
        # each would be a lot of memory to let a spoofed customer address fill.
        copy = (ip, port, hash(malformed.data))
        if not self._recorded_malformed.first(copy, time.monotonic()):
            return False
        detail = malformed.reason
        if not malformed.answered:
            detail += "; not answered: no Via to answer to"
        refused = reply(refuse(EndReason.INVALID_REQUEST, detail, status=malformed.status))
        invite = RefusedInvite.salvaged(malformed)
        self.account_refusal(invite, flow, refused, time.time())
        return True


def _answer_rate(context: CallContext, call: Call) -> lcr.Rate | None:
    """The account's rate in force at the answer: what the CDR rates the call with."""
    deck_id = context.account.rate_deck
    if deck_id is None or call.answer_at is None:
        return None
    deck = context.snapshot.decks.get(deck_id)
    if deck is None:
        return None
    return deck.lookup(context.number, dt.datetime.fromtimestamp(call.answer_at, dt.UTC))


def _cli_edits(call: Call, context: CallContext, gateway: Gateway) -> tuple[tuple[str, str], ...]:
    """The From/P-Asserted-Identity fields this gateway's INVITE gets: the caller-ID after the
    account's rules (``context.identity``) and the gateway's (none when neither has rules)."""
    if not (context.account.cli or gateway.cli):
        return ()
    received = context.identity or identity_of(call.invite)
    return header_edits(call.invite, rewrite(received, gateway.cli))


def _context(call: Call) -> CallContext:
    return cast(CallContext, call.admission.policy)
