"""URIs: parsing, printing back exactly, and RFC 3261 19.1.4 comparison."""

from __future__ import annotations

import pytest

from softswitch.sip import AbsoluteURI, SipParseError, SipURI, TelURI, escape, parse_uri, unescape


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:secretword@atlanta.com;transport=tcp",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice@192.0.2.4:5061",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:[2001:db8::10]:5070;lr",
        "sip:user@[::ffff:192.0.2.1]",
        "sip:host.example.com.",
        "sip:a@b;maddr=239.255.255.1;ttl=15",
        "sip:carol@chicago.com?Subject=next%20meeting&Priority=urgent",
        "tel:+358-555-1234567;postd=pp22",
        "urn:service:sos",
        "http://www.example.com/a?b=c",
    ],
)
def test_str_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_sip_uri_fields() -> None:
    uri = parse_uri("sips:alice:pw@[2001:db8::1]:5061;transport=TCP;lr?subject=hi")
    assert uri == SipURI(
        "sips",
        "alice",
        "pw",
        "[2001:db8::1]",
        5061,
        {"transport": "TCP", "lr": None},
        {"subject": "hi"},
    )
    assert isinstance(uri, SipURI)
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.param("TRANSPORT") == "TCP"
    assert uri.param("maddr") is None


def test_user_may_hold_semicolon_and_question_mark() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(uri, SipURI)
    assert (uri.user, uri.host, dict(uri.params)) == ("user;par=u%40example.net", "example.com", {})
    uri2 = parse_uri("sip:wh?at@example.com?h=v")
    assert isinstance(uri2, SipURI)
    assert (uri2.user, dict(uri2.headers)) == ("wh?at", {"h": "v"})


def test_tel_and_absolute() -> None:
    tel = parse_uri("tel:+1-201-555-0123;ext=1")
    assert isinstance(tel, TelURI)
    assert (tel.number, tel.digits, dict(tel.params)) == (
        "+1-201-555-0123",
        "+12015550123",
        {"ext": "1"},
    )
    assert tel == parse_uri("tel:+1(201)5550123;EXT=1")
    other = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert other == AbsoluteURI("nobodyKnowsThisScheme", "totallyopaquecontent")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice@atlanta.com",  # no scheme
        "<sip:alice@atlanta.com>",
        "sip:",
        "sip:user@",
        "sip:user@host:99999",
        "sip:user@host:port",
        "sip:user@2001:db8::10",  # RFC 5118 ipv6-bad: brackets are mandatory
        "sip:user@[2001:db8::10",
        "sip:us er@host",
        "sip:user@host;",
        "sip:user@host;a=b;;c",
        "sip:user@host?",
        "sip:user@host?noequals",
        "sip:user@ho_st",
        "sip:user@host; lr",
        "tel:",
        "tel:+1;",
        "foo:has space",
        "foo:<x>",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


# RFC 3261 19.1.4, the examples the RFC lists.
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("sip:[2001:db8::10]", "sip:[2001:DB8:0:0::10]"),
]
NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com", "sip:atlanta.com"),
    ("sip:alice:a@atlanta.com", "sip:alice:b@atlanta.com"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_rfc3261_equal(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua == ub
    assert ub == ua
    assert hash(ua) == hash(ub)


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL)
def test_rfc3261_not_equal(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua != ub
    assert ub != ua


def test_different_kinds_never_equal() -> None:
    assert parse_uri("sip:+1234@h") != parse_uri("tel:+1234")
    assert parse_uri("tel:+1234") != parse_uri("urn:x")


def test_copy_helpers() -> None:
    uri = parse_uri("sip:alice@atlanta.com;transport=udp")
    assert isinstance(uri, SipURI)
    moved = uri.with_(host="biloxi.com", port=5070)
    assert str(moved) == "sip:alice@biloxi.com:5070;transport=udp"
    assert str(uri.with_params(lr=None)) == "sip:alice@atlanta.com;transport=udp;lr"
    assert str(uri.without_params("TRANSPORT")) == "sip:alice@atlanta.com"
    # The original is untouched (frozen, copies share nothing mutable with it).
    assert str(uri) == "sip:alice@atlanta.com;transport=udp"


def test_escape_unescape() -> None:
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("%61%6c%69%63%65") == "alice"
    assert unescape("100%") == "100%"
    assert escape("alice smith") == "alice%20smith"
    assert escape("a@b") == "a%40b"
    assert escape("é") == "%C3%A9"
    for text in ("alice smith", "a@b:c", "é%", "+1;x=y"):
        assert unescape(escape(text)).encode("latin-1") == text.encode("utf-8")


# Customer equipment (VOS3000-style) sends tech prefixes with an unescaped '#'; RFC 3261
# wants %23. The user part alone accepts it, keeps it as written, and equals %23.


@pytest.mark.parametrize(
    "text",
    [
        "sip:1234#441234567@switch.example",
        "sip:1234#441234567@192.0.2.1:5060;user=phone",
        "sip:*99#44123;isub=1@switch.example?subject=x",  # the general parse
        "sip:#@switch.example",
        "sip:1234#44:pw@switch.example",
    ],
)
def test_unescaped_hash_in_the_user_part_is_accepted_and_kept(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    assert uri.user is not None
    assert "#" in uri.user
    assert str(uri) == text  # forwarded untouched, byte for byte


def test_unescaped_and_escaped_hash_and_star_are_the_same_uri() -> None:
    plain = parse_uri("sip:*99#441234567@switch.example")
    escaped = parse_uri("sip:%2A99%23441234567@switch.example")
    assert plain == escaped
    assert hash(plain) == hash(escaped)
    assert isinstance(plain, SipURI)
    assert isinstance(escaped, SipURI)
    assert unescape(plain.user or "") == unescape(escaped.user or "") == "*99#441234567"


@pytest.mark.parametrize(
    "text",
    [
        "sip:1234@host#frag",  # nowhere but the user part
        "sip:1234@ho#st",
        "sip:1234@host;tp=a#b",
        "sip:1234@host?h=a#b",
        "sip:1234:p#w@host",  # not in the password either
        "sip:12 34#5@host",  # the liberty is '#' only
        "sip:12<34@host",
    ],
)
def test_hash_is_accepted_in_the_user_part_only(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_escape_writes_hash_escaped_and_keeps_star() -> None:
    # '#' is reserved (%23); '*' is a mark, legal unescaped, and carriers expect it as is.
    assert escape("0011#441234567") == "0011%23441234567"
    assert escape("*72#44") == "*72%2344"
    assert escape("%") == "%25"
    assert parse_uri(f"sip:{escape('1234#44*1')}@h") == parse_uri("sip:1234#44*1@h")
