"""Calls through a SIP balancer the switch trusts (``[server] trusted_proxies``), on the wire.

SIPp plays the balancer: it sends from 127.0.0.1 with its own Via on top, the Via of the
customer it forwards for below it, and the customer's address in ``X-AUTH-IP`` and
``X-AUTH-PORT``. The customer's account lists the customer's address, not the balancer's.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from callflow_harness import LOCAL
from callflow_net import NUMBER, Account, Carrier, Net, attempts, ok
from test_registrar import PASSWORD, PBX, TO_PBX, phone, registrations, wait_registered

from kamailio_tool import running_balancer
from softswitch.sip import Response, parse_message
from softswitch.sip.digest import build_authorization

pytestmark = pytest.mark.e2e

#: The Via line of the scenarios' requests; the client's Via goes right below it.
SIPP_VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
CLIENT = "127.0.0.7"


def forwarded_for(client: str) -> dict[str, str]:
    """The scenario's requests as a balancer forwards them for ``client`` (at 5062): the
    client's Via below the balancer's, and the client's address in ``X-AUTH-IP``."""
    below = "Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKcl[call_number]"
    fields = f"X-AUTH-IP: {client}\n      X-AUTH-PORT: 5062"
    return {SIPP_VIA: f"{SIPP_VIA}\n      {below}\n      {fields}"}


