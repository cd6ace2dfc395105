"""The node's own book and its repair rules (pure: no Redis)."""

from __future__ import annotations

import asyncio

from softswitch.cluster.holdings import Holdings


def test_a_renewal_repair_waits_for_a_key_in_flight() -> None:
    async def main() -> None:
        book = Holdings()
        book.add("a", 2)
        book.mark_unsure("a")
        order: list[str] = []
        started = asyncio.Event()
        finish = asyncio.Event()

        async def call() -> None:
            async with book.operation("a"):
                started.set()
                await finish.wait()
                book.add("a", 1)
                order.append("call")

        async def renewal() -> None:
            async with book.repairing(everything=False) as snapshot:
                order.append(f"repair {snapshot}")
                book.repaired(snapshot)

        task = asyncio.create_task(call())
        await started.wait()
        repair = asyncio.create_task(renewal())
        await asyncio.sleep(0)
        assert order == []  # the repair waits for the call's lock
        finish.set()
        await asyncio.gather(task, repair)
        assert order == ["call", "repair {'a': 3}"]
        assert book.unsure == frozenset()

    asyncio.run(main())


def test_a_regain_inside_an_operation_writes_its_own_key_and_skips_busy_ones() -> None:
    async def main() -> None:
        book = Holdings()
        book.add("mine", 1)
        book.add("busy", 4)
        book.add("idle", 2)
        started = asyncio.Event()
        finish = asyncio.Event()

        async def other() -> None:
            async with book.operation("busy"):
                started.set()
                await finish.wait()

        task = asyncio.create_task(other())
        await started.wait()
        async with book.operation("mine"), book.repairing(everything=True) as snapshot:
            assert snapshot == {"mine": 1, "idle": 2}
            book.repaired(snapshot)
        assert book.unsure == {"busy"}  # the next renewal writes it
        finish.set()
        await task

    asyncio.run(main())


def test_an_unsure_key_holding_nothing_is_repaired_to_nothing() -> None:
    async def main() -> None:
        book = Holdings()
        book.mark_unsure("gone")
        async with book.repairing(everything=True) as snapshot:
            assert snapshot == {"gone": 0}
            book.repaired(snapshot)
        assert book.unsure == frozenset()
        assert book.items() == {}

    asyncio.run(main())


def test_a_renewal_writes_what_is_held_and_the_rest_a_sweep_at_a_time() -> None:
    """Every key ever held on is written in turn, ``sweep`` keys per renewal, on top of what
    is held now and what is unsure: a renewal's cost stays bounded however many accounts a
    node has ever had calls for, and a key changed behind its back is still put right."""

    async def main() -> None:
        book = Holdings()
        for n in range(10):
            book.add(f"k{n}", 1)
            book.remove(f"k{n}", 1)
        book.add("k3", 2)  # held again: written every time, and still once in the sweep
        book.add("live", 1)
        book.mark_unsure("lost")
        seen: set[str] = set()
        for _ in range(3):
            async with book.repairing(everything=False, sweep=4) as snapshot:
                book.repaired(snapshot)
            assert snapshot["live"] == 1  # held: every time
            assert snapshot["k3"] == 2
            others = set(snapshot) - {"live", "k3", "lost"}
            assert len(others) <= 4
            assert all(snapshot[k] == 0 for k in others)
            seen |= set(snapshot)
        # Eleven keys held on, four per renewal: all of them in three renewals.
        assert seen == {f"k{n}" for n in range(10)} | {"live", "lost"}
        assert book.unsure == frozenset()
        async with book.repairing(everything=True) as snapshot:
            assert set(snapshot) == {f"k{n}" for n in range(10)} | {"live"}

    asyncio.run(main())


def test_a_renewal_cancelled_waiting_for_a_key_leaves_that_keys_lock_to_its_holder() -> None:
    """The renewal, waiting for a key an acquire has on the wire, is cancelled (a stop):
    it must not release the lock it never got, or a third operation gets in beside the
    acquire, and the renewal's cancel turns into "Lock is not acquired"."""

    async def main() -> None:
        book = Holdings()
        book.add("k", 1)
        in_operation, finish, third_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def operation() -> None:
            async with book.operation("k"):
                in_operation.set()
                await finish.wait()

        async def renewal() -> None:
            async with book.repairing(everything=True):
                await asyncio.sleep(3600)

        async def third() -> None:
            async with book.operation("k"):
                third_in.set()

        first = asyncio.create_task(operation())
        await in_operation.wait()
        renewing = asyncio.create_task(renewal())
        await asyncio.sleep(0.01)  # waiting for k's lock
        other = asyncio.create_task(third())
        await asyncio.sleep(0.01)
        renewing.cancel()
        await asyncio.wait([renewing])
        await asyncio.sleep(0.01)
        assert renewing.cancelled()  # not a RuntimeError
        assert not third_in.is_set()  # k is still the first operation's
        finish.set()
        await asyncio.wait([first, other], timeout=1)
        assert third_in.is_set()
        first.result()
        assert book.held("k") == 1

    asyncio.run(asyncio.wait_for(main(), 5))
