"""``registrar.decide``: what a REGISTER does to an account's bindings (RFC 3261 10.3)."""

from __future__ import annotations

import pytest
from registrar_support import binding, register

from softswitch.registrar import Accepted, Binding, Limits, Refused, Source, decide

LIMITS = Limits(min_expires=30, max_expires=600, max_contacts=3)
SOURCE = Source("udp", "203.0.113.7", 40000)
NOW = 1000.0


def accepted(outcome: Accepted | Refused) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def refused(outcome: Accepted | Refused) -> Refused:
    assert isinstance(outcome, Refused), outcome
    return outcome


def test_a_new_contact_is_bound_with_the_expiry_asked_and_listed_in_the_200() -> None:
    out = accepted(
        decide(register("<sip:pbx@203.0.113.7:5060>", expires=120), "pbx", {}, SOURCE, NOW, LIMITS)
    )
    (b,) = out.put
    assert (b.account_id, b.contact, b.expires_at, b.q) == (
        "pbx",
        "sip:pbx@203.0.113.7:5060",
        1120.0,
        1.0,
    )
    assert (b.call_id, b.cseq, b.transport, b.source_ip, b.source_port) == (
        "reg-1",
        1,
        "udp",
        "203.0.113.7",
        40000,
    )
    assert not b.nat  # the Contact names the source address: reached there, at its own port
    assert out.removed == ()
    headers = out.headers(NOW)
    assert headers[0] == ("Contact", "<sip:pbx@203.0.113.7:5060>;expires=120")
    assert headers[1][0] == "Date"


@pytest.mark.parametrize(
    ("contact", "header", "expected"),
    [
        ("<sip:pbx@203.0.113.7>", None, 600),  # none asked: the maximum
        ("<sip:pbx@203.0.113.7>", 7200, 600),  # too long: shortened
        ("<sip:pbx@203.0.113.7>;expires=45", 7200, 45),  # the contact's own wins
        ("<sip:pbx@203.0.113.7>", 99999999999999, 600),  # huge: capped, no crash
    ],
)
def test_the_expiry_comes_from_the_contact_then_the_header_then_the_maximum(
    contact: str, header: int | None, expected: int
) -> None:
    out = accepted(decide(register(contact, expires=header), "pbx", {}, SOURCE, NOW, LIMITS))
    assert out.put[0].expires_at == NOW + expected


def test_too_brief_is_423_with_min_expires() -> None:
    out = refused(
        decide(register("<sip:pbx@203.0.113.7>", expires=10), "pbx", {}, SOURCE, NOW, LIMITS)
    )
    assert (out.status, out.headers) == (423, (("Min-Expires", "30"),))


@pytest.mark.parametrize(
    ("contacts", "expires", "status"),
    [
        (("<sip:pbx@203.0.113.7>",), "soon", 400),
        (("<sip:pbx@203.0.113.7>;expires=-1",), None, 400),
        (("<sip:pbx@203.0.113.7>;q=1.5",), None, 400),
        (("<tel:+441234>",), None, 400),
        (("*",), 60, 400),  # the wildcard only with Expires: 0
        (("*",), None, 400),
    ],
)
def test_malformed_registrations_are_400(
    contacts: tuple[str, ...], expires: str | int | None, status: int
) -> None:
    out = refused(decide(register(*contacts, expires=expires), "pbx", {}, SOURCE, NOW, LIMITS))
    assert out.status == status


def test_expires_zero_removes_the_contact_and_wildcard_removes_all() -> None:
    one = binding("sip:pbx@203.0.113.7:5060", registered_at=900.0)
    two = binding("sip:pbx@203.0.113.8:5060", registered_at=950.0)
    existing = {one.contact: one, two.contact: two}
    out = accepted(
        decide(
            register("<sip:pbx@203.0.113.7:5060>", expires=0, call_id="other"),
            "pbx",
            existing,
            SOURCE,
            NOW,
            LIMITS,
        )
    )
    assert (out.put, out.removed, out.current) == ((), (one,), (two,))
    out = accepted(
        decide(register("*", expires=0, call_id="other"), "pbx", existing, SOURCE, NOW, LIMITS)
    )
    assert set(out.removed) == {one, two}
    assert out.current == ()


