"""``SharedRegistrations``: a contact registered (or unregistered) through one worker is seen
by every other, in one order of changes; real forked processes sharing the journal the
supervisor makes (``SharedState.bindings``), and the registrations table they restart from."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import select
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from forking import exit_code, forked
from journal_support import binding, no_table

from postgres_tool import either_database, postgres
from softswitch.registrar import Binding, BindingWriter, load
from softswitch.workers.live import SharedState
from softswitch.workers.registrations import ENTRIES, SharedRegistrations

__all__ = ["either_database", "postgres"]


def test_a_contact_registered_by_one_worker_is_found_by_the_other() -> None:
    shared = SharedState(workers=2, ids=1)
    there, back = os.pipe(), os.pipe()
    learned: list[Binding] = []
    mine = SharedRegistrations(shared.bindings, 1, no_table)
    mine.learned = learned.append
    mine.restore([])

    def worker_0() -> int:
        theirs = SharedRegistrations(shared.bindings, 0, no_table)
        theirs.restore([])
        theirs.put(binding("sip:alice@192.0.2.7:5070"))
        os.write(there[1], b"1")
        os.read(back[0], 1)
        theirs.remove("pbx", "sip:alice@192.0.2.7:5070")  # an un-REGISTER
        os.write(there[1], b"2")
        return 0

    pid = forked(worker_0)
    assert os.read(there[0], 1) == b"1"
    now = time.time()
    contacts = mine.contacts("pbx", now)
    assert [b.contact for b in contacts] == ["sip:alice@192.0.2.7:5070"]
    assert mine.account_at("192.0.2.7", 5070, now, "udp") == "pbx"
    assert [b.source_ip for b in learned] == ["192.0.2.7"]  # its source trusted here too
    os.write(back[1], b"go")
    assert os.read(there[0], 1) == b"2"
    assert exit_code(pid) == 0
    assert mine.contacts("pbx", time.time()) == []
    assert mine.account_at("192.0.2.7", 5070, time.time(), "udp") is None


def test_concurrent_changes_leave_every_worker_with_the_same_contacts() -> None:
    """Two processes put and remove the same few contacts at random, interleaved; at the
    end both indexes hold the same bindings (the journal's order is everyone's)."""
    shared = SharedState(workers=2, ids=1)
    start, done, look, results = os.pipe(), os.pipe(), os.pipe(), os.pipe()
    contacts = [f"sip:c{n}@192.0.2.7:5070" for n in range(5)]

    def churn(worker: int) -> Callable[[], int]:
        def body() -> int:
            index = SharedRegistrations(shared.bindings, worker, no_table)
            index.restore([])
            rng = random.Random(worker)
            os.read(start[0], 1)
            for n in range(300):  # well within the ring: no table read
                contact = rng.choice(contacts)
                if rng.random() < 0.4:
                    index.remove("pbx", contact)
                else:
                    index.put(binding(contact, at=1_000_000.0 + n + worker / 10))
            os.write(done[1], b"d")
            os.read(look[0], 1)  # the other one is done too
            final = sorted((b.contact, b.registered_at) for b in index)
            os.write(results[1], (repr(final) + "\n").encode())
            return 0

        return body

    pids = [forked(churn(0)), forked(churn(1))]
    os.write(start[1], b"ab")
    assert os.read(done[0], 1) + os.read(done[0], 1) == b"dd"
    os.write(look[1], b"ab")
    with os.fdopen(results[0], "r") as reader:
        finals = [reader.readline(), reader.readline()]
    assert [exit_code(pid) for pid in pids] == [0, 0]
    assert finals[0] == finals[1]
    # And it is the journal's last word on each contact.
    last = SharedRegistrations(shared.bindings, 1, no_table)
    last.restore([])
    assert repr(sorted((b.contact, b.registered_at) for b in last)) + "\n" == finals[0]


def test_a_worker_that_fell_behind_the_ring_reads_the_table_again(tmp_path: Path) -> None:
    """The contact whose change left the ring is found in the table, read off the event
    loop (``catch_up``); the lookups in between answer from the index, with the changes
    the ring still held, and read no table."""
    database = tmp_path / "cdr.sqlite"
    writer = BindingWriter(database)
    shared = SharedState(workers=2, ids=1)
    busy = SharedRegistrations(shared.bindings, 0, no_table)
    busy.restore([])
    reads: list[int] = []

    def table() -> list[Binding]:
        reads.append(1)
        return load(database, time.time())

    idle = SharedRegistrations(shared.bindings, 1, table)
    idle.restore([])
    old = binding("sip:old@192.0.2.7:5070")
    busy.put(old)
    assert [b.contact for b in idle.contacts("pbx", time.time())] == [old.contact]
    early = binding("sip:early@192.0.2.7:5070")  # its change leaves the ring
    busy.put(early)
    writer.put([early])
    # More changes than the ring keeps, all committed by the busy worker's writer.
    for n in range(ENTRIES + 10):
        b = binding(f"sip:n{n % 7}@192.0.2.7:5070")
        busy.put(b)
        writer.put([b])
    busy.remove("pbx", old.contact)
    writer.remove([old], tombstone_at=time.time())
    assert writer.flush()
    ring = {f"sip:n{n}@192.0.2.7:5070" for n in range(7)}
    assert {b.contact for b in idle.contacts("pbx", time.time())} == ring  # no table yet
    assert reads == []
    asyncio.run(idle.catch_up())
    assert {b.contact for b in idle.contacts("pbx", time.time())} == ring | {early.contact}
    assert reads == [1]
    asyncio.run(idle.catch_up())  # caught up: nothing more to read
    assert reads == [1]
    writer.close()


def test_a_failed_table_read_keeps_the_contacts_and_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The table read after the ring went round fails: the worker keeps the contacts it
    has (no lookup raises), logs it once, and the next catch-up reads it again."""
    database = tmp_path / "cdr.sqlite"
    writer = BindingWriter(database)
    shared = SharedState(workers=2, ids=1)
    busy = SharedRegistrations(shared.bindings, 0, no_table)
    busy.restore([])
    failures = [OSError("database unreachable"), OSError("database unreachable")]

    def table() -> list[Binding]:
        if failures:
            raise failures.pop()
        return load(database, time.time())

    idle = SharedRegistrations(shared.bindings, 1, table)
    kept = binding("sip:kept@192.0.2.7:5070")
    idle.restore([kept])  # read from the table at start
    writer.put([kept])
    early = binding("sip:early@192.0.2.7:5070")
    busy.put(early)
    writer.put([early])
    for n in range(ENTRIES + 10):
        busy.put(binding(f"sip:n{n % 3}@192.0.2.7:5070"))
    assert writer.flush()
    now = time.time()
    contacts = {b.contact for b in idle.contacts("pbx", now)}  # no exception here
    assert kept.contact in contacts
    with caplog.at_level(logging.ERROR, logger="softswitch.workers"):
        asyncio.run(idle.catch_up())
        asyncio.run(idle.catch_up())
    failed = [r for r in caplog.records if "reading the table again failed" in r.message]
    assert len(failed) == 1
    assert {b.contact for b in idle.contacts("pbx", now)} == contacts  # unchanged
    asyncio.run(idle.catch_up())
    assert early.contact in {b.contact for b in idle.contacts("pbx", now)}
    writer.close()


