"""Where a call's later requests to a carrier go (``proxy.dialog_target``): the callee's
Record-Route or Contact where that is safe on the call path, else the gateway's address."""

from __future__ import annotations

import pytest

from softswitch.proxy.dialog_target import beyond_us, dialog_flow
from softswitch.proxy.dialogs import routes_beyond_us
from softswitch.sip import NameAddr, parse_name_addr
from softswitch.transport import Flow, Transport

US = ("198.51.100.1", 5060)
GATEWAY = Flow(Transport.UDP, US, ("203.0.113.10", 5060))
OUR_ROUTE = "<sip:198.51.100.1:5060;lr>"


def ours(host: str, port: int) -> bool:
    return (host, port) == US


def addrs(*values: str) -> list[NameAddr]:
    return [parse_name_addr(v) for v in values]


def to(
    contact: str,
    *record_route: str,
    flow: Flow = GATEWAY,
    sent: tuple[str, ...] = (OUR_ROUTE,),
    mine: int = 1,
) -> Flow:
    """Where the dialog goes when the INVITE we sent had ``sent`` as its Record-Route, its
    first ``mine`` entries ours."""
    contacts = addrs(contact) if contact else []
    beyond = beyond_us(addrs(*record_route), addrs(*sent), mine)
    return dialog_flow(flow, contacts, beyond, ours)


def test_a_contact_on_the_gateways_own_address_keeps_its_flow() -> None:
    assert to("<sip:carrier@203.0.113.10:5060;transport=UDP>") is GATEWAY
    assert to("<sip:carrier@203.0.113.10>") is GATEWAY  # 5060 when the port is left out


def test_a_contact_on_another_host_is_where_the_dialog_goes() -> None:
    """A carrier's front door balancing over media gateways without record-routing: the
    answering gateway's Contact, from our same socket."""
    flow = to("<sip:carrier@203.0.113.20:5070;transport=udp>", OUR_ROUTE)
    assert flow == Flow(Transport.UDP, US, ("203.0.113.20", 5070))
    assert to("<sip:203.0.113.20>") == Flow(Transport.UDP, US, ("203.0.113.20", 5060))


def test_the_callees_record_route_beyond_us_comes_before_its_contact() -> None:
    """RFC 3261 12.2.1.1: the route set's first hop. Each proxy tops the Record-Route, so
    the carrier's proxies are above ours (the nearest last) and a proxy on the caller's side
    is below it and never a hop towards the callee."""
    caller_side = "<sip:192.0.2.99;lr>"  # the customer's proxy
    flow = to(
        "<sip:carrier@203.0.113.20:5070>",
        "<sip:203.0.113.31;lr>",  # next to the carrier's gateway
        "<sip:203.0.113.30:5080;lr>",  # the carrier's proxy next to us
        OUR_ROUTE,
        caller_side,
        sent=(OUR_ROUTE, caller_side),
    )
    assert flow.remote == ("203.0.113.30", 5080)
    # Only the customer's proxy and ours: the Contact.
    only_callers = to(
        "<sip:carrier@203.0.113.20:5070>", OUR_ROUTE, caller_side, sent=(OUR_ROUTE, caller_side)
    )
    assert only_callers.remote == ("203.0.113.20", 5070)


def test_our_entries_are_those_of_the_invite_we_sent_not_our_listeners() -> None:
    """An entry of ours may name a socket we do not listen on (an IPv4 gateway reached from
    an IPv6 listener goes out on a socket of its own); and a carrier's proxy on our port
    number is not us, whatever we listen on."""
    ephemeral = "<sip:198.51.100.1:48250;lr>"
    assert to("<sip:carrier@203.0.113.20:5070>", ephemeral, sent=(ephemeral,)).remote == (
        "203.0.113.20",
        5070,
    )
    proxy = "<sip:203.0.113.30:5060;lr>"
    assert to("<sip:carrier@203.0.113.20:5070>", proxy, OUR_ROUTE).remote == ("203.0.113.30", 5060)


def test_routes_beyond_us_leave_out_the_callers_side() -> None:
    record_route = addrs("<sip:203.0.113.31;lr>", "<sip:203.0.113.30;lr>", OUR_ROUTE, "<sip:a;lr>")
    sent = addrs(OUR_ROUTE, "<sip:a;lr>")
    assert [str(e) for e in beyond_us(record_route, sent, 1)] == [
        "<sip:203.0.113.31;lr>",
        "<sip:203.0.113.30;lr>",
    ]
    assert routes_beyond_us(beyond_us(record_route, sent, 1)) == (
        "<sip:203.0.113.30;lr>",
        "<sip:203.0.113.31;lr>",
    )
    # Our entry as the carrier wrote it back, in another case: still ours.
    assert beyond_us(addrs("<sip:203.0.113.30;lr>", "<SIP:198.51.100.1;LR>"), sent[:1], 1) == addrs(
        "<sip:203.0.113.30;lr>"
    )


