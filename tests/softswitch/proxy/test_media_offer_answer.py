"""Which NG command each SDP of a relayed call becomes (RFC 3264 offer/answer), message by
message, with a recording stand-in for the relay: the flows where a rule keyed on tags
alone goes wrong (reliable 18x, late offers, retransmitted ACKs, unrelated failures, glare).

The engine's ``_through_relay`` is driven directly: the SIP machinery around it is the
end-to-end tests' (``tests/e2e/test_media.py``)."""

from __future__ import annotations

import asyncio
import types
from dataclasses import dataclass, field
from typing import Any

from softswitch.media.leg import NgLeg
from softswitch.media.policy import MediaPolicy
from softswitch.proxy.calls import MediaSession
from softswitch.proxy.media import MediaSteps, _settle
from softswitch.sip import Request, Response

CALLER, CALLEE = "ct", "gt"
SDP = b"v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
SDP += b"m=audio 4000 RTP/AVP 0 8\r\n"


@dataclass
class Relay:
    """Records the NG commands: (command, from-tag, to-tag, codecs)."""

    id: str = "rtp1"
    sent: list[tuple[str, str, str | None, tuple[str, ...]]] = field(default_factory=list)

    async def offer(
        self,
        relay: Any,
        leg: Any,
        sdp: bytes,
        *,
        from_tag: str,
        to_tag: str | None,
        codecs: tuple[str, ...] = (),
        transcode: bool = False,
    ) -> bytes:
        self.sent.append(("offer", from_tag, to_tag, tuple(codecs)))
        return b"relayed offer"

    async def answer(
        self, relay: Any, leg: Any, sdp: bytes, *, from_tag: str, to_tag: str
    ) -> bytes:
        self.sent.append(("answer", from_tag, to_tag, ()))
        return b"relayed answer"


class Flow:
    """One relayed call's messages through ``_through_relay`` (and ``_settle``)."""

    def __init__(self, codecs: tuple[str, ...] = ()) -> None:
        self.relay = Relay()
        target = types.SimpleNamespace(media=MediaPolicy(relay=True, codecs=codecs))
        self.call = types.SimpleNamespace(
            caller_tag=CALLER, branch=types.SimpleNamespace(target=target)
        )
        self.session = MediaSession(relay=self.relay)  # type: ignore[arg-type]
        self.engine = types.SimpleNamespace(media=self.relay)
        self.engine._offer = types.MethodType(MediaSteps._offer, self.engine)

    def through(self, message: Request | Response) -> bytes:
        step = MediaSteps._through_relay(
            self.engine,  # type: ignore[arg-type]
            self.call,  # type: ignore[arg-type]
            self.session,
            NgLeg("c-0"),
            message,
        )
        asyncio.run(step)
        return message.body

    def sent(self) -> list[tuple[str, str, str | None, tuple[str, ...]]]:
        out, self.relay.sent = self.relay.sent, []
        return out


def request(method: str, cseq: int, *, by: str, body: bytes = SDP, to: bool = True) -> Request:
    other = CALLEE if by == CALLER else CALLER
    headers = [
        ("From", f"<sip:a@x>;tag={by}"),
        ("To", f"<sip:b@y>;tag={other}" if to else "<sip:b@y>"),
        ("Call-ID", "c"),
        ("CSeq", f"{cseq} {method}"),
    ]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return Request(method, "sip:b@y", headers, body)


def response(status: int, to: Request, *, body: bytes = SDP, rseq: bool = False) -> Response:
    requester = to.from_tag
    responder = CALLEE if requester == CALLER else CALLER
    headers = [
        ("From", f"<sip:a@x>;tag={requester}"),
        ("To", f"<sip:b@y>;tag={responder}"),
        ("Call-ID", "c"),
        ("CSeq", to.headers.get("CSeq") or ""),
    ]
    if rseq:
        headers.append(("RSeq", "1"))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return Response(status, None, headers, body)


