"""Request/Response objects: building, per-hop edits, byte-exact serialisation."""

from __future__ import annotations

import pytest

from softswitch.sip import (
    REASON_PHRASES,
    Headers,
    NameAddr,
    Request,
    Response,
    SipURI,
    Via,
    parse_message,
    parse_name_addr,
    parse_uri,
    validate_request,
)

RAW = (
    b"INVITE sip:+15551234567@gw.example.net;user=phone SIP/2.0\r\n"
    b"v:  SIP/2.0/UDP 198.51.100.20:5060 ; branch=z9hG4bK-77ba;rport\r\n"
    b"Max-Forwards: 0069\r\n"
    b"t: <sip:+15551234567@gw.example.net>\r\n"
    b'f: "Caller" <sip:100@customer.example.com>;tag=9fxced76sl\r\n'
    b"i: 3848276298220188511@198.51.100.20\r\n"
    b"CSeq:   1   INVITE\r\n"
    b"Route: <sip:proxy.example.net;lr>\r\n"
    b"X-Custom:   kept   exactly \r\n"
    b"Content-Type: application/sdp\r\n"
    b"l:   4\r\n"
    b"\r\n"
    b"v=0\n"
)


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_per_hop_edits_touch_only_the_edited_lines() -> None:
    m = parse_message(RAW)
    assert isinstance(m, Request)
    assert m.max_forwards == 69
    m.max_forwards = m.max_forwards - 1
    via = Via.new("UDP", "192.0.2.1", 5060)
    m.push_via(via)
    m.headers.prepend("Record-Route", "<sip:192.0.2.1;lr>")
    out = bytes(m)
    before, after = lines(RAW), lines(out)
    assert after[0] == before[0]
    assert after[1] == b"Record-Route: <sip:192.0.2.1;lr>"
    assert after[2] == f"Via: {via}".encode()
    assert after[3] == before[1]  # the received Via, as received
    assert after[4] == b"Max-Forwards: 68"
    assert after[5:] == before[3:]  # everything else, same bytes, same order
    assert out.endswith(b"\r\n\r\nv=0\n")  # body, and Content-Length, untouched
    again = parse_message(out)
    assert [v.host for v in again.via] == ["192.0.2.1", "198.51.100.20"]
    assert again.max_forwards == 68
    assert [str(r.uri) for r in again.record_route] == ["sip:192.0.2.1;lr"]


def test_cached_values_follow_edits() -> None:
    m = parse_message(RAW)
    assert len(m.via) == 1
    m.push_via(Via.new("TCP", "192.0.2.9"))
    assert [v.transport for v in m.via] == ["TCP", "UDP"]
    assert m.pop_via() is not None
    assert [v.host for v in m.via] == ["198.51.100.20"]
    returned = m.via
    returned.clear()  # callers get a copy: the cache is not theirs to change
    assert len(m.via) == 1


def test_body_replacement_rewrites_content_length_only_then() -> None:
    m = parse_message(RAW)
    m.headers.set("X-Other", "1")
    assert b"l:   4\r\n" in bytes(m)
    m.body = b"v=0\r\ns=-\r\n"
    out = bytes(m)
    assert b"l:   4" not in out
    assert b"Content-Length: 10\r\n" in out
    assert out.endswith(b"\r\n\r\nv=0\r\ns=-\r\n")
    assert m.content_length == 10


