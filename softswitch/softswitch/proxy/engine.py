"""The proxy engine: a dialog-stateful, record-routing SIP proxy on the transport and
transaction layers.

This module is the SIP machinery only. *What* happens to a call (who the caller is, which
gateways to try, what the CDR says) is decided by the pipeline (``proxy.pipeline``), which the
engine calls at fixed points: ``admit`` for a new INVITE, ``next_target`` for each branch,
``release_target`` when a branch ends, ``account`` when the call ends. Everything the engine
does between those points is RFC 3261 proxy behaviour: 100 Trying, sanity checks, one INVITE
client transaction per gateway, fail-over, CANCEL, relaying 18x/2xx, the dialog's in-dialog
requests along the record-routed path, and the switch's own BYEs.

Time: timers are ``loop.call_later`` handles owned by the call they belong to; the
transaction layer's timers are one ``loop.call_at`` at its next deadline, as in aiosip.
A peer's malformed or unexpected message is logged and dropped, never raised.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Protocol

from softswitch.call.refusal import Refusal, q850_for_status, refuse
from softswitch.deadline import DeadlineTimer
from softswitch.security import Screen
from softswitch.sip import (
    Request,
    Response,
    SipParseError,
    SipURI,
    Via,
    make_branch,
    make_tag,
    parse_uri,
)
from softswitch.sip.headers import Headers
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    ClientTransaction,
    Matched,
    PassUp,
    Send,
    ServerTransaction,
    Terminated,
    Timeout,
    Transaction,
    TransactionLayer,
    TransactionOutput,
    TransportFailure,
)
from softswitch.transport import (
    Address,
    Flow,
    Limits,
    MalformedHandler,
    SourceFilter,
    Transport,
    TransportLayer,
)

from . import forward
from .calls import Admission, Attempt, Branch, Call, Phase, Target
from .dialogs import late_answer_requests, routes_beyond_us, teardown_requests
from .failover import best_final_status, should_fail_over
from .forward import Hop

__all__ = ["CallPolicy", "Engine", "Reply"]

logger = logging.getLogger("softswitch.proxy")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK"
#: Timer C (RFC 3261 16.6 step 11: "MUST be greater than 3 minutes"): the longest a ringing
#: branch may ring before the switch cancels it and answers the caller 480 ``no_answer``.
NO_ANSWER_TIMEOUT = 181.0
#: Bytes of UDP receive buffer asked for (Linux caps it at net.core.rmem_max).
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024
#: How long an answered call's dialog entry outlives a BYE, for late retransmissions.
LINGER = 4.0
#: Transaction deadlines share wake-ups on this grid (seconds); see ``DeadlineTimer``.
TIMER_RESOLUTION = 0.01


@dataclass(frozen=True, slots=True)
class Reply:
    """A final response the switch itself sends to the caller, with the CDR's end reason.

    ``cdr`` False for answers that are steps of a handshake rather than the end of a call
    attempt (the 407 digest challenge): those produce no CDR.
    """

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    end_reason: str = "internal_error"
    account_id: str | None = None
    detail: str = ""
    cdr: bool = True

    @classmethod
    def of(cls, refusal: Refusal, *, account_id: str | None = None) -> Reply:
        """A stage's refusal as a final response: its status, Reason header and end reason."""
        return cls(
            status=refusal.status,
            headers=tuple(refusal.headers()),
            end_reason=refusal.end_reason,
            account_id=account_id,
            detail=refusal.detail,
        )


class CallPolicy(Protocol):
    """What the engine asks the pipeline; ``proxy.pipeline.Pipeline`` implements it."""

    def screen(self, request: Request, flow: Flow) -> Screen | None: ...

    def admit(self, request: Request, flow: Flow, now: float) -> Admission | Reply: ...

    def next_target(self, call: Call, now: float) -> Target | Reply | None: ...

    def release_target(self, call: Call, target: Target) -> None: ...

    def exhausted(self, call: Call, status: int) -> Reply: ...

    def account(self, call: Call) -> None: ...

    def account_refusal(self, request: Request, flow: Flow, reply: Reply, now: float) -> None: ...


#: Sanity-check statuses (RFC 3261 16.3) and the end reason their CDR shows.
_SANITY_END_REASONS = {482: "loop_detected", 483: "too_many_hops"}


@dataclass(eq=False, slots=True)
class _Relay:
    """An in-dialog request (not ACK) being relayed: its server and client transactions."""

    call: Call
    server: ServerTransaction
    from_caller: bool
    client: ClientTransaction | None = None


