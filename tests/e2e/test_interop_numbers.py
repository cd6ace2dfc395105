"""Interoperating with real customers' numbers, end to end: SIPp as the customer and the
carrier, the switch as ``softswitch run --config FILE`` in between, all on 127.0.0.1.

* VOS-style customer equipment sends tech prefixes with an unescaped ``#``
  (``INVITE sip:1234#44...``): the call is the tech prefix's account's, and the carrier gets
  the number without it.
* Every INVITE refused from a customer's address leaves a CDR with its end reason.
* A call cut at ``max_duration`` is billed the maximum, not a second more.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from callflow_harness import LOCAL, Sipp
from callflow_net import NUMBER, Account, Carrier, Net, ok

pytestmark = pytest.mark.e2e

#: 1/1 increments: a call is rated by the second, so a cost shows the seconds billed.
SELL = "prefix,destination,rate,initial_increment,subsequent_increment\n44,UK,0.600000,1,1\n"
BUY = "prefix,destination,rate,initial_increment,subsequent_increment\n44,UK,0.060000,1,1\n"


def invite_line(sipp: Sipp) -> str:
    """The Request-Line of the INVITE a SIPp instance received."""
    for line in sipp.messages().splitlines():
        if line.startswith("INVITE "):
            return line
    raise AssertionError(f"no INVITE in {sipp.name}'s messages")


# ----------------------------------------------------------------------------- '#' and '*'


def test_unescaped_hash_tech_prefix_selects_the_account(net: Net) -> None:
    """``1234#44...`` as VOS-style equipment sends it (RFC 3261 wants ``%23``), and
    ``%2A99%2344...`` escaped: each selects its account; the carrier gets the bare number."""
    gw = Carrier("gw1")
    accounts = [
        Account("vos", tech_prefix="1234#"),
        Account("star", tech_prefix="*99#"),
        Account("other", tech_prefix="5678#"),
    ]
    net.start_switch([gw], accounts)
    carrier = net.carrier(gw, "uas_answer", calls=2)
    first = net.customer("uac_call", number=f"1234#{NUMBER}", args=["-d", "200"], label="vos")
    ok(net, first)
    second = net.customer("uac_call", number=f"%2A99%23{NUMBER}", args=["-d", "200"], label="star")
    ok(net, second, carrier)
    rows = net.cdrs(2)
    assert len(rows) == 2, net.explain()
    by_account = {row["account_id"]: row for row in rows}
    assert set(by_account) == {"vos", "star"}
    vos, star = by_account["vos"], by_account["star"]
    assert (vos["end_reason"], star["end_reason"]) == ("normal_clearing", "normal_clearing")
    assert vos["callee_dialed"] == f"1234#{NUMBER}"
    assert star["callee_dialed"] == f"*99#{NUMBER}"  # unescaped for the CDR
    assert vos["callee_sent"] == star["callee_sent"] == NUMBER  # no tech prefix sent
    assert [a["request_uri"] for a in vos["attempts"]] == [f"sip:{NUMBER}@{LOCAL}:{gw.port}"]
    # The carrier got the bare number in its Request-URI; the caller's To header, which a
    # proxy forwards untouched, still carries the '#' as the customer wrote it.
    received = carrier.messages()
    assert f"INVITE sip:{NUMBER}@{LOCAL}:{gw.port} SIP/2.0" in received
    assert f"To: <sip:1234#{NUMBER}@{LOCAL}:{net.port}>" in received
    assert "SIP/2.0 400" not in first.messages()


# ----------------------------------------------------------------------------- refusals


def test_every_refusal_from_a_customer_address_has_a_cdr(net: Net) -> None:
    """One INVITE per refusal path, each from the customer's address: a CDR each, with the
    end reason, the status the customer got and the Q.850 cause of the Reason header."""
    gw = Carrier("gw1")
    accounts = [
        Account("plain"),  # no tech prefix: every number without one is plain's
        Account("off", tech_prefix="7#", extra=("enabled = false",)),
        Account("deny", tech_prefix="8#", extra=('deny = ["4490"]',)),
    ]
    net.start_switch([gw], accounts)
    cases = [
        # (number, Max-Forwards, status, end reason, account, q850)
        ("44abc", "70", 484, "invalid_number", "plain", 28),
        ("331234567", "70", 404, "no_rate", "plain", 3),
        (NUMBER, "0", 483, "too_many_hops", None, 25),  # the engine's, before any account
        (f"7#{NUMBER}", "70", 403, "account_disabled", "off", 21),
        ("8#449012345", "70", 403, "forbidden_destination", "deny", 21),
    ]
    for i, (number, max_forwards, status, *_) in enumerate(cases):
        customer = net.customer(
            "uac_refused_maxfwd",
            number=number,
            label=f"refused{i}",
            fill={"EXPECTED": str(status), "MAXFWD": max_forwards},
        )
        ok(net, customer)
        assert f"SIP/2.0 {status} " in customer.messages()
        assert "Reason: Q.850;cause=" in customer.messages()
    rows = net.cdrs(len(cases))
    assert len(rows) == len(cases), net.explain()
    got = [(r["status"], r["end_reason"], r["account_id"], r["q850"]) for r in rows]
    assert got == [(status, reason, account, q850) for _, _, status, reason, account, q850 in cases]
    assert all(r["source"].startswith(f"{LOCAL}:") for r in rows)
    assert [r["callee_dialed"] for r in rows] == [number for number, *_ in cases]


def test_a_malformed_invite_from_a_customer_address_has_a_cdr(net: Net) -> None:
    """``Max-Forwards: many``: refused 400 by the transport, statelessly, before the engine
    sees the INVITE; from the customer's address it is still a call attempt with its CDR."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()])
    customer = net.customer(
        "uac_refused_maxfwd", fill={"EXPECTED": "400", "MAXFWD": "many"}, label="malformed"
    )
    ok(net, customer)  # the 400 itself is sent
    rows = net.cdrs(1, timeout=1.5)
    assert [(r["status"], r["end_reason"]) for r in rows] == [(400, "invalid_request")]
    (cdr,) = rows
    assert (cdr["q850"], cdr["account_id"], cdr["detail"]) == (127, None, "Bad Max-Forwards header")
    assert cdr["callee_dialed"] == NUMBER
    assert cdr["source"].startswith(f"{LOCAL}:")
    assert cdr["attempts"] == []


# ----------------------------------------------------------------------------- billing


def test_a_call_cut_at_max_duration_is_billed_the_maximum(net: Net) -> None:
    """max_duration = 3: the switch's BYE leaves a few ms after the timer; the CDR bills 3 s,
    not 4, and the costs are for 3 s (1/1 decks: 0.60 and 0.06 a minute)."""
    net.sell = SELL
    gw = Carrier("gw1", deck=BUY)
    net.start_switch([gw], [Account(max_duration=3)])
    carrier = net.carrier(gw, "uas_answer")  # waits for the switch's BYE
    customer = net.customer("uac_wait_bye")  # so does the customer
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "max_duration", net.explain()
    assert cdr["hangup_side"] == "switch"
    assert 2.9 <= cdr["duration"] <= 3.0
    assert cdr["billsec"] == 3
    assert Decimal(cdr["sell_cost"]) == Decimal("0.03")  # 3 s at 0.01 a second
    assert Decimal(cdr["buy_cost"]) == Decimal("0.003")  # 3 s at 0.001 a second
