"""``SharedRegistrations`` and the other nodes' changes (``registrar.node_sync``): the workers'
journal applies a change by the rules the table and the notices follow, so the workers of a
node keep the same binding of a contact registered through two nodes at once, whichever
order the journal and the notices reach them in; and a worker that reads the table again
(``catch_up``) keeps the notices it applied while the read was under way."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

from journal_support import CONTACT, binding, no_table

from postgres_tool import Postgres, postgres
from softswitch.registrar import Binding, BindingWriter, load
from softswitch.registrar.node_sync import NodeSync
from softswitch.store.migrations import migrate
from softswitch.store.postgres_connect import connect
from softswitch.workers.live import SharedState
from softswitch.workers.registrations import ENTRIES, SharedRegistrations

__all__ = ["postgres"]


def notified(index: SharedRegistrations, *changes: Binding) -> None:
    """Another node's notices reaching this worker's listener, applied as on its loop."""
    NodeSync("postgresql://unused", index)._apply_changes(list(changes))


def held(index: SharedRegistrations, contact: str = CONTACT) -> Binding | None:
    """The binding ``index`` holds for the contact, the other workers' changes taken."""
    index.refresh()
    return index.indexed("pbx", contact)


def two_workers() -> tuple[SharedRegistrations, SharedRegistrations]:
    shared = SharedState(workers=2, ids=1)
    first = SharedRegistrations(shared.bindings, 0, no_table)
    second = SharedRegistrations(shared.bindings, 1, no_table)
    first.restore([])
    second.restore([])
    return first, second


def test_a_contact_registered_through_two_nodes_at_once_is_the_same_in_every_worker() -> None:
    """Node 2 takes the contact's REGISTER a moment after node 1's worker 1 does. Worker 0
    hears node 2's notice before worker 1's journal entry; worker 1 hears it after its own
    REGISTER. Both keep node 2's binding, as the table does (the later one)."""
    first, second = two_workers()
    now = time.time()
    ours, theirs = binding(at=now), binding(at=now + 0.5, port=5071)
    notified(first, theirs)
    second.put(ours)  # worker 1's REGISTER, not having heard node 2 yet
    notified(second, theirs)
    assert held(first) == theirs
    assert held(second) == theirs
    assert first.account_at("192.0.2.7", 5071, now, "udp") == "pbx"
    assert first.account_at("192.0.2.7", 5070, now, "udp") is None


def test_an_unregister_through_one_worker_leaves_a_later_registration_in_every_worker() -> None:
    """Worker 1 unregisters the binding it holds while node 2 registered the contact again a
    moment later; worker 0 heard node 2 first. The unregister takes the binding it was about
    and no later one, in either worker."""
    first, second = two_workers()
    now = time.time()
    ours, theirs = binding(at=now), binding(at=now + 0.5, port=5071)
    second.put(ours)
    assert held(first) == ours  # by the journal
    notified(first, theirs)
    assert second.remove("pbx", CONTACT) == ours  # worker 1's un-REGISTER
    notified(second, theirs)
    assert held(first) == theirs
    assert held(second) == theirs
    # A worker restarting now replays the ring over the table, which holds node 2's binding.
    restarted = SharedRegistrations(first._journal, 1, no_table)
    restarted.restore([theirs])
    assert held(restarted) == theirs


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.01)


def test_notices_applied_while_the_table_is_read_again_are_kept(postgres: Postgres) -> None:
    """Worker 1 fell behind the ring and reads the table again, slowly. Meanwhile node 2
    registers a contact and unregisters another: worker 1's listener applies both notices to
    the index it still answers from. The read began before those commits, and the ring has
    neither (they are node 2's), yet the index swapped in keeps them."""
    database = postgres.database()
    migrate(database)
    node_2 = BindingWriter(database)
    now = time.time()
    gone = binding("sip:gone@192.0.2.7:5070", at=now - 10)
    node_2.put([gone])
    assert node_2.flush()
    shared = SharedState(workers=2, ids=1)
    busy = SharedRegistrations(shared.bindings, 0, no_table)
    busy.restore([])
    read, release = threading.Event(), threading.Event()
    reads: list[int] = []

    def slow_table() -> list[Binding]:
        rows = load(database, time.time())
        reads.append(len(rows))
        read.set()
        assert release.wait(10.0)
        return rows

    idle = SharedRegistrations(shared.bindings, 1, slow_table)

    async def main() -> None:
        idle.restore(load(database, time.time()))
        sync = NodeSync(database, idle, delays=(0.1,))
        sync.start()
        try:
            await until(lambda: sync.reads >= 1)
            for n in range(ENTRIES + 10):
                busy.put(binding(f"sip:n{n % 7}@192.0.2.7:5070", at=time.time()))
            idle.refresh()  # the ring went round: the next catch-up reads the table
            catching_up = asyncio.create_task(idle.catch_up())
            await until(read.is_set)
            new = binding("sip:new@192.0.2.7:5070", at=time.time())
            node_2.put([new])
            node_2.remove([gone], tombstone_at=time.time())
            assert await asyncio.to_thread(node_2.flush)
            await until(
                lambda: (
                    idle.indexed("pbx", new.contact) == new
                    and idle.indexed("pbx", gone.contact) is None
                )
            )
            release.set()
            await catching_up
            assert reads == [1]  # read once, before node 2's commits: only ``gone`` in it
            assert idle.indexed("pbx", new.contact) == new
            assert idle.indexed("pbx", gone.contact) is None
            contacts = {b.contact for b in idle.contacts("pbx", time.time())}
            assert contacts == {new.contact} | {f"sip:n{n}@192.0.2.7:5070" for n in range(7)}
            await idle.catch_up()  # caught up: nothing more to read
            assert reads == [1]
        finally:
            release.set()
            sync.stop()

    try:
        asyncio.run(main())
    finally:
        node_2.close()


