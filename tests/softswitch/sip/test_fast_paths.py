"""The shortcuts of the message layer read exactly what the general code reads.

Each shortcut (the parser's path for plain CRLF header sections, the start-line caches,
header keys by look-up, the one-pattern Via and parameter parses, the name-addr prefix
cache, the forced parses of ``validate``) only runs where its input has the common shape,
and must then give what the general code gives: the same value, or the same SipParseError.
Checked here on the RFC 4475/5118 messages, on mutations of valid messages, and on values
built to sit on the edge of each shortcut's shape.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from byte_mutations import mutate
from hypothesis import example, given, settings
from hypothesis import strategies as st

from captured_call import RINGING_IN
from softswitch.sip import (
    Request,
    Response,
    SipParseError,
    SipURI,
    fields,
    grammar,
    parse_uri,
    parser,
)
from softswitch.sip import headers as headers_module
from softswitch.sip.headers import Headers, build_index, canonical_key
from softswitch.sip.message import (
    _contacts,
    _first_cseq,
    _first_name_addr,
    _parse_content_length,
    _parse_max_forwards,
)
from softswitch.sip.validate import validate_request, validate_response

CONFORMANCE = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance"
CORPUS = sorted(CONFORMANCE.glob("*/*.dat")) if CONFORMANCE.is_dir() else []

INVITE = (
    b"INVITE sip:441234567@127.0.0.1:39585 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0\r\n"
    b'From: "caller" <sip:1000@127.0.0.1:58614>;tag=32551SIPpTag0048\r\n'
    b"To: <sip:441234567@127.0.0.1:39585>\r\n"
    b"Call-ID: 48-32551@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:1000@127.0.0.1:58614;transport=UDP>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   17\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"s=-\r\n"
    b"t=0 0\r\n"
)
RESPONSE = RINGING_IN
# Shapes beside the usual one: compact and odd-case names, unknown fields, repeated
# fields, blanks before the colon, folding, bare LF, leading CRLF, no header at all.
ODD = (
    b"BYE sip:carrier@127.0.0.1:38514;transport=UDP SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-7;rport\r\n"
    b"VIA: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK-8\r\n"
    b"route: <sip:127.0.0.1:39585;lr>, <sip:b.example;lr>\r\n"
    b"f: caller <sip:1000@127.0.0.1>;tag=a\r\n"
    b"t: sip:2000@127.0.0.1;tag=b\r\n"
    b"i: 48-32551@127.0.0.1\r\n"
    b"cseq: 2 BYE\r\n"
    b"X-Custom : value\r\n"
    b"x-custom:other\r\n"
    b"Max-Forwards:70\r\n"
    b"l: 0\r\n"
    b"\r\n"
)
SEEDS = [
    INVITE,
    RESPONSE,
    ODD,
    b"\r\n" + INVITE,
    INVITE.replace(b"\r\n", b"\n"),
    INVITE.replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1\r\n INVITE\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 7\r0\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b": 70\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max Forwards: 70\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards\t: 70 \t\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n\t\r\n"),
    INVITE.replace(b"Max-Forwards: 70\r\n", b"Subject: \xc3\xa9t\xe9\r\n"),
    RESPONSE.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 0\r\n"),
    b"OPTIONS sip:a@b SIP/2.0\r\n\r\n",
    b"SIP/2.0 200 OK\r\n\r\n",
    b"SIP/2.0 200 OK\r\nX: y\r\n\r\n",
]

INTERESTING = [b"\r\n", b"\n", b"\r", b" ", b"\t", b",", b";", b":", b"<", b">", b'"', b"=",
               b"@", b"[", b"]", b"/", b"\x00", b"\xff", b"l", b"v", b"Via", b"SIP/2.0 ",
               b"9" * 11, b"", b"z9hG4bK"]  # fmt: skip


def outcome(f: Callable[[], Any], describe: Callable[[Any], Any] = lambda v: v) -> Any:
    try:
        return ("ok", describe(f()))
    except SipParseError as e:
        return ("error", e.reason, e.status, e.partial)


def clear_caches() -> None:
    for module in (fields, parser, headers_module):
        for name, value in vars(module).items():
            if name.startswith("_") and name.endswith("_cache") and isinstance(value, dict):
                value.clear()


def describe_message(m: Request | Response) -> Any:
    h = m.headers
    start = (
        (m.method, str(m.uri), m.version)
        if isinstance(m, Request)
        else (m.status, m.reason, m.version)
    )
    return (
        type(m).__name__,
        start,
        m._start,
        h._keys,
        h._names,
        h._values,
        h._raw,
        h._line_index(),
        h._cache,
        m.body,
        bytes(m),
    )


def general_parse(data: bytes, stream: bool) -> Request | Response:
    return parser._parse_lines(data, stream, *parser._split_head(data, stream))


def check_message(data: bytes) -> None:
    for stream in (False, True):
        check_framing(data, stream)


def check_framing(data: bytes, stream: bool) -> None:
    clear_caches()
    fast = outcome(lambda: parser._parse(data, stream), describe_message)
    # Again, with the start line now remembered (when it was well-formed).
    fast_again = outcome(lambda: parser._parse(data, stream), describe_message)
    clear_caches()
    general = outcome(lambda: general_parse(data, stream), describe_message)
    assert fast == general
    assert fast_again == general
    if fast[0] == "ok":
        m = parser._parse(data, stream)
        h = m.headers
        assert h._line_index() == build_index(h._keys, h._values)
        check_validation(data, stream)


def check_validation(data: bytes, stream: bool) -> None:
    """``validate``'s forced parses cache what the properties' own parses give."""
    m = parser._parse(data, stream)
    refusal = validate_request(m) if isinstance(m, Request) else validate_response(m)
    parses: dict[str, Callable[[list[str]], object]] = {
        "via": fields.parse_via_list,
        "from": _first_name_addr,
        "to": _first_name_addr,
        "cseq": _first_cseq,
        "max-forwards": _parse_max_forwards,
        "contact": _contacts,
        "record-route": fields.parse_name_addr_list,
        "content-length": _parse_content_length,
        "route": fields.parse_name_addr_list,
    }
    for key, value in m.headers._cache.items():
        assert outcome(lambda key=key: parses[key](m.headers.get_all(key))) == ("ok", value)
    if refusal is None:
        assert set(m.headers._cache) >= set(parses) - {"route"}


@pytest.mark.skipif(not CORPUS, reason="no conformance messages beside the checkout")
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_conformance_messages(path: Path) -> None:
    check_message(path.read_bytes())


@pytest.mark.parametrize("data", SEEDS)
def test_seed_messages(data: bytes) -> None:
    check_message(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw, draw(st.sampled_from(SEEDS[:3])), INTERESTING, max_edits=5)


@given(mutated())
def test_mutated_messages(data: bytes) -> None:
    check_message(data)


# -- header keys --------------------------------------------------------------------------


def test_known_spellings_give_the_general_key() -> None:
    for spelling, key in headers_module._KEY_OF.items():
        assert key == headers_module._slow_key(spelling)
        assert grammar.TOKEN_RE.fullmatch(spelling)


@given(st.text(alphabet="aAcCfFiIlLmMtTvVxX-_ \tİß", max_size=16))
@example("Call-ID")
@example("CALL-ID")
@example("I")
def test_canonical_key(name: str) -> None:
    low = name.lower()
    assert canonical_key(name) == grammar.COMPACT_FORMS.get(low, low)


def test_headers_read_through_the_index_and_without() -> None:
    h = Headers([("Via", "a, b"), ("X-A", "1"), ("x-a", "2"), ("Route", "<sip:r>")])
    indexed = Headers._from_wire(
        h._keys, h._names, h._values, h._raw, build_index(h._keys, h._values)
    )
    plain = Headers._from_wire(list(h._keys), list(h._names), list(h._values), list(h._raw))
    for name in ("via", "V", "X-A", "route", "missing"):
        assert indexed.get(name) == plain.get(name)
        assert (name in indexed) == (name in plain)
        assert indexed.get_all(name) == plain.get_all(name)  # (builds plain's index)
    plain._index = None
    assert indexed.key_counts() == plain.key_counts() == {"via": 1, "x-a": 2, "route": 1}


# -- Via and parameters --------------------------------------------------------------------

TOKEN_CHARS = "abzAZ09-.!%*_+`'~"
pieces = st.sampled_from(["SIP/2.0/", "sip/2.0/", "SIP / 2.0 / ", "SIP/2.0/UDP", "UDP", "udp",
                          "TLS", "SCTP", "X-Y", " ", "  ", "\t", ":", " : ", "5060", "65536",
                          "123456", "0", "1.2.3.4", "host", "a.b.", "a-", "-a", "a..b", "[::1]",
                          "[2001:db8::1]", "::1", ";", " ; ", "=", " = ", "branch", "BRANCH",
                          "z9hG4bK-1", "rport", "received", "ttl", "255", "256", "maddr",
                          '"q"', '"', "[", "]", "/", "@", "?", ",", "é", ""])  # fmt: skip
via_like = st.builds(
    "".join,
    st.lists(st.one_of(pieces, st.text(TOKEN_CHARS + ";=: ", max_size=4)), max_size=12),
)
plain_via = st.builds(
    lambda t, h, p, ps: f"SIP/2.0/{t} {h}{p}{ps}",
    st.sampled_from(["UDP", "tcp", "Tls", "X"]),
    st.sampled_from(["1.2.3.4", "host.example", "a.b.", "[2001:db8::1]", "h-1", "1.2.3.4.5"]),
    st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":123456"]),
    st.lists(
        st.tuples(
            st.sampled_from(["branch", "Branch", "rport", "RPORT", "ttl", "received", "x"]),
            st.sampled_from([None, "", "z9hG4bK-1", "12", "256", "65536", "a:b", "1.2.3.4"]),
        ),
        max_size=4,
    ).map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps)),
)


SPECIALS = ' \t;=:,/@?<>"[]\\%#&$+*sS9é\x00'


@st.composite
def perturbed(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A value of ``base`` with a few characters inserted, replaced or deleted: values on
    the edge of the shapes the shortcuts take."""
    text = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(SPECIALS))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        if action == "insert":
            text = text[:pos] + char + text[pos:]
        elif action == "replace":
            text = text[:pos] + char + text[pos + 1 :]
        else:
            text = text[:pos] + text[pos + 1 :]
    return text