def test_the_contact_cap_holds_across_workers() -> None:
    """An account one contact short of the cap: worker 0 decides on a REGISTER of a new
    contact under ``exclusive`` (as ``Registrar.register`` does) and, before it puts it,
    worker 1 decides on another. Worker 1 waits for worker 0's change and sees the account
    full, so the account ends at the cap, not one over."""
    cap = 10
    shared = SharedState(workers=2, ids=1)
    go, answer = os.pipe(), os.pipe()
    first = SharedRegistrations(shared.bindings, 0, no_table)
    first.restore([])
    for n in range(cap - 1):
        first.put(binding(f"sip:c{n}@192.0.2.7:5070"))

    def other_worker() -> int:
        index = SharedRegistrations(shared.bindings, 1, no_table)
        index.restore([])
        os.read(go[0], 1)
        with index.exclusive():
            seen = len(index.of("pbx"))
            if seen < cap:
                index.put(binding("sip:theirs@192.0.2.7:5070"))
        os.write(answer[1], bytes([seen]))
        return 0

    pid = forked(other_worker)
    with first.exclusive():
        assert len(first.of("pbx")) == cap - 1
        os.write(go[1], b"g")
        # Give the other worker the chance to decide in between (without the lock it
        # would answer now, having seen cap - 1); held, it waits for the put below.
        select.select([answer[0]], [], [], 0.5)
        first.put(binding("sip:ours@192.0.2.7:5070"))
    seen = os.read(answer[0], 1)[0]
    assert exit_code(pid) == 0
    assert seen == cap
    assert len(first.of("pbx")) == cap