def test_an_older_cseq_of_the_same_call_id_is_refused_and_changes_nothing() -> None:
    old = binding("sip:pbx@203.0.113.7:5060")
    existing = {old.contact: old}
    out = decide(
        register("<sip:pbx@203.0.113.7:5060>", expires=0, cseq=1),
        "pbx",
        existing,
        SOURCE,
        NOW,
        LIMITS,
    )
    assert refused(out).status == 400
    # A higher CSeq (or another Call-ID) does change it.
    out = decide(
        register("<sip:pbx@203.0.113.7:5060>", expires=0, cseq=2),
        "pbx",
        existing,
        SOURCE,
        NOW,
        LIMITS,
    )
    assert accepted(out).removed == (old,)


def test_a_contact_behind_a_nat_is_reached_at_the_source() -> None:
    """A private address in the Contact, or a client that asked for rport (RFC 3581)."""
    private = decide(register("<sip:pbx@192.168.1.20:5060>"), "pbx", {}, SOURCE, NOW, LIMITS)
    assert accepted(private).put[0].nat
    asked = decide(
        register("<sip:pbx@203.0.113.7:5062>", rport=True), "pbx", {}, SOURCE, NOW, LIMITS
    )
    assert accepted(asked).put[0].nat
    named = decide(register("<sip:pbx@pbx.example.com>"), "pbx", {}, SOURCE, NOW, LIMITS)
    assert accepted(named).put[0].nat


def test_contacts_are_listed_by_q_then_most_recent_and_capped() -> None:
    old = binding("sip:pbx@203.0.113.9:5060", registered_at=900.0, q=0.5)
    expired = binding("sip:pbx@203.0.113.10:5060", expires_at=NOW - 1)
    existing = {old.contact: old, expired.contact: expired}
    out = accepted(
        decide(
            register("<sip:pbx@203.0.113.7>;q=0.2", "<sip:pbx@203.0.113.8>", call_id="r2"),
            "pbx",
            existing,
            SOURCE,
            NOW,
            LIMITS,
        )
    )
    assert [b.contact for b in out.current] == [
        "sip:pbx@203.0.113.8",
        "sip:pbx@203.0.113.9:5060",
        "sip:pbx@203.0.113.7",
    ]  # the expired one counts as gone
    assert "q=0.2" in out.headers(NOW)[2][1]
    full = {b.contact: b for b in out.current}
    more = decide(
        register("<sip:pbx@203.0.113.11>", call_id="r3"), "pbx", full, SOURCE, NOW, LIMITS
    )
    assert refused(more).status == 403
    # A refresh of one already bound is not "more".
    again = decide(
        register("<sip:pbx@203.0.113.7>", call_id="r3"), "pbx", full, SOURCE, NOW, LIMITS
    )
    assert isinstance(again, Accepted)


def test_a_query_without_contacts_lists_the_bindings() -> None:
    b: Binding = binding("sip:pbx@203.0.113.7:5060", expires_at=NOW + 99.6)
    out = accepted(decide(register(), "pbx", {b.contact: b}, SOURCE, NOW, LIMITS))
    assert (out.put, out.removed) == ((), ())
    assert out.headers(NOW)[0] == ("Contact", "<sip:pbx@203.0.113.7:5060>;expires=100")


def test_a_refresh_after_the_clock_stepped_back_is_registered_no_earlier_than_its_binding() -> None:
    """The table, the workers' journal and the other nodes keep a contact's binding with the
    latest ``registered_at``: a refresh dated before the binding it replaces (NTP stepped
    the clock back) would be refused by all of them while the 200 says it took."""
    old = binding("sip:pbx@203.0.113.7:5060", registered_at=NOW + 2, expires_at=NOW + 300)
    out = accepted(
        decide(
            register("<sip:pbx@203.0.113.7:5060>", expires=120, cseq=2),
            "pbx",
            {old.contact: old},
            SOURCE,
            NOW,
            LIMITS,
        )
    )
    (b,) = out.put
    assert b.registered_at == NOW + 2
    assert b.expires_at == NOW + 120  # the expiry is still counted from the clock
    fresh = accepted(
        decide(register("<sip:pbx@203.0.113.7:5060>", expires=120), "pbx", {}, SOURCE, NOW, LIMITS)
    )
    assert fresh.put[0].registered_at == NOW