def describe_via(v: fields.Via) -> Any:
    return (v, type(v.params), list(v.params.items()))


@settings(max_examples=1000)
@given(st.one_of(plain_via, perturbed(plain_via), via_like))
@example("SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0")
@example("SIP/2.0/UDP host;branch=")
@example("SIP/2.0/UDP host;ttl=256")
@example("SIP/2.0/UDP host;rport=65536")
@example("SIP/2.0/UDP host:65536")
@example("SIP/2.0/UDP a..b")
@example("SIP/2.0/UDP host;Branch=x;branch=")
def test_via_shortcut(value: str) -> None:
    general = outcome(lambda: fields._parse_via_general(value), describe_via)
    assert outcome(lambda: fields._parse_via(value), describe_via) == general
    if grammar.VIA_COMMON_RE.fullmatch(value) is not None:
        assert general[0] == "ok" or general[1] != "Bad Via parameter"


params_like = st.builds(
    "".join,
    st.lists(
        st.one_of(
            st.sampled_from([";", " ;", "; ", "=", " = ", "tag", "lr", '"a b"', '"', "[::1]",
                             "1.2.3.4", "a:b", "é", ",", " ", "\t", "/", "<", ">", "?", "@"]),
            st.text(TOKEN_CHARS, max_size=4),
        ),
        max_size=10,
    ),
)  # fmt: skip


