"""What the switch sends for one call, byte for byte, and the copies it sends them from.

The messages are a real call through the switch (SIPp caller and callee on loopback): the
six datagrams it received and the seven it sent (the 100 Trying, the INVITE to the
gateway, the relayed 180 and 200, ACK, BYE and the 200 for the BYE). The per-hop
operations, given the Via branches the switch drew in that call, must give those seven
datagrams exactly, and leave what was received as it was received.

Then the cheap copies behind them (``Request.copy``, ``Response.copy``, ``Headers.copy``
sharing its lists until an edit, the index an edit keeps up to date, the slices of
``Response.for_request``) against what the constructors and a plain list model give, on
generated messages and edit sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.proxy.forward import (
    Hop,
    copy_request,
    prepare_branch,
    prepare_in_dialog,
    relay_response,
)
from softswitch.sip import Request, Response, parse_message, parse_uri
from softswitch.sip.headers import Headers, build_index, canonical_key
from softswitch.sip.validate import validate_request, validate_response
from softswitch.transport import Transport

US = ("127.0.0.1", 39585)
HOP = Hop(Transport.UDP, *US)
OUR_VIA = "SIP/2.0/UDP 127.0.0.1:39585;branch="


def ours(host: str, port: int) -> bool:
    return (host, port) == US


SDP_CALLER = (
    b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 47770 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP_CARRIER = (
    b"v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40266 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
VIA_CALLER = b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-"
FROM = b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
TO = b"To: <sip:441234567@127.0.0.1:39585>"
TO_TAGGED = TO + b";tag=32550SIPpTag0148\r\n"
CALL_ID = b"Call-ID: 48-32551@127.0.0.1\r\n"
RR = b"Record-Route: <sip:127.0.0.1:39585;lr>\r\n"
CONTACT_GW = b"Contact: <sip:carrier@127.0.0.1:38514;transport=UDP>\r\n"
IN_DIALOG_URI = b" sip:carrier@127.0.0.1:38514;transport=UDP SIP/2.0\r\n"

RECEIVED = {
    "INVITE": (
        b"INVITE sip:441234567@127.0.0.1:39585 SIP/2.0\r\n"
        + VIA_CALLER
        + b"0\r\n"
        + FROM
        + TO
        + b"\r\n"
        + CALL_ID
        + b"CSeq: 1 INVITE\r\nContact: <sip:1000@127.0.0.1:58614;transport=UDP>\r\n"
        b"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length:   115\r\n\r\n"
        + SDP_CALLER
    ),
    "180": (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK66b90893025a01ac, "
        + VIA_CALLER[5:]
        + b"0\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 1 INVITE\r\n"
        + RR
        + CONTACT_GW
        + b"Content-Length: 0\r\n\r\n"
    ),
    "200": (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK66b90893025a01ac, "
        + VIA_CALLER[5:]
        + b"0\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 1 INVITE\r\n"
        + RR
        + CONTACT_GW
        + b"Content-Type: application/sdp\r\nContent-Length:   116\r\n\r\n"
        + SDP_CARRIER
    ),
    "ACK": (
        b"ACK"
        + IN_DIALOG_URI
        + VIA_CALLER
        + b"5\r\nRoute: <sip:127.0.0.1:39585;lr>\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ),
    "BYE": (
        b"BYE"
        + IN_DIALOG_URI
        + VIA_CALLER
        + b"7\r\nRoute: <sip:127.0.0.1:39585;lr>\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ),
    "200 BYE": (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK20a570b4f37373a3, "
        + VIA_CALLER[5:]
        + b"7\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ),
}

SENT = {
    "100": (
        b"SIP/2.0 100 Trying\r\n"
        + VIA_CALLER
        + b"0\r\n"
        + FROM
        + TO
        + b"\r\n"
        + CALL_ID
        + b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ),
    "INVITE": (
        b"INVITE sip:441234567@127.0.0.1:38514 SIP/2.0\r\n"
        + RR
        + b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK66b90893025a01ac\r\n"
        + VIA_CALLER
        + b"0\r\n"
        + FROM
        + TO
        + b"\r\n"
        + CALL_ID
        + b"CSeq: 1 INVITE\r\nContact: <sip:1000@127.0.0.1:58614;transport=UDP>\r\n"
        b"Max-Forwards: 69\r\nContent-Type: application/sdp\r\nContent-Length:   115\r\n\r\n"
        + SDP_CALLER
    ),
    "180": (
        b"SIP/2.0 180 Ringing\r\n"
        + VIA_CALLER
        + b"0\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 1 INVITE\r\n"
        + RR
        + CONTACT_GW
        + b"Content-Length: 0\r\n\r\n"
    ),
    "200": (
        b"SIP/2.0 200 OK\r\n"
        + VIA_CALLER
        + b"0\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 1 INVITE\r\n"
        + RR
        + CONTACT_GW
        + b"Content-Type: application/sdp\r\nContent-Length:   116\r\n\r\n"
        + SDP_CARRIER
    ),
    "ACK": (
        b"ACK"
        + IN_DIALOG_URI
        + b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK2a99950073eea033\r\n"
        + VIA_CALLER
        + b"5\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 1 ACK\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    ),
    "BYE": (
        b"BYE"
        + IN_DIALOG_URI
        + b"Via: SIP/2.0/UDP 127.0.0.1:39585;branch=z9hG4bK20a570b4f37373a3\r\n"
        + VIA_CALLER
        + b"7\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 2 BYE\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    ),
    "200 BYE": (
        b"SIP/2.0 200 OK\r\n"
        + VIA_CALLER
        + b"7\r\n"
        + FROM
        + TO_TAGGED
        + CALL_ID
        + b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ),
}


def received(name: str) -> Request | Response:
    """A received datagram as the proxy gets it: parsed, checked, its fields read."""
    message = parse_message(RECEIVED[name])
    if isinstance(message, Request):
        assert validate_request(message) is None
    else:
        assert validate_response(message) is None
    assert bytes(message) == RECEIVED[name]
    return message


def _request(name: str) -> Request:
    message = received(name)
    assert isinstance(message, Request)
    return message


def _response(name: str) -> Response:
    message = received(name)
    assert isinstance(message, Response)
    return message


def _branch(invite: Request) -> Request:
    return prepare_branch(
        invite,
        uri=parse_uri("sip:441234567@127.0.0.1:38514"),
        via=OUR_VIA + "z9hG4bK66b90893025a01ac",
        record_route=[HOP],
        is_ours=ours,
        realm="switch.example",
    )


def _in_dialog(branch: str) -> Callable[[Request], Request]:
    return lambda request: prepare_in_dialog(request, via=OUR_VIA + branch, is_ours=ours)


REQUEST_STEPS: list[tuple[str, str, Callable[[Request], Request | Response]]] = [
    ("INVITE", "100", lambda invite: Response.for_request(invite, 100)),
    ("INVITE", "INVITE", _branch),
    ("ACK", "ACK", _in_dialog("z9hG4bK2a99950073eea033")),
    ("BYE", "BYE", _in_dialog("z9hG4bK20a570b4f37373a3")),
]


@pytest.mark.parametrize(("got", "sent", "step"), REQUEST_STEPS)
def test_what_a_call_sends_for_its_requests(
    got: str, sent: str, step: Callable[[Request], Request | Response]
) -> None:
    original = _request(got)
    out = step(original)
    assert bytes(out) == SENT[sent]
    assert bytes(out) == SENT[sent]  # serialising twice gives the same bytes
    assert bytes(original) == RECEIVED[got]  # the received message is left unedited
    again = parse_message(bytes(out))
    assert bytes(again) == SENT[sent]


@pytest.mark.parametrize("name", ["180", "200", "200 BYE"])
def test_what_a_call_sends_for_its_responses(name: str) -> None:
    original = _response(name)
    out = relay_response(original)
    assert bytes(out) == SENT[name]
    assert bytes(original) == RECEIVED[name]
    assert len(original.via) == 2
    assert len(out.via) == 1
    assert out.top_via == original.via[1]


def test_a_relayed_copy_edited_later_leaves_the_original_and_other_copies_alone() -> None:
    """What the media relay does to a relayed 200 (its own SDP), and a second branch's copy
    of the caller's INVITE after the first one was edited (fail-over)."""
    ok = _response("200")
    first, second = relay_response(ok), relay_response(ok)
    first.body = b"v=0\r\n"
    assert bytes(first).endswith(b"Content-Length: 5\r\n\r\nv=0\r\n")
    assert bytes(second) == SENT["200"]
    assert bytes(ok) == RECEIVED["200"]
    invite = _request("INVITE")
    branch = _branch(invite)
    branch.headers.set("X-Try", "1")
    assert bytes(_branch(invite)) == SENT["INVITE"]
    assert bytes(invite) == RECEIVED["INVITE"]


