"""The requests the switch itself sends inside a dialog: its BYEs and a late answer's ACK.

A proxy normally only relays; a switch also hangs up (maximum duration, shutdown) and must
end a call a carrier answered after the switch had moved on. Those requests are built here,
as pure functions of what the call remembered, so the header rules are visible in one
place: From/To/Call-ID of the dialog as each side knows it, a CSeq above any the side has
seen from its peer, and the route set from us to that side (the Record-Route entries the
callee's side added above those of the INVITE we sent, RFC 3261 12.1.2 and 16.12).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from softswitch.sip import NameAddr, Request, Via
from softswitch.sip.headers import Headers
from softswitch.transport import Flow

from .calls import Call

__all__ = ["build_request", "late_answer_requests", "routes_beyond_us", "teardown_requests"]


def routes_beyond_us(beyond: Sequence[NameAddr]) -> tuple[str, ...]:
    """The route set from us towards the callee: the callee's part of its 2xx's
    Record-Route (``dialog_target.beyond_us``), walked outwards (reversed, as a UAC does)."""
    return tuple(str(entry) for entry in reversed(beyond))


def build_request(
    method: str,
    uri: str,
    *,
    via: Via | str,
    routes: Iterable[str],
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    user_agent: str,
    extra: Sequence[tuple[str, str]] = (),
) -> Request:
    h = Headers()
    h.add("Via", str(via))
    h.add("Max-Forwards", "70")
    for route in routes:
        h.add("Route", route)
    h.add("From", from_)
    h.add("To", to)
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    for name, value in extra:
        h.add(name, value)
    h.add("User-Agent", user_agent)
    return Request(method, uri, h)


def teardown_requests(
    call: Call, reason: str, via_for: Callable[[Flow], Via | str], user_agent: str
) -> list[tuple[Request, Flow]]:
    """A BYE for each side of an answered call, with the flow each goes out on.

    To the callee we speak as the caller (its From, the 2xx's To, a CSeq above the
    caller's); to the caller as the callee (the 2xx's To as From, the INVITE's From as To,
    a CSeq above any the callee sent). ``reason`` becomes the Reason header (RFC 3326).
    """
    invite = call.invite
    caller_side = invite.headers.get("From") or ""
    callee_side = invite.headers.get("To") or ""
    if call.callee_tag and invite.to_tag is None:
        callee_side = f"{callee_side};tag={call.callee_tag}"
    extra = [("Reason", reason)]
    out: list[tuple[Request, Flow]] = []
    if call.callee_flow is not None:
        bye = build_request(
            "BYE",
            call.callee_contact or str(invite.uri),
            via=via_for(call.callee_flow),
            routes=call.callee_routes,
            from_=caller_side,
            to=callee_side,
            call_id=call.call_id,
            cseq=call.caller_cseq + 1,
            user_agent=user_agent,
            extra=extra,
        )
        out.append((bye, call.callee_flow))
    contact = invite.contact
    if contact:
        caller_uri = str(contact[0].uri)
    else:
        caller_uri = str(invite.from_.uri) if invite.from_ is not None else str(invite.uri)
    bye = build_request(
        "BYE",
        caller_uri,
        via=via_for(call.caller_flow),
        routes=[str(r) for r in invite.record_route],
        from_=callee_side,
        to=caller_side,
        call_id=call.call_id,
        cseq=call.callee_cseq + 1,
        user_agent=user_agent,
        extra=extra,
    )
    out.append((bye, call.caller_flow))
    return out


def late_answer_requests(
    invite: Request,
    response_to: str,
    target: str,
    routes: Sequence[str],
    via_for: Callable[[], Via | str],
    user_agent: str,
) -> tuple[Request, Request]:
    """The ACK and the BYE for a 2xx that arrived after its branch was abandoned."""
    cseq = invite.cseq.seq if invite.cseq is not None else 1
    requests = [
        build_request(
            method,
            target,
            via=via_for(),
            routes=routes,
            from_=invite.headers.get("From") or "",
            to=response_to,
            call_id=invite.call_id or "",
            cseq=number,
            user_agent=user_agent,
        )
        for method, number in (("ACK", cseq), ("BYE", cseq + 1))
    ]
    return requests[0], requests[1]