#: What a balancer writes in front of the switch (Kamailio's ``add_path_received``), and a
#: second proxy nearer the client. The REGISTER comes from the balancer, a trusted proxy.
BALANCER = "<sip:198.51.100.1:5060;lr;received=sip:203.0.113.7:40000>"
EDGE = '"edge" <sip:edge@198.51.100.2;lr>'
PROXY = "198.51.100.1"


def test_a_path_is_kept_with_every_contact_and_echoed_only_to_a_client_that_supports_it() -> None:
    request = register(
        "<sip:pbx@203.0.113.7>",
        "<sip:pbx2@203.0.113.7>",
        extra=(f"Path: {BALANCER}", f"Path: {EDGE}"),
    )
    out = accepted(decide(request, "pbx", {}, SOURCE, NOW, LIMITS, path_from=PROXY))
    expected = f"{BALANCER}, {EDGE}"  # one field value, in the order received
    assert [b.path for b in out.put] == [expected, expected]
    assert [b.route for b in out.put] == [expected, expected]
    assert "Path" not in dict(out.headers(NOW))  # no Supported: path, no echo (RFC 3327 5.3)
    supported = register(
        "<sip:pbx@203.0.113.7>", extra=(f"Path: {BALANCER}, {EDGE}", "Supported: timer, path")
    )
    out = accepted(decide(supported, "pbx", {}, SOURCE, NOW, LIMITS, path_from=PROXY))
    assert out.put[0].path == expected
    assert dict(out.headers(NOW))["Path"] == expected


def test_a_path_from_a_source_that_is_no_trusted_proxy_is_ignored() -> None:
    """A Path names where the account's calls are sent, past the rule that sends a NAT'd
    contact's calls to the REGISTER's source: from the client itself (or a proxy the switch
    does not trust) it would let a registrant aim the switch's INVITEs at any address."""
    victim = "<sip:192.0.2.99:5060;lr>"
    request = register("<sip:pbx@10.1.1.1>", extra=(f"Path: {victim}",))
    out = accepted(decide(request, "pbx", {}, SOURCE, NOW, LIMITS))
    (b,) = out.put
    assert b.path == ""
    assert b.nat  # reached at the REGISTER's source, as without a Path
    assert "Path" not in dict(out.headers(NOW))


def test_a_path_whose_first_hop_is_not_the_proxy_that_sent_it_is_403() -> None:
    """The trusted proxy writes its own entry first; a Path that starts elsewhere was not
    written by it (a client's own, passed on), and nothing of it is taken."""
    request = register("<sip:pbx@203.0.113.7>", extra=(f"Path: {EDGE}, {BALANCER}",))
    out = refused(decide(request, "pbx", {}, SOURCE, NOW, LIMITS, path_from=PROXY))
    assert (out.status, out.reason) == (403, "Path not from the proxy")


def test_a_refresh_without_a_path_drops_the_one_registered_before() -> None:
    first = accepted(
        decide(register("<sip:pbx@203.0.113.7>", extra=(f"Path: {BALANCER}",)), "pbx", {},
               SOURCE, NOW, LIMITS, path_from=PROXY)
    )  # fmt: skip
    assert first.put[0].path == BALANCER
    existing = {b.contact: b for b in first.put}
    again = register("<sip:pbx@203.0.113.7>", cseq=2)  # now straight to the switch
    out = accepted(decide(again, "pbx", existing, SOURCE, NOW + 10, LIMITS, path_from=PROXY))
    assert out.put[0].path == ""


@pytest.mark.parametrize(
    "path",
    [
        "garbage <",
        "<tel:+441234>",  # not a route anywhere
        "<sips:198.51.100.1;lr>",  # the switch speaks no TLS
        "<sip:198.51.100.1;lr;transport=tls>",  # nor over TLS or SCTP by a sip: URI
        "<sip:198.51.100.1>",  # a strict router: the switch routes loosely only
        "sip:198.51.100.1;lr",  # a bare URI: its ;lr is the field's, not the URI's
        f"{BALANCER}, <sip:bad@>",  # one bad entry refuses the whole request
    ],
)
def test_a_path_that_is_no_loose_route_is_400_and_changes_nothing(path: str) -> None:
    request = register("<sip:pbx@203.0.113.7>", extra=(f"Path: {path}",))
    out = refused(decide(request, "pbx", {}, SOURCE, NOW, LIMITS, path_from=PROXY))
    assert (out.status, out.reason) == (400, "Invalid Path")