# -- the copies against the constructors --------------------------------------------------

_START_LINES = st.sampled_from(
    [
        b"SIP/2.0 180 Ringing",
        b"SIP/2.0 180",
        b"SIP/2.0 180 ",
        b"sip/2.0 200 OK",
        b"SIP/2.0 183 Session  Progress ",
        b"SIP/2.0 486 Busy \xc3\xa9",
        b"SIP/2.0 603 \xff",
        b"INVITE sip:441234567@127.0.0.1 SIP/2.0",
        b"BYE SIP:a@B.example;transport=UDP sip/2.0",
        b"ACK sip:1234#44@127.0.0.1 SIP/2.0",
        b"OPTIONS tel:+4412 SIP/2.0",
    ]
)
_LINES = st.sampled_from(
    [
        b"Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa",
        b"v:SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb , SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKc",
        b"From: <sip:a@b>;tag=1",
        b"t : <sip:c@d>",
        b"To: <sip:c@d>;tag=2",
        b"i: c1@h",
        b"Call-ID:c2@h",
        b"CSeq: 1 INVITE",
        b"Max-Forwards: 070",
        b"Route: <sip:127.0.0.1:39585;lr>, <sip:10.0.0.9;lr>",
        b"Record-Route: <sip:10.0.0.9;lr>",
        b"Subject: folded\r\n line",
        b"X-A: 1",
        b"Content-Length: 0",
        b"l: 00",
    ]
)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    start = draw(_START_LINES)
    lines = draw(st.lists(_LINES, max_size=10))
    body = draw(st.sampled_from([b"", b"abc"]))
    if body:
        lines = [line for line in lines if line not in (b"Content-Length: 0", b"l: 00")]
        lines.append(draw(st.sampled_from([b"Content-Length: 3", b"l: 003"])))
    return b"\r\n".join([start, *lines, b"", b""]) + body


