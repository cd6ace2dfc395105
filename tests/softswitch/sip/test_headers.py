"""The header multi-map and the typed header field values."""

from __future__ import annotations

import pytest

from softswitch.sip import (
    BRANCH_MAGIC_COOKIE,
    AbsoluteURI,
    Headers,
    NameAddr,
    SipParseError,
    SipURI,
    Via,
    make_branch,
    make_tag,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_reason,
    parse_uri,
    parse_via,
)
from softswitch.sip.headers import canonical_key, split_commas

# -- Headers ------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_know_compact_forms() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b"), ("i", "x@y")])
    assert h.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert h.get("call-ID") == "x@y"
    assert "Call-Id" in h
    assert "i" in h
    assert "Contact" not in h
    assert canonical_key("m") == "contact"
    assert canonical_key("X-Custom") == "x-custom"


def test_get_all_splits_only_list_headers() -> None:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b"),
            ("Contact", '"Doe, John" <sip:j@h>;q=0.5, <sip:k@h;a=b,c>'),
            ("Authorization", 'Digest username="a", realm="b"'),
            ("Subject", "one, two"),
        ]
    )
    assert h.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP b"]
    assert h.get("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get_all("m") == ['"Doe, John" <sip:j@h>;q=0.5', "<sip:k@h;a=b,c>"]
    assert h.get_all("Authorization") == ['Digest username="a", realm="b"']
    assert h.get_all("Subject") == ["one, two"]
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"
    assert h.get_all("missing") == []


def test_split_commas_keeps_empty_elements_and_escaped_quotes() -> None:
    assert split_commas("a,,b") == ["a", "", "b"]
    assert split_commas(r'"x\", y" <sip:a>, <sip:b>') == [r'"x\", y" <sip:a>', "<sip:b>"]


def test_set_add_prepend_remove_keep_order() -> None:
    h = Headers([("Via", "v1"), ("To", "t"), ("Via", "v2"), ("From", "f")])
    h.prepend("Via", "v0")
    h.add("Via", "v3")
    assert list(h) == [
        ("Via", "v0"),
        ("Via", "v1"),
        ("To", "t"),
        ("Via", "v2"),
        ("Via", "v3"),
        ("From", "f"),
    ]
    h.set("via", "only")
    assert list(h) == [("Via", "only"), ("To", "t"), ("From", "f")]
    h.prepend("Record-Route", "<sip:p;lr>")
    assert h.names()[0] == "record-route"
    h.add("X-New", "1")
    assert h.names()[-1] == "x-new"
    assert h.remove("t") == 1
    assert h.remove("t") == 0
    assert "To" not in h
    assert len(h) == 4
    assert h.count("Via") == 1


def test_pop_first_takes_one_list_element() -> None:
    h = Headers([("Route", "<sip:a;lr>, <sip:b;lr>"), ("Route", "<sip:c;lr>")])
    assert h.pop_first("Route") == "<sip:a;lr>"
    assert h.get_all("Route") == ["<sip:b;lr>", "<sip:c;lr>"]
    assert h.pop_first("Route") == "<sip:b;lr>"
    assert h.pop_first("Route") == "<sip:c;lr>"
    assert h.pop_first("Route") is None
    assert "Route" not in h


def test_serialise_uses_canonical_spelling_for_new_lines() -> None:
    h = Headers()
    h.add("call-id", "abc")
    h.add("cseq", "1 INVITE")
    h.add("www-authenticate", 'Digest realm="r"')
    h.add("X-Odd-Name", "v")
    assert h.to_bytes() == (
        b'Call-ID: abc\r\nCSeq: 1 INVITE\r\nWWW-Authenticate: Digest realm="r"\r\nX-Odd-Name: v\r\n'
    )


@pytest.mark.parametrize(("name", "value"), [("Bad Name", "v"), ("", "v"), ("X", "a\r\nB: c")])
def test_header_injection_is_a_programming_error(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="invalid header field"):
        Headers().add(name, value)


def test_parsed_is_cached_until_modified() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a")])
    calls: list[list[str]] = []

    def parse(values: list[str]) -> int:
        calls.append(values)
        return len(values)

    assert h.parsed("via", parse) == 1
    assert h.parsed("v", parse) == 1
    assert len(calls) == 1
    h.prepend("Via", "SIP/2.0/UDP b")
    assert h.parsed("via", parse) == 2
    assert len(calls) == 2


def test_copy_is_independent() -> None:
    h = Headers([("To", "a")])
    c = h.copy()
    c.set("To", "b")
    assert h.get("to") == "a"
    assert c.get("to") == "b"


# -- Via --------------------------------------------------------------------------------


def test_via_fields() -> None:
    v = parse_via(
        "SIP/2.0/udp [2001:db8::1]:5070;branch=z9hG4bKabc;received=192.0.2.1;rport=5071"
        ";maddr=224.0.0.1;ttl=16;x"
    )
    assert (v.transport, v.host, v.port) == ("UDP", "[2001:db8::1]", 5070)
    assert (v.branch, v.received, v.rport, v.maddr, v.ttl) == (
        "z9hG4bKabc",
        "192.0.2.1",
        5071,
        "224.0.0.1",
        16,
    )
    assert v.params["x"] is None
    assert v.sent_by == ("[2001:db8::1]", 5070)
    assert v.is_rfc3261_branch


def test_via_rport_forms() -> None:
    assert parse_via("SIP/2.0/UDP h;rport").rport is True
    assert parse_via("SIP/2.0/UDP h").rport is None
    assert parse_via("SIP/2.0/UDP h;rport=1").rport == 1


def test_via_lws_everywhere() -> None:
    v = parse_via("SIP  /   2.0  /UDP    192.0.2.2 : 5060 ;  branch = z9hG4bK1 ; rport")
    assert (v.transport, v.host, v.port, v.branch, v.rport) == (
        "UDP",
        "192.0.2.2",
        5060,
        "z9hG4bK1",
        True,
    )


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP host;ttl=256",
        "SIP/2.0/UDP host;TTL",
        "SIP/2.0/UDP host;Branch",
        "SIP/2.0/UDP host;rport=x",
        "SIP/2.0/UDP host extra",
        "SIP/2.0/UDP 2001:db8::1",
    ],
)
def test_via_malformed(text: str) -> None:
    with pytest.raises(SipParseError, match="Via"):
        parse_via(text)


