"""Caller-ID end to end: SIPp as the customer and the carriers, ``softswitch run`` between.

* The account's and the gateway's ``cli`` rules rewrite the From and P-Asserted-Identity
  user the carrier receives, and nothing else of them: the From tag stays the caller's, so
  the callee's BYE (its To is the From it got) still reaches the caller and ends the call.
* A plan with a CLI route and a non-CLI route for the same prefix sends a call with a
  caller-ID to the first, an anonymous or withheld (``Privacy: id``) call to the second.
* A destination with only a CLI route refuses a call without a caller-ID, with its CDR.
"""

from __future__ import annotations

import re

import pytest
from callflow_harness import LOCAL, Sipp
from callflow_net import Account, Carrier, Net, attempts, ok

pytestmark = pytest.mark.e2e

NATIONAL = "sip:0201234567@[local_ip]:[local_port]"
ANONYMOUS = "sip:anonymous@anonymous.invalid"
NO_IDENTITY = "Subject: no identity headers"


def customer(net: Net, caller_uri: str, identity: str, *, label: str) -> Sipp:
    """A customer whose INVITE's From is ``"caller" <caller_uri>`` (plus ``identity``: more
    header lines) and who waits for the BYE."""
    fill = {"CALLER_URI": caller_uri, "IDENTITY_HEADERS": identity}
    return net.customer("uac_cli_wait_bye", fill=fill, label=label)


def received(sipp: Sipp, header: str, nth: int = 0) -> str:
    """The value of ``header`` in the ``nth`` INVITE a SIPp instance received."""
    invites = re.split(r"(?m)^INVITE ", sipp.messages())[1:]
    assert len(invites) > nth, f"fewer than {nth + 1} INVITEs in {sipp.name}'s messages"
    block = re.split(r"\r?\n\r?\n", invites[nth], maxsplit=1)[0]
    found = re.search(rf"(?mi)^{re.escape(header)}:\s*(.*?)\r?$", block)
    assert found is not None, f"no {header} in {sipp.name}'s INVITE:\n{block}"
    return found.group(1)


def test_rewritten_caller_id_and_the_callee_hangs_up(net: Net) -> None:
    """Account: national to E.164 (``0`` -> ``44``); gateway: a ``+`` in front. The carrier
    gets ``+44...`` in From and P-Asserted-Identity, with the caller's display name, URI
    host and From tag; its BYE, sent To that From, is relayed to the caller, who answers
    it: the dialog matched by its tag."""
    gw = Carrier("gw1", extra='cli = [{ add = "+" }]')
    account = Account(extra=('cli = [{ prefix = "0", strip = 1, add = "44" }]',))
    net.start_switch([gw], [account])
    carrier = net.carrier(gw, "uas_answer_bye", args=["-d", "300"])
    caller = customer(
        net, NATIONAL, f"P-Asserted-Identity: <sip:0201234567@{LOCAL}>", label="caller"
    )
    ok(net, caller, carrier)

    from_ = received(carrier, "From")
    tag = re.search(r";tag=(\S+)", from_)
    assert tag is not None
    assert re.fullmatch(rf'"caller" <sip:\+44201234567@{LOCAL}:\d+>;tag=\d+SIPpTag001', from_)
    assert received(carrier, "P-Asserted-Identity") == f"<sip:+44201234567@{LOCAL}>"
    # The caller's side of the dialog is its own: its tag, Call-ID, and the BYE it got
    # from the callee carries that tag in To (its URI is the one the carrier was sent).
    assert received(caller, "From").startswith('"caller" <sip:0201234567@')  # as it sent
    assert received(caller, "From").endswith(f";tag={tag.group(1)}")
    messages = caller.messages()
    # The answers it gets carry its own From again (the carrier echoed the rewritten one).
    answers = [
        answer
        for answer in re.findall(r"(?m)^SIP/2.0 (?:180|200) .*?\r?\n\r?\n", messages, re.S)
        if "CSeq: 1 INVITE" in answer
    ]
    assert len(answers) >= 2, caller.explain()
    for answer in answers:
        assert '\nFrom: "caller" <sip:0201234567@' in answer, answer
    assert re.search(r"(?m)^BYE sip:", messages), caller.explain()
    bye = messages[messages.index("BYE sip:") :]
    to = re.search(r"(?mi)^To:\s*(.*?)\r?$", bye)
    assert to is not None
    assert to.group(1).endswith(f";tag={tag.group(1)}")
    assert "SIP/2.0 481" not in carrier.messages()

    (cdr,) = net.cdrs()
    assert (cdr["end_reason"], cdr["hangup_side"]) == ("normal_clearing", "callee"), net.explain()
    assert attempts(cdr) == [("gw1", 200, "answered")]
    assert cdr["caller"] == "0201234567"  # as the customer sent it


