"""In-dialog relay: what one side of a call sends the other, passed along the dialog's path.

Once a call is answered the switch stays on its path (it record-routes), so every request
of the dialog comes through here: the ACK for the 2xx (no transaction of its own), BYE from
either side (which ends the call and writes its CDR), re-INVITE, UPDATE, INFO and the rest,
each relayed in a client transaction of ours with its answer relayed back; and a gateway's
2xx retransmitted after its transaction ended. The caller's CANCEL of a call not yet
answered ends the hunt here too. The switch's own BYEs are in ``ending`` (teardown).
"""

from __future__ import annotations

import logging

from softswitch.call.refusal import EndReason, refuse
from softswitch.sip import Request, Response
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow

from . import forward
from .calls import Call, Phase
from .core import Relay, log_call
from .ending import stop_call_timer
from .media import MediaSteps, relayed_through
from .policy import Reply

__all__ = ["InDialogRelay"]


class InDialogRelay(MediaSteps):
    """Relays the dialog's requests and answers between caller and gateway."""

    def _relay_ack(self, ack: Request, call: Call | None, from_caller: bool) -> None:
        """The ACK for a 2xx is its own transaction-less request: relay it along the dialog."""
        if call is None or call.callee_flow is None or not _current_dialog(call, ack, from_caller):
            return
        if from_caller and call.ack_timer is not None:
            stop_call_timer(call, "ack_timer")
        dest = call.callee_flow if from_caller else call.caller_flow

        def send() -> None:
            via = self._our_via(dest)
            out = forward.prepare_in_dialog(ack, via=via, is_ours=self.is_ours)
            self.transport.send(dest, out)

        self._media_step(call, ack, send)

    def _in_dialog(
        self, request: Request, flow: Flow, now: float, call: Call | None, from_caller: bool
    ) -> None:
        """BYE, re-INVITE, UPDATE, INFO ... from either side, relayed to the other side."""
        tx = self._server(request, flow, now)
        if tx is None:
            return
        if (
            call is None
            or call.callee_flow is None
            or not _current_dialog(call, request, from_caller)
        ):
            self._respond(tx, Response.for_request(request, 481))
            return
        sanity = forward.check_request(request, self.is_ours)
        if sanity is not None:
            self._respond(tx, Response.for_request(request, sanity[0], sanity[1]))
            return
        cseq = request.cseq
        if cseq is not None:
            if from_caller:
                call.caller_cseq = max(call.caller_cseq, cseq.seq)
            else:
                call.callee_cseq = max(call.callee_cseq, cseq.seq)
        if call.media is None:
            self._relay_request(request, tx, call, from_caller)
            return

        def failed(status: int) -> None:
            self._respond(tx, Response.for_request(request, status))

        self._media_step(
            call,
            request,
            lambda: self._relay_request(request, tx, call, from_caller),
            failed=failed,
        )

    def _relay_request(
        self, request: Request, tx: ServerTransaction, call: Call, from_caller: bool
    ) -> None:
        """The in-dialog request leaves for the other side (BYE ends the call here)."""
        now = self._now()
        dest = call.callee_flow if from_caller else call.caller_flow
        if dest is None:  # the early dialog ended while the relay had the request
            self._respond(tx, Response.for_request(request, 481))
            return
        relay = Relay(call, tx, from_caller)
        out = forward.prepare_in_dialog(request, via=self._our_via(dest), is_ours=self.is_ours)
        if request.method == "BYE" and call.phase is Phase.ANSWERED:
            side = "caller" if from_caller else "callee"
            log_call(logging.INFO, call.call_id, "BYE from %s", side)
            call.end_reason = EndReason.NORMAL_CLEARING
            self._end_call(call, hangup_side=side)
        try:
            client, outputs = self.driver.open_client(out, dest, now)
        except Exception as exc:
            log_call(logging.INFO, call.call_id, "cannot relay %s: %s", request.method, exc)
            self._respond(tx, Response.for_request(request, 500))
            return
        relay.client = client
        self._relays_out[client] = relay
        self._process(outputs)
        if request.method == "BYE" and from_caller and call.phase is Phase.HUNTING:
            # A caller hanging up in an early dialog gives up on the call, as a CANCEL does:
            # no further gateway is rung for a caller who has gone.
            log_call(logging.INFO, call.call_id, "BYE from the caller in an early dialog")
            call.hangup_side = "caller"
            self._fail_call(call, Reply.of(refuse(EndReason.CALLER_CANCELLED)))

    def _on_relay_response(self, relay: Relay, response: Response) -> None:
        if response.status == 100:
            return

        def failed(status: int) -> None:
            self._respond(relay.server, Response.for_request(relay.server.request, status))

        self._media_step(
            relay.call,
            response,
            lambda: self._respond(relay.server, forward.relay_response(response)),
            failed=failed,
        )

    def _stray_response(self, response: Response) -> None:
        """A 2xx retransmission after its transaction ended: forward it statelessly (16.7)."""
        cseq = response.cseq
        if cseq is None or cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        call = self._dialogs.get((response.call_id or "", response.from_tag or ""))
        # Only the answered dialog's own 2xx: a gateway given up on (its 2xx crossed our
        # CANCEL) or a downstream fork's second 2xx must not reach the caller.
        if call is None or call.phase is not Phase.ANSWERED or response.to_tag != call.callee_tag:
            return
        vias = response.via
        if len(vias) < 2 or not self.is_ours(vias[0].host.strip("[]"), vias[0].port or 5060):
            return
        out = forward.relay_response(response)
        if relayed_through(call) is not None and out.body:
            # The relay's SDP, as the first copy had it; none yet (the first copy is still
            # with the relay): this copy is dropped, the gateway sends another.
            body = call.media.answer_bodies.get(cseq.seq) if call.media is not None else None
            if body is None:
                return
            out.body = body
        self.transport.send_response(out, call.caller_flow)

    def _on_cancel(
        self, cancel: Request, flow: Flow, now: float, invite_tx: ServerTransaction | None
    ) -> None:
        """The caller gives up on its INVITE (``invite_tx``): 200 for the CANCEL, and a call
        still hunting fails ``caller_cancelled`` (its branch cancelled, 487 to the caller)."""
        tx = self._server(cancel, flow, now)
        if tx is None:
            return
        call = self._server_calls.get(invite_tx) if invite_tx is not None else None
        if call is None or call.phase is not Phase.HUNTING:
            self._respond(tx, Response.for_request(cancel, 481 if call is None else 200))
            return
        self._respond(tx, Response.for_request(cancel, 200))
        log_call(logging.INFO, call.call_id, "caller cancelled")
        call.hangup_side = "caller"
        self._fail_call(call, Reply.of(refuse(EndReason.CALLER_CANCELLED)))


def _current_dialog(call: Call, request: Request, from_caller: bool) -> bool:
    """Whether ``request`` is in the call's current dialog, by the callee's tag: while hunting
    the early dialog of the branch ringing now (a PRACK for an earlier gateway's 183 after a
    fail-over is answered 481 here, not sent to the wrong gateway), once answered the dialog
    of the 2xx (not a downstream fork's other 2xx)."""
    if call.phase is Phase.HUNTING:
        branch = call.branch
        if branch is None or branch.dead:
            return False
    elif call.phase is not Phase.ANSWERED:
        return False
    return call.callee_tag == (request.to_tag if from_caller else request.from_tag)