@dataclass(slots=True)
class _Stats:
    """Counters since start, for logs and the load harness."""

    calls: int = 0
    active: int = 0
    answered: int = 0
    failed: int = 0
    refused: int = 0


def _log(level: int, call_id: str | None, msg: str, *args: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "call_id=%s " + msg, call_id, *args, extra={"call_id": call_id})


class Engine:
    """The switch's SIP core. ``await engine.listen(...)``, then it runs until ``close``."""

    def __init__(
        self,
        policy: CallPolicy,
        *,
        timers: TimerConfig | None = None,
        limits: Limits | None = None,
        user_agent: str = "softswitch",
        source_filter: SourceFilter | None = None,
        on_malformed: MalformedHandler | None = None,
    ) -> None:
        self.policy = policy
        self.user_agent = user_agent
        self.transport = TransportLayer(
            self._on_message,
            limits=limits if limits is not None else Limits(udp_receive_buffer=UDP_RECEIVE_BUFFER),
            source_filter=source_filter,
            on_malformed=on_malformed,
        )
        self.transactions = TransactionLayer(timers)
        self.stats = _Stats()
        self._server_calls: dict[ServerTransaction, Call] = {}
        self._branches: dict[ClientTransaction, Branch] = {}
        self._relays_out: dict[ClientTransaction, _Relay] = {}
        self._dialogs: dict[tuple[str, str], Call] = {}
        self._calls: set[Call] = set()
        self._ours: set[Address] = set()
        self._timer = DeadlineTimer(self._on_timer, resolution=TIMER_RESOLUTION)
        self._tasks: set[asyncio.Task[None]] = set()
        self._own: dict[ClientTransaction, asyncio.Future[Response | None]] = {}
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def listen(self, transport: Transport, addr: Address) -> Address:
        bound = await self.transport.listen(transport, addr)
        self._ours.add(bound)
        return bound

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for calls in progress to end (SIGTERM)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._calls and loop.time() < deadline:
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """End every call (BYE to answered ones, CDRs written), then stop the sockets."""
        for call in list(self._calls):
            if call.phase is Phase.ANSWERED:
                self._teardown(call, "system_shutdown", "switch")
            else:
                self._fail_call(call, Reply.of(refuse("system_shutdown")))
        if self._calls:
            await asyncio.sleep(0.2)  # let the BYEs leave
        self._closed = True
        self._timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await self.transport.close()

    def is_ours(self, host: str, port: int) -> bool:
        """Whether ``host:port`` names one of our listeners (loop detection, own Routes)."""
        for listen_host, listen_port in self._ours:
            if listen_port == port and (listen_host == host or listen_host in ("0.0.0.0", "::")):
                return True
        return False

    # ------------------------------------------------------------------ receiving

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_message(self, message: Request | Response, flow: Flow) -> None:
        if self._closed:
            return
        try:
            self._dispatch(message, flow)
        except SipParseError as exc:
            _log(logging.INFO, message.call_id, "dropped malformed message: %s", exc.reason)
        except Exception:
            logger.exception("engine failed on a message", extra={"call_id": message.call_id})

    def _dispatch(self, message: Request | Response, flow: Flow) -> None:
        now = self._now()
        result = self.transactions.receive(message, now)
        if isinstance(result, Matched):
            self._process(result.outputs)
            return
        if isinstance(message, Response):
            self._stray_response(message)
            return
        method = message.method
        if method == "ACK":
            self._relay_ack(message, flow)
        elif method == "CANCEL":
            self._on_cancel(message, flow, now)
        elif message.to_tag is not None:
            self._in_dialog(message, flow, now)
        elif self._screened(message, flow):
            return
        elif method == "INVITE":
            self._on_invite(message, flow, now)
        elif method == "OPTIONS":
            self._answer_options(message, flow, now)
        else:
            tx = self._server(message, flow, now)
            if tx is not None:
                status = 405 if method in ("REGISTER", "SUBSCRIBE", "MESSAGE") else 481
                self._respond(tx, Response.for_request(message, status, headers=[("Allow", ALLOW)]))

    def _screened(self, request: Request, flow: Flow) -> bool:
        """A request that belongs to no call in progress, from a source the policy will not
        spend state on: answered once without a transaction, or dropped. True if so."""
        screen = self.policy.screen(request, flow)
        if screen is None:
            return False
        if screen.status is not None:
            response = Response.for_request(
                request, screen.status, to_tag=make_tag(), headers=screen.headers
            )
            self.transport.send_response(response, flow)
        return True

    def _server(self, request: Request, flow: Flow, now: float) -> ServerTransaction | None:
        try:
            tx, outputs = self.transactions.create_server(
                request, now, reliable=flow.transport is Transport.TCP, peer=flow
            )
        except Exception as exc:  # a request the transaction layer will not take
            _log(logging.INFO, request.call_id, "no server transaction: %s", exc)
            return None
        self._process(outputs)
        return tx

    def _respond(self, tx: ServerTransaction, response: Response) -> None:
        if tx.last_response is not None and tx.last_response.status >= 200:
            return  # already answered (a race between a timer and a response)
        try:
            outputs = self.transactions.respond(tx, response, self._now())
        except Exception as exc:
            _log(logging.INFO, response.call_id, "could not respond: %s", exc)
            return
        self._process(outputs)

    def _answer_options(self, request: Request, flow: Flow, now: float) -> None:
        tx = self._server(request, flow, now)
        if tx is None:
            return
        status = 200
        headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
        self._respond(tx, Response.for_request(request, status, to_tag=make_tag(), headers=headers))

    # ------------------------------------------------------------------ stage 1: receive

    def _on_invite(self, request: Request, flow: Flow, now: float) -> None:
        tx = self._server(request, flow, now)  # sends 100 Trying at once
        if tx is None:
            return
        wall = time.time()
        sanity = forward.check_request(request, self.is_ours)
        if sanity is not None:
            status, why = sanity
            end_reason = _SANITY_END_REASONS.get(status, "invalid_request")
            refused = refuse(end_reason, why, status=status)
            self._reject(tx, request, flow, Reply.of(refused), wall)
            return
        try:
            decision = self.policy.admit(request, flow, wall)
        except Exception:  # a policy bug: the caller still gets an answer, and a CDR
            logger.exception("admission failed", extra={"call_id": request.call_id})
            decision = Reply.of(refuse("internal_error", "admission failed; see the log"))
        if isinstance(decision, Reply):
            self._reject(tx, request, flow, decision, wall)
            return
        call = Call(
            call_id=request.call_id or "",
            invite=request,
            caller_flow=flow,
            server_tx=tx,
            admission=decision,
            invite_at=wall,
            started_mono=now,
            caller_tag=request.from_tag,
        )
        self._server_calls[tx] = call
        self._calls.add(call)
        self.stats.calls += 1
        self.stats.active += 1
        call.budget_timer = asyncio.get_running_loop().call_later(
            decision.time_budget, self._budget_expired, call
        )
        _log(
            logging.INFO,
            call.call_id,
            "admitted account=%s number=%s",
            decision.account_id,
            decision.number,
        )
        self._hunt(call)

    def _reject(
        self, tx: ServerTransaction, request: Request, flow: Flow, reply: Reply, wall: float
    ) -> None:
        _log(
            logging.INFO,
            request.call_id,
            "refused %d %s (%s)",
            reply.status,
            reply.reason or "",
            reply.end_reason,
        )
        response = Response.for_request(
            request, reply.status, reply.reason, to_tag=make_tag(), headers=reply.headers
        )
        self._respond(tx, response)
        if reply.cdr:
            self.stats.refused += 1
            try:
                self.policy.account_refusal(request, flow, reply, wall)
            except Exception:
                logger.exception("accounting failed", extra={"call_id": request.call_id})

    # ------------------------------------------------------------------ stages 5-7: hunt

    def _hunt(self, call: Call) -> None:
        """Start the next branch, or answer the caller when there is none left."""
        if call.phase is not Phase.HUNTING:
            return
        elapsed = self._now() - call.started_mono
        if (
            len(call.attempts) >= call.admission.attempt_cap
            or elapsed >= call.admission.time_budget
        ):
            self._give_up(call)
            return
        try:
            choice = self.policy.next_target(call, time.monotonic())
        except Exception:
            logger.exception("gateway selection failed", extra={"call_id": call.call_id})
            choice = Reply.of(refuse("internal_error", "selection failed; see the log"))
        if choice is None:
            self._give_up(call)
            return
        if isinstance(choice, Reply):
            if call.attempts:
                self._give_up(call)
            else:
                self._fail_call(call, choice)
            return
        attempt = Attempt(choice.gateway_id, choice.request_uri, choice.number_sent, time.time())
        call.attempts.append(attempt)
        branch = Branch(call, choice, attempt)
        call.branch = branch
        self._launch(branch)

    def _launch(self, branch: Branch) -> None:
        """Send the branch's INVITE: at once over a UDP listener, else once connected."""
        flow = self._udp_flow(branch.target)
        if flow is not None:
            self._send_branch(branch, flow)
        else:
            self._spawn(self._connect_branch(branch), branch.call.call_id)

    def _udp_flow(self, target: Target) -> Flow | None:
        """The flow ``TransportLayer.connect`` would give for a UDP gateway by IP address,
        without a task per call: our first UDP listener of the same address family."""
        host = target.address[0]
        if target.transport is not Transport.UDP or not _is_ip(host):
            return None
        for transport, local in self.transport.listeners:
            if transport is Transport.UDP and (":" in local[0]) == (":" in host):
                return Flow(Transport.UDP, local, target.address)
        return None

    async def _connect_branch(self, branch: Branch) -> None:
        call, target = branch.call, branch.target
        try:
            flow = await self.transport.connect(target.transport, target.address)
        except OSError as exc:
            _log(logging.INFO, call.call_id, "gateway %s unreachable: %s", target.gateway_id, exc)
            self._branch_failed(branch, 503, "transport_error", received=False)
            return
        self._send_branch(branch, flow)

    def _send_branch(self, branch: Branch, flow: Flow) -> None:
        call, target = branch.call, branch.target
        if branch.dead or call.phase is not Phase.HUNTING:
            self._end_branch(branch)
            return
        branch.flow = flow
        try:
            request = self._branch_request(call, target, flow)
            size = len(bytes(request))
            if size > self.transport.limits.max_message_size:
                # Every gateway would get the same message: no fail-over, 513 at once.
                branch.attempt.outcome = "message_too_large"
                self._finish_branch(branch, None)
                detail = f"{size} bytes to forward, over {self.transport.limits.max_message_size}"
                self._fail_call(call, Reply.of(refuse("message_too_large", detail)))
                return
            tx, outputs = self.transactions.send_request(
                request, self._now(), reliable=flow.transport is Transport.TCP, peer=flow
            )
        except Exception as exc:  # our bug or an unusable gateway URI: try the next one
            logger.exception(
                "call_id=%s could not send to %s: %s", call.call_id, target.gateway_id, exc
            )
            self._branch_failed(branch, 500, "transport_error", received=False)
            return
        branch.request = request
        call.number_sent = target.number_sent
        branch.transaction = tx
        self._branches[tx] = branch
        branch.setup_timer = asyncio.get_running_loop().call_later(
            target.setup_timeout, self._setup_timeout, branch
        )
        _log(
            logging.INFO,
            call.call_id,
            "trying gateway=%s uri=%s",
            target.gateway_id,
            target.request_uri,
        )
        self._process(outputs)

    def _branch_request(self, call: Call, target: Target, flow: Flow) -> Request:
        """Stage 7: the caller's INVITE as this gateway gets it (``forward.prepare_branch``)."""
        outbound = Hop(flow.transport, *self.transport.sent_by(flow))
        inbound = Hop(call.caller_flow.transport, *self.transport.sent_by(call.caller_flow))
        hops = [outbound] if outbound == inbound else [outbound, inbound]
        return forward.prepare_branch(
            call.invite,
            uri=_parse_sip(target.request_uri),
            via=self._our_via(flow),
            record_route=hops,
            is_ours=self.is_ours,
        )

    def _setup_timeout(self, branch: Branch) -> None:
        """No 18x (nor a final answer) within the gateway's setup timeout: move on."""
        branch.setup_timer = None
        if branch.dead or branch.call.branch is not branch:
            return
        _log(
            logging.INFO,
            branch.call.call_id,
            "setup timeout on gateway=%s",
            branch.target.gateway_id,
        )
        self._cancel_branch(branch)
        self._branch_failed(branch, 408, "setup_timeout", received=False)

    def _no_answer(self, branch: Branch) -> None:
        """Rang for Timer C and nobody answered: CANCEL, and tell the caller 480."""
        branch.setup_timer = None
        call = branch.call
        if branch.dead or call.branch is not branch or call.phase is not Phase.HUNTING:
            return
        _log(logging.INFO, call.call_id, "no answer from gateway=%s", branch.target.gateway_id)
        self._fail_call(call, Reply.of(refuse("no_answer")))

    def _budget_expired(self, call: Call) -> None:
        call.budget_timer = None
        if call.phase is not Phase.HUNTING:
            return
        branch = call.branch
        if branch is not None and not branch.dead and not branch.got_ringing:
            _log(logging.INFO, call.call_id, "call time budget exhausted")
            self._cancel_branch(branch)
            self._branch_failed(branch, 408, "timeout", received=False)

    def _cancel_branch(self, branch: Branch) -> None:
        """CANCEL the branch (sent now, or when its first 1xx arrives: the layer waits)."""
        tx = branch.transaction
        if tx is not None:
            self._process(self.transactions.cancel(tx, self._now()))

    def _on_branch_response(self, branch: Branch, response: Response) -> None:
        call = branch.call
        status = response.status
        if branch.dead or call.branch is not branch or call.phase is not Phase.HUNTING:
            if 200 <= status < 300:
                self._kill_late_answer(branch, response)
            return
        if status < 200:
            branch.got_provisional = True
            if status == 100:
                return
            if not branch.got_ringing:
                branch.got_ringing = True
                branch.attempt.ring_at = time.time()
                self._stop_setup_timer(branch)
                # From now on Timer C (RFC 3261 16.6 step 11) bounds the ringing.
                branch.setup_timer = asyncio.get_running_loop().call_later(
                    NO_ANSWER_TIMEOUT, self._no_answer, branch
                )
                if call.ring_at is None:
                    call.ring_at = time.time()
                    call.pdd = round(call.ring_at - call.invite_at, 3)
            self._respond(call.server_tx, forward.relay_response(response))
            return
        self._stop_setup_timer(branch)
        if status < 300:
            self._answered(branch, response)
            return
        branch.attempt.status = status
        call.responses.append(status)
        call.last_response = response
        if should_fail_over(status, branch.target.failover_codes):
            self._branch_failed(branch, status, "failed")
            return
        # A final answer about the callee (486 busy, 404, 603 ...): relay it, stop hunting.
        branch.attempt.outcome = "failed"
        self._finish_branch(branch, status)
        reply = forward.relay_response(response)
        if reply.headers.get("Reason") is None:
            reply.headers.add("Reason", f"Q.850;cause={q850_for_status(status)}")
        self._fail_call(call, None, response=reply, status=status)

    def _stop_setup_timer(self, branch: Branch) -> None:
        if branch.setup_timer is not None:
            branch.setup_timer.cancel()
            branch.setup_timer = None

    def _finish_branch(self, branch: Branch, status: int | None) -> None:
        attempt = branch.attempt
        attempt.ended_at = time.time()
        if status is not None:
            attempt.status = status
        self._end_branch(branch)

    def _end_branch(self, branch: Branch) -> None:
        if branch.dead:
            return
        branch.dead = True
        self._stop_setup_timer(branch)
        self.policy.release_target(branch.call, branch.target)

    def _branch_failed(
        self, branch: Branch, status: int, outcome: str, *, received: bool = True
    ) -> None:
        """One gateway failed (by answer, timeout or transport): try the next one."""
        call = branch.call
        branch.attempt.outcome = outcome
        self._finish_branch(branch, status if received else None)
        if call.branch is branch:
            call.branch = None
        self._hunt(call)

    def _give_up(self, call: Call) -> None:
        """Every candidate failed (or the cap or budget was hit): the best answer we got."""
        status = best_final_status(call.responses)
        self._fail_call(call, self.policy.exhausted(call, status))

    def _fail_call(
        self,
        call: Call,
        reply: Reply | None,
        *,
        response: Response | None = None,
        status: int | None = None,
    ) -> None:
        """End an unanswered call: a final response to the caller, then its CDR."""
        if call.phase is not Phase.HUNTING:
            return
        branch = call.branch
        if branch is not None and not branch.dead:
            self._cancel_branch(branch)
            branch.attempt.outcome = "cancelled"
            self._finish_branch(branch, None)
        if response is None:
            assert reply is not None
            response = Response.for_request(
                call.invite, reply.status, reply.reason, to_tag=make_tag(), headers=reply.headers
            )
            call.end_reason = reply.end_reason
            status = reply.status
        elif call.end_reason is None:
            call.end_reason = _end_reason_for(status or response.status)
        call.final_status = status or response.status
        self._respond(call.server_tx, response)
        self.stats.failed += 1
        _log(logging.INFO, call.call_id, "failed %d (%s)", call.final_status, call.end_reason)
        self._end_call(call, hangup_side=None)

    def _kill_late_answer(self, branch: Branch, response: Response) -> None:
        """A gateway we gave up on answered after all: ACK it and hang up at once."""
        flow = branch.flow
        request = branch.request
        if flow is None or request is None:
            return
        _log(
            logging.INFO,
            branch.call.call_id,
            "late 2xx from gateway=%s: ACK and BYE",
            branch.target.gateway_id,
        )
        contact = response.contact
        target = str(contact[0].uri if contact else request.uri)
        routes = routes_beyond_us(response.record_route, self.is_ours)
        ack, bye = late_answer_requests(
            request,
            response.headers.get("To") or "",
            target,
            routes,
            lambda: self._our_via(flow),
            self.user_agent,
        )
        self.transport.send(flow, ack)
        self._send_ours(bye, flow)

    # ------------------------------------------------------------------ stage 8: connect

    def _answered(self, branch: Branch, response: Response) -> None:
        call = branch.call
        branch.attempt.status = response.status
        branch.attempt.outcome = "answered"
        branch.attempt.answer_at = time.time()
        call.phase = Phase.ANSWERED
        call.answer_at = time.time()
        if call.ring_at is None:
            call.pdd = round(call.answer_at - call.invite_at, 3)
        call.final_status = response.status
        call.answered_gateway = branch.target.gateway_id
        call.callee_tag = response.to_tag
        contact = response.contact
        call.callee_contact = (
            str(contact[0].uri) if contact else str(branch.request.uri if branch.request else "")
        )
        call.callee_routes = routes_beyond_us(response.record_route, self.is_ours)
        call.callee_flow = branch.flow
        if call.invite.cseq is not None:
            call.caller_cseq = call.invite.cseq.seq
        self._dialogs[call.key] = call
        self._stop_timer(call, "budget_timer")
        call.duration_timer = asyncio.get_running_loop().call_later(
            call.admission.max_duration, self._max_duration, call
        )
        self.stats.answered += 1
        _log(
            logging.INFO,
            call.call_id,
            "answered by gateway=%s pdd=%s",
            branch.target.gateway_id,
            call.pdd,
        )
        self._respond(call.server_tx, forward.relay_response(response))

    def _stray_response(self, response: Response) -> None:
        """A 2xx retransmission after its transaction ended: forward it statelessly (16.7)."""
        cseq = response.cseq
        if cseq is None or cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        call = self._dialogs.get((response.call_id or "", response.from_tag or ""))
        if call is None:
            return
        vias = response.via
        if len(vias) < 2 or not self.is_ours(vias[0].host.strip("[]"), vias[0].port or 5060):
            return
        self.transport.send_response(forward.relay_response(response), call.caller_flow)

    def _relay_ack(self, ack: Request, flow: Flow) -> None:
        """The ACK for a 2xx is its own transaction-less request: relay it along the dialog."""
        call, from_caller = self._find_dialog(ack)
        if call is None or call.callee_flow is None:
            return
        dest = call.callee_flow if from_caller else call.caller_flow
        via = self._our_via(dest)
        self.transport.send(dest, forward.prepare_in_dialog(ack, via=via, is_ours=self.is_ours))

    def _find_dialog(self, request: Request) -> tuple[Call | None, bool]:
        call_id = request.call_id or ""
        call = self._dialogs.get((call_id, request.from_tag or ""))
        if call is not None:
            return call, True
        call = self._dialogs.get((call_id, request.to_tag or ""))
        return call, False

    def _in_dialog(self, request: Request, flow: Flow, now: float) -> None:
        """BYE, re-INVITE, UPDATE, INFO ... from either side, relayed to the other side."""
        call, from_caller = self._find_dialog(request)
        if call is None and self._screened(request, flow):
            return
        tx = self._server(request, flow, now)
        if tx is None:
            return
        if call is None or call.callee_flow is None:
            self._respond(tx, Response.for_request(request, 481))
            return
        sanity = forward.check_request(request, self.is_ours)
        if sanity is not None:
            self._respond(tx, Response.for_request(request, sanity[0], sanity[1]))
            return
        dest = call.callee_flow if from_caller else call.caller_flow
        cseq = request.cseq
        if cseq is not None:
            if from_caller:
                call.caller_cseq = max(call.caller_cseq, cseq.seq)
            else:
                call.callee_cseq = max(call.callee_cseq, cseq.seq)
        relay = _Relay(call, tx, from_caller)
        out = forward.prepare_in_dialog(request, via=self._our_via(dest), is_ours=self.is_ours)
        if request.method == "BYE" and call.phase is Phase.ANSWERED:
            _log(logging.INFO, call.call_id, "BYE from %s", "caller" if from_caller else "callee")
            call.end_reason = "normal_clearing"
            self._end_call(call, hangup_side="caller" if from_caller else "callee")
        try:
            client, outputs = self.transactions.send_request(
                out, now, reliable=dest.transport is Transport.TCP, peer=dest
            )
        except Exception as exc:
            _log(logging.INFO, call.call_id, "cannot relay %s: %s", request.method, exc)
            self._respond(tx, Response.for_request(request, 500))
            return
        relay.client = client
        self._relays_out[client] = relay
        self._process(outputs)

    def _on_relay_response(self, relay: _Relay, response: Response) -> None:
        if response.status == 100:
            return
        self._respond(relay.server, forward.relay_response(response))

    # ------------------------------------------------------------------ CANCEL

    def _on_cancel(self, cancel: Request, flow: Flow, now: float) -> None:
        invite_tx = self.transactions.match_cancel(cancel)
        if invite_tx is None and self._screened(cancel, flow):
            return
        tx = self._server(cancel, flow, now)
        if tx is None:
            return
        call = self._server_calls.get(invite_tx) if invite_tx is not None else None
        if call is None or call.phase is not Phase.HUNTING:
            self._respond(tx, Response.for_request(cancel, 481 if call is None else 200))
            return
        self._respond(tx, Response.for_request(cancel, 200))
        _log(logging.INFO, call.call_id, "caller cancelled")
        call.hangup_side = "caller"
        self._fail_call(call, Reply.of(refuse("caller_cancelled")))

    # ------------------------------------------------------------------ teardown

    def _max_duration(self, call: Call) -> None:
        call.duration_timer = None
        if call.phase is Phase.ANSWERED:
            _log(logging.INFO, call.call_id, "maximum duration reached: BYE to both sides")
            self._teardown(call, "max_duration", "switch")

    def _teardown(self, call: Call, end_reason: str, side: str) -> None:
        """The switch hangs up an answered call: a BYE to each side, then the CDR."""
        reason = refuse(end_reason).reason_header()
        for bye, flow in teardown_requests(call, reason, self._our_via, self.user_agent):
            self._send_ours(bye, flow)
        call.end_reason = end_reason
        self._end_call(call, hangup_side=side)

    def _send_ours(self, request: Request, flow: Flow) -> ClientTransaction | None:
        try:
            tx, outputs = self.transactions.send_request(
                request, self._now(), reliable=flow.transport is Transport.TCP, peer=flow
            )
        except Exception as exc:
            _log(logging.INFO, request.call_id, "cannot send %s: %s", request.method, exc)
            return None
        self._process(outputs)
        return tx

    async def options(self, transport: Transport, address: Address, timeout: float) -> int | None:
        """Send OPTIONS to a gateway; its final status, or None when nothing came in time.

        The prober's question. Our own deadline, not Timer F (32 s): a probe must tell a
        dead gateway quickly, and a UDP peer that is gone gives no transport error.
        """
        try:
            flow = await self.transport.connect(transport, address)
        except OSError:
            return None
        host, port = self.transport.sent_by(flow)
        target = f"sip:{_uri_host(address[0])}:{address[1]}"
        if transport is Transport.TCP:
            target += ";transport=tcp"
        h = Headers()
        h.add("Via", str(Via.new(str(flow.transport), _uri_host(host), port)))
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:probe@{_uri_host(host)}:{port}>;tag={make_tag()}")
        h.add("To", f"<{target}>")
        h.add("Call-ID", f"probe-{make_tag()}@{_uri_host(host)}")
        h.add("CSeq", "1 OPTIONS")
        h.add("User-Agent", self.user_agent)
        tx = self._send_ours(Request("OPTIONS", target, h), flow)
        if tx is None:
            return None
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        self._own[tx] = future
        try:
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._own.pop(tx, None)
        return None if response is None else response.status

    def _our_via(self, flow: Flow) -> Via:
        host, port = self.transport.sent_by(flow)
        return Via.new(str(flow.transport), _uri_host(host), port, branch=make_branch())

    def _stop_timer(self, call: Call, name: str) -> None:
        handle = getattr(call, name)
        if handle is not None:
            handle.cancel()
            setattr(call, name, None)

    def _end_call(self, call: Call, *, hangup_side: str | None) -> None:
        """The single place a call ends: timers stopped, counters released, CDR written."""
        if call.finished:
            return
        call.finished = True
        call.phase = Phase.ENDED
        call.end_at = time.time()
        if hangup_side is not None and call.hangup_side is None:
            call.hangup_side = hangup_side
        self._stop_timer(call, "duration_timer")
        self._stop_timer(call, "budget_timer")
        branch = call.branch
        if branch is not None and not branch.dead:
            if branch.attempt.ended_at is None:
                branch.attempt.ended_at = call.end_at
            self._end_branch(branch)
        self._calls.discard(call)
        self._server_calls.pop(call.server_tx, None)
        self.stats.active -= 1
        lingers = call.key in self._dialogs
        if lingers:
            asyncio.get_running_loop().call_later(LINGER, self._forget_dialog, call)
        try:
            self.policy.account(call)
        except Exception:
            logger.exception("accounting failed", extra={"call_id": call.call_id})
        if not lingers:
            _release(call)

    def _forget_dialog(self, call: Call) -> None:
        if self._dialogs.get(call.key) is call:
            del self._dialogs[call.key]
        _release(call)

    # ------------------------------------------------------------------ transaction actions

    def _process(self, outputs: Iterable[TransactionOutput]) -> None:
        for output in outputs:
            tx, action = output.transaction, output.action
            if isinstance(action, Send):
                self._transmit(tx, action.message)
            elif isinstance(action, PassUp):
                if isinstance(tx, ClientTransaction) and isinstance(action.message, Response):
                    self._client_response(tx, action.message)
            elif isinstance(action, Timeout):
                self._client_gave_up(tx, 408)
            elif isinstance(action, TransportFailure):
                self._client_gave_up(tx, 503)
            elif isinstance(action, Terminated):
                self._terminated(tx)
        self._reschedule()

    def _transmit(self, tx: Transaction, message: Request | Response) -> None:
        flow = tx.peer
        if not isinstance(flow, Flow):
            return
        if isinstance(message, Response):
            self.transport.send_response(message, flow)
        elif not self.transport.send(flow, message):
            self._process(self.transactions.transport_error(tx, self._now(), "not sent"))

    def _client_response(self, tx: ClientTransaction, response: Response) -> None:
        branch = self._branches.get(tx)
        if branch is not None:
            self._on_branch_response(branch, response)
            return
        relay = self._relays_out.get(tx)
        if relay is not None:
            self._on_relay_response(relay, response)
            return
        future = self._own.get(tx)
        if future is not None and not future.done() and response.status >= 200:
            future.set_result(response)

    def _client_gave_up(self, tx: Transaction, status: int) -> None:
        if not isinstance(tx, ClientTransaction):
            return
        branch = self._branches.get(tx)
        if branch is not None and not branch.dead and branch.call.branch is branch:
            if branch.call.phase is Phase.HUNTING:
                self._stop_setup_timer(branch)
                outcome = "timeout" if status == 408 else "transport_error"
                self._branch_failed(branch, status, outcome, received=False)
            return
        relay = self._relays_out.get(tx)
        if relay is not None:
            self._respond(relay.server, Response.for_request(relay.server.request, status))
        future = self._own.get(tx)
        if future is not None and not future.done():
            future.set_result(None)

    def _terminated(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            self._branches.pop(tx, None)
            self._relays_out.pop(tx, None)

    def _reschedule(self) -> None:
        if not self._closed:
            self._timer.schedule(self.transactions.next_deadline())

    def _on_timer(self, deadline: float) -> None:
        try:
            self._process(self.transactions.handle_timers(max(self._now(), deadline)))
        except Exception:
            logger.exception("transaction timers failed")

    def _spawn(self, coro: Awaitable[None], call_id: str | None) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("call task failed", extra={"call_id": call_id})

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@functools.lru_cache(maxsize=256)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _parse_sip(text: str) -> SipURI:
    uri = parse_uri(text)
    if not isinstance(uri, SipURI):
        raise ValueError(f"a gateway Request-URI must be sip:, got {text!r}")
    return uri


def _end_reason_for(status: int) -> str:
    """The end reason of a call that ended on a gateway's final answer (no fail-over)."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    if status == 487:
        return "caller_cancelled"
    if status == 603:
        return "declined"
    return "gateway_rejected"


def _release(call: Call) -> None:
    """Cut a finished call's one reference cycle (``call.branch.call is call``) once the
    engine will not look the call up again.

    Reference counting then frees a call, its transactions and messages the moment the
    engine lets go, instead of leaving them to the cyclic garbage collector: at 800 calls a
    second that was millions of objects, collected in pauses of several seconds that SIPp
    saw as lost packets.
    """
    call.branch = None
