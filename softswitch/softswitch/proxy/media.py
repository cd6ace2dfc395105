"""Media: each SDP-carrying message of a call through its policy, on its way to the far side.

Direct media is the default and costs nothing: the branch's ``MediaPolicy`` is ``DIRECT``
and the engine passes SDP through byte for byte. With a codec policy the caller's offer is
edited here (``media.sdp.apply_codec_policy``). With ``relay`` every SDP the call carries,
both ways (INVITE, 18x, 2xx, ACK, re-INVITE, UPDATE, PRACK and their answers), goes through
the call's media relay first (``media.control``), so each side sees only the relay.

Whether a message goes through the relay is decided per gateway attempt: the attempt's
session on the relay (``Branch.media_leg``; once answered ``MediaSession.leg``). A call that
fails over from a relayed gateway to a direct one is direct from then on.

A relay answers over the network, so a relayed call's messages wait for it: each is queued
on the call's ``MediaSession`` and handled, in the order it arrived, once the SDP before it
has come back (``_media_step``). A call with nothing in flight handles a message without
SDP at once. A message keeps the attempt it arrived for: if that attempt is gone when its
turn comes (a failover, the call's end), its SDP is never passed on as it came.

Which NG command an SDP needs follows RFC 3264's offer/answer (``_through_relay``): INVITE
and UPDATE carry offers; ACK and PRACK carry the answer to an outstanding offer from the
other side; a response answers its request's offer (same CSeq), or else makes one (the
request had none). A retransmitted 2xx or ACK gets the relayed SDP of its first copy.

When the relay fails a call: while it hunts, the caller gets 503 ``media_unavailable``;
once answered, both sides get a BYE. A relay refusing a re-offer (an SDP it cannot read)
only refuses that request, 488. Deletes are in ``ending`` (``_end_branch``): every way an
attempt ends frees its ports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from softswitch.call.refusal import EndReason, refuse
from softswitch.media.control import MediaUnavailableError, OfferRefusedError
from softswitch.media.leg import NgLeg
from softswitch.media.policy import DIRECT, MediaPolicy
from softswitch.media.sdp import SdpError, apply_codec_policy
from softswitch.sip import Request, Response
from softswitch.transport import Flow

from .calls import Branch, Call, MediaSession, Phase
from .core import log_call, logger
from .ending import CallEnding
from .policy import Reply

__all__ = ["MediaSteps", "has_sdp", "relayed_through"]

_SDP = "application/sdp"

#: What to answer the sender of a request the relay could not take (its status), or do for
#: a response (the status is ignored).
Failed = Callable[[int], None]


def has_sdp(message: Request | Response) -> bool:
    """Whether the message carries an SDP body (a multipart body is looked at apart:
    ``has_multipart_sdp``)."""
    return bool(message.body) and message.media_type == _SDP


def has_multipart_sdp(message: Request | Response) -> bool:
    """A multipart body (SIP-I/SIP-T: SDP beside ISUP) that mentions SDP. The relay is not
    given parts of bodies, so a relayed leg refuses such a message rather than pass the
    SDP inside it on as it came."""
    media_type = message.media_type
    return (
        bool(message.body)
        and media_type is not None
        and media_type.startswith("multipart/")
        and b"application/sdp" in message.body.lower()
    )


def relayed_through(call: Call) -> str | None:
    """The relay the call's media goes through now (its current or answered attempt's),
    None when it is direct."""
    session = call.media
    if session is None or _leg_of(call) is None:
        return None
    return session.relay.id


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
        if has_multipart_sdp(request):
            self._media_failed(call, "a multipart body with SDP cannot be relayed")
            return False
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
        policy = branch.target.media
        try:
            try:
                sdp = await media.offer(
                    session.relay,
                    leg,
                    request.body,
                    from_tag=call.caller_tag or "",
                    to_tag=None,
                    codecs=policy.codecs,
                    transcode=policy.transcode,
                )
            except MediaUnavailableError as exc:
                if session.offered:
                    raise  # the call is on this relay for good
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
                    codecs=policy.codecs,
                    transcode=policy.transcode,
                )
        except MediaUnavailableError as exc:
            branch.media_pending = False
            branch.media_leg = None  # nothing to delete: the relay has no session for it
            if not branch.dead and call.phase is Phase.HUNTING:
                self._media_failed(call, str(exc))
            return
        branch.media_pending = False
        session.offered = True
        cseq = request.cseq
        session.offer_from = call.caller_tag or ""
        session.offer_cseq = (cseq.seq, cseq.method) if cseq is not None else None
        session.offer_answered = False
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
        failed: Failed | None = None,
    ) -> None:
        """Run ``then`` once ``message``'s SDP went through the call's relay (in place),
        after every message of the call that arrived before it.

        ``current``: whether a branch's response still belongs to the hunt when its turn
        comes (else ``then`` handles it as a late one, without the relay). ``failed``: what
        to answer the request's sender (or do with a response) when its SDP cannot go on.
        """
        session = call.media
        leg = _leg_of(call)  # the attempt the message arrived for
        if session is None or (not session.busy and (leg is None or not _carries_sdp(message))):
            if session is not None and leg is not None:
                _settle(session, message)
            then()
            return

        async def step() -> None:
            if current is not None and not current():
                then()
                return
            if leg is None:  # a direct attempt's message, queued behind a relayed one's
                then()
                return
            if not _carries_sdp(message):
                _settle(session, message)
                then()
                return
            if call.finished or _leg_of(call) is not leg:
                # Its attempt (or the call) is gone: its SDP must not reach the other side
                # as it came, and no relay session is left to rewrite it.
                self._stale(message, failed, then)
                return
            try:
                await self._through_relay(call, session, leg, message)
            except MediaUnavailableError as exc:
                if call.finished or _leg_of(call) is not leg:
                    self._stale(message, failed, then)
                    return
                refused = isinstance(exc, OfferRefusedError)
                if isinstance(message, Request) and refused and call.phase is Phase.ANSWERED:
                    # A re-offer the relay cannot take: that request fails, the call goes on.
                    log_call(logging.INFO, call.call_id, "media: %s", exc)
                    if failed is not None:
                        failed(488)
                    return
                if failed is not None:
                    failed(503)
                self._media_failed(call, str(exc))
                return
            then()

        session.queue.append(step)
        if not session.busy:
            session.busy = True
            self.driver.spawn(self._drain_media(session, call.call_id), call.call_id)

    def _stale(
        self, message: Request | Response, failed: Failed | None, then: Callable[[], None]
    ) -> None:
        """A message whose attempt ended while it waited: a request is refused (481: its
        dialog is gone), a response goes on without its SDP."""
        if isinstance(message, Request):
            if message.method == "ACK":
                message.body = b""
                then()
            elif failed is not None:
                failed(481)
            return
        message.body = b""
        then()

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
        self, call: Call, session: MediaSession, leg: NgLeg, message: Request | Response
    ) -> None:
        """Offer or answer the message's SDP (RFC 3264) and put the relay's in its place."""
        media = self.media
        if media is None:
            raise MediaUnavailableError("no media relays")
        if has_multipart_sdp(message):
            raise OfferRefusedError("a multipart body with SDP cannot be relayed")
        policy = _leg_policy(call)
        caller = call.caller_tag or ""
        cseq = message.cseq
        key = (cseq.seq, cseq.method) if cseq is not None else None
        if isinstance(message, Response):
            requester, responder = message.from_tag or "", message.to_tag or ""
            if session.offer_from == requester and session.offer_cseq == key:
                sdp = await media.answer(
                    session.relay, leg, message.body, from_tag=requester, to_tag=responder
                )
                session.offer_answered = True
            else:  # the request had no SDP: the response offers
                sdp = await self._offer(call, session, leg, message, responder, requester)
                session.offer_answered = False
                session.offer_from, session.offer_cseq = responder, key
            if 200 <= message.status < 300 and key is not None and key[1] == "INVITE":
                session.answer_bodies[key[0]] = sdp
            message.body = sdp
            return
        sender, other = message.from_tag or "", message.to_tag or ""
        outstanding = session.offer_from is not None and session.offer_from != sender
        if message.method in ("ACK", "PRACK") and outstanding:
            if message.method == "ACK" and session.offer_answered:
                message.body = session.ack_body or b""  # a retransmitted ACK
                return
            sdp = await media.answer(
                session.relay,
                leg,
                message.body,
                from_tag=session.offer_from or "",
                to_tag=sender,
            )
            session.offer_answered = True
            if message.method == "ACK":
                session.ack_body = sdp
        elif message.method == "ACK":
            message.body = session.ack_body or b""  # an answer to nothing: never as it came
            return
        else:  # INVITE, UPDATE (and a PRACK with a new offer): an offer
            if sender == caller and policy.codecs and not policy.transcode:
                try:
                    allowed = apply_codec_policy(message.body, policy.codecs) is not None
                except SdpError:
                    allowed = False
                if not allowed:
                    raise OfferRefusedError("no codec of the re-offer is allowed")
            sdp = await self._offer(call, session, leg, message, sender, other)
            session.offer_from, session.offer_cseq = sender, key
            session.offer_answered = False
        message.body = sdp

    async def _offer(
        self,
        call: Call,
        session: MediaSession,
        leg: NgLeg,
        message: Request | Response,
        offerer: str,
        other: str,
    ) -> bytes:
        """An offer through the relay; the codec policy applies to offers towards the
        gateway only (the caller's), never to what the gateway offers the caller."""
        control = self.media
        if control is None:
            raise MediaUnavailableError("no media relays")
        policy = _leg_policy(call)
        towards_gateway = offerer == (call.caller_tag or "")
        return await control.offer(
            session.relay,
            leg,
            message.body,
            from_tag=offerer,
            to_tag=other or None,
            codecs=policy.codecs if towards_gateway else (),
            transcode=policy.transcode and towards_gateway,
        )

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


def _carries_sdp(message: Request | Response) -> bool:
    return has_sdp(message) or has_multipart_sdp(message)


def _settle(session: MediaSession, message: Request | Response) -> None:
    """A failure response to the request that made the outstanding offer rejects that offer
    (RFC 3264 section 8: a 488 or 491 to a re-INVITE leaves the session as it was)."""
    if not isinstance(message, Response) or message.status < 300:
        return
    cseq = message.cseq
    key = (cseq.seq, cseq.method) if cseq is not None else None
    if session.offer_from == message.from_tag and session.offer_cseq == key:
        session.offer_from = session.offer_cseq = None
        session.offer_answered = False


def _leg_policy(call: Call) -> MediaPolicy:
    """The media policy of the call's current (or answered) attempt."""
    branch = call.branch
    return branch.target.media if branch is not None else DIRECT


def _leg_of(call: Call) -> NgLeg | None:
    """The relay session of the call's attempt: the answered one's, else the one ringing
    now (None: that attempt is direct, or none rings)."""
    session = call.media
    if session is None:
        return None
    if call.phase is Phase.ANSWERED:
        return session.leg
    branch = call.branch
    return branch.media_leg if branch is not None and not branch.dead else None
