"""Media: each SDP-carrying message of a call through its policy, on its way to the far side.

Direct media is the default and costs nothing: the branch's ``MediaPolicy`` is ``DIRECT``
and the engine passes SDP through byte for byte. With a codec policy the caller's offer is
edited here (``media.sdp.apply_codec_policy``). With ``relay`` every SDP the call carries,
both ways (INVITE, 18x, 2xx, ACK, re-INVITE, UPDATE, PRACK and their answers), goes through
the call's media relay first (``media.control``), so each side sees only the relay.

A relay answers over the network, so a relayed call's messages wait for it: each is queued
on the call's ``MediaSession`` and handled, in the order it arrived, once the SDP before it
has come back (``_media_step``). A call with nothing in flight handles a message without
SDP at once. Which NG command a message needs follows RFC 3264's offer/answer: an SDP is
an answer when the other side's offer is outstanding (``MediaSession.offer_from``), else a
new offer; a response answers the offer of its request.

When the relay fails a call: while it hunts, the caller gets 503 ``media_unavailable``;
once answered, both sides get a BYE. Deletes are in ``ending`` (``_end_branch``): every way
an attempt ends frees its ports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from softswitch.call.refusal import EndReason, refuse
from softswitch.media.control import MediaUnavailableError
from softswitch.media.leg import NgLeg
from softswitch.media.policy import DIRECT, MediaPolicy
from softswitch.media.sdp import SdpError, apply_codec_policy
from softswitch.sip import Request, Response
from softswitch.transport import Flow

from .calls import Branch, Call, MediaSession, Phase
from .core import log_call, logger
from .ending import CallEnding
from .policy import Reply

__all__ = ["MediaSteps", "has_sdp"]

_SDP = "application/sdp"


def has_sdp(message: Request | Response) -> bool:
    """Whether the message carries an SDP body (a multipart body is not looked into)."""
    return bool(message.body) and message.media_type == _SDP


class MediaSteps(CallEnding):
    """The media step of the branch's INVITE and of every later message of the call."""

    # -- the branch's INVITE: the offer ----------------------------------------------------

    def _branch_media(self, branch: Branch, flow: Flow, request: Request) -> bool:
        """Apply the branch's media policy to its INVITE. True: send it now (its SDP
        edited for a codec policy, or no SDP to relay). False: the relay has it (the INVITE
        leaves when the relay answers), or the call failed."""
        policy = branch.target.media
        if policy is DIRECT:
            return True
        call = branch.call
        if not policy.relay:
            if policy.codecs and has_sdp(request):
                try:
                    edited = apply_codec_policy(request.body, policy.codecs)
                except SdpError:
                    edited = None
                if edited is not None:  # None: checked before the branch was chosen
                    request.body = edited
            return True
        session = call.media
        if session is None:
            relay = self.media.pick() if self.media is not None else None
            if relay is None:
                self._media_failed(call, "no media relay answers")
                return False
            session = call.media = MediaSession(relay)
        # The attempt is already in the list: the first gateway's session is "-0".
        branch.media_leg = NgLeg.for_attempt(call.call_id, len(call.attempts) - 1)
        if not has_sdp(request):
            return True  # a late offer: the gateway's answer carries the offer
        branch.media_pending = True
        self.driver.spawn(self._offer_branch(branch, flow, request), call.call_id)
        return False

    async def _offer_branch(self, branch: Branch, flow: Flow, request: Request) -> None:
        call, session, leg, media = branch.call, branch.call.media, branch.media_leg, self.media
        if session is None or leg is None or media is None:  # not a relayed branch: a bug
            raise RuntimeError(f"no media session for the branch of {call.call_id}")
        try:
            try:
                sdp = await media.offer(
                    session.relay,
                    leg,
                    request.body,
                    from_tag=call.caller_tag or "",
                    to_tag=None,
                    codecs=branch.target.media.codecs,
                    transcode=branch.target.media.transcode,
                )
            except MediaUnavailableError as exc:
                if call.attempts[0] is not branch.attempt:
                    raise
                # The call's first offer: another relay may still take the call (one that
                # answers, or has ports left).
                relay = media.pick(exclude=[session.relay.id])
                if relay is None:
                    raise
                log_call(logging.WARNING, call.call_id, "%s; trying relay %s", exc, relay.id)
                session.relay = relay
                sdp = await media.offer(
                    relay,
                    leg,
                    request.body,
                    from_tag=call.caller_tag or "",
                    to_tag=None,
                    codecs=branch.target.media.codecs,
                    transcode=branch.target.media.transcode,
                )
        except MediaUnavailableError as exc:
            branch.media_pending = False
            branch.media_leg = None  # nothing to delete: the relay has no session for it
            if not branch.dead and call.phase is Phase.HUNTING:
                self._media_failed(call, str(exc))
            return
        branch.media_pending = False
        session.offer_from = call.caller_tag or ""
        if branch.dead or call.phase is not Phase.HUNTING:
            self._delete_leg(call, branch)  # the caller gave up while the relay answered
            return
        request.body = sdp
        self._open_branch(branch, flow, request)

    def _open_branch(self, branch: Branch, flow: Flow, request: Request) -> None:
        raise NotImplementedError  # hunting's

    # -- every later message: through the relay in arrival order -------------------------

    def _media_step(
        self,
        call: Call,
        message: Request | Response,
        then: Callable[[], None],
        *,
        current: Callable[[], bool] | None = None,
        failed: Callable[[], None] | None = None,
    ) -> None:
        """Run ``then`` once ``message``'s SDP went through the call's relay (in place),
        after every message of the call that arrived before it. ``current``: whether the
        message still belongs to the call's media when its turn comes (a response of a
        branch given up on goes on without the relay, to be hung up); ``failed``: what to
        answer its sender when the relay fails."""
        session = call.media
        if session is None:
            then()
            return
        if not session.busy and not has_sdp(message):
            _settle(session, message)
            then()
            return

        async def step() -> None:
            relevant = current is None or current()
            if relevant and has_sdp(message) and not call.finished:
                try:
                    await self._through_relay(call, session, message)
                except MediaUnavailableError as exc:
                    if failed is not None:
                        failed()
                    self._media_failed(call, str(exc))
                    return
            else:
                _settle(session, message)
            then()

        session.queue.append(step)
        if not session.busy:
            session.busy = True
            self.driver.spawn(self._drain_media(session, call.call_id), call.call_id)

    async def _drain_media(self, session: MediaSession, call_id: str) -> None:
        try:
            while session.queue:
                try:
                    await session.queue.popleft()()
                except Exception:  # a bug in one message's step: the next ones still go
                    logger.exception("media step failed", extra={"call_id": call_id})
        finally:
            session.busy = False
            session.queue.clear()

    async def _through_relay(
        self, call: Call, session: MediaSession, message: Request | Response
    ) -> None:
        """Offer or answer the message's SDP (RFC 3264) and put the relay's in its place."""
        leg = session.leg if call.phase is Phase.ANSWERED else _current_leg(call)
        media, policy = self.media, _leg_policy(call)
        if leg is None or media is None:
            raise MediaUnavailableError("no media session for this dialog")
        if isinstance(message, Response):
            offerer, answerer = message.from_tag or "", message.to_tag or ""
            if session.offer_from == offerer:
                sdp = await media.answer(
                    session.relay, leg, message.body, from_tag=offerer, to_tag=answerer
                )
                if message.status >= 200:
                    session.offer_from = None
            else:  # the request had no SDP: the response offers
                sdp = await media.offer(
                    session.relay,
                    leg,
                    message.body,
                    from_tag=answerer,
                    to_tag=offerer,
                    codecs=policy.codecs,
                    transcode=policy.transcode,
                )
                session.offer_from = answerer
        else:
            sender, other = message.from_tag or "", message.to_tag or ""
            if session.offer_from is not None and session.offer_from != sender:
                sdp = await media.answer(
                    session.relay, leg, message.body, from_tag=other, to_tag=sender
                )
                session.offer_from = None
            else:
                sdp = await media.offer(
                    session.relay,
                    leg,
                    message.body,
                    from_tag=sender,
                    to_tag=other,
                    codecs=policy.codecs,
                    transcode=policy.transcode,
                )
                session.offer_from = sender
        message.body = sdp

    def _media_failed(self, call: Call, why: str) -> None:
        """The relay failed the call (did not answer, or answered an error: out of ports,
        an SDP it cannot read): 503 while it hunts, BYE to both sides once answered; the
        relay's reason is in the log and the CDR's detail."""
        log_call(logging.WARNING, call.call_id, "media: %s", why)
        if call.finished:
            return
        call.end_detail = f"media: {why}"
        if call.phase is Phase.ANSWERED:
            self._teardown(call, EndReason.MEDIA_UNAVAILABLE, "switch")
            return
        branch = call.branch
        if branch is not None and not branch.dead:
            self._cancel_branch(branch)  # nothing to cancel when its INVITE never left
            branch.attempt.outcome = "media_unavailable"
            self._finish_branch(branch, None)
        self._fail_call(call, Reply.of(refuse(EndReason.MEDIA_UNAVAILABLE, why)))

    def _media_answered(self, call: Call, branch: Branch, response: Response) -> None:
        """The answered attempt's session becomes the call's; its media is watched."""
        session = call.media
        if session is None or self.media is None:
            return
        session.leg = branch.media_leg
        session.answer_body = response.body if has_sdp(response) else None
        if session.leg is not None and branch.target.media.timeout > 0:
            self.media.watch(
                call,
                session.relay,
                session.leg,
                branch.target.media.timeout,
                lambda: self._media_dead(call),
            )

    def _media_dead(self, call: Call) -> None:
        if not call.finished and call.phase is Phase.ANSWERED:
            log_call(logging.INFO, call.call_id, "no RTP either way: media timeout")
            self.hang_up(call, EndReason.MEDIA_TIMEOUT)


def _settle(session: MediaSession, message: Request | Response) -> None:
    """A failure response to the request that made the outstanding offer rejects that offer
    (RFC 3264 section 8: a 488 or 491 to a re-INVITE leaves the session as it was)."""
    if (
        isinstance(message, Response)
        and message.status >= 300
        and session.offer_from is not None
        and session.offer_from == message.from_tag
    ):
        session.offer_from = None


def _leg_policy(call: Call) -> MediaPolicy:
    """The media policy of the call's current (or answered) attempt."""
    branch = call.branch
    return branch.target.media if branch is not None else DIRECT


def _current_leg(call: Call) -> NgLeg | None:
    branch = call.branch
    return branch.media_leg if branch is not None and not branch.dead else None