def initial_offer(flow: Flow, invite: Request) -> None:
    """What ``_offer_branch`` records after the branch's INVITE went through the relay."""
    flow.session.offer_from, flow.session.offer_cseq = CALLER, (1, "INVITE")


def test_early_offer_answered_reliably_then_a_gateway_reinvite_is_an_offer() -> None:
    flow = Flow(codecs=("PCMA",))
    invite = request("INVITE", 1, by=CALLER, to=False)
    initial_offer(flow, invite)
    flow.through(response(183, invite, rseq=True))  # the answer, reliably
    flow.through(response(200, invite))  # the same answer again in the 200
    assert flow.sent() == [("answer", CALLER, CALLEE, ()), ("answer", CALLER, CALLEE, ())]
    refresh = request("INVITE", 1, by=CALLEE)  # the gateway's session refresh / hold
    flow.through(refresh)
    flow.through(response(200, refresh))
    # An offer from the gateway (without the policy's codec flags: those are for offers
    # towards the gateway), and the caller's 200 its answer.
    assert flow.sent() == [("offer", CALLEE, CALLER, ()), ("answer", CALLEE, CALLER, ())]
    reinvite = request("INVITE", 2, by=CALLER)
    flow.through(reinvite)
    assert flow.sent() == [("offer", CALLER, CALLEE, ("PCMA",))]


def test_late_offer_with_100rel_and_the_sdp_repeated_in_the_200() -> None:
    flow = Flow()
    invite = request("INVITE", 1, by=CALLER, to=False, body=b"")
    flow.through(response(183, invite, rseq=True))  # the gateway's offer
    prack = request("PRACK", 2, by=CALLER)
    flow.through(prack)  # the caller's answer
    flow.through(response(200, invite))  # the offer repeated
    assert flow.sent() == [
        ("offer", CALLEE, CALLER, ()),
        ("answer", CALLEE, CALLER, ()),
        ("offer", CALLEE, CALLER, ()),
    ]
    flow.through(request("INVITE", 3, by=CALLER))  # the caller's later re-INVITE
    assert flow.sent() == [("offer", CALLER, CALLEE, ())]


def test_a_retransmitted_ack_gets_the_first_copys_relayed_sdp_and_no_ng_command() -> None:
    flow = Flow()
    invite = request("INVITE", 1, by=CALLER, to=False, body=b"")
    ok = response(200, invite)
    assert flow.through(ok) == b"relayed offer"
    assert flow.session.answer_bodies == {1: b"relayed offer"}  # for a retransmitted 2xx
    assert flow.through(request("ACK", 1, by=CALLER)) == b"relayed answer"
    assert flow.through(request("ACK", 1, by=CALLER)) == b"relayed answer"  # again
    assert flow.sent() == [("offer", CALLEE, CALLER, ()), ("answer", CALLEE, CALLER, ())]
    # An ACK with SDP that answers nothing never reaches the gateway as it came.
    fresh = Flow()
    assert fresh.through(request("ACK", 1, by=CALLER)) == b""
    assert fresh.sent() == []


def test_an_unrelated_failure_does_not_clear_the_outstanding_offer() -> None:
    flow = Flow()
    invite = request("INVITE", 1, by=CALLER, to=False)
    initial_offer(flow, invite)
    info = request("INFO", 2, by=CALLER, body=b"")
    settle(flow, response(405, info, body=b""))
    flow.through(response(200, invite))
    assert flow.sent() == [("answer", CALLER, CALLEE, ())]


def test_a_rejected_reoffer_is_forgotten_and_glare_is_two_offers() -> None:
    flow = Flow()
    hold = request("INVITE", 2, by=CALLER)
    flow.through(hold)
    settle(flow, response(491, hold, body=b""))
    assert flow.session.offer_from is None
    theirs = request("INVITE", 7, by=CALLEE)
    flow.through(request("INVITE", 3, by=CALLER))
    flow.through(theirs)  # glare: both are offers, never an answer
    assert [command for command, *_ in flow.sent()] == ["offer", "offer", "offer"]


def settle(flow: Flow, message: Response) -> None:
    _settle(flow.session, message)
