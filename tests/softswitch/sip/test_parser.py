"""parse_message: start lines, header lines, framing, errors (RFC 3261 7, 18.3)."""

from __future__ import annotations

import pytest

from softswitch.sip import (
    Request,
    Response,
    SipParseError,
    SipURI,
    frame_length,
    parse_message,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def invite(extra: bytes = b"", body: bytes = SDP, cl: bytes | None = None) -> bytes:
    length = str(len(body)).encode() if cl is None else cl
    return (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
        b"Max-Forwards: 70\r\n"
        b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
        b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        b"Content-Type: application/sdp\r\n" + extra + b"Content-Length: " + length + b"\r\n\r\n"
    ) + body


def test_request_fields() -> None:
    data = invite()
    m = parse_message(data)
    assert isinstance(m, Request)
    assert (m.method, m.version) == ("INVITE", "SIP/2.0")
    assert m.uri == SipURI("sip", "bob", None, "biloxi.example.com")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq is not None
    assert (m.cseq.seq, m.cseq.method) == (314159, "INVITE")
    assert m.max_forwards == 70
    assert m.from_ is not None
    assert (m.from_.display, m.from_.tag) == ("Alice", "1928301774")
    assert m.to is not None
    assert (m.to.display, m.to.tag) == ("Bob", None)
    assert m.top_via is not None
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert str(m.contact[0].uri) == "sip:alice@pc33.atlanta.example.com"
    assert m.content_type == "application/sdp"
    assert m.media_type == "application/sdp"
    assert m.content_length == len(SDP)
    assert m.body == SDP
    assert bytes(m) == data


def test_response_fields() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP p1;branch=z9hG4bKa, SIP/2.0/UDP p2;branch=z9hG4bKb\r\n"
        b"To: <sip:b@h>;tag=x\r\nFrom: <sip:a@h>;tag=y\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nContent-Length: 0\r\n\r\n"
    )
    m = parse_message(data)
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (180, "Ringing")
    assert [v.host for v in m.via] == ["p1", "p2"]
    assert [str(r.uri) for r in m.record_route] == ["sip:p1;lr", "sip:p2;lr"]
    assert m.to_tag == "x"
    assert m.from_tag == "y"
    assert bytes(m) == data


def test_compact_forms_and_case() -> None:
    data = (
        b"OPTIONS sip:a@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@h>;tag=1\r\n"
        b"t: <sip:a@h>\r\ni: cid\r\nCSEQ: 2 OPTIONS\r\nm: <sip:x@h>\r\nk: timer\r\n"
        b"c: text/plain\r\ns: hi\r\ne: gzip\r\nl: 2\r\n\r\nhi"
    )
    m = parse_message(data)
    assert m.call_id == "cid"
    assert m.from_tag == "1"
    assert m.headers.get("Supported") == "timer"
    assert m.headers.get("Subject") == "hi"
    assert m.headers.get("Content-Encoding") == "gzip"
    assert m.content_type == "text/plain"
    assert m.body == b"hi"
    assert bytes(m) == data


def test_folding_and_lws() -> None:
    data = invite(extra=b"Subject: one\r\n two\r\n\tthree\r\nX-Sp   :   v  \r\n")
    m = parse_message(data)
    assert m.headers.get("Subject") == "one two three"
    assert m.headers.get("X-Sp") == "v"
    assert bytes(m) == data


def test_leading_crlf_is_ignored() -> None:
    data = invite()
    m = parse_message(b"\r\n\r\n" + data)
    assert bytes(m) == data


def test_bare_lf_line_ends_are_tolerated() -> None:
    crlf = invite(extra=b"Subject: one\r\n two\r\n", body=b"")
    m = parse_message(crlf.replace(b"\r\n", b"\n"))
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.headers.get("subject") == "one two"
    assert bytes(m) == crlf  # forwarded with CRLF line ends throughout


def test_non_utf8_octets_survive() -> None:
    data = invite(extra=b"X-Bin: \xff\xfe caf\xc3\xa9\r\n")
    m = parse_message(data)
    assert m.headers.get("x-bin") == "\udcff\udcfe café"
    assert bytes(m) == data


# -- framing ------------------------------------------------------------------------------


def test_udp_without_content_length_takes_the_datagram() -> None:
    data = invite().replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    m = parse_message(data)
    assert m.body == SDP
    assert m.content_length is None
    assert bytes(m) == data


def test_udp_ignores_octets_after_content_length() -> None:
    data = invite(cl=b"5")
    m = parse_message(data)
    assert m.body == SDP[:5]
    assert bytes(m) == data[: len(data) - len(SDP) + 5]


def test_udp_content_length_beyond_datagram() -> None:
    with pytest.raises(SipParseError, match="Content-Length too large") as info:
        parse_message(invite(cl=b"9999"))
    assert info.value.status == 400


def test_stream_framing() -> None:
    data = invite()
    assert parse_message(data, stream=True).body == SDP
    no_cl = data.replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    with pytest.raises(SipParseError, match="Missing Content-Length"):
        parse_message(no_cl, stream=True)
    with pytest.raises(SipParseError, match="Incomplete body"):
        parse_message(data[:-1], stream=True)
    with pytest.raises(SipParseError, match="Octets after"):
        parse_message(data + b"X", stream=True)
    with pytest.raises(SipParseError, match="Incomplete message header"):
        parse_message(data[:50], stream=True)


