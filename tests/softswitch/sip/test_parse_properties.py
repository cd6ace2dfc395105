"""Properties: the parser is total, serialisation is stable, URIs and values round-trip.

"Total" means: for any input bytes, ``parse_message`` returns a message or raises
SipParseError, and so does every typed property of a message it returned.
"""

from __future__ import annotations

from byte_mutations import mutate
from hypothesis import example, given
from hypothesis import strategies as st

from softswitch.sip import (
    Request,
    Response,
    SipParseError,
    SipURI,
    Via,
    frame_length,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    validate_request,
    validate_response,
)

SEED = (
    b"INVITE sip:+15551234567@gw.example.net;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-77ba;rport, SIP/2.0/TCP [2001:db8::1]\r\n"
    b"Max-Forwards: 69\r\n"
    b"To: <sip:+15551234567@gw.example.net>\r\n"
    b'From: "Caller \\"x\\"" <sip:100@customer.example.com>;tag=9fxced76sl\r\n'
    b"Call-ID: 3848276298220188511@198.51.100.20\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:100@198.51.100.20:5060;transport=udp>;expires=60\r\n"
    b"Route: <sip:proxy.example.net;lr>\r\n"
    b'Proxy-Authorization: Digest username="u", realm="r", nonce="n", uri="sip:x"\r\n'
    b'Reason: Q.850;cause=16;text="x"\r\n'
    b"Subject: folded\r\n value\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 10\r\n"
    b"\r\n"
    b"v=0\r\ns=-\r\n"
)
SEED_RESPONSE = (
    b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@h>;tag=1\r\n"
    b"t: <sip:b@h>;tag=2\r\ni: c\r\nCSeq: 1 INVITE\r\nRecord-Route: <sip:p;lr>\r\n"
    b"WWW-Authenticate: Digest realm=r, nonce=n\r\nl: 0\r\n\r\n"
)


def exercise(m: Request | Response) -> None:
    """Read every typed property; only SipParseError may come out of any of them."""
    properties = [
        "via",
        "top_via",
        "call_id",
        "cseq",
        "from_",
        "to",
        "from_tag",
        "to_tag",
        "max_forwards",
        "content_length",
        "contact",
        "route",
        "record_route",
        "content_type",
        "media_type",
        "authorization",
        "proxy_authorization",
        "www_authenticate",
        "proxy_authenticate",
        "reasons",
    ]
    for name in properties:
        try:
            value = getattr(m, name)
        except SipParseError:
            continue
        if isinstance(value, list):
            for item in value:
                str(item)
        elif value is not None:
            str(value)
    refusal = validate_request(m) if isinstance(m, Request) else validate_response(m)
    assert refusal is None or (isinstance(refusal[0], int) and refusal[1])


def check_total(data: bytes) -> None:
    for stream in (False, True):
        error: SipParseError | None = None
        try:
            m = parse_message(data, stream=stream)
        except SipParseError as e:
            error = e
        if error is not None:
            assert 400 <= error.status <= 599
            assert error.reason
            assert all(isinstance(v, str) for _, v in error.partial)
            continue
        exercise(m)
        out = bytes(m)
        # What we emit is itself a message we parse back to the same bytes.
        again = parse_message(out, stream=stream)
        assert bytes(again) == out
        assert again.body == m.body
        assert type(again) is type(m)
    try:
        n = frame_length(data)
    except SipParseError:
        return
    assert n is None or 0 < n <= len(data)


@given(st.binary(max_size=600))
@example(b"")
@example(b"\r\n")
@example(b"SIP/2.0 200 OK\n\n")
@example(b"A sip:a@b SIP/2.0\r\nX:\r\n \r\n\r\n")
def test_arbitrary_bytes(data: bytes) -> None:
    check_total(data)


#: Bytes that matter to SIP's grammar, for the mutations.
INTERESTING = [b"\r\n", b"\n", b"\r", b" ", b"\t", b",", b";", b":", b"<", b">", b'"', b"\\",
               b"%", b"=", b"@", b"[", b"]", b"/", b"?", b"\x00", b"\xff", b"9" * 30, b"",
               b"z9hG4bK"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw, draw(st.sampled_from([SEED, SEED_RESPONSE])), INTERESTING, max_edits=6)


@given(mutated())
def test_mutated_valid_messages(data: bytes) -> None:
    check_total(data)


def test_seeds_are_valid() -> None:
    # The mutation test is only meaningful if the seeds themselves are fully valid.
    for seed in (SEED, SEED_RESPONSE):
        m = parse_message(seed, stream=True)
        assert bytes(m) == seed
        refusal = validate_request(m) if isinstance(m, Request) else validate_response(m)
        assert refusal is None


