"""The registrar end to end: SIPp phones REGISTER with digest, then take calls through the
switch at their registered contacts, unregister, expire, survive a restart of the switch,
and are reached at their source address when their Contact names a private one (RFC 3581).

A phone is one SIPp client call: it REGISTERs, then waits for the INVITE the switch sends
it. SIPp maps a message to a call by its Call-ID, so the phone and the customer share one
(``-cid_str``): the switch, a proxy, keeps the customer's on the INVITE it sends the phone.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

from callflow_harness import LOCAL, Sipp, Switch, free_port, scenario
from callflow_net import NUMBER, SELL, Account, Carrier, Net, attempts, ok

PASSWORD = "s3cret"
PBX = Account(id="pbx", ips=(), username="pbx", password=PASSWORD, extra=("register = true",))
TO_PBX = '[[gateways]]\nid = "to_pbx"\naddress = "registered:pbx"\npriority = -1\n'


def phone(
    net: Net,
    name: str,
    label: str,
    call_id: str,
    *,
    contact_host: str | None = None,
    contact_params: str = "",
    expires: int = 60,
    number: str = NUMBER,
    pause_ms: int = 0,
    to_port: int | None = None,
    local_ip: str | None = None,
) -> Sipp:
    """A registering phone (SIPp client with -au/-ap) on a port of its own (at
    ``local_ip``), registering at the switch (or at ``to_port``: a balancer in front of it)."""
    port = free_port()
    host = contact_host or f"{LOCAL}:{port}"
    fill = {
        "CONTACT_HOST": host,
        "CONTACT": f"<sip:pbx@{host}>{contact_params}",
        "EXPIRES": str(expires),
        "PAUSE_MS": str(pause_ms),
    }
    sipp = Sipp(
        net.workdir,
        label,
        scenario(name, net.workdir, **fill),
        args=[
            "-au",
            "pbx",
            "-ap",
            PASSWORD,
            "-s",
            number,
            "-cid_str",
            call_id,
            *(["-i", local_ip] if local_ip else []),
        ],
        timeout=20.0,
        port=port,
    )
    net.sipps.append(sipp)
    return sipp.start(f"{LOCAL}:{net.port if to_port is None else to_port}")


def customer_call(net: Net, call_id: str, label: str, *, port: int | None = None) -> Sipp:
    """The customer's call to NUMBER with a Call-ID of our choosing (the phones')."""
    sipp = Sipp(
        net.workdir,
        label,
        scenario("uac_call", net.workdir),
        args=["-s", NUMBER, "-cid_str", call_id],
        **({"port": port} if port is not None else {}),
    )
    net.sipps.append(sipp)
    return sipp.start(f"{LOCAL}:{net.port}")


def registrations(net: Net) -> list[dict[str, Any]]:
    path = net.workdir / "cdr.sqlite"
    if not path.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=2)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM registrations ORDER BY registered_at")
            return [dict(r) for r in rows]
    except sqlite3.OperationalError:
        return []


def wait_registered(net: Net, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The stored bindings once there are ``count`` (asserted)."""
    deadline = time.monotonic() + timeout
    rows = registrations(net)
    while len(rows) != count and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = registrations(net)
    assert len(rows) == count, (rows, net.explain())
    return rows


def start(net: Net, config: Path) -> Switch:
    net.switch = Switch(config, net.workdir / "cdr.sqlite", net.port, net.workdir / "switch.log")
    return net.switch.start()


