"""Two ``softswitch run`` nodes on one PostgreSQL, end to end: a SIPp phone REGISTERs
through node A, and a customer's call through node B reaches it at its contact, without a
restart of either; once the phone unregistered through A, the next call through B skips
the registered gateway as not registered and goes to the carrier.

Each node has its own listen port and configuration, as nodes on two hosts would; their
CDRs land in the one database (``query_postgres``). SIPp sends every message of a call to
one address, where a phone answers an INVITE to its Via: the phone's scenario
(``reg_answer_unregister``) is turned to node B once registered (``setdest``), and back to A
for its unregister."""

from __future__ import annotations

import time

import pytest
from callflow_harness import SCENARIOS, Sipp, free_port
from callflow_net import NUMBER, Account, Carrier, Net, ok
from test_registrar import PASSWORD, PBX, TO_PBX, customer_call

from postgres_tool import Postgres, postgres
from softswitch.registrar import load
from softswitch.store.migrations import migrate
from softswitch.store.postgres import query_postgres

__all__ = ["postgres"]

pytestmark = pytest.mark.e2e

LOCAL = "127.0.0.1"


def phone(a: Net, b: Net, call_id: str) -> Sipp:
    """A phone that registers through ``a``, answers a call from ``b`` (its answers go to
    ``b``, as a phone's go to the INVITE's Via), then unregisters through ``a``."""
    port = free_port()
    text = (SCENARIOS / "reg_answer_unregister.xml").read_text()
    for key, value in {
        "CONTACT_HOST": f"{LOCAL}:{port}",
        "CONTACT": f"<sip:pbx@{LOCAL}:{port}>",
        "EXPIRES": "60",
    }.items():
        text = text.replace(key, value)

    def towards(node: Net) -> str:
        return (
            f'<nop><action><setdest host="{LOCAL}" port="{node.port}" protocol="udp"/>'
            "</action></nop>\n"
        )

    registered = text.index('<recv response="200"/>') + len('<recv response="200"/>\n')
    text = text[:registered] + towards(b) + text[registered:]
    unregister = text.rindex('<send retrans="500">', 0, text.index("CSeq: 3 REGISTER"))
    text = text[:unregister] + towards(a) + text[unregister:]
    path = a.workdir / "reg_answer_unregister_across_nodes.xml"
    path.write_text(text)
    sipp = Sipp(
        a.workdir,
        "phone",
        path,
        args=["-au", "pbx", "-ap", PASSWORD, "-s", NUMBER, "-cid_str", call_id],
        timeout=20.0,
        port=port,
    )
    a.sipps.append(sipp)
    return sipp.start(f"{LOCAL}:{a.port}")


def live_rows(url: str, count: int, timeout: float = 5.0) -> None:
    """Until the table has ``count`` live registrations (asserted)."""
    deadline = time.monotonic() + timeout
    while len(load(url, time.time())) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(load(url, time.time())) == count


def test_a_phone_registered_through_one_node_is_called_through_another(
    net: Net, second: Net, postgres: Postgres
) -> None:
    url = postgres.database()
    migrate(url)
    backup = Carrier("backup")
    for node in (net, second):
        node.database = url
        node.start_switch([backup], [Account(), PBX], route=["to_pbx", "backup"], tail=TO_PBX)
    carrier = second.carrier(backup, "uas_answer")

    pbx = phone(net, second, "reg-nodes-1")  # registers through A
    live_rows(url, 1)
    time.sleep(0.5)  # the commit's notice reaches B within milliseconds; "about a second"
    ok(second, customer_call(second, "reg-nodes-1", "customer1"))  # through B
    ok(net, pbx)  # it answered B's INVITE, then unregistered through A
    assert f"INVITE sip:{NUMBER}@{LOCAL}:{pbx.port} SIP/2.0" in pbx.messages()

    live_rows(url, 0)
    time.sleep(0.5)
    ok(second, customer_call(second, "reg-nodes-2", "customer2"), carrier)
    deadline = time.monotonic() + 5
    cdrs = query_postgres(url)
    while len(cdrs) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        cdrs = query_postgres(url)
    first, then = sorted(cdrs, key=lambda c: c.invite_at)
    assert [(a.gateway_id, a.status, a.outcome) for a in first.attempts] == [
        ("to_pbx", 200, "answered")
    ]
    assert [(a.gateway_id, a.status, a.outcome) for a in then.attempts] == [
        ("backup", 200, "answered")
    ]
    assert "to_pbx: not registered" in then.detail
    assert "registered account=pbx" in net.switch_log()
    assert "registered account=pbx" not in second.switch_log()  # B never took the REGISTER