# -- structured round trips -----------------------------------------------------------------

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
label = st.text(ALNUM, min_size=1, max_size=8)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
host = st.one_of(hostname, ipv6)
user = st.text(ALNUM + "-_.!~*'()&=+$,;?/", min_size=1, max_size=12)
pname = st.text(ALNUM + "-_.!~*'()", min_size=1, max_size=6)
pvalue = st.one_of(st.none(), st.text(ALNUM + "-_.!~*'()[]/:&+$", min_size=1, max_size=8))
params = st.dictionaries(pname, pvalue, max_size=3)
token = st.text(ALNUM + "-.!%*_+`'~", min_size=1, max_size=6)
header_params = st.dictionaries(token, st.one_of(st.none(), token), max_size=3)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    u = draw(st.one_of(st.none(), user))
    return SipURI(
        draw(st.sampled_from(["sip", "sips"])),
        u,
        draw(st.one_of(st.none(), st.text(ALNUM, min_size=1, max_size=6))) if u else None,
        draw(host),
        draw(st.one_of(st.none(), st.integers(0, 65535))),
        draw(params),
        draw(st.dictionaries(pname, st.text(ALNUM + "%", max_size=5).filter(
            lambda s: "%" not in s), max_size=2)),
    )  # fmt: skip


@given(sip_uris())
def test_sip_uri_round_trip(uri: SipURI) -> None:
    text = str(uri)
    parsed = parse_uri(text)
    assert str(parsed) == text
    assert parsed == uri
    assert hash(parsed) == hash(uri)


@given(
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
    host,
    st.one_of(st.none(), st.integers(1, 65535)),
    st.booleans(),
)
def test_via_round_trip(transport: str, h: str, port: int | None, rport: bool) -> None:
    via = Via.new(transport, h, port, rport=rport)
    assert parse_via(str(via)) == via


@given(sip_uris(), st.one_of(st.none(), st.text(min_size=1, max_size=20)), header_params)
def test_name_addr_round_trip(
    uri: SipURI, display: str | None, hparams: dict[str, str | None]
) -> None:
    from softswitch.sip import NameAddr

    na = NameAddr(uri, display.replace("\r", "").replace("\n", "") if display else None, hparams)
    assert parse_name_addr(str(na)) == na


@given(sip_uris())
def test_uri_fast_path_agrees_with_general_parse(uri: SipURI) -> None:
    from softswitch.sip.uri import _parse_sip, _parse_sip_general

    scheme, _, rest = str(uri).partition(":")
    fast, general = _parse_sip(scheme, rest), _parse_sip_general(scheme, rest)
    assert (str(fast), fast.params, fast.headers) == (str(general), general.params, general.headers)
    assert (fast.user, fast.password, fast.host, fast.port) == (
        general.user,
        general.password,
        general.host,
        general.port,
    )


# -- Headers against a plain list model ------------------------------------------------------

NAMES = ["Via", "v", "Route", "Subject", "s", "X-A", "x-a"]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "prepend", "set", "remove", "pop_first"]),
        st.sampled_from(NAMES),
        st.text(ALNUM + " ", min_size=1, max_size=5).map(str.strip).filter(bool),
    ),
    max_size=25,
)


@given(OPS)
def test_headers_match_a_list_model(ops: list[tuple[str, str, str]]) -> None:
    from softswitch.sip import Headers
    from softswitch.sip.headers import canonical_key

    h = Headers()
    model: list[tuple[str, str]] = []  # (key, value); values hold no commas
    for op, name, value in ops:
        key = canonical_key(name)
        positions = [i for i, (k, _) in enumerate(model) if k == key]
        if op == "add":
            h.add(name, value)
            model.insert(positions[-1] + 1 if positions else len(model), (key, value))
        elif op == "prepend":
            h.prepend(name, value)
            model.insert(positions[0] if positions else 0, (key, value))
        elif op == "set":
            h.set(name, value)
            if positions:
                model[positions[0]] = (key, value)
                model = [e for i, e in enumerate(model) if i not in positions[1:]]
            else:
                model.append((key, value))
        elif op == "remove":
            assert h.remove(name) == len(positions)
            model = [e for e in model if e[0] != key]
        else:
            expected = model[positions[0]][1] if positions else None
            assert h.pop_first(name) == expected
            if positions:
                del model[positions[0]]
        assert h.names() == [k for k, _ in model]
        for n in NAMES:
            k = canonical_key(n)
            assert h.get_all(n) == [v for kk, v in model if kk == k]
            assert (n in h) == any(kk == k for kk, _ in model)
    assert parse_message(
        b"OPTIONS sip:a@h SIP/2.0\r\n" + h.to_bytes() + b"\r\n"
    ).headers.names() == (h.names())
