"""The live index of bindings, where a contact is reached, and the bindings on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from registrar_support import binding

from softswitch.cdr import CdrStore
from softswitch.registrar import BindingWriter, Registrations, load
from softswitch.transport import Transport


def test_contacts_are_in_q_order_then_most_recent_and_live_only() -> None:
    regs = Registrations(
        [
            binding("sip:a@192.0.2.1", q=0.5, registered_at=10.0),
            binding("sip:b@192.0.2.2", q=1.0, registered_at=5.0),
            binding("sip:c@192.0.2.3", q=0.5, registered_at=20.0),
            binding("sip:d@192.0.2.4", q=1.0, expires_at=100.0),
            binding("sip:e@192.0.2.5", account_id="other"),
        ]
    )
    assert [b.contact for b in regs.contacts("pbx", 500.0)] == [
        "sip:b@192.0.2.2",
        "sip:c@192.0.2.3",
        "sip:a@192.0.2.1",
    ]
    assert regs.contacts("nobody", 500.0) == []
    assert [b.contact for b in regs.expired(500.0)] == ["sip:d@192.0.2.4"]
    assert len(regs) == 5


def test_the_account_at_a_source_is_the_one_live_registration_from_it() -> None:
    regs = Registrations([binding(source=("192.0.2.50", 5060))])
    assert regs.account_at("192.0.2.50", 5060, 500.0) == "pbx"
    assert regs.account_at("192.0.2.50", 5061, 500.0) is None  # another device behind it
    assert regs.account_at("192.0.2.50", 5060, 2500.0) is None  # expired
    # Two accounts registered from one source: the source alone cannot tell them apart.
    regs.put(binding("sip:x@192.0.2.50", account_id="other", source=("192.0.2.50", 5060)))
    assert regs.account_at("192.0.2.50", 5060, 500.0) is None
    regs.remove("other", "sip:x@192.0.2.50")
    assert regs.account_at("192.0.2.50", 5060, 500.0) == "pbx"
    # Re-registering from elsewhere moves the contact's source.
    regs.put(binding(source=("198.51.100.1", 7000)))
    assert regs.account_at("192.0.2.50", 5060, 500.0) is None
    assert regs.account_at("198.51.100.1", 7000, 500.0) == "pbx"
    assert regs.remove("pbx", "sip:none@192.0.2.1") is None


def test_where_a_contact_is_reached_and_its_request_uri() -> None:
    direct = binding("sip:pbx@192.0.2.50:5070;transport=tcp?x=y", transport="tcp")
    assert direct.destination == (Transport.TCP, ("192.0.2.50", 5070))
    assert str(direct.request_uri("4412%23")) == "sip:4412%23@192.0.2.50:5070;transport=tcp"
    natted = binding("sip:pbx@10.1.1.1:5060", nat=True, source=("203.0.113.9", 61000))
    assert natted.destination == (Transport.UDP, ("203.0.113.9", 61000))
    assert str(natted.request_uri("441")) == "sip:441@10.1.1.1:5060"
    default_port = binding("sip:[2001:db8::1]")
    assert default_port.destination == (Transport.UDP, ("2001:db8::1", 5060))


def test_a_contact_registered_with_a_path_is_reached_at_its_first_hop() -> None:
    """RFC 3327 5.3: whatever the Contact or the NAT says, the call goes to the Path's first
    proxy (over its URI's transport, else the REGISTER's), which takes it on; the Request-URI
    is the contact's still."""
    path = "<sip:198.51.100.1:5070;lr;received=sip:203.0.113.9:61000>, <sip:198.51.100.2;lr>"
    natted = binding("sip:pbx@10.1.1.1:5060", nat=True, source=("198.51.100.1", 5070), path=path)
    assert natted.destination == (Transport.UDP, ("198.51.100.1", 5070))
    assert natted.route == path
    assert str(natted.request_uri("441")) == "sip:441@10.1.1.1:5060"
    over_tcp = binding("sip:pbx@10.1.1.1", path="<sip:[2001:db8::7];transport=TCP;lr>")
    assert over_tcp.destination == (Transport.TCP, ("2001:db8::7", 5060))
    as_registered = binding("sip:pbx@10.1.1.1", transport="tcp", path="<sip:198.51.100.1;lr>")
    assert as_registered.destination == (Transport.TCP, ("198.51.100.1", 5060))
    named = binding("sip:pbx@192.0.2.50", path="<sip:lb.example.com;lr>")
    assert named.destination is None  # no resolver on the call path: skipped, as a named contact
    assert binding().route == ""


def test_the_writer_keeps_the_latest_change_and_load_drops_the_expired(tmp_path: Path) -> None:
    db = tmp_path / "switch.sqlite"
    writer = BindingWriter(db)
    live = binding("sip:a@192.0.2.1", expires_at=2000.0)
    gone = binding("sip:b@192.0.2.2", expires_at=2000.0)
    stale = binding("sip:c@192.0.2.3", expires_at=100.0)
    writer.put([live, gone, stale])
    writer.put([binding("sip:a@192.0.2.1", expires_at=3000.0, q=0.7, nat=True)])
    writer.remove([gone])
    assert writer.flush()
    writer.close()
    writer.close()  # idempotent
    loaded = load(db, 50.0)
    assert sorted(b.contact for b in loaded) == ["sip:a@192.0.2.1", "sip:c@192.0.2.3"]
    (a,) = [b for b in loaded if b.contact == "sip:a@192.0.2.1"]
    assert (a.expires_at, a.q, a.nat) == (3000.0, 0.7, True)
    assert [b.contact for b in load(db, 1500.0)] == ["sip:a@192.0.2.1"]
    with sqlite3.connect(db) as conn:  # the expired row is deleted, not only skipped
        assert conn.execute("SELECT count(*) FROM registrations").fetchone()[0] == 1


def test_the_cdr_store_creates_the_table_in_the_switch_database(tmp_path: Path) -> None:
    db = tmp_path / "cdr.sqlite"
    with CdrStore(db):
        pass
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(registrations)")]
    assert columns[:3] == ["account_id", "contact", "expires_at"]
    assert load(db, 0.0) == []


def test_a_notice_carries_the_path_and_one_without_is_the_older_nodes_shape() -> None:
    """Nodes are upgraded one at a time: a binding without a Path is announced in the shape
    the version before it reads (no path field), and a notice in that shape is read as a
    binding without a Path; one with a Path carries it."""
    from softswitch.registrar.store import binding_of_notice, put_notice

    plain = binding()
    kind, fields = put_notice(plain)
    assert kind == "put"
    assert isinstance(fields, list)
    assert len(fields) == 13  # account_id ... credentials, as before the Path
    assert binding_of_notice(json.loads(json.dumps(fields))) == plain
    pathed = binding(path="<sip:198.51.100.1:5070;lr>")
    _, fields = put_notice(pathed)
    assert isinstance(fields, list)
    assert fields[-1] == "<sip:198.51.100.1:5070;lr>"
    assert binding_of_notice(json.loads(json.dumps(fields))) == pathed
    with pytest.raises(ValueError, match="path: int"):
        binding_of_notice([*fields[:-1], 7])
    with pytest.raises(ValueError, match="not a binding's fields"):
        binding_of_notice(fields[:-2])