plain_params = st.lists(
    st.tuples(
        st.text(TOKEN_CHARS, min_size=1, max_size=4),
        st.one_of(st.none(), st.text(TOKEN_CHARS + ":", min_size=1, max_size=5)),
    ),
    max_size=4,
).map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps))
params_built = st.lists(
    st.tuples(
        st.sampled_from([";", " ;", "; ", "", ","]),
        st.text(TOKEN_CHARS + ":/é", max_size=4),
        st.sampled_from(["", "=", " = ", "=="]),
        st.text(TOKEN_CHARS + ':/"[]@?<> é', max_size=5),
    ),
    max_size=4,
).map(lambda ps: "".join("".join(p) for p in ps))


@settings(max_examples=1000)
@given(
    st.one_of(plain_params, perturbed(plain_params), params_built, params_like),
    st.integers(0, 3),
)
@example(";tag=a;lr", 0)
@example(";tag=", 0)
@example(";tag==a", 0)
@example("x;a=b;c", 1)
@example(";tag=a/b", 0)
@example(";maddr=[::1];x", 0)
def test_params_shortcut(text: str, pos: int) -> None:
    describe = lambda p: list(p.items())  # noqa: E731
    general = outcome(lambda: fields._parse_params_general(text, pos, "x"), describe)
    assert outcome(lambda: fields.parse_params(text, pos, "x"), describe) == general