@pytest.mark.parametrize("cl", [b"-1", b"abc", b"1 2", b"", b"99999999999", b"\xd9\xa1"])
def test_bad_content_length(cl: bytes) -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(invite(cl=cl))


def test_multiple_content_length() -> None:
    data = invite(extra=b"l: 3\r\n")
    with pytest.raises(SipParseError, match="Multiple Content-Length"):
        parse_message(data)


def test_header_section_without_empty_line_on_udp() -> None:
    data = invite(body=b"")[:-2]  # ends after the last header's CRLF
    m = parse_message(data)
    assert m.body == b""
    assert bytes(m) == data + b"\r\n"
    with pytest.raises(SipParseError):
        parse_message(data[:-2])  # truncated in the middle of a line


def test_frame_length() -> None:
    data = invite()
    assert frame_length(data) == len(data)
    assert frame_length(data + b"INVITE sip:...") == len(data)
    assert frame_length(b"\r\n\r\n" + data) == len(data) + 4
    assert frame_length(data[:-1]) is None
    assert frame_length(data[:100]) is None
    no_cl = data.replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    with pytest.raises(SipParseError, match="Missing Content-Length"):
        frame_length(no_cl)
    with pytest.raises(SipParseError, match="Bad Content-Length"):
        frame_length(invite(cl=b"-999"))
    with pytest.raises(SipParseError, match="too large"):
        frame_length(b"X" * 100, max_header=50)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Empty message"),
        (b"\r\n\r\n", "Empty message"),
        (b"INVITE sip:a@h SIP/2.0", "Truncated"),
        (b"INVITE  sip:a@h SIP/2.0\r\n\r\n", "Request-Line"),
        (b"INVITE sip:a@h SIP/2.0 \r\n\r\n", "Request-Line"),
        (b"INVITE sip:a@h\r\n\r\n", "Request-Line"),
        (b"INV ITE sip:a@h SIP/2.0\r\n\r\n", "Request-Line"),
        (b"INVITE <sip:a@h> SIP/2.0\r\n\r\n", "URI"),
        (b"INVITE sip:a@h?Route=x SIP/2.0\r\n\r\n", "Headers not allowed"),
        (b"SIP/2.0 099 Too Low\r\n\r\n", "Status-Code"),
        (b"SIP/2.0 99 Short\r\n\r\n", "Status-Line"),
        (b"SIP/2.0 1000 Big\r\n\r\n", "Status-Line"),
        (b"SIP/2.0 700 Too Big\r\n\r\n", "Status-Code"),
        (b"SIP/2.0  200 OK\r\n\r\n", "Status-Line"),
        (b"INVITE sip:a@h SIP/2.0\r\nNoColon\r\n\r\n", "Malformed header line"),
        (b"INVITE sip:a@h SIP/2.0\r\n: empty name\r\n\r\n", "Malformed header line"),
        (b"INVITE sip:a@h SIP/2.0\r\nBad Name: v\r\n\r\n", "header field name"),
        (b"INVITE sip:a@h SIP/2.0\r\n continued: v\r\n\r\n", "Continuation"),
        (b"INVITE sip:a@h SIP/2.0\r\nX: a\rb\r\n\r\n", "Bare CR"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason) as info:
        parse_message(data)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "data",
    [b"OPTIONS sip:a@h SIP/3.0\r\n\r\n", b"SIP/1.0 200 OK\r\n\r\n", b"X sip:a@h sip/2.1\r\n\r\n"],
)
def test_unknown_version_is_505(data: bytes) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 505


def test_version_literal_is_case_insensitive() -> None:
    m = parse_message(b"OPTIONS sip:a@h sip/2.0\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(m, Request)
    assert m.version == "sip/2.0"


def test_error_carries_what_a_stateless_400_needs() -> None:
    data = invite(cl=b"-1")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    partial = dict(info.value.partial)
    assert partial == {
        "Via": "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "To": '"Bob" <sip:bob@biloxi.example.com>',
        "From": "Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID": "a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq": "314159 INVITE",
    }
    reply = Response.for_parse_error(info.value)
    assert reply is not None
    assert (reply.status, reply.reason) == (400, "Bad Content-Length")
    assert reply.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert bytes(reply).startswith(b"SIP/2.0 400 Bad Content-Length\r\nVia: SIP/2.0/UDP pc33")


def test_partial_stops_at_the_bad_line() -> None:
    data = invite().replace(b"Call-ID:", b"Call-ID")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert [name for name, _ in info.value.partial] == ["Via", "To", "From"]


def test_no_reply_without_via() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(b"INVITE sip:a@h SIP/2.0\r\nCall-ID: x\r\nBad\r\n\r\n")
    assert Response.for_parse_error(info.value) is None


def test_bad_values_surface_lazily_as_sip_parse_error() -> None:
    data = invite().replace(b"CSeq: 314159 INVITE", b"CSeq: lots INVITE")
    m = parse_message(data)  # framing is fine
    with pytest.raises(SipParseError, match="CSeq"):
        _ = m.cseq
    assert bytes(m) == data  # and it can still be relayed byte for byte
