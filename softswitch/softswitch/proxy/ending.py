"""How a call ends: every path out of a call, for the hunt, the dialog and shutdown alike.

A call ends in one of three ways. Unanswered, it *fails* (:meth:`~CallEnding._fail_call`):
the branch still ringing is cancelled and the caller gets a final response. Answered, it is
hung up by a side's BYE (relayed by ``relay``) or *torn down* by the switch
(:meth:`~CallEnding._teardown`: maximum duration, shutdown), with a BYE of ours to each
side. All of them finish in :meth:`~CallEnding._end_call`, the single place a call's timers
stop, its gateway is released and its CDR is written: exactly once per call.
"""

from __future__ import annotations

import asyncio
import logging
import time

from softswitch.call.refusal import EndReason, refuse
from softswitch.sip import Response, make_tag

from .calls import Branch, Call, Phase
from .core import EngineCore, log_call, logger
from .dialogs import teardown_requests
from .policy import Reply

__all__ = [
    "LINGER",
    "CallEnding",
    "end_reason_for",
    "release",
    "stop_call_timer",
    "stop_setup_timer",
]

#: How long an answered call's dialog entry outlives a BYE, for late retransmissions.
LINGER = 4.0


class CallEnding(EngineCore):
    """Ending calls and releasing their branches (see the module docstring)."""

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
            call.end_reason = end_reason_for(status or response.status)
        call.final_status = status or response.status
        self._respond(call.server_tx, response)
        self.stats.failed += 1
        log_call(logging.INFO, call.call_id, "failed %d (%s)", call.final_status, call.end_reason)
        self._end_call(call, hangup_side=None)

    def _max_duration(self, call: Call) -> None:
        """The answered call's maximum duration (from its admission) is up."""
        call.duration_timer = None
        if call.phase is Phase.ANSWERED:
            log_call(logging.INFO, call.call_id, "maximum duration reached: BYE to both sides")
            self._teardown(call, EndReason.MAX_DURATION, "switch")

    def hang_up(self, call: Call, end_reason: EndReason) -> bool:
        """The switch ends a call for a reason of its own (credit exhausted, an operator):
        BYE to both sides of an answered call, the reason's final response to a ringing one.
        False when the call has already ended."""
        if call.finished:
            return False
        if call.phase is Phase.ANSWERED:
            log_call(logging.INFO, call.call_id, "%s: BYE to both sides", end_reason)
            self._teardown(call, end_reason, "switch")
        else:
            refusal = refuse(end_reason)
            if refusal.status < 300:
                # A reason of answered calls (operator_hangup): a ringing call's caller must
                # get a failure, never a 200 without a dialog. 480: try again later.
                refusal = refuse(end_reason, status=480)
            self._fail_call(call, Reply.of(refusal))
        return True

    def _teardown(self, call: Call, end_reason: EndReason, side: str) -> None:
        """The switch hangs up an answered call: a BYE to each side, then the CDR."""
        reason = refuse(end_reason).reason_header()
        for bye, flow in teardown_requests(call, reason, self._our_via, self.user_agent):
            self._send_ours(bye, flow)
        call.end_reason = end_reason
        self._end_call(call, hangup_side=side)

    def _end_call(self, call: Call, *, hangup_side: str | None) -> None:
        """The single place a call ends: timers stopped, counters released, CDR written."""
        if call.finished:
            return
        call.finished = True
        call.phase = Phase.ENDED
        call.end_at = time.time()
        if hangup_side is not None and call.hangup_side is None:
            call.hangup_side = hangup_side
        for handle in (call.duration_timer, call.budget_timer, call.ack_timer):
            if handle is not None:
                handle.cancel()
        call.duration_timer = call.budget_timer = call.ack_timer = None
        if call.media is not None and self.media is not None:
            self.media.unwatch(call)
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
            release(call)

    def _forget_dialog(self, call: Call) -> None:
        if self._dialogs.get(call.key) is call:
            del self._dialogs[call.key]
        release(call)

    # -- a branch's end, as part of its call's or on its own -------------------------------

    def _cancel_branch(self, branch: Branch) -> None:
        """CANCEL the branch (sent now, or when its first 1xx arrives: the layer waits)."""
        tx = branch.transaction
        if tx is not None:
            self._process(self.transactions.cancel(tx, self._now()))

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
        stop_setup_timer(branch)
        if branch.media_leg is not None and not branch.media_pending:
            self._delete_leg(branch.call, branch)
        self.policy.release_target(branch.call, branch.target)

    def _delete_leg(self, call: Call, branch: Branch) -> None:
        """Free the attempt's session on the call's relay (failover, hang-up, every end)."""
        leg, session = branch.media_leg, call.media
        branch.media_leg = None
        if leg is not None and session is not None and self.media is not None:
            self.media.delete(session.relay, leg, call.call_id, from_tag=call.caller_tag)


def stop_setup_timer(branch: Branch) -> None:
    """Stop the branch's setup timer (or, once it rings, its no-answer timer)."""
    if branch.setup_timer is not None:
        branch.setup_timer.cancel()
        branch.setup_timer = None


def stop_call_timer(call: Call, name: str) -> None:
    """Stop one of the call's own timers by its attribute name, if it runs."""
    handle = getattr(call, name)
    if handle is not None:
        handle.cancel()
        setattr(call, name, None)


def end_reason_for(status: int) -> EndReason:
    """The end reason of a call that ended on a gateway's final answer (no fail-over)."""
    if status in (486, 600):
        return EndReason.BUSY
    if status in (408, 480):
        return EndReason.NO_ANSWER
    if status == 487:
        return EndReason.CALLER_CANCELLED
    if status == 603:
        return EndReason.DECLINED
    return EndReason.GATEWAY_REJECTED


def release(call: Call) -> None:
    """Cut a finished call's one reference cycle (``call.branch.call is call``) once the
    engine will not look the call up again.

    Reference counting then frees a call, its transactions and messages the moment the
    engine lets go, instead of leaving them to the cyclic garbage collector: at 800 calls a
    second that was millions of objects, collected in pauses of several seconds that SIPp
    saw as lost packets.
    """
    call.branch = None
