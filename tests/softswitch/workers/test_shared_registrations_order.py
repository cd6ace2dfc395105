"""``SharedRegistrations`` and the other nodes' changes (``registrar.node_sync``): the workers'
journal applies a change by the rules the table and the notices follow, so the workers of a
node keep the same binding of a contact registered through two nodes at once, whichever
order the journal and the notices reach them in; and a worker that reads the table again
(``catch_up``) keeps the notices it applied while the read was under way."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from journal_support import CONTACT, binding, no_table

from postgres_tool import Postgres, postgres
from softswitch.registrar import Binding, BindingWriter, load
from softswitch.registrar.node_sync import NodeSync
from softswitch.store.migrations import migrate
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
