"""The per-hop edits of a record-routing proxy, on parsed messages, no sockets."""

from __future__ import annotations

import pytest

from softswitch.call.rewrite import gateway_request_uri
from softswitch.config import Gateway
from softswitch.proxy.forward import (
    Hop,
    check_request,
    prepare_branch,
    prepare_in_dialog,
    relay_response,
)
from softswitch.sip import (
    Request,
    Response,
    SipURI,
    Via,
    parse_message,
    validate_request,
    validate_response,
)
from softswitch.transport import Transport

US = ("127.0.0.1", 5060)


def ours(host: str, port: int) -> bool:
    return (host, port) == US


def invite(*extra: str, max_forwards: str = "70") -> Request:
    lines = [
        "INVITE sip:441234567@127.0.0.1:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKcaller",
        *extra,
        f"Max-Forwards: {max_forwards}",
        "From: <sip:1000@10.0.0.1>;tag=abc",
        "To: <sip:441234567@127.0.0.1>",
        "Call-ID: c1@10.0.0.1",
        "CSeq: 1 INVITE",
        "Contact: <sip:1000@10.0.0.1:5062>",
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def test_sanity_checks() -> None:
    assert check_request(invite(), ours) is None
    assert check_request(invite(max_forwards="0"), ours) == (483, "Too Many Hops")
    looped = invite("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKus")
    assert check_request(looped, ours) == (482, "Loop Detected")
    assert check_request(invite("Proxy-Require: foo"), ours) == (420, "Bad Extension")


def test_branch_request_rewrites_and_leaves_the_original_alone() -> None:
    original = invite("Proxy-Authorization: Digest username=x", "Route: <sip:127.0.0.1:5060;lr>")
    via = Via.new("UDP", "127.0.0.1", 5060, branch="z9hG4bKbranch1")
    out = prepare_branch(
        original,
        uri=SipURI(user="0044123", host="192.0.2.9", port=5070),
        via=via,
        record_route=[Hop(Transport.TCP, "127.0.0.1", 5060), Hop(Transport.UDP, *US)],
        is_ours=ours,
    )
    assert str(out.uri) == "sip:0044123@192.0.2.9:5070"
    assert out.max_forwards == 69
    assert out.top_via is not None
    assert out.top_via.branch == "z9hG4bKbranch1"
    assert len(out.via) == 2
    assert out.headers.get_all("Record-Route") == [
        "<sip:127.0.0.1:5060;transport=tcp;lr>",
        "<sip:127.0.0.1:5060;lr>",
    ]
    assert "Route" not in out.headers  # our own entry was consumed
    assert "Proxy-Authorization" not in out.headers  # our credentials stay with us
    # the original is still the caller's request, for the next branch
    assert str(original.uri) == "sip:441234567@127.0.0.1:5060"
    assert original.max_forwards == 70
    assert len(original.via) == 1


def test_a_branch_with_a_route_set_starts_with_it_after_our_own_entry_is_consumed() -> None:
    """A registered contact's Path (RFC 3327) is the branch's pre-loaded Route set (16.6
    step 6), ahead of any Route the caller sent beyond us."""
    original = invite("Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:192.0.2.77;lr>")
    path = "<sip:198.51.100.1:5070;lr;received=sip:203.0.113.9:61000>, <sip:198.51.100.2;lr>"
    out = prepare_branch(
        original,
        uri=SipURI(user="441234567", host="10.1.1.1", port=5060),
        via=Via.new("UDP", "127.0.0.1", 5060, branch="z9hG4bKbranch1"),
        record_route=[Hop(Transport.UDP, *US)],
        is_ours=ours,
        route=path,
    )
    assert out.headers.get_all("Route") == [
        "<sip:198.51.100.1:5070;lr;received=sip:203.0.113.9:61000>",
        "<sip:198.51.100.2;lr>",
        "<sip:192.0.2.77;lr>",
    ]
    assert original.headers.get_all("Route") == [
        "<sip:127.0.0.1:5060;lr>",
        "<sip:192.0.2.77;lr>",
    ]


@pytest.mark.parametrize(
    ("received", "sent"),
    [("70", 69), ("0", 0), ("2147483649", 2**31), ("4294967296", 2**31), ("9999999999", 2**31)],
)
def test_max_forwards_counts_down_to_the_range_we_send(received: str, sent: int) -> None:
    """Ten digits are a valid Max-Forwards; counting one down past 2**31 is capped there
    rather than lost (the setter refuses such values)."""
    out = prepare_in_dialog(
        invite(max_forwards=received), via=Via.new("UDP", "127.0.0.1", 5060), is_ours=ours
    )
    assert out.max_forwards == sent


def test_in_dialog_request_loses_our_routes_only() -> None:
    bye = invite("Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:192.0.2.1;lr>")
    out = prepare_in_dialog(bye, via=Via.new("UDP", "127.0.0.1", 5060), is_ours=ours)
    assert out.headers.get_all("Route") == ["<sip:192.0.2.1;lr>"]
    assert len(out.via) == 2


def test_relayed_response_loses_our_via() -> None:
    request = invite("Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKlower")
    request.push_via(Via.new("UDP", "127.0.0.1", 5060, branch="z9hG4bKtop"))
    response = Response.for_request(request, 180, to_tag="t")
    relayed = relay_response(response)
    assert [v.branch for v in relayed.via] == ["z9hG4bKcaller", "z9hG4bKlower"]
    assert len(response.via) == 3  # the copy, not the original, was edited


def test_an_unescaped_hash_is_forwarded_untouched_and_the_gateway_gets_its_own_uri() -> None:
    """VOS-style customers send ``1234#44...`` unescaped in the Request-URI, To and From.
    The gateway gets its own Request-URI (built by ``call.rewrite``, without the tech
    prefix); the other header fields go on byte for byte, and everything the switch then
    sends or receives still parses."""
    text = (
        "INVITE sip:1234#441234567@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKcaller\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:1234#1000@10.0.0.1>;tag=abc\r\n"
        "To: <sip:1234#441234567@127.0.0.1:5060>\r\n"
        "Call-ID: c1@10.0.0.1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:1234#1000@10.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    original = parse_message(text.encode())
    assert isinstance(original, Request)
    assert validate_request(original) is None
    assert bytes(original) == text.encode()  # printed back exactly as received
    gateway = Gateway(id="gw", host="192.0.2.9", port=5070)
    out = prepare_branch(
        original,
        uri=gateway_request_uri(gateway, "441234567"),  # the tech prefix is not sent
        via=Via.new("UDP", "127.0.0.1", 5060, branch="z9hG4bKbranch1"),
        record_route=[Hop(Transport.UDP, *US)],
        is_ours=ours,
    )
    wire = bytes(out)
    assert wire.startswith(b"INVITE sip:441234567@192.0.2.9:5070 SIP/2.0\r\n")
    assert b"To: <sip:1234#441234567@127.0.0.1:5060>\r\n" in wire
    assert b"From: <sip:1234#1000@10.0.0.1>;tag=abc\r\n" in wire
    again = parse_message(wire)
    assert isinstance(again, Request)
    assert validate_request(again) is None
    # The carrier's answer echoes the To (with '#') and comes back through us.
    answer = Response.for_request(out, 180, to_tag="t")
    received = parse_message(bytes(answer))
    assert isinstance(received, Response)
    assert validate_response(received) is None
    relayed = relay_response(received)
    assert relayed.headers.get("To") == "<sip:1234#441234567@127.0.0.1:5060>;tag=t"
    back = parse_message(bytes(relayed))
    assert isinstance(back, Response)
    assert validate_response(back) is None


def test_only_our_realms_credentials_are_consumed() -> None:
    """RFC 3261 22.3: ours are removed, a carrier's are forwarded for it to check."""
    ours_cred = 'Digest username="alice", realm="switch", nonce="n1", uri="sip:x", response="r"'
    theirs = 'Digest username="trunk", realm="carrier", nonce="n2", uri="sip:x", response="r"'
    broken_ours = 'Digest realm="switch", username'
    original = invite(
        f"Proxy-Authorization: {ours_cred}",
        f"Proxy-Authorization: {theirs}",
        f"Proxy-Authorization: {broken_ours}",
    )
    out = prepare_branch(
        original,
        uri=SipURI(user="0044123", host="192.0.2.9", port=5070),
        via=Via.new("UDP", "127.0.0.1", 5060, branch="z9hG4bKbranch2"),
        record_route=[Hop(Transport.UDP, *US)],
        is_ours=ours,
        realm="switch",
    )
    assert out.headers.get_all("Proxy-Authorization") == [theirs]
    assert len(original.headers.get_all("Proxy-Authorization")) == 3