def test_via_str_and_new() -> None:
    v = Via.new("udp", "192.0.2.1", 5060, rport=True)
    assert v.transport == "UDP"
    assert v.branch is not None
    assert v.branch.startswith(BRANCH_MAGIC_COOKIE)
    assert str(v) == f"SIP/2.0/UDP 192.0.2.1:5060;branch={v.branch};rport"
    assert parse_via(str(v)) == v
    assert str(v.with_params(received="198.51.100.1")).endswith(";rport;received=198.51.100.1")


def test_branch_and_tag_are_fresh() -> None:
    branches = {make_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith("z9hG4bK") and len(b) > 16 for b in branches)
    assert len({make_tag() for _ in range(100)}) == 100


# -- name-addr ----------------------------------------------------------------------------


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@atlanta.com;transport=tcp>;tag=1928;x')
    assert na.display == 'Alice "A"'
    assert na.uri == parse_uri("sip:alice@atlanta.com;transport=tcp")
    assert dict(na.params) == {"tag": "1928", "x": None}
    assert na.tag == "1928"
    plain = parse_name_addr("sip:bob@biloxi.com;tag=a6c85cf")
    assert plain.display is None
    assert plain.tag == "a6c85cf"
    assert isinstance(plain.uri, SipURI)
    assert not plain.uri.params
    tokens = parse_name_addr("Bob  Smith <sip:bob@biloxi.com>")
    assert tokens.display == "Bob  Smith"
    tel = parse_name_addr("<tel:+15551234567>")
    assert str(tel.uri) == "tel:+15551234567"
    other = parse_name_addr("<urn:service:sos>")
    assert isinstance(other.uri, AbsoluteURI)