# -- name-addr prefix cache ------------------------------------------------------------------

heads = st.sampled_from(['"caller" <sip:1000@h>', "<sip:a@h>", "caller <sip:a@h>",
                         '"a>b" <sip:a@h>', '"a\\"<" <sip:a@h>', "<sip:a@h;lr>", "<tel:+1>",
                         "<urn:x>", "sip:a@h",
                         '"x"<sip:a@h>', "<sip:a@h", "<sip:a>b@h>", "a b <sip:a@h>", " <sip:a@h>",
                         "<sip:a@h>>", "<>", ""])  # fmt: skip
tails = st.sampled_from(["", ";tag=1", ";tag=2;x", " ;tag=3", ";tag", ";tag=", ">", ">;t=1",
                         ';tag="q"', ";x=<y>", "?", " "])  # fmt: skip


def describe_name_addr(na: fields.NameAddr) -> Any:
    return (na.uri, str(na.uri), na.display, list(na.params.items()))


@settings(max_examples=1000)
@given(heads, tails, tails)
def test_name_addr_prefix_cache(head: str, first: str, second: str) -> None:
    clear_caches()
    outcome(lambda: fields.parse_name_addr(head + first))  # may fill the prefix cache
    value = head + second
    general = outcome(lambda: fields._parse_name_addr(value), describe_name_addr)
    assert outcome(lambda: fields.parse_name_addr(value), describe_name_addr) == general


# -- every one-character edit of typical values ------------------------------------------------
# Random generation finds a shortcut that takes one character too many only by luck; these
# try each special character at each position of typical values, inserted and replaced.


def one_char_edits(base: str) -> list[str]:
    out = []
    for pos in range(len(base) + 1):
        out.append(base[:pos] + base[pos + 1 :])
        for char in SPECIALS:
            out.append(base[:pos] + char + base[pos:])
            out.append(base[:pos] + char + base[pos + 1 :])
    return out


VIA_VALUES = [
    "SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-32551-48-0",
    "SIP/2.0/TCP gw.example.net;branch=z9hG4bKx;rport;received=1.2.3.4",
    "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK.a;ttl=16;maddr=h",
]
PARAM_VALUES = [";tag=32551SIPpTag0048", ";lr;transport=udp;x=a:b", ";q=0.5;expires=60"]
NAME_ADDR_HEADS = ['"caller" <sip:1000@127.0.0.1:58614>', "<sip:441234567@127.0.0.1:39585>"]


def test_via_one_char_edits() -> None:
    for base in VIA_VALUES:
        for value in one_char_edits(base):
            general = outcome(lambda v=value: fields._parse_via_general(v), describe_via)
            assert outcome(lambda v=value: fields._parse_via(v), describe_via) == general, value


def test_params_one_char_edits() -> None:
    describe = lambda p: list(p.items())  # noqa: E731
    for base in PARAM_VALUES:
        for text in one_char_edits(base):
            general = outcome(lambda t=text: fields._parse_params_general(t, 0, "x"), describe)
            assert outcome(lambda t=text: fields.parse_params(t, 0, "x"), describe) == general, text


def test_name_addr_one_char_edits() -> None:
    for head in NAME_ADDR_HEADS:
        for edited in one_char_edits(head):
            for value in (edited + ";tag=1", edited):
                clear_caches()
                outcome(lambda h=head: fields.parse_name_addr(h + ";tag=0"))  # a known prefix
                outcome(lambda e=edited: fields.parse_name_addr(e + ";tag=2"))
                general = outcome(lambda v=value: fields._parse_name_addr(v), describe_name_addr)
                got = outcome(lambda v=value: fields.parse_name_addr(v), describe_name_addr)
                assert got == general, value


def test_message_one_byte_edits() -> None:
    for seed in (INVITE, RESPONSE):
        head = seed.index(b"\r\n\r\n") + 4
        for pos in range(head + 1):
            for char in (b"\r", b"\n", b" ", b"\t", b":", b"\x00"):
                check_framing(seed[:pos] + char + seed[pos:], False)
                check_framing(seed[:pos] + char + seed[pos + 1 :], False)
            check_framing(seed[:pos] + seed[pos + 1 :], False)