def test_start_line_edits() -> None:
    m = parse_message(RAW)
    assert isinstance(m, Request)
    m.uri = "sip:+15551234567@10.0.0.1:5080"
    assert bytes(m).startswith(b"INVITE sip:+15551234567@10.0.0.1:5080 SIP/2.0\r\n")
    m.method = "OPTIONS"
    assert bytes(m).startswith(b"OPTIONS ")
    r = parse_message(b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(r, Response)
    r.status, r.reason = 183, "Session Progress"
    assert bytes(r) == b"SIP/2.0 183 Session Progress\r\nContent-Length: 0\r\n\r\n"


def test_build_request() -> None:
    req = Request.build(
        "INVITE",
        "sip:bob@biloxi.example.com",
        via=Via.new("UDP", "192.0.2.1", 5060),
        from_=parse_name_addr('"Alice" <sip:alice@atlanta.example.com>'),
        to=NameAddr(parse_uri("sip:bob@biloxi.example.com")),
        call_id="abc@192.0.2.1",
        cseq=1,
        contact=parse_name_addr("<sip:alice@192.0.2.1:5060>"),
        route=[parse_name_addr("<sip:p1.example.com;lr>")],
        headers=[("Supported", "timer")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert req.from_tag is not None
    assert validate_request(req) is None
    data = bytes(req)
    again = parse_message(data, stream=True)
    assert isinstance(again, Request)
    assert bytes(again) == data
    assert again.headers.names() == [
        "via",
        "max-forwards",
        "route",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "supported",
        "content-type",
        "content-length",
    ]
    assert again.max_forwards == 70
    assert again.cseq is not None
    assert str(again.cseq) == "1 INVITE"
    assert again.content_length == 5
    assert again.body == b"v=0\r\n"
    assert again.uri == SipURI("sip", "bob", None, "biloxi.example.com")


def test_constructor_keeps_content_length_consistent() -> None:
    r = Request("OPTIONS", "sip:a@h", [("Content-Length", "99")], b"abc")
    assert r.headers.get_all("Content-Length") == ["3"]
    empty = Response(200)
    assert empty.headers.get("content-length") == "0"
    assert empty.reason == "OK"
    assert Response(299).reason == "OK"
    assert Response(499).reason == "Bad Request"
    assert Response(699).reason == "Busy Everywhere"


@pytest.mark.parametrize("status", [99, 700])
def test_response_status_range(status: int) -> None:
    with pytest.raises(ValueError, match="status"):
        Response(status)


def test_bad_method_and_max_forwards_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="method"):
        Request("BAD METHOD", "sip:a@h")
    m = parse_message(RAW)
    with pytest.raises(ValueError, match="Max-Forwards"):
        m.max_forwards = -1


def test_response_for_request_copies_rfc3261_fields() -> None:
    req = parse_message(RAW)
    assert isinstance(req, Request)
    resp = Response.for_request(req, 486, to_tag="uas-1")
    assert (resp.status, resp.reason) == (486, "Busy Here")
    head = lines(bytes(resp))
    raw = lines(RAW)
    assert head[0] == b"SIP/2.0 486 Busy Here"
    assert head[1] == raw[1]  # Via, as received
    assert head[2] == b"To: <sip:+15551234567@gw.example.net>;tag=uas-1"
    assert head[3:6] == [raw[4], raw[5], raw[6]]  # From, Call-ID, CSeq as received
    assert head[6] == b"Content-Length: 0"
    assert len(head) == 7
    assert resp.to_tag == "uas-1"
    assert resp.from_tag == "9fxced76sl"
    trying = Response.for_request(req, 100)
    assert trying.to_tag is None
    assert trying.reason == "Trying"


def test_response_for_request_keeps_an_existing_to_tag() -> None:
    req = parse_message(RAW.replace(b"gw.example.net>\r\n", b"gw.example.net>;tag=old\r\n"))
    assert isinstance(req, Request)
    resp = Response.for_request(req, 200, "Fine", to_tag="new", headers=[("Allow", "INVITE")])
    assert resp.to_tag == "old"
    assert resp.reason == "Fine"
    assert resp.headers.get("Allow") == "INVITE"


def test_reason_phrases() -> None:
    assert REASON_PHRASES[200] == "OK"
    assert REASON_PHRASES[416] == "Unsupported URI Scheme"
    assert REASON_PHRASES[483] == "Too Many Hops"
    assert REASON_PHRASES[505] == "Version Not Supported"
    assert all(100 <= code <= 699 for code in REASON_PHRASES)


def test_typed_accessors_for_auth_and_reason() -> None:
    m = Request(
        "BYE",
        "sip:a@h",
        Headers(
            [
                ("Proxy-Authorization", 'Digest username="u", realm="r", nonce="n"'),
                ("Reason", 'Q.850;cause=16;text="Normal", SIP;cause=200'),
                ("Contact", "*"),
            ]
        ),
    )
    assert m.proxy_authorization[0].params == {"username": "u", "realm": "r", "nonce": "n"}
    assert m.authorization == []
    assert [(r.protocol, r.cause) for r in m.reasons] == [("Q.850", 16), ("SIP", 200)]
    assert m.contact_is_wildcard
    assert m.contact == []
    challenge = Response(
        401, headers=[("WWW-Authenticate", 'Digest realm="r", nonce="n", qop="auth"')]
    )
    assert challenge.www_authenticate[0].params["qop"] == "auth"
    assert challenge.proxy_authenticate == []


def test_a_reason_phrase_cannot_carry_a_line_break() -> None:
    """It would end the status line early; a completed transaction re-reads what it sent."""
    with pytest.raises(ValueError, match="reason phrase"):
        Response(200, "OK\nX-Injected: 1")
    response = Response(200)
    with pytest.raises(ValueError, match="reason phrase"):
        response.reason = "OK\r\n"
    assert response.reason == "OK"