def _parsed(data: bytes) -> Request | Response | None:
    try:
        return parse_message(data)
    except Exception:  # a shape the parser refuses: nothing to copy
        return None


@settings(max_examples=300, deadline=None)
@given(_messages())
def test_a_copy_is_what_the_constructor_makes(data: bytes) -> None:
    """``copy()`` gives the bytes of ``Request(...)``/``Response(...)`` over a copy of the
    headers (Request-Line printed anew, SIP/2.0, Content-Length as the body has it): the
    old ``copy_request``/``relay_response`` copies."""
    message = _parsed(data)
    if message is None:
        return
    if isinstance(message, Request):
        made: Request | Response = Request(
            message.method, message.uri, message.headers.copy(), message.body
        )
        copied: Request | Response = copy_request(message)
    else:
        made = Response(message.status, message.reason, message.headers.copy(), message.body)
        copied = message.copy()
    assert bytes(copied) == bytes(made)
    copied.headers.add("X-B", "2")
    made.headers.add("X-B", "2")
    assert bytes(copied) == bytes(made)
    assert bytes(message) == bytes(parse_message(data))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa",
                "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKb;rport=5;received=1.2.3.4",
                'SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKc;x="a, b"',
                "SIP/2.0/TCP [::1]:5061;branch=z9hG4bKd",
            ]
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(1, 3), min_size=1, max_size=4),
    st.sampled_from([", ", ",", " ,  "]),
)
def test_the_relayed_response_reads_the_vias_a_parse_reads(
    values: list[str], per_line: list[int], comma: str
) -> None:
    """``pop_via`` keeps the parsed Via values less the top one: those a parse of what it
    sends gives, however the values share lines."""
    lines, i = [], 0
    for n in per_line:
        if i < len(values):
            lines.append("Via: " + comma.join(values[i : i + n]))
            i += n
    rest = ["From: <sip:a@b>;tag=1", "To: <sip:c@d>;tag=2", "Call-ID: c1", "CSeq: 1 INVITE"]
    text = "\r\n".join(["SIP/2.0 180 Ringing", *lines, *rest, "Content-Length: 0", "", ""])
    response = parse_message(text.encode())
    assert isinstance(response, Response)
    assert validate_response(response) is None
    out = relay_response(response)
    again = parse_message(bytes(out))
    assert [str(v) for v in out.via] == [str(v) for v in again.via]
    assert [str(v) for v in out.via] == [str(v) for v in response.via[1:]]
    assert out.top_via == again.top_via


def _old_for_request(request: Request, status: int, to_tag: str | None) -> Response:
    """``Response.for_request`` as it was: a subset by comprehension, then the constructor."""
    keys = {"via", "from", "to", "call-id", "cseq"}
    h = request.headers
    idx = [i for i, k in enumerate(h._keys) if k in keys]
    subset = Headers._from_wire(
        [h._keys[i] for i in idx],
        [h._names[i] for i in idx],
        [h._values[i] for i in idx],
        [h._raw[i] for i in idx],
    )
    if to_tag is not None and "to" in subset and request.to_tag is None:
        subset.set("To", f"{subset.get('to') or ''};tag={to_tag}")
    return Response(status, None, subset)