def test_a_restarted_worker_takes_the_table_then_the_ring() -> None:
    """Changes the writers may not have committed yet are in the ring: a worker starting
    applies them over what it read from the table, in order."""
    shared = SharedState(workers=2, ids=1)
    first = SharedRegistrations(shared.bindings, 0, no_table)
    first.restore([])
    gone, kept = binding("sip:gone@192.0.2.7:5070"), binding("sip:new@192.0.2.7:5070")
    first.put(gone)
    first.put(kept)
    first.remove("pbx", gone.contact)
    restarted = SharedRegistrations(shared.bindings, 1, no_table)
    stale_table = [gone]  # the remove was not committed when the table was read
    restarted.restore(stale_table)
    assert {b.contact for b in restarted} == {kept.contact}


def test_expiry_is_each_worker_own_and_retiring_keeps_a_later_registration(
    database: Path | str,
) -> None:
    shared = SharedState(workers=2, ids=1)
    a = SharedRegistrations(shared.bindings, 0, no_table)
    b = SharedRegistrations(shared.bindings, 1, no_table)
    a.restore([])
    b.restore([])
    expired = binding("sip:x@192.0.2.7:5070", at=time.time() - 1000)
    a.put(expired)
    assert len(b) == 1
    a.forget("pbx", expired.contact)  # a's sweep: a's index only
    assert len(a) == 0
    assert len(b) == 1
    # The keeper's writer deletes the expired row unless a later REGISTER replaced it,
    # whichever worker's writer commits first.
    writer = BindingWriter(database)
    refreshed = binding("sip:x@192.0.2.7:5070")
    writer.put([refreshed])
    assert writer.flush()
    writer.retire([expired])
    assert writer.flush()
    assert [r.registered_at for r in load(database, time.time())] == [refreshed.registered_at]
    writer.retire([refreshed])
    assert writer.flush()
    assert load(database, time.time()) == []
    writer.close()


def test_a_binding_under_other_credentials_is_used_nowhere_and_not_learned() -> None:
    """Each worker judges a binding by its own configuration's fingerprints: one put
    under credentials it does not accept (another worker's, before a reload) is indexed
    but neither found, nor authorising its source, nor learned; replaying the ring at a
    start does not change that."""
    shared = SharedState(workers=2, ids=1)
    old = SharedRegistrations(shared.bindings, 0, no_table)
    old.accept({"pbx": "old"})
    old.restore([])
    new = SharedRegistrations(shared.bindings, 1, no_table)
    new.accept({"pbx": "new"})
    learned: list[Binding] = []
    new.learned = learned.append
    new.restore([])
    old.put(dataclasses.replace(binding("sip:a@192.0.2.7:5070"), credentials="old"))
    now = time.time()
    assert new.contacts("pbx", now) == []
    assert new.account_at("192.0.2.7", 5070, now, "udp") is None
    assert list(new) == []
    assert len(new) == 0
    assert learned == []
    restarted = SharedRegistrations(shared.bindings, 1, no_table)
    restarted.accept({"pbx": "new"})
    restarted.learned = learned.append
    restarted.restore([])
    assert restarted.contacts("pbx", now) == []
    assert learned == []
    # Worker 0 reloaded: its REGISTER under the new credentials counts in worker 1.
    old.put(dataclasses.replace(binding("sip:b@192.0.2.7:5071", port=5071), credentials="new"))
    assert [b.contact for b in old.contacts("pbx", now)] == ["sip:a@192.0.2.7:5070"]
    assert [b.contact for b in restarted.contacts("pbx", now)] == ["sip:b@192.0.2.7:5071"]
    assert [b.contact for b in learned] == ["sip:b@192.0.2.7:5071"]
