"""Hunting: one branch at a time to the gateways the pipeline picks, until one answers.

This is the engine's side of the route, select, forward, fail over and connect stages. For
each branch the pipeline names a target (``CallPolicy.next_target``); the caller's INVITE
goes there in its own client transaction (``forward.prepare_branch``). The branch fails
over to the next target on an answer ``failover.should_fail_over`` accepts, on a transport
error, or when the gateway's setup timeout passes without a provisional response; once it
rings, Timer C bounds the ringing. The first 2xx connects the call and starts the dialog;
a final answer about the callee (busy, declined ...) ends the hunt; so does running out of
targets, attempts or the call's time budget. A gateway that answers after the switch moved
on is ACKed and hung up at once, so it never bills a call nobody hears. With ``[server]
shared_state`` a claimed gateway is also checked against every node's calls to it
(``shared_gateway``, awaited in a task of the call's) before its branch starts; refused
there, the hunt goes on to the next target.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable

from softswitch.call.refusal import EndReason, q850_for_status, refuse
from softswitch.sip import NameAddr, Request, Response, SipURI, parse_uri
from softswitch.transport import Flow, Transport

from . import forward
from .calls import Attempt, Branch, Call, Phase, Target
from .core import log_call, logger
from .dialog_target import beyond_us, dialog_flow
from .dialogs import late_answer_requests, routes_beyond_us
from .ending import stop_setup_timer
from .failover import best_final_status, should_fail_over
from .forward import Hop
from .media import MediaSteps
from .policy import Reply

__all__ = ["Hunting"]


class Hunting(MediaSteps):
    """Branches, their timers, fail-over, late answers, and the answer that connects."""

    #: The gateway's limits across nodes (``Pipeline.shared_claim``): True when the branch
    #: may go. None here: no shared state, selection is synchronous.
    shared_gateway: Callable[[Call, Target], Awaitable[bool]] | None = None

    # -- route and select: the next branch -------------------------------------------------

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
            choice = Reply.of(refuse(EndReason.INTERNAL_ERROR, "selection failed; see the log"))
        if choice is None:
            self._give_up(call)
            return
        if isinstance(choice, Reply):
            if call.attempts:
                self._give_up(call)
            else:
                self._fail_call(call, choice)
            return
        shared = self.shared_gateway
        if shared is not None:
            self.driver.spawn(self._claim_shared(call, choice, shared), call.call_id)
            return
        self._branch_to(call, choice)

    async def _claim_shared(
        self, call: Call, target: Target, check: Callable[[Call, Target], Awaitable[bool]]
    ) -> None:
        """The claimed gateway's check across nodes, then its branch (or the next target).
        A call that ended meanwhile was accounted already: its claims are back."""
        try:
            go = await check(call, target)
        except Exception:  # a bug: the node's own claim stands
            logger.exception("shared gateway check failed", extra={"call_id": call.call_id})
            go = True
        if call.finished or call.phase is not Phase.HUNTING:
            return
        if go:
            self._branch_to(call, target)
        else:
            self._hunt(call)

    def _branch_to(self, call: Call, choice: Target) -> None:
        attempt = Attempt(choice.gateway_id, choice.request_uri, choice.number_sent, time.time())
        call.attempts.append(attempt)
        branch = Branch(call, choice, attempt)
        call.branch = branch
        self._launch(branch)

    def _give_up(self, call: Call) -> None:
        """Every candidate failed (or the cap or budget was hit): the best answer we got."""
        status = best_final_status(call.responses)
        self._fail_call(call, self.policy.exhausted(call, status))

    # -- forward: the branch's INVITE ------------------------------------------------------

    def _launch(self, branch: Branch) -> None:
        """Send the branch's INVITE: at once over a UDP listener, else once connected."""
        flow = self._udp_flow(branch.target)
        if flow is not None:
            self._send_branch(branch, flow)
        else:
            self.driver.spawn(self._connect_branch(branch), branch.call.call_id)

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
            log_call(
                logging.INFO, call.call_id, "gateway %s unreachable: %s", target.gateway_id, exc
            )
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
                self._fail_call(call, Reply.of(refuse(EndReason.MESSAGE_TOO_LARGE, detail)))
                return
        except Exception as exc:  # our bug or an unusable gateway URI: try the next one
            logger.exception(
                "call_id=%s could not send to %s: %s", call.call_id, target.gateway_id, exc
            )
            self._branch_failed(branch, 500, "transport_error", received=False)
            return
        if self._branch_media(branch, flow, request):
            self._open_branch(branch, flow, request)

    def _open_branch(self, branch: Branch, flow: Flow, request: Request) -> None:
        """The branch's INVITE leaves (its SDP as its media policy made it)."""
        call, target = branch.call, branch.target
        try:
            tx, outputs = self.driver.open_client(request, flow, self._now())
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
        log_call(
            logging.INFO,
            call.call_id,
            "trying gateway=%s uri=%s",
            target.gateway_id,
            target.request_uri,
        )
        self._process(outputs)

    def _branch_request(self, call: Call, target: Target, flow: Flow) -> Request:
        """The caller's INVITE as this gateway gets it (``forward.prepare_branch``)."""
        outbound = _hop(flow.transport, *self.transport.sent_by(flow))
        inbound = _hop(call.caller_flow.transport, *self.transport.sent_by(call.caller_flow))
        hops = [outbound] if outbound == inbound else [outbound, inbound]
        return forward.prepare_branch(
            call.invite,
            uri=_parse_sip(target.request_uri),
            via=self._our_via(flow),
            record_route=hops,
            is_ours=self.is_ours,
            realm=call.admission.realm,
            replace_headers=target.replace_headers,
            route=target.route,
        )

    # -- fail over: the branch's timers and answers ----------------------------------------

    def _setup_timeout(self, branch: Branch) -> None:
        """No 18x (nor a final answer) within the gateway's setup timeout: move on."""
        branch.setup_timer = None
        if branch.dead or branch.call.branch is not branch:
            return
        log_call(
            logging.INFO,
            branch.call.call_id,
            "setup timeout on gateway=%s",
            branch.target.gateway_id,
        )
        self._cancel_branch(branch)
        self._branch_failed(branch, 408, "setup_timeout", received=False)

    def _no_answer(self, branch: Branch) -> None:
        """Rang for the no-answer timeout (Timer C) and nobody answered: CANCEL it, then
        the next gateway when the target says so (within the call's budget), else 480."""
        branch.setup_timer = None
        call = branch.call
        if branch.dead or call.branch is not branch or call.phase is not Phase.HUNTING:
            return
        log_call(logging.INFO, call.call_id, "no answer from gateway=%s", branch.target.gateway_id)
        if branch.target.failover_on_no_answer:
            # As if it had answered 480: the best answer if no later gateway does better.
            call.responses.append(480)
            self._cancel_branch(branch)
            self._branch_failed(branch, 408, "no_answer", received=False)
            return
        branch.attempt.outcome = "no_answer"
        self._cancel_branch(branch)
        self._finish_branch(branch, None)
        self._fail_call(call, Reply.of(refuse(EndReason.NO_ANSWER)))

    def _budget_expired(self, call: Call) -> None:
        """The call's time budget (from its admission) ran out while hunting."""
        call.budget_timer = None
        if call.phase is not Phase.HUNTING:
            return
        branch = call.branch
        if branch is not None and not branch.dead and not branch.got_ringing:
            log_call(logging.INFO, call.call_id, "call time budget exhausted")
            self._cancel_branch(branch)
            self._branch_failed(branch, 408, "timeout", received=False)

    def _on_branch_response(self, branch: Branch, response: Response) -> None:
        call = branch.call
        if call.media is None:
            self._branch_response(branch, response)
            return

        def current() -> bool:
            return not branch.dead and call.branch is branch and call.phase is Phase.HUNTING

        if not current():  # a late answer: hung up without the relay
            self._branch_response(branch, response)
            return

        def failed(_status: int) -> None:
            if 200 <= response.status < 300:  # answered, and the relay failed it: hang up
                self._kill_late_answer(branch, response)

        self._media_step(
            call,
            response,
            lambda: self._branch_response(branch, response),
            current=current,
            failed=failed,
        )

    def _branch_response(self, branch: Branch, response: Response) -> None:
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
                stop_setup_timer(branch)
                # From now on Timer C (RFC 3261 16.6 step 11) bounds the ringing.
                branch.setup_timer = asyncio.get_running_loop().call_later(
                    branch.target.no_answer_timeout, self._no_answer, branch
                )
            to_tag = response.to_tag
            if to_tag is not None and to_tag != call.callee_tag:
                self._early_dialog(branch, response, to_tag)
                if call.ring_at is None:
                    call.ring_at = time.time()
                    call.pdd = round(call.ring_at - call.invite_at, 3)
            self._respond(call.server_tx, _for_caller(branch, response))
            return
        stop_setup_timer(branch)
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
        reply = _for_caller(branch, response)
        if reply.headers.get("Reason") is None:
            reply.headers.add("Reason", f"Q.850;cause={q850_for_status(status)}")
        self._fail_call(call, None, response=reply, status=status)

    def _branch_failed(
        self, branch: Branch, status: int, outcome: str, *, received: bool = True
    ) -> None:
        """One gateway failed (by answer, timeout or transport): try the next one."""
        call = branch.call
        branch.attempt.outcome = outcome
        self._finish_branch(branch, status if received else None)
        if call.branch is branch:
            call.branch = None
        if call.callee_tag is not None:
            # Its early dialog ends with it: a late request for it gets 481 from us.
            call.callee_tag = call.callee_flow = None
            if self._dialogs.get(call.key) is call:
                del self._dialogs[call.key]
        self._hunt(call)

    def _callee_side(self, branch: Branch, response: Response) -> list[NameAddr]:
        """The callee's part of the answer's Record-Route (``dialog_target.beyond_us``)."""
        request = branch.request
        if request is None:
            return []
        if response.headers.get_all("record-route") == request.headers.get_all("record-route"):
            return []  # the usual: nobody on the callee's side record-routed (no parsing)
        sent = request.record_route
        ours = max(0, len(sent) - len(branch.call.invite.record_route))
        return beyond_us(response.record_route, sent, ours)

    def _callee_flow(
        self, branch: Branch, response: Response, beyond: list[NameAddr] | None = None
    ) -> Flow | None:
        """Where the dialog's requests to the callee go: the branch's flow, or the next hop
        its answer names (``dialog_target``); ``beyond``: its ``_callee_side``, if known."""
        flow = branch.flow
        if flow is None or not branch.target.follow_contact or flow.transport is not Transport.UDP:
            return flow
        if beyond is None:
            beyond = self._callee_side(branch, response)
        return dialog_flow(flow, response.contact, beyond, self.is_ours)

    def _kill_late_answer(self, branch: Branch, response: Response) -> None:
        """A gateway we gave up on answered after all: ACK it and hang up at once."""
        beyond = self._callee_side(branch, response)
        flow = self._callee_flow(branch, response, beyond)
        request = branch.request
        if flow is None or request is None:
            return
        log_call(
            logging.INFO,
            branch.call.call_id,
            "late 2xx from gateway=%s: ACK and BYE",
            branch.target.gateway_id,
        )
        contact = response.contact
        target = str(contact[0].uri if contact else request.uri)
        routes = routes_beyond_us(beyond)
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

    # -- connect: the answer goes back to the caller, and the dialog begins ----------------

    def _early_dialog(self, branch: Branch, response: Response, to_tag: str) -> None:
        """A 1xx with a To tag starts an early dialog (RFC 3261 12.1): from now on the
        caller's PRACK, UPDATE or INFO (RFC 3262, 3311) and the gateway's requests follow
        the record-routed path like those of an answered call. One gateway rings at a time,
        so the current branch's dialog replaces any earlier one (no forking)."""
        call = branch.call
        call.callee_tag = to_tag
        # Where to relay is all an early dialog needs (where this 18x says: ``_callee_flow``);
        # the Contact and route set our own BYEs use are read from the 2xx, which they follow.
        call.callee_flow = self._callee_flow(branch, response)
        self._dialogs[call.key] = call

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
        beyond = self._callee_side(branch, response)
        call.callee_routes = routes_beyond_us(beyond)
        call.callee_flow = self._callee_flow(branch, response, beyond)
        if call.callee_flow is not branch.flow and call.callee_flow is not None:
            # The media gateway behind a carrier's front door: its 200s and BYEs are the
            # carrier's (``SourceGuard.peer``).
            self.policy.dialog_peer(call.callee_flow.remote)
        if call.invite.cseq is not None:
            call.caller_cseq = max(call.caller_cseq, call.invite.cseq.seq)
        self._dialogs[call.key] = call
        if call.budget_timer is not None:
            call.budget_timer.cancel()
            call.budget_timer = None
        loop = asyncio.get_running_loop()
        call.duration_timer = loop.call_later(call.admission.max_duration, self._max_duration, call)
        call.ack_timer = loop.call_later(call.admission.ack_timeout, self._no_ack, call)
        self.stats.answered += 1
        self._media_answered(call, branch, response)
        try:
            self.policy.answered(call)  # the durable call-start mark (crash recovery)
        except Exception:
            logger.exception("recording the answer failed", extra={"call_id": call.call_id})
        log_call(
            logging.INFO,
            call.call_id,
            "answered by gateway=%s pdd=%s",
            branch.target.gateway_id,
            call.pdd,
        )
        self._respond(call.server_tx, _for_caller(branch, response))

    def _no_ack(self, call: Call) -> None:
        """The caller never ACKed the 2xx (RFC 3261 13.3.1.4: 64*T1): the session must not
        go on billing; hang up both sides, billed up to now."""
        call.ack_timer = None
        if call.phase is Phase.ANSWERED:
            log_call(logging.INFO, call.call_id, "no ACK for the 2xx: BYE to both sides")
            self._teardown(call, EndReason.NO_ACK, "switch")


def _for_caller(branch: Branch, response: Response) -> Response:
    """A branch's response as the caller gets it: our Via off, and the caller's own ``From``
    back when the branch's INVITE had it rewritten (``call.cli``): the gateway echoes the
    ``From`` it got, and the caller's transaction is about the one it sent."""
    restore: tuple[tuple[str, str], ...] = ()
    if any(name == "From" for name, _ in branch.target.replace_headers):
        original = branch.call.invite.headers.get("From")
        if original is not None:
            restore = (("From", original),)
    return forward.relay_response(response, restore=restore)


@functools.lru_cache(maxsize=256)
def _hop(transport: Transport, host: str, port: int) -> Hop:
    """One of our few hops (a frozen value, made once rather than twice per branch)."""
    return Hop(transport, host, port)


@functools.lru_cache(maxsize=256)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _parse_sip(text: str) -> SipURI:
    uri = parse_uri(text)
    if not isinstance(uri, SipURI):
        raise ValueError(f"a gateway Request-URI must be sip:, got {text!r}")
    return uri
