"""Dispatch: each message to the part of the engine it belongs to, and the receive stage.

The transaction driver hands over what no transaction matched (:meth:`Dispatch._dispatch`)
and what the engine's own transactions report (a response, giving up, ending). From there
a message goes to the one place that knows what it means: a dialog's ACK or request to
``relay``, a CANCEL to the call it cancels, a new INVITE to admission and then ``hunting``,
a branch's answer to its branch, a relayed request's answer back to its sender.

A request that belongs to no call in progress is *screened* first: the policy may answer a
stranger once, without a transaction, or drop it, so that a scan of a public port costs the
switch no state (``_screened``). A new INVITE that passes is the *receive* stage: 100 Trying
at once (its server transaction), the RFC 3261 16.3 sanity checks, then the pipeline's
admission (``CallPolicy.admit``), which either starts the hunt or refuses with a value.
With limits shared across nodes (``shared_admission``, ``[server] shared_state``) an
admitted call first awaits that check in a task of its own, then hunts; meanwhile it is a
call like any other (a CANCEL answers it 487, shutdown 503), only without a branch.

A REGISTER goes to the registrar when the switch has one (``softswitch.registrar``: only a
REGISTER with credentials gets past the screen, whose stateless 401 challenges the rest),
else it is answered 405.

A message the transport refused as malformed (a stateless 400/416/505, before any
transaction) comes here too (:meth:`Dispatch._malformed`) and goes straight to the policy:
from a customer's address an INVITE is a refused call attempt with its CDR, anything else
is only counted. The policy decides by the source address before it reads any more of the
message, so a stranger's garbage costs what it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from softswitch.call.refusal import EndReason, refuse
from softswitch.registrar import Registrar
from softswitch.sip import Request, Response, make_tag
from softswitch.sip.transaction import ClientTransaction, ServerTransaction, Transaction
from softswitch.transport import Flow, Malformed

from . import forward
from .calls import Call, Phase
from .core import log_call, logger
from .ending import stop_setup_timer
from .express import ExpressLane
from .hunting import Hunting
from .policy import Reply
from .relay import InDialogRelay

__all__ = ["ALLOW", "Dispatch"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK"

#: Sanity-check statuses (RFC 3261 16.3) and the end reason their CDR shows.
_SANITY_END_REASONS = {482: EndReason.LOOP_DETECTED, 483: EndReason.TOO_MANY_HOPS}


class Dispatch(Hunting, InDialogRelay, ExpressLane):
    """Routes each message and each transaction result to its handler."""

    #: The registrar REGISTERs go to (``softswitch.registrar``); None: answered 405.
    registrar: Registrar | None = None
    #: The limits stage across nodes (``Pipeline.shared_admit``): None when the call may
    #: hunt, else its refusal. None here: no shared state, admission is synchronous.
    shared_admission: Callable[[Call], Awaitable[Reply | None]] | None = None

    # -- what no transaction matched -------------------------------------------------------

    def _dispatch(self, message: Request | Response, flow: Flow, now: float) -> None:
        if isinstance(message, Response):
            self._stray_response(message)
            return
        method = message.method
        if method == "ACK":
            call, from_caller = self._find_dialog(message)
            self._relay_ack(message, call, from_caller)
            return
        if method == "CANCEL":
            invite_tx = self.transactions.match_cancel(message)
            if invite_tx is None:
                unscreened = self._unscreened(message, flow)
                if unscreened is None:
                    return
                flow = unscreened
            self._on_cancel(message, flow, now, invite_tx)
            return
        if method == "REGISTER" and self.registrar is not None and self.registrar.active():
            # Before the To-tag test: a REGISTER is never in a dialog, whatever its To says
            # (some clients keep the tag of the last 200 in their refreshes).
            unscreened = self._unscreened(message, flow)
            if unscreened is not None:
                self._on_register(message, unscreened, now)
            return
        if message.to_tag is not None:
            call, from_caller = self._find_dialog(message)
            if call is None:
                unscreened = self._unscreened(message, flow)
                if unscreened is None:
                    return
                flow = unscreened
            self._in_dialog(message, flow, now, call, from_caller)
            return
        unscreened = self._unscreened(message, flow)
        if unscreened is None:
            return
        flow = unscreened
        if method == "INVITE":
            self._on_invite(message, flow, now)
        elif method == "OPTIONS":
            self._answer_options(message, flow, now)
        else:
            tx = self._server(message, flow, now)
            if tx is not None:
                status = 405 if method in ("REGISTER", "SUBSCRIBE", "MESSAGE") else 481
                response = Response.for_request(
                    message, status, to_tag=make_tag(), headers=[("Allow", ALLOW)]
                )
                self._respond(tx, response)

    def _malformed(self, malformed: Malformed) -> None:
        """The transport refused a message as malformed (and answered it, if it could)."""
        if self.policy.malformed(malformed):
            self.stats.refused += 1

    def _find_dialog(self, request: Request) -> tuple[Call | None, bool]:
        """The call whose dialog (answered, or early) a request belongs to, and whether the
        caller sent it."""
        call_id = request.call_id or ""
        call = self._dialogs.get((call_id, request.from_tag or ""))
        if call is not None:
            return call, True
        call = self._dialogs.get((call_id, request.to_tag or ""))
        return call, False

    def _unscreened(self, request: Request, flow: Flow) -> Flow | None:
        """A request that belongs to no call in progress, as who sent it (the client behind
        a trusted proxy, ``CallPolicy.origin``), or None when the screen answered it once
        or dropped it. Only these are asked who sent them: a call's own requests and ACKs
        need no identity, and are not counted for one."""
        flow = self.policy.origin(request, flow)
        return None if self._screened(request, flow) else flow

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

    def _on_register(self, request: Request, flow: Flow, now: float) -> None:
        """A REGISTER that passed the screen (it carries credentials): the registrar's
        answer, in a server transaction (a retransmission gets the same answer)."""
        tx = self._server(request, flow, now)
        if tx is None or self.registrar is None:
            return
        try:
            response = self.registrar.register(request, flow, time.time())
        except Exception:  # a registrar bug: the client still gets an answer
            logger.exception("REGISTER failed", extra={"call_id": request.call_id})
            response = Response.for_request(request, 500, to_tag=make_tag())
        self._respond(tx, response)

    def _answer_options(self, request: Request, flow: Flow, now: float) -> None:
        tx = self._server(request, flow, now)
        if tx is None:
            return
        status = 200
        headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
        self._respond(tx, Response.for_request(request, status, to_tag=make_tag(), headers=headers))

    # -- receive: a new INVITE, admitted or refused ----------------------------------------

    def _on_invite(self, request: Request, flow: Flow, now: float) -> None:
        tx = self._server(request, flow, now)  # sends 100 Trying at once
        if tx is None:
            return
        wall = time.time()
        sanity = forward.check_request(request, self.is_ours)
        if sanity is not None:
            status, why = sanity
            end_reason = _SANITY_END_REASONS.get(status, EndReason.INVALID_REQUEST)
            refused = refuse(end_reason, why, status=status)
            self._reject(tx, request, flow, Reply.of(refused), wall)
            return
        try:
            decision = self.policy.admit(request, flow, wall)
        except Exception:  # a policy bug: the caller still gets an answer, and a CDR
            logger.exception("admission failed", extra={"call_id": request.call_id})
            decision = Reply.of(refuse(EndReason.INTERNAL_ERROR, "admission failed; see the log"))
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
        shared = self.shared_admission
        if shared is not None:
            self.driver.spawn(self._admit_shared(call, shared), call.call_id)
            return
        log_call(
            logging.INFO,
            call.call_id,
            "admitted account=%s number=%s",
            decision.account_id,
            decision.number,
        )
        self._hunt(call)

    async def _admit_shared(
        self, call: Call, check: Callable[[Call], Awaitable[Reply | None]]
    ) -> None:
        """The admitted call's check across nodes, then its hunt (or its refusal). A call
        that ended meanwhile (CANCEL, shutdown) was answered and accounted already."""
        try:
            refused = await check(call)
        except Exception:  # a bug: the call's own refusal, with its CDR
            logger.exception("shared admission failed", extra={"call_id": call.call_id})
            refused = Reply.of(
                refuse(EndReason.INTERNAL_ERROR, "shared admission failed; see the log"),
                account_id=call.admission.account_id,
            )
        if call.finished or call.phase is not Phase.HUNTING:
            return
        if refused is not None:
            call.end_detail = refused.detail
            self._fail_call(call, refused)
            return
        log_call(
            logging.INFO,
            call.call_id,
            "admitted account=%s number=%s",
            call.admission.account_id,
            call.admission.number,
        )
        self._hunt(call)

    def _reject(
        self, tx: ServerTransaction, request: Request, flow: Flow, reply: Reply, wall: float
    ) -> None:
        log_call(
            logging.INFO,
            request.call_id,
            "refused %d %s (%s)",
            reply.status,
            reply.reason or "",
            reply.end_reason or "",  # none for a 407 challenge: no attempt ended
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

    # -- what our client transactions report (the driver's callbacks) ----------------------

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

    def _client_gave_up(self, tx: Transaction, status: int, why: str) -> None:
        """A client transaction timed out (408) or its transport failed (503); a server
        transaction's failure (no ACK for a final answer) changes nothing for a call."""
        if not isinstance(tx, ClientTransaction):
            return
        branch = self._branches.get(tx)
        if branch is not None and not branch.dead and branch.call.branch is branch:
            if branch.call.phase is Phase.HUNTING:
                stop_setup_timer(branch)
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
