"""The switch's own in-dialog requests: each side hears the dialog as it knows it."""

from __future__ import annotations

from softswitch.proxy.calls import Admission, Call
from softswitch.proxy.dialog_target import beyond_us
from softswitch.proxy.dialogs import routes_beyond_us, teardown_requests
from softswitch.sip import Request, Via, parse_message, parse_name_addr
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow, Transport

CALLER = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.5", 5062))
CALLEE = Flow(Transport.TCP, ("127.0.0.1", 5060), ("192.0.2.9", 5070))


def ours(host: str, port: int) -> bool:
    return (host, port) == ("127.0.0.1", 5060)


def invite() -> Request:
    text = (
        "INVITE sip:441234567@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx\r\n"
        "Record-Route: <sip:10.0.0.1;lr>\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@10.0.0.5>;tag=caller\r\n"
        "To: <sip:441234567@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n"
        "Contact: <sip:1000@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_routes_beyond_us_drop_our_entries_and_walk_outwards() -> None:
    record_route = [
        parse_name_addr("<sip:192.0.2.1;lr>"),
        parse_name_addr("<sip:192.0.2.2;lr>"),
        parse_name_addr("<sip:127.0.0.1:5060;lr>"),
    ]
    sent = [parse_name_addr("<sip:127.0.0.1:5060;lr>")]
    beyond = beyond_us(record_route, sent, 1)
    assert routes_beyond_us(beyond) == ("<sip:192.0.2.2;lr>", "<sip:192.0.2.1;lr>")


def test_teardown_byes_speak_for_the_other_side() -> None:
    request = invite()
    call = Call(
        call_id="c1",
        invite=request,
        caller_flow=CALLER,
        server_tx=ServerTransaction(request, reliable=False),
        admission=Admission("a", "441234567", "441234567", 60.0, 3, 10.0),
        invite_at=0.0,
        started_mono=0.0,
        caller_tag="caller",
        callee_tag="callee",
        callee_contact="sip:gw@192.0.2.9:5070;transport=tcp",
        callee_routes=("<sip:192.0.2.3;lr>",),
        callee_flow=CALLEE,
        caller_cseq=7,
        callee_cseq=0,
    )
    byes = teardown_requests(
        call, "Q.850;cause=102", lambda flow: Via.new(str(flow.transport), "127.0.0.1", 5060), "t"
    )
    (to_callee, callee_flow), (to_caller, caller_flow) = byes
    assert (callee_flow, caller_flow) == (CALLEE, CALLER)
    assert str(to_callee.uri) == "sip:gw@192.0.2.9:5070;transport=tcp"
    assert to_callee.from_tag == "caller"
    assert to_callee.to_tag == "callee"
    assert to_callee.headers.get("CSeq") == "8 BYE"
    assert to_callee.headers.get_all("Route") == ["<sip:192.0.2.3;lr>"]
    assert to_callee.top_via is not None
    assert to_callee.top_via.transport == "TCP"
    assert str(to_caller.uri) == "sip:1000@10.0.0.5:5062"
    assert to_caller.from_tag == "callee"
    assert to_caller.to_tag == "caller"
    assert to_caller.headers.get("CSeq") == "1 BYE"
    assert to_caller.headers.get_all("Route") == ["<sip:10.0.0.1;lr>"]
    assert to_caller.headers.get("Reason") == "Q.850;cause=102"