@settings(max_examples=300, deadline=None)
@given(_messages(), st.sampled_from([100, 180, 487]), st.sampled_from([None, "t1"]))
def test_for_request_copies_what_it_copied(data: bytes, status: int, to_tag: str | None) -> None:
    message = _parsed(data)
    if not isinstance(message, Request):
        return
    try:
        expected = bytes(_old_for_request(message, status, to_tag))
    except Exception as exc:  # a malformed To: the same error either way
        with pytest.raises(type(exc)):
            Response.for_request(message, status, to_tag=to_tag)
        return
    answer = Response.for_request(message, status, to_tag=to_tag)
    assert bytes(answer) == expected
    _check_index(answer.headers)


# -- Headers: copies that share until edited, the index an edit keeps ---------------------

_NAMES = st.sampled_from(["Via", "v", "Route", "Max-Forwards", "X-A", "To", "Content-Length"])
_VALUES = st.sampled_from(["1", "a, b", "<sip:z@y;lr>", '"x, y" <sip:q@r>'])
_OPS = st.lists(
    st.tuples(
        st.integers(0, 3),  # which of the Headers alive so far
        st.sampled_from(["set", "add", "prepend", "remove", "pop_first", "copy", "read"]),
        _NAMES,
        _VALUES,
    ),
    max_size=25,
)


def _model(h: Headers) -> list[tuple[str, str, str, bytes | None]]:
    return list(zip(h._keys, h._names, h._values, h._raw, strict=True))


def _check_index(h: Headers) -> None:
    if h._index is not None:
        assert h._index == build_index(h._keys, h._values)


def _fresh(lines: list[tuple[str, str, str, bytes | None]]) -> Headers:
    """A Headers with lists of its own and no index: what every edit used to work on."""
    return Headers._from_wire(
        [k for k, _, _, _ in lines],
        [n for _, n, _, _ in lines],
        [v for _, _, v, _ in lines],
        [r for _, _, _, r in lines],
    )


@settings(max_examples=400, deadline=None)
@given(_messages(), _OPS)
def test_copies_share_until_edited_and_edits_keep_the_index(
    data: bytes, ops: list[tuple[int, str, str, str]]
) -> None:
    """Any edits on a message's headers and copies of copies: each gives what the same
    edits give on lists of its own (bytes, reads), the others never see them, and the
    index an edit brings up to date is the one a read would build."""
    message = _parsed(data)
    if message is None:
        return
    alive = [message.headers]
    models = [_fresh(_model(message.headers))]
    for which, op, name, value in ops:
        i = which % len(alive)
        h, m = alive[i], models[i]
        if op == "copy":
            alive.append(h.copy())
            models.append(_fresh(_model(m)))
        elif op == "read":
            assert h.get_all(name) == m.get_all(name)
            assert h.get(name) == m.get(name)
            assert (canonical_key(name) in h) == (canonical_key(name) in m)
        elif op in ("remove", "pop_first"):
            assert getattr(h, op)(name) == getattr(m, op)(name)
        else:
            getattr(h, op)(name, value)
            getattr(m, op)(name, value)
        for h2, m2 in zip(alive, models, strict=True):
            assert _model(h2) == _model(m2)
            assert h2.to_bytes() == m2.to_bytes()
            _check_index(h2)


def test_a_field_of_many_lines_leaves_its_index_to_the_next_read() -> None:
    """Past a few lines of one field an edit drops the index rather than copying the
    field's tuple per edit (a hostile request's thousands of lines): reads are the same."""
    lines = [b"SIP/2.0 200 OK", *(b"Route: <sip:r%d;lr>" % i for i in range(20)), b"", b""]
    message = parse_message(b"\r\n".join(lines))
    model = _fresh(_model(message.headers))
    h = message.headers.copy()
    for op in ("prepend", "add", "pop_first", "prepend", "pop_first", "add"):
        if op == "pop_first":
            assert h.pop_first("Route") == model.pop_first("Route")
        else:
            getattr(h, op)("Route", "<sip:new;lr>")
            getattr(model, op)("Route", "<sip:new;lr>")
        _check_index(h)
        assert h.get_all("Route") == model.get_all("Route")
        assert h.to_bytes() == model.to_bytes()
    assert message.headers.count("Route") == 20
