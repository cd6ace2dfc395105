"""The Request-URI each gateway receives."""

from __future__ import annotations

import dataclasses

from softswitch.call.rewrite import gateway_request_uri, sent_number
from softswitch.call.snapshot import Snapshot
from softswitch.sip import SipURI, parse_uri, unescape


def test_plain_gateway(snapshot: Snapshot) -> None:
    uri = gateway_request_uri(snapshot.gateways["gwa"], "447911123456")
    assert str(uri) == "sip:447911123456@192.0.2.1:5060"


def test_strip_add_and_tcp(snapshot: Snapshot) -> None:
    gw = snapshot.gateways["gwb"]  # strip 2, add 777, tcp, port defaulted to 5060
    assert sent_number(gw, "447911123456") == "7777911123456"
    uri = gateway_request_uri(gw, "447911123456")
    assert str(uri) == "sip:7777911123456@192.0.2.2:5060;transport=tcp"
    assert parse_uri(str(uri)) == uri


def test_ipv6_gateway(snapshot: Snapshot) -> None:
    gw = dataclasses.replace(snapshot.gateways["gwa"], host="[2001:db8::1]", port=5070)
    assert str(gateway_request_uri(gw, "44")) == "sip:44@[2001:db8::1]:5070"
    assert gw.address == ("2001:db8::1", 5070)


def test_hash_in_the_number_sent_is_escaped_and_star_kept(snapshot: Snapshot) -> None:
    """A carrier's own routing prefix (or a rewritten number) may hold '#' or '*'."""
    gw = dataclasses.replace(snapshot.gateways["gwa"], add_prefix="*0011#")
    assert sent_number(gw, "447911123456") == "*0011#447911123456"  # the CDR's callee_sent
    uri = gateway_request_uri(gw, "447911123456")
    assert str(uri) == "sip:*0011%23447911123456@192.0.2.1:5060"
    reparsed = parse_uri(str(uri))
    assert isinstance(reparsed, SipURI)
    assert unescape(reparsed.user or "") == "*0011#447911123456"
