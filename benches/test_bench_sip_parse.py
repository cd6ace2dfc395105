"""SIP message layer throughput: parse, and the parse-edit-serialise cycle of one proxy hop.

Targets (pure Python, one core): 50,000 INVITEs of about 900 octets with SDP parsed per
second, and 30,000 parse + decrement Max-Forwards + push Via + add Record-Route +
serialise cycles per second.  Two more cycles show what the typed properties cost on
top: reading the transaction/dialog keys, and the full ``validate_request``.  Run
explicitly, never as a timed assertion:

    python -m pytest benches/test_bench_sip_parse.py --benchmark-only -q
"""

from __future__ import annotations

from typing import Any

from softswitch.sip import Request, Response, Via, parse_message, validate_request

SDP = (
    b"v=0\r\n"
    b"o=- 3724394400 3724394400 IN IP4 203.0.113.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 203.0.113.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 16384 RTP/AVP 0 8 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:+442071234567@carrier.example.net:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1-77ba5bf5b3a1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:15551234567@198.51.100.20:5060;transport=udp>\r\n"
    b"To: <sip:+442071234567@carrier.example.net>\r\n"
    b'From: "15551234567" <sip:15551234567@customer.example.com>;tag=9fxced76sl\r\n'
    b"Call-ID: 3848276298220188511@198.51.100.20\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExampleSBC/4.2.1\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK3f2a1b9c7d;received=192.0.2.1\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-524287-1-77ba5bf5b3a1;rport=5060\r\n"
    b"Record-Route: <sip:192.0.2.1;lr>\r\n"
    b"Contact: <sip:+442071234567@203.0.113.77:5060>\r\n"
    b"To: <sip:+442071234567@carrier.example.net>;tag=as5f0e2d1c\r\n"
    b'From: "15551234567" <sip:15551234567@customer.example.com>;tag=9fxced76sl\r\n'
    b"Call-ID: 3848276298220188511@198.51.100.20\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
OUR_VIA = str(Via.new("UDP", "192.0.2.1", 5060, branch="z9hG4bKbench"))
RECORD_ROUTE = "<sip:192.0.2.1;lr>"


def test_invite_size() -> None:
    assert 850 <= len(INVITE) <= 950


def test_parse_invite(benchmark: Any) -> None:
    msg = benchmark(parse_message, INVITE)
    assert msg.body == SDP


def test_parse_200_ok(benchmark: Any) -> None:
    msg = benchmark(parse_message, OK_200)
    assert msg.body == SDP


def _hop(data: bytes, validate: bool = False) -> bytes:
    msg = parse_message(data)
    if validate:
        assert isinstance(msg, Request)
        assert validate_request(msg) is None
    return _hop_edits(msg)


def _hop_edits(msg: Request | Response) -> bytes:
    """The per-hop edits of RFC 3261 16.6 steps 3, 4 and 8, then serialise."""
    mf = msg.max_forwards
    msg.max_forwards = (70 if mf is None else mf) - 1
    msg.headers.prepend("Via", OUR_VIA)
    msg.headers.prepend("Record-Route", RECORD_ROUTE)
    return bytes(msg)


def test_proxy_hop(benchmark: Any) -> None:
    out = benchmark(_hop, INVITE)
    assert b"Max-Forwards: 69\r\n" in out
    assert out.endswith(SDP)


def test_proxy_hop_with_validation(benchmark: Any) -> None:
    """The full per-request cost: the hop, plus ``validate_request`` parsing every
    essential header (Via, From, To, CSeq, Call-ID, Max-Forwards, Contact, Route...)."""
    out = benchmark(_hop, INVITE, True)
    assert out.endswith(SDP)


def _keyed_hop(data: bytes) -> bytes:
    msg = parse_message(data)
    top = msg.top_via
    cseq = msg.cseq
    assert top is not None
    assert cseq is not None
    _key = (top.branch, top.sent_by, cseq.method, msg.call_id, msg.from_tag, msg.to_tag)
    return _hop_edits(msg)


def test_proxy_hop_with_transaction_keys(benchmark: Any) -> None:
    """The hop plus what transaction and dialog matching read (top Via, CSeq, tags)."""
    out = benchmark(_keyed_hop, INVITE)
    assert out.endswith(SDP)