def test_an_unregister_through_a_worker_that_missed_a_refresh_reaches_every_worker() -> None:
    """A worker whose ring went round (it missed another worker's re-REGISTER of the
    contact) and that then takes the contact's unregister removes it everywhere, as its
    tombstone does in the table: the removal carries the unregister's second, not only
    the stale binding's."""
    shared = SharedState(workers=2, ids=1)
    first, second = (SharedRegistrations(shared.bindings, n, no_table) for n in (0, 1))
    for index in (first, second):
        index.restore([])
    now = time.time()
    stale = binding(at=now - 60)
    first.put(stale)
    second.refresh()
    first.put(binding(at=now - 1, port=5071))  # a refresh from a new NAT port
    for n in range(ENTRIES + 5):  # and more changes than the ring keeps
        first.put(binding(f"sip:f{n}@192.0.2.9:5070", account="other", at=time.time()))
    with second.exclusive():
        assert second.of("pbx")[CONTACT] == stale
        second.remove("pbx", CONTACT, now)
    first.refresh()
    assert first.indexed("pbx", CONTACT) is None


def test_an_unregister_notice_for_a_contact_this_worker_did_not_hold_survives_a_catch_up(
    postgres: Postgres,
) -> None:
    """While a worker reads the table again, another node registers a phone (before the
    read saw the table) and unregisters it (after): the listener's batch keeps only the
    tombstone, which removes nothing from this worker's index (it never held the phone),
    and the read brings the registration back. The removal is kept aside as it came, so
    the index swapped in does not hold the phone either."""
    database = postgres.database()
    migrate(database)
    node_2 = BindingWriter(database)
    shared = SharedState(workers=2, ids=1)
    busy = SharedRegistrations(shared.bindings, 0, no_table)
    busy.restore([])
    read, release = threading.Event(), threading.Event()

    def slow_table() -> list[Binding]:
        rows = load(database, time.time())
        read.set()
        assert release.wait(10.0)
        return rows

    idle = SharedRegistrations(shared.bindings, 1, slow_table)
    idle.restore(load(database, time.time()))
    phone = binding("sip:x@192.0.2.7:5070", at=time.time())

    async def main() -> None:
        for n in range(ENTRIES + 10):
            busy.put(binding(f"sip:n{n % 7}@192.0.2.7:5070", at=time.time()))
        idle.refresh()
        node_2.put([phone])
        assert await asyncio.to_thread(node_2.flush)
        task = asyncio.create_task(idle.catch_up())
        assert await asyncio.to_thread(read.wait, 10)  # the read saw the phone registered
        gone_at = time.time()
        node_2.remove([phone], tombstone_at=gone_at)
        assert await asyncio.to_thread(node_2.flush)
        sync = NodeSync(database, idle)
        tombstone = dataclasses.replace(phone, expires_at=gone_at, registered_at=gone_at)
        with connect(database) as conn:
            backed = sync._backed(conn, [phone, tombstone])
        assert [b.registered_at for b in backed] == [gone_at]  # the put is not borne out
        sync._apply_changes(backed)
        assert idle.indexed("pbx", phone.contact) is None
        release.set()
        await task
        assert not idle._lapped  # the read was swapped in
        assert idle.indexed("pbx", phone.contact) is None

    try:
        asyncio.run(main())
    finally:
        release.set()
        node_2.close()


def test_a_contact_unregistered_in_the_table_is_not_brought_back_by_the_ring(
    tmp_path: Path,
) -> None:
    """Another node unregisters a contact this node's ring still holds an older REGISTER
    of: a worker that reads the table again (its ring went round) or starts reads the
    tombstone with the live rows, so the ring's older put is refused as the table refused
    it, and the tombstone itself is no binding."""
    database = tmp_path / "cdr.sqlite"
    shared = SharedState(workers=2, ids=1)
    busy = SharedRegistrations(shared.bindings, 0, no_table)
    busy.restore([])

    def table() -> list[Binding]:
        return load(database, time.time(), settled=True)

    idle = SharedRegistrations(shared.bindings, 1, table)
    idle.restore(table())
    now = time.time()
    phone = binding(at=now - 30)
    for n in range(200):  # idle sees the first 100 changes only
        busy.put(binding(f"sip:f{n}@192.0.2.9:5070", account="other", at=time.time()))
        if n == 99:
            idle.refresh()
    busy.put(phone)  # this node's REGISTER, still in the ring when idle reads the table
    for n in range(ENTRIES - 50):
        busy.put(binding(f"sip:g{n}@192.0.2.9:5070", account="other", at=time.time()))
    other_node = BindingWriter(database)
    try:
        other_node.remove([phone], tombstone_at=now - 5)  # the phone unregisters there
        assert other_node.flush()
    finally:
        other_node.close()
    idle.refresh()
    assert idle._lapped
    asyncio.run(idle.catch_up())
    assert not idle._lapped
    assert idle.indexed("pbx", CONTACT) is None
    assert idle.indexed("other", "sip:g0@192.0.2.9:5070") is not None  # the ring is applied
    restarted = SharedRegistrations(shared.bindings, 1, table)
    restarted.restore(table())
    assert restarted.indexed("pbx", CONTACT) is None
    assert not any(b.tombstone for b in restarted.every())