def test_cli_route_and_non_cli_route_for_one_prefix(net: Net) -> None:
    """Prefix 44 twice: ``cli = "required"`` to gw_cli, ``"absent"`` to gw_grey (whose rule
    sets a fixed CLI). A numbered caller goes to gw_cli; an anonymous one and one that
    withholds its number (``Privacy: id``) to gw_grey, the anonymous From untouched."""
    cli_gw = Carrier("gw_cli")
    grey_gw = Carrier("gw_grey", extra='cli = [{ set = "441632960000" }]')
    grey_route = "\n".join(
        [
            "[[routes]]",
            'plan = "default"',
            'prefix = "44"',
            'gateways = ["gw_grey"]',
            'cli = "absent"',
        ]
    )
    net.start_switch(
        [cli_gw, grey_gw],
        [Account()],
        route=["gw_cli"],
        route_extra='cli = "required"',
        tail=grey_route,
    )
    on_cli = net.carrier(cli_gw, "uas_answer_bye", args=["-d", "200"])
    on_grey = net.carrier(grey_gw, "uas_answer_bye", args=["-d", "200"], calls=2)

    ok(net, customer(net, NATIONAL, NO_IDENTITY, label="numbered"))
    ok(net, customer(net, ANONYMOUS, NO_IDENTITY, label="anonymous"))
    withheld = f"Privacy: id\nP-Asserted-Identity: <sip:0201234567@{LOCAL}>"
    ok(net, customer(net, NATIONAL, withheld, label="withheld"))
    ok(net, on_cli, on_grey)

    rows = net.cdrs(3)
    assert [attempts(r) for r in rows] == [
        [("gw_cli", 200, "answered")],
        [("gw_grey", 200, "answered")],
        [("gw_grey", 200, "answered")],
    ], net.explain()
    assert [r["caller"] for r in rows] == ["0201234567", "anonymous", "0201234567"]
    assert re.fullmatch(r'"caller" <sip:0201234567@[^>]+>;tag=\S+', received(on_cli, "From"))
    assert received(on_grey, "From", 0).startswith(f'"caller" <{ANONYMOUS}>;tag=')
    # The withheld caller's number is rewritten (it is no anonymous URI); Privacy goes on.
    assert received(on_grey, "From", 1).startswith(f'"caller" <sip:441632960000@{LOCAL}:')
    assert received(on_grey, "P-Asserted-Identity", 1) == f"<sip:441632960000@{LOCAL}>"
    assert received(on_grey, "Privacy", 1) == "id"
    assert "cli=0201234567" in net.switch_log()
    assert "cli=none" in net.switch_log()


def test_a_cli_only_destination_refuses_an_anonymous_call(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], route_extra='cli = "required"')
    refused = net.customer(
        "uac_cli_refused",
        fill={"CALLER_URI": ANONYMOUS, "IDENTITY_HEADERS": NO_IDENTITY, "EXPECTED": "404"},
        label="anonymous",
    )
    ok(net, refused)
    (cdr,) = net.cdrs()
    assert (cdr["status"], cdr["end_reason"]) == (404, "no_route")
    assert (
        cdr["detail"] == "plan 'default' (a call without a caller-ID): no route matches 441234567"
    )
    assert cdr["attempts"] == []