def test_a_call_through_a_trusted_balancer_is_the_clients(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch(
        [gw], [Account(id="behind", ips=(CLIENT,))], server=f'trusted_proxies = ["{LOCAL}"]'
    )
    carrier = net.carrier(gw, "uas_answer")
    balancer = net.customer("uac_call", fill=forwarded_for(CLIENT))
    ok(net, balancer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["status"] == 200
    assert cdr["account_id"] == "behind"
    assert cdr["source"] == f"{CLIENT}:5062"  # the client, not the balancer's 127.0.0.1
    assert cdr["end_reason"] == "normal_clearing"


def test_the_same_vias_from_a_source_not_trusted_prove_nothing(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(id="behind", ips=(CLIENT,))])
    balancer = net.customer(
        "uac_refused", fill={**forwarded_for(CLIENT), "EXPECTED": "403"}, label="forger"
    )
    ok(net, balancer)
    assert net.switch is not None
    assert net.switch.cdrs(0, 0.5) == []


def test_two_nodes_behind_kamailio_judge_each_customer_by_its_own_address(
    net: Net, second: Net
) -> None:
    """A real balancer: Kamailio's dispatcher spreads calls over two nodes with the script
    docs/deployment.md gives (remove the client's X-AUTH-IP, append its own). The customer
    calls from 127.0.0.7, the only address its account lists; a stranger at 127.0.0.9 is
    refused, also when it writes the customer's address into X-AUTH-IP itself, and so is
    that forgery sent to a node directly."""
    gw = Carrier("gw1")
    calls = 4
    with running_balancer([f"{LOCAL}:{net.port}", f"{LOCAL}:{second.port}"]) as balancer:
        trust = f'trusted_proxies = ["{balancer.address}"]'
        for node in (net, second):
            node.start_switch([gw], [Account(id="behind", ips=(CLIENT,))], server=trust)
        carrier = net.carrier(gw, "uas_answer", calls=calls)
        customer = net.customer("uac_call", calls=calls, port=balancer.port, args=["-i", CLIENT])
        ok(net, customer, carrier)
        forged = {"EXPECTED": "403", SIPP_VIA: f"{SIPP_VIA}\n      X-AUTH-IP: {CLIENT}"}
        for label, port in (("stranger", balancer.port), ("forger", net.port)):
            refused = second.customer(
                "uac_refused", fill=forged, port=port, args=["-i", "127.0.0.9"], label=label
            )
            ok(second, refused)
        rows = net.cdrs(2) + second.cdrs(2)  # round robin: every other call to each node
    assert {r["account_id"] for r in rows} == {"behind"}
    assert {r["status"] for r in rows} == {200}
    customer_port = customer.port
    assert {r["source"] for r in rows} == {f"{CLIENT}:{customer_port}"}, balancer.log()


def test_a_forged_x_auth_ip_in_a_dialog_shaped_register_is_stripped_by_kamailio(
    net: Net,
) -> None:
    """A REGISTER is never in a dialog for the switch, whatever its To says, so a client can
    send one with a To tag and a Route naming a node: Kamailio relays it by its in-dialog
    branch. The script strips the client's X-AUTH-IP on every request, so the node judges
    the REGISTER by where it came from (127.0.0.9), not by the address it names (the only one
    the account lists): the right password gets 403, not a registration."""
    intruder = "127.0.0.9"
    account = Account(
        id="ipbound", ips=(CLIENT,), username="pbx", password="secret", extra=("register = true",)
    )
    with running_balancer([f"{LOCAL}:{net.port}"]) as balancer:
        net.start_switch(
            [Carrier("gw1")], [account], server=f'trusted_proxies = ["{balancer.address}"]'
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((intruder, 0))
            sock.settimeout(5)
            port = sock.getsockname()[1]
            uri = f"sip:{LOCAL}:{net.port}"

            def register(cseq: int, auth: str = "") -> Response:
                lines = [
                    f"REGISTER {uri} SIP/2.0",
                    f"Via: SIP/2.0/UDP {intruder}:{port};branch=z9hG4bKforge{cseq}",
                    f"Route: <sip:{LOCAL}:{net.port};lr>",
                    "Max-Forwards: 70",
                    f"From: <sip:pbx@{LOCAL}>;tag=f1",
                    f"To: <sip:pbx@{LOCAL}>;tag=forged",
                    "Call-ID: forged-register",
                    f"CSeq: {cseq} REGISTER",
                    f"Contact: <sip:pbx@{intruder}:{port}>",
                    f"X-AUTH-IP: {CLIENT}",
                    *([f"Authorization: {auth}"] if auth else []),
                    "Content-Length: 0",
                ]
                sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (LOCAL, balancer.port))
                answer = parse_message(sock.recv(65536))
                assert isinstance(answer, Response)
                return answer

            challenge = register(1)
            assert challenge.status == 401, (challenge, balancer.log())
            value = challenge.headers.get("WWW-Authenticate")
            assert value is not None
            auth = build_authorization(
                value, method="REGISTER", uri=uri, username="pbx", password="secret"
            )
            refused = register(2, auth)
    assert refused.status == 403, (refused, net.switch_log())
    assert f"does not list {intruder}:{port} in its ips" in net.switch_log()


def test_a_phone_registered_through_kamailio_is_called_through_it_by_its_path(net: Net) -> None:
    """RFC 3327 behind a balancer: Kamailio adds a Path naming itself and the phone's address
    (``add_path_received``) to the phone's REGISTER; the node (two workers, each sending
    from a port of its own) keeps it with the binding and sends the call for the phone to
    Kamailio with that Path as its Route, and Kamailio relays it to the phone. The phone sits
    behind a NAT: its Contact names 10.9.9.9, which nothing reaches; only the address it
    sent from does, and the call's ACK and BYE get there too. Before, the node sent the call
    to the REGISTER's source, the balancer, whose dispatcher took it for a client's new call
    and handed it back to a node."""
    phone_ip = "127.0.0.8"
    with running_balancer([f"{LOCAL}:{net.port}"]) as balancer:
        trust = f'trusted_proxies = ["{balancer.address}"]'
        customer = Account(id="behind", ips=(CLIENT,))
        net.start_switch(
            [], [customer, PBX], route=["to_pbx"], tail=TO_PBX, server=trust, workers=2
        )
        call_id = "path-through-kamailio"
        pbx = phone(
            net,
            "reg_answer_unregister",
            "phone",
            call_id,
            contact_host="10.9.9.9:5060",
            to_port=balancer.port,
            local_ip=phone_ip,
        )
        (row,) = wait_registered(net, 1)
        assert (row["source_ip"], row["source_port"]) == (LOCAL, balancer.port)
        assert row["path"] == (
            f"<sip:{LOCAL}:{balancer.port};lr;received=sip:{phone_ip}:{pbx.port}>"
        ), balancer.log()
        caller = net.customer(
            "uac_call", args=["-cid_str", call_id, "-i", CLIENT], port=balancer.port
        )
        ok(net, caller)
        ok(net, pbx)  # it answered, got the ACK and the BYE, then unregistered
        deadline = time.monotonic() + 5
        while (live := [r for r in registrations(net) if r["expires_at"] > time.time()]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert live == []  # (two workers leave the unregister's tombstone in the table)
    invite = pbx.messages().split(f"INVITE sip:{NUMBER}@10.9.9.9:5060 SIP/2.0", 1)[1]
    head = invite.split("\n\n")[0].splitlines()
    vias = [line for line in head if line.startswith("Via:")]
    assert f"{LOCAL}:{balancer.port}" in vias[0], invite  # relayed by Kamailio ...
    assert f"{LOCAL}:{net.port}" not in vias[1], invite  # ... from a worker's own port
    assert not [line for line in head if line.startswith("Route:")]  # its entry consumed
    (cdr,) = net.cdrs()
    assert cdr["account_id"] == "behind"
    assert attempts(cdr) == [("to_pbx", 200, "answered")]


def test_a_clients_own_path_never_reaches_the_switch_through_kamailio(net: Net) -> None:
    """A Path tells the switch where to send an account's calls. A client that writes its
    own (dressed as the balancer's, with a received= naming a victim, and a second entry
    naming the victim), in a plain REGISTER or in one shaped as in a dialog to slip past
    add_path, gets only the balancer's Path stored, with its own address; sent straight to
    the node, its Path is ignored (the node believes no Path but a trusted proxy's)."""
    intruder, victim = "127.0.0.9", "127.0.0.5:5999"
    with running_balancer([f"{LOCAL}:{net.port}"]) as balancer:
        trust = f'trusted_proxies = ["{balancer.address}"]'
        net.start_switch([Carrier("gw1")], [Account(id="behind", ips=(CLIENT,)), PBX], server=trust)
        forged = f"<sip:{LOCAL}:{balancer.port};lr;received=sip:{victim}>, <sip:{victim};lr>"
        uri = f"sip:{LOCAL}:{net.port}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((intruder, 0))
            sock.settimeout(5)
            port = sock.getsockname()[1]
            for label, to_tag, target in (
                ("plain", "", balancer.port),
                ("dialog-shaped", ";tag=forged", balancer.port),
                ("direct", "", net.port),
            ):
                call_id = f"own-path-{label}"

                def register(
                    cseq: int,
                    auth: str = "",
                    *,
                    label: str = label,
                    to_tag: str = to_tag,
                    call_id: str = call_id,
                    target: int = target,
                ) -> Response:
                    lines = [
                        f"REGISTER {uri} SIP/2.0",
                        f"Via: SIP/2.0/UDP {intruder}:{port};branch=z9hG4bK{label}{cseq}",
                        *([f"Route: <sip:{LOCAL}:{net.port};lr>"] if to_tag else []),
                        "Max-Forwards: 70",
                        f"From: <sip:pbx@{LOCAL}>;tag=f1",
                        f"To: <sip:pbx@{LOCAL}>{to_tag}",
                        f"Call-ID: {call_id}",
                        f"CSeq: {cseq} REGISTER",
                        f"Contact: <sip:pbx@{intruder}:{port}>",
                        f"Path: {forged}",
                        *([f"Authorization: {auth}"] if auth else []),
                        "Content-Length: 0",
                    ]
                    sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (LOCAL, target))
                    answer = parse_message(sock.recv(65536))
                    assert isinstance(answer, Response)
                    return answer

                challenge = register(1)
                assert challenge.status == 401, (label, challenge, balancer.log())
                value = challenge.headers.get("WWW-Authenticate")
                assert value is not None
                auth = build_authorization(
                    value, method="REGISTER", uri=uri, username="pbx", password=PASSWORD
                )
                answer = register(2, auth)
                assert answer.status == 200, (label, answer, net.switch_log())
                row = registered_by(net, call_id)
                if target == net.port:
                    assert row["path"] == "", label
                    assert row["source_ip"] == intruder, label
                else:
                    assert row["path"] == (
                        f"<sip:{LOCAL}:{balancer.port};lr;received=sip:{intruder}:{port}>"
                    ), (label, balancer.log())


def registered_by(net: Net, call_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The stored binding the REGISTER of ``call_id`` made, once it is written."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in registrations(net) if r["call_id"] == call_id]
        if rows or time.monotonic() > deadline:
            assert rows, (call_id, registrations(net))
            return rows[0]
        time.sleep(0.05)