def test_one_proxy_on_both_sides_of_the_switch_is_still_the_callees_next_hop() -> None:
    """An edge proxy that record-routes the customer's INVITE to us and our INVITE to the
    carrier: its entry is below ours (the caller's side) and above it (the callee's)."""
    edge = "<sip:192.0.2.50;lr>"
    record_route = addrs(edge, OUR_ROUTE, edge)
    assert beyond_us(record_route, addrs(OUR_ROUTE, edge), 1) == addrs(edge)
    hop = to("<sip:carrier@203.0.113.20:5070>", edge, OUR_ROUTE, edge, sent=(OUR_ROUTE, edge))
    assert hop.remote == ("192.0.2.50", 5060)
    # Two entries of ours (RFC 5658: legs on different sockets) are both ours.
    second = "<sip:198.51.100.1:5080;lr>"
    both = addrs(edge, OUR_ROUTE, second, edge)
    assert beyond_us(both, addrs(OUR_ROUTE, second, edge), 2) == addrs(edge)
    # A carrier that dropped the caller's side from its answer: told by our own entry.
    assert beyond_us(addrs(edge, OUR_ROUTE), addrs(OUR_ROUTE, edge), 1) == addrs(edge)


@pytest.mark.parametrize(
    ("contact", "why"),
    [
        ("<sip:carrier@mgw.carrier.example:5070>", "a name would be resolved on the call path"),
        ("<sip:carrier@203.0.113.20:5070;transport=tcp>", "a connection would be opened"),
        ("<sips:carrier@203.0.113.20:5061>", "TLS"),
        ("<tel:+441234567>", "not a SIP URI"),
        ("<sip:carrier@10.1.2.3:5060>", "a private Contact behind a public gateway: a NAT"),
        ("<sip:carrier@127.0.0.1:5060>", "loopback, the same"),
        ("<sip:carrier@[2001:db8::20]:5060>", "another address family"),
        ("<sip:carrier@198.51.100.1:5060>", "ourselves: a loop"),
        ("", "no Contact at all"),
        ("<sip:carrier@0.0.0.0:5070>", '"any": this machine'),
        ("<sip:carrier@0.1.2.3:5070>", '"this network"'),
        ("<sip:carrier@224.0.0.1:5070>", "multicast"),
        ("<sip:carrier@255.255.255.255:5070>", "broadcast"),
        ("<sip:carrier@240.0.0.1:5070>", "reserved"),
    ],
)
def test_the_gateways_address_when_the_next_hop_is_not_safe_to_take(contact: str, why: str) -> None:
    assert to(contact) is GATEWAY, why


def test_a_gateway_on_a_private_network_keeps_its_address_for_a_public_contact() -> None:
    """An interconnect or VPN: the public host it names may not be reachable from here, nor
    from the socket bound to the private side."""
    lan = Flow(Transport.UDP, ("10.0.0.1", 5060), ("10.0.0.10", 5060))
    assert to("<sip:carrier@203.0.113.20:5070>", flow=lan) is lan


def test_each_scope_keeps_to_itself() -> None:
    """Loopback is this machine whatever network the gateway is on, an RFC 6598 address is
    a carrier-grade NAT's inside, and a link-local one needs an interface no URI names."""
    lan = Flow(Transport.UDP, ("10.0.0.1", 5060), ("10.20.0.5", 5060))
    assert to("<sip:carrier@127.0.0.1:5080>", flow=lan) is lan
    assert to("<sip:carrier@100.64.1.1:5080>", flow=lan) is lan
    assert to("<sip:carrier@169.254.1.1:5080>", flow=lan) is lan
    shared = Flow(Transport.UDP, ("100.64.0.1", 5060), ("100.64.1.1", 5060))
    assert to("<sip:carrier@192.168.1.10:5080>", flow=shared) is shared
    assert to("<sip:carrier@100.64.1.2:5080>", flow=shared).remote == ("100.64.1.2", 5080)
    v6 = Flow(Transport.UDP, ("fd00::1", 5060), ("fd00::5", 5060))
    assert to("<sip:carrier@[fe80::1]:5080>", flow=v6) is v6
    assert to("<sip:carrier@[fd00::6]:5080>", flow=v6).remote == ("fd00::6", 5080)


def test_ipv6_forms_of_other_scopes_keep_the_gateways_address() -> None:
    v6 = Flow(Transport.UDP, ("2001:db8::1", 5060), ("2001:db8::10", 5060))
    for contact in ("[::ffff:10.0.0.1]", "[::ffff:203.0.113.20]", "[::]", "[::1]", "[fe80::1]"):
        assert to(f"<sip:carrier@{contact}:5070>", flow=v6) is v6, contact


def test_a_tcp_call_keeps_its_connection() -> None:
    tcp = Flow(Transport.TCP, US, ("203.0.113.10", 5060))
    assert to("<sip:carrier@203.0.113.20:5060;transport=tcp>", flow=tcp) is tcp


def test_private_addresses_on_both_sides_are_a_private_network_not_a_nat() -> None:
    lan = Flow(Transport.UDP, ("10.0.0.1", 5060), ("10.0.0.10", 5060))
    assert to("<sip:carrier@10.0.0.20:5070>", flow=lan).remote == ("10.0.0.20", 5070)
    loopback = Flow(Transport.UDP, ("127.0.0.1", 5060), ("127.0.0.1", 5070))
    assert to("<sip:carrier@127.0.0.1:5080>", flow=loopback).remote == ("127.0.0.1", 5080)


def test_maddr_names_the_host_and_ipv6_is_compared_as_an_address() -> None:
    assert to("<sip:carrier@mgw.example;maddr=203.0.113.20>").remote == ("203.0.113.20", 5060)
    v6 = Flow(Transport.UDP, ("2001:db8::1", 5060), ("2001:db8::10", 5060))
    assert to("<sip:carrier@[2001:DB8:0::10]:5060>", flow=v6) is v6  # the same address
    assert to("<sip:carrier@[2001:db8::20]:5070>", flow=v6).remote == ("2001:db8::20", 5070)