# -- objects made without their __init__, printed forms kept ----------------------------------


def test_parsed_via_is_the_dataclass_value() -> None:
    via = fields._parse_via("SIP/2.0/UDP 127.0.0.1:58614;branch=z9hG4bK-1;rport")
    made = fields.Via("UDP", "127.0.0.1", 58614, {"branch": "z9hG4bK-1", "rport": None})
    assert via == made
    assert repr(via) == repr(made)
    assert str(via) == str(made)
    assert via.with_params(received="1.2.3.4") == made.with_params(received="1.2.3.4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        via.host = "x"  # type: ignore[misc]


def test_uri_printed_form_follows_copies() -> None:
    uri = parse_uri("sip:carrier@127.0.0.1:38514;transport=UDP")
    assert isinstance(uri, SipURI)
    assert str(uri) == "sip:carrier@127.0.0.1:38514;transport=UDP"
    assert str(uri) == "sip:carrier@127.0.0.1:38514;transport=UDP"  # (the kept form)
    assert str(uri.with_params(lr=None)) == "sip:carrier@127.0.0.1:38514;transport=UDP;lr"
    assert str(uri.with_(host="h")) == "sip:carrier@h:38514;transport=UDP"
    assert str(dataclasses.replace(uri, port=None)) == "sip:carrier@127.0.0.1;transport=UDP"
    assert str(uri) == "sip:carrier@127.0.0.1:38514;transport=UDP"
    assert uri == SipURI("sip", "carrier", None, "127.0.0.1", 38514, {"transport": "UDP"})
    assert str(pickle.loads(pickle.dumps(uri))) == str(uri)


def test_lines_set_through_the_api_are_encoded_when_sent() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")])
    assert h.to_bytes() == b"Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
    assert h.pop_first("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    h.set("Max-Forwards", "69")
    h.prepend("v", "SIP/2.0/UDP c;branch=z9hG4bK3")
    assert h.to_bytes() == (
        b"Via: SIP/2.0/UDP c;branch=z9hG4bK3\r\n"
        b"Via: SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
        b"Max-Forwards: 69\r\n"
    )
    h.set("Max-Forwards", "68")
    assert h.to_bytes().endswith(b"Max-Forwards: 68\r\n")
    assert Headers().to_bytes() == b""


def test_a_line_that_will_not_encode_fails_when_sent_not_when_set() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")])
    h.set("Subject", "\ud800")  # a lone surrogate: no UTF-8 for it
    h.add("X-A", "ok")
    with pytest.raises(UnicodeEncodeError):
        h.to_bytes()
    with pytest.raises(UnicodeEncodeError):
        bytes(Request("OPTIONS", "sip:a@b", h))
    h.set("Subject", "fine")
    assert h.to_bytes() == (
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nSubject: fine\r\nX-A: ok\r\n"
        b"Content-Length: 0\r\n"  # (added by the Request)
    )


def test_long_values_are_parsed_but_not_kept_by_the_caches() -> None:
    """A peer's 64 KiB values must not be held by the parse caches (a review found them
    holding gigabytes at the caches' entry limits)."""
    from softswitch.sip import fields, parser, uri

    method = "X" * 2000
    long_host = "h" * 600 + ".example"
    cases = [
        (fields.parse_cseq, f"1 {method}", fields._cseq_cache),
        (fields.parse_via, f"SIP/2.0/UDP {long_host};branch=z9hG4bK1", fields._via_cache),
        (fields.parse_name_addr, f"<sip:{long_host}>;tag=1", fields._name_addr_cache),
        (uri.parse_uri, f"sip:{long_host}", uri._sip_cache),
    ]
    for parse, text, cache in cases:
        assert parse(text) == parse(text)
        assert text not in cache
    assert not any(len(k) > fields.CACHED_TEXT_MAX for k in fields._bracketed_cache)
    status = b"SIP/2.0 200 " + b"O" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    parser.parse_message(status)
    assert not any(len(k) > fields.CACHED_TEXT_MAX for k in parser._status_line_cache)
    short = fields.parse_cseq("7 INVITE")
    assert fields._cseq_cache["7 INVITE"] is short  # short values are still kept
