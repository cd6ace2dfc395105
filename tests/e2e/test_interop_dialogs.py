"""Interop cases real carriers and customers produce every day, end to end with SIPp:
reliable provisional responses with PRACK (RFC 3262), early dialogs, upstream digest
challenges, a 2xx that is never ACKed, and a carrier whose front door (a real Kamailio) stays
out of the dialog.
"""

from __future__ import annotations

import pytest
from callflow_net import NUMBER, Account, Carrier, Net, ok

from kamailio_tool import FRONT_DOOR, running_balancer
from loopback_ports import LOCAL

pytestmark = pytest.mark.e2e


def test_reliable_183_is_pracked_through_the_switch(net: Net) -> None:
    """A carrier's 183 with SDP and Require: 100rel reaches the caller, whose PRACK follows
    the early dialog's record-routed path to the carrier and is answered 200."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_100rel")
    customer = net.customer("uac_prack", args=["-d", "200"])
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert cdr["callee_dialed"] == NUMBER


def test_failover_after_an_early_dialog(net: Net) -> None:
    """The first carrier starts an early dialog (reliable 183, PRACKed), then fails with
    503: the switch tries the next carrier, which answers."""
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()])
    first = net.carrier(gw1, "uas_100rel_reject", fill={"STATUS": "503 Service Unavailable"})
    second = net.carrier(gw2, "uas_answer")
    customer = net.customer("uac_prack", args=["-d", "200"])
    ok(net, customer, first, second)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert [(a["gateway_id"], a["status"]) for a in cdr["attempts"]] == [
        ("gw1", 503),
        ("gw2", 200),
    ]


def test_cancel_after_a_reliable_183(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_100rel_cancel")
    customer = net.customer("uac_prack_cancel")
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "caller_cancelled"


def test_a_carriers_own_challenge_is_answered_by_the_caller(net: Net) -> None:
    """RFC 3261 22.3: a proxy consumes only its own realm's credentials. The carrier's 407
    (realm "carrier") reaches the caller, and the caller's credentials for that realm reach
    the carrier on the retried INVITE."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_challenge")
    customer = net.customer(
        "uac_auth",
        args=["-au", "trunk", "-ap", "secret", "-auth_uri", f"{NUMBER}@127.0.0.1", "-d", "200"],
    )
    ok(net, customer, carrier)
    first, second = net.cdrs(2)
    assert (first["status"], first["end_reason"]) == (407, "gateway_rejected")
    assert second["end_reason"] == "normal_clearing"


def test_our_own_realms_credentials_never_reach_the_carrier(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(ips=(), username="alice", password="s3cret")])
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer(
        "uac_auth",
        args=[
            "-au",
            "alice",
            "-ap",
            "s3cret",
            "-auth_uri",
            f"{NUMBER}@127.0.0.1:{net.port}",
            "-d",
            "200",
        ],
    )
    ok(net, customer, carrier)
    assert "Proxy-Authorization" in customer.messages()
    assert "Proxy-Authorization" not in carrier.messages()


def test_a_2xx_never_acked_is_hung_up_and_billed_to_the_teardown(net: Net) -> None:
    """RFC 3261 13.3.1.4: no ACK within 64*T1 (here ``ack_timeout = 2``): BYE to both
    sides, end reason ``no_ack``, billed up to the teardown and not beyond."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], defaults="ack_timeout = 2")
    carrier = net.carrier(gw, "uas_answer_no_ack")
    customer = net.customer("uac_no_ack")
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "no_ack"
    assert cdr["hangup_side"] == "switch"
    assert 1.5 <= cdr["duration"] <= 3.0


def test_no_answer_timeout_cancels_and_answers_480(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], defaults="no_answer_timeout = 1")
    carrier = net.carrier(gw, "uas_ring_cancel")
    customer = net.customer("uac_refused", fill={"EXPECTED": "480"})
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert (cdr["end_reason"], cdr["status"]) == ("no_answer", 480)
    assert [(a["gateway_id"], a["outcome"]) for a in cdr["attempts"]] == [("gw1", "no_answer")]


def test_no_answer_fails_over_when_the_gateway_says_so(net: Net) -> None:
    """The shortest no-answer timeout that applies wins (the gateway's 1 s over the
    default's 60 s), and ``failover_on_no_answer`` sends the call to the next gateway."""
    gw1 = Carrier("gw1", extra="no_answer_timeout = 1\nfailover_on_no_answer = true")
    gw2 = Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()], defaults="no_answer_timeout = 60")
    ringing = net.carrier(gw1, "uas_ring_cancel")
    answering = net.carrier(gw2, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "200"])
    ok(net, customer, ringing, answering)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert [(a["gateway_id"], a["outcome"]) for a in cdr["attempts"]] == [
        ("gw1", "no_answer"),
        ("gw2", "answered"),
    ]


def test_a_carriers_front_door_that_stays_out_of_the_dialog(net: Net) -> None:
    """The gateway is a carrier's Kamailio balancing INVITEs over its media gateways without
    record-routing (Kamailio's default in-dialog handling: 404 for a request that is not its
    own). The media gateway's 200 names itself in its Contact: the caller's ACK and BYE go
    there, not to the front door, and the call is torn down at the carrier too."""
    media_gateway = Carrier("gw1")
    with running_balancer([f"{LOCAL}:{media_gateway.port}"], script=FRONT_DOOR) as door:
        net.start_switch([Carrier("gw1", port=door.port)], [Account()])
        carrier = net.carrier(media_gateway, "uas_answer")
        customer = net.customer("uac_call", args=["-d", "200"])
        ok(net, customer, carrier)
        (cdr,) = net.cdrs()
        assert cdr["end_reason"] == "normal_clearing"
        assert cdr["hangup_side"] == "caller"
        log = door.log()
    assert f"INVITE {cdr['call_id']} from {LOCAL}:{net.port}" in log, log
    assert "not here" not in log, log