def test_name_addr_str_round_trips() -> None:
    na = parse_name_addr('"A \\\\ B" <sip:a@b>;tag=x')
    assert na.display == "A \\ B"
    assert parse_name_addr(str(na)) == na
    assert str(NameAddr(parse_uri("sip:a@b")).with_tag("t1")) == "<sip:a@b>;tag=t1"
    assert NameAddr(parse_uri("sip:a@b"), params={"TAG": "x"}).tag == "x"


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal
        "Bell, Alexander <sip:a.g.bell@example.com>",  # baddn
        '"Watson" < sip:t.watson@example.org >',  # badaspec
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct
        "<sip:a@b",
        '"x" sip:a@b',
        "",
        "<sip:a@b>;",
        "<sip:a@b>;;",
        "<sip:a@b> junk",
    ],
)
def test_name_addr_malformed(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


# -- CSeq, auth, Reason --------------------------------------------------------------------


def test_cseq() -> None:
    c = parse_cseq("0009  INVITE")
    assert (c.seq, c.method, str(c)) == (9, "INVITE", "9 INVITE")
    assert parse_cseq(f"{2**32 - 1} ACK").seq == 2**32 - 1
    for bad in (f"{2**32} ACK", "36893488147419103232 REGISTER", "INVITE", "1", "-1 ACK", "1 A B"):
        with pytest.raises(SipParseError, match="CSeq"):
            parse_cseq(bad)


def test_auth_params() -> None:
    a = parse_auth(
        'Digest username="bob", realm="biloxi.com", nonce="dcd9\\"8b", uri="sip:bob@biloxi.com",'
        " qop=auth, nc=00000001, algorithm=MD5"
    )
    assert a.scheme == "Digest"
    assert a.params["username"] == "bob"
    assert a.params["nonce"] == 'dcd9"8b'
    assert a.params["qop"] == "auth"
    assert a.params["algorithm"] == "MD5"
    assert "qop" not in a.quoted
    assert "realm" in a.quoted
    assert parse_auth(str(a)) == a
    for bad in ("", "Digest realm", 'Digest realm="x",', "Digest,realm=x", 'Digest realm="x'):
        with pytest.raises(SipParseError):
            parse_auth(bad)


def test_reason() -> None:
    r = parse_reason('Q.850 ;cause=16 ;text="Normal call clearing"')
    assert (r.protocol, r.cause, r.text) == ("Q.850", 16, "Normal call clearing")
    assert str(r) == 'Q.850;cause=16;text="Normal call clearing"'
    with pytest.raises(SipParseError, match="cause"):
        parse_reason("SIP;cause=abc")


def test_many_repeated_fields_are_all_read_back() -> None:
    """A datagram of thousands of one field (a cheap attack): every value, in order. The
    index behind this is built in one linear pass (it once copied a tuple per line)."""
    values = [f"v{i}" for i in range(13_000)]
    h = Headers([("X-Flood", v) for v in values] + [("Call-ID", "c@h")])
    assert h.get_all("x-flood") == values
    assert h.get("Call-ID") == "c@h"


def test_branches_and_tags_are_unique_and_differ_in_a_forked_child() -> None:
    """Branches come from a pool of OS randomness read in bulk; a forked worker must not
    hand out the parent's next values (the pool is dropped in the child)."""
    import os

    from softswitch.sip.fields import make_branch, make_tag

    seen = {make_tag() for _ in range(20_000)}  # several refills of the pool
    assert len(seen) == 20_000
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in list(seen)[:100])
    assert make_branch().startswith("z9hG4bK")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tag, to the parent
        os.write(write, make_tag().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert len(child) == 16
    assert child != make_tag()