def test_register_call_unregister_then_the_call_fails_over(net: Net) -> None:
    """Digest REGISTER (401 first), a call to the registered contact, Expires: 0, and the
    next call skips the gateway as not registered and goes to the carrier."""
    backup = Carrier("backup")
    net.start_switch([backup], [Account(), PBX], route=["to_pbx", "backup"], tail=TO_PBX)
    carrier = net.carrier(backup, "uas_answer")
    pbx = phone(net, "reg_answer_unregister", "phone", "reg-unregister-1")
    rows = wait_registered(net, 1)
    assert rows[0]["account_id"] == "pbx"
    assert rows[0]["contact"] == f"sip:pbx@{LOCAL}:{pbx.port}"
    assert rows[0]["nat"] == 0

    ok(net, customer_call(net, "reg-unregister-1", "customer1"))
    ok(net, pbx)  # it answered, then unregistered
    assert f"INVITE sip:{NUMBER}@{LOCAL}:{pbx.port} SIP/2.0" in pbx.messages()
    assert "WWW-Authenticate: Digest" in pbx.messages()
    wait_registered(net, 0)

    ok(net, customer_call(net, "reg-unregister-2", "customer2"), carrier)
    first, second = net.cdrs(2)
    assert attempts(first) == [("to_pbx", 200, "answered")]
    assert attempts(second) == [("backup", 200, "answered")]
    assert "to_pbx: not registered" in second["detail"]


def test_two_contacts_nat_and_a_restart_keeps_them(net: Net) -> None:
    """Two contacts, tried by q-value: the first (NAT'd: its Contact names a private
    address, so it is reached at the REGISTER's source) refuses 503, the second answers;
    after a restart of the switch both are still registered and the same happens."""
    config = net.write_config([], [Account(), PBX], route=["to_pbx"], tail=TO_PBX)
    start(net, config)
    call_id = "reg-two-contacts"
    natted = phone(
        net,
        "reg_reject_twice",
        "phone_nat",
        call_id,
        contact_host="10.9.9.9:5060",
    )
    wait_registered(net, 1)
    second = phone(net, "reg_answer_twice", "phone_second", call_id, contact_params=";q=0.5")
    rows = wait_registered(net, 2)
    by_contact = {r["contact"]: r for r in rows}
    nat_row = by_contact["sip:pbx@10.9.9.9:5060"]
    assert (nat_row["nat"], nat_row["source_ip"], nat_row["source_port"]) == (
        1,
        LOCAL,
        natted.port,
    )

    ok(net, customer_call(net, call_id, "customer1"))
    assert net.switch is not None
    net.switch.stop()
    start(net, config)
    assert "registrations: 2 live contacts loaded" in net.switch_log()
    ok(net, customer_call(net, call_id, "customer2"))
    ok(net, natted, second)

    # The INVITE reached the NAT'd phone at its source port, addressed to its Contact.
    assert natted.messages().count(f"INVITE sip:{NUMBER}@10.9.9.9:5060 SIP/2.0") == 2
    for row in net.cdrs(2):
        assert attempts(row) == [("to_pbx", 503, "failed"), ("to_pbx", 200, "answered")]


def test_calls_from_a_registration_and_its_expiry(net: Net) -> None:
    """A registered phone calls without credentials from its registered address (authorised
    by the registration); once the registration expires it is challenged 407, and a call to
    it skips it as not registered."""
    net.sell = SELL + "33,FR,0.100000\n"
    backup = Carrier("backup", deck="prefix,destination,rate\n44,UK,0.01\n33,FR,0.01\n")
    customer_port = free_port()
    customer = Account(ips=(f"{LOCAL}:{customer_port}",))
    routes = TO_PBX + '[[routes]]\nplan = "default"\nprefix = "33"\ngateways = ["backup"]\n'
    config = net.write_config([backup], [customer, PBX], route=["to_pbx", "backup"], tail=routes)
    # [server] is the harness's; a registration may be as short as 1 s here.
    text = config.read_text().replace("[server]", "[server]\nregistrar_min_expires = 1")
    config.write_text(text)
    start(net, config)
    carrier = net.carrier(backup, "uas_answer", calls=2)
    pbx = phone(
        net, "reg_call_out", "phone", "reg-call-out", expires=2, number="331234567", pause_ms=2500
    )
    ok(net, pbx)
    assert "SIP/2.0 407" in pbx.messages()
    ok(net, customer_call(net, "reg-expired", "customer", port=customer_port), carrier)
    out, expired = net.cdrs(2)
    assert (out["account_id"], out["callee_dialed"]) == ("pbx", "331234567")
    assert attempts(out) == [("backup", 200, "answered")]
    assert attempts(expired) == [("backup", 200, "answered")]
    assert "to_pbx: not registered" in expired["detail"]
