"""Node leases: a dead node's holdings stop counting; a paused node re-registers its own."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import pytest
from cluster_support import eventually, nodes, raw
from node_process import node_process
from redis.asyncio import Redis

from redis_tool import running_redis
from softswitch.cluster import SharedState, SharedStateConfigError, leases
from softswitch.cluster.credit import SharedCredit


def test_a_killed_node_frees_its_holdings_within_the_lease(
    url: str, prefix: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with (
            node_process(tmp_path, "hold", url, prefix, "doomed", "1.0", "account:x", "3") as p,
            nodes(url, prefix, "survivor", lease=1.0) as (survivor,),
        ):
            assert await p.read() == "held"
            assert await survivor.total("account:x") == 3
            assert not await survivor.acquire("account:x", 1, limit=3)
            p.signal(signal.SIGKILL)
            assert await p.finish() == -signal.SIGKILL

            async def room_again() -> bool:
                return await survivor.acquire("account:x", 1, limit=3)

            await eventually(room_again, "the killed node's 3 freed")
            assert await survivor.total("account:x") == 1
            async with raw(url) as client:
                fields = await client.hkeys(f"{prefix}:hold:account:x")
            assert fields == [survivor.field]  # the dead node's field is deleted
            await survivor.release("account:x")

    asyncio.run(main())


def test_a_killed_nodes_credit_holds_count_until_its_grace_ends(
    url: str, prefix: str, tmp_path: Path
) -> None:
    """A dead node's calls are debited only once another node's recovery settles its run,
    15-20 s after a kill -9 with the default heartbeat, later than its lease (10 s) runs
    out: its credit holds outlive the lease by a grace, or another node would spend the
    reserved credit again meanwhile (shown by a review: 0.90 of a 1.00 balance held by the
    survivor while the dead node's call still reserved 0.60). A limit's slots still go
    with the lease."""

    async def main() -> None:
        async with (
            node_process(
                tmp_path, "hold", url, prefix, "doomed", "0.5", "credit:acme", "600", "5.0"
            ) as p,
            nodes(url, prefix, "survivor", lease=0.5) as (survivor,),
        ):
            assert await p.read() == "held"
            assert await survivor.total("credit:acme") == 600
            p.signal(signal.SIGKILL)
            assert await p.finish() == -signal.SIGKILL
            await asyncio.sleep(1.5)  # three leases: its lease key is gone ...
            async with raw(url) as client:
                assert await client.get(f"{prefix}:node:doomed") is None
            # ... and its credit still counted by the survivor's meter: 600 + 500 > 1000
            credit = SharedCredit(lambda: survivor)
            assert await credit.hold("call-1", "acme", 500, 1000) is False
            assert await survivor.total("credit:acme") == 600

            async def room_again() -> bool:
                return bool(await credit.hold("call-2", "acme", 500, 1000))

            await eventually(room_again, "the killed node's grace to end")
            async with raw(url) as client:
                fields = await client.hkeys(f"{prefix}:hold:credit:acme")
            assert fields == [survivor.field]  # the dead node's field deleted after it
            credit.release("call-1")
            credit.release("call-2")
            await credit.settle()

    asyncio.run(main())


def test_a_clean_stop_lets_its_credit_go_at_once(url: str, prefix: str) -> None:
    """A node that leaves (a drained stop: its calls ended and debited) takes its grace
    with it."""

    async def main() -> None:
        async with nodes(url, prefix, "survivor") as (survivor,):
            leaving = await SharedState.connect(url, "leaving", prefix=prefix, grace=30.0)
            assert await leaving.acquire("credit:acme", 600, limit=1000)
            async with raw(url) as client:
                ttl = await client.pttl(f"{prefix}:seen:{leaving.field}")
            assert 10_000 < ttl <= 30_000  # renewed with the lease, for the grace
            await leaving.release("credit:acme", 600)
            await leaving.close()
            async with raw(url) as client:
                assert await client.exists(f"{prefix}:seen:{leaving.field}") == 0
            assert await survivor.acquire("credit:acme", 1000, limit=1000)
            await survivor.release("credit:acme", 1000)

    asyncio.run(main())


def test_a_paused_node_re_registers_its_holdings(url: str, prefix: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            node_process(tmp_path, "hold", url, prefix, "sleepy", "1.0", "account:x", "2") as p,
            nodes(url, prefix, "other", lease=1.0) as (other,),
        ):
            assert await p.read() == "held"
            assert await other.total("account:x") == 2
            p.signal(signal.SIGSTOP)  # a long pause: no renewal

            async def dropped() -> bool:
                return await other.total("account:x") == 0

            await eventually(dropped, "the paused node's lease to expire")
            p.signal(signal.SIGCONT)

            async def back() -> bool:
                return await other.total("account:x") == 2

            await eventually(back, "the paused node to re-register its 2")
            p.write()
            assert await p.finish() == 0
            assert await other.total("account:x") == 0
        assert "lost its lease" in p.log.read_text()

    asyncio.run(main())


def test_lease_loss_is_noticed_by_renewal_and_by_acquire(
    url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "a", "b", lease=1.0) as (a, b), raw(url) as client:
            assert await a.acquire("account:x", 2, limit=10)
            assert await a.acquire("credit:x", 500, limit=1000)
            # What a lease expiry looks like from Redis: the key is gone.
            await client.delete(f"{prefix}:node:a")
            assert await b.total("account:x") == 0  # b's script drops a's field

            async def renewed() -> bool:
                return await b.total("account:x") == 2

            await eventually(renewed, "a's renewal to re-register its holdings")
            assert await b.total("credit:x") == 500
            assert a.lease_losses == 1
            # The same, found by an admission before the renewal runs.
            await client.delete(f"{prefix}:node:a")
            assert await a.acquire("account:x", 1, limit=10)
            assert await b.total("account:x") == 3
            assert a.lease_losses == 2
            await a.release("account:x", 3)
            await a.release("credit:x", 500)

    with caplog.at_level(logging.WARNING, logger="softswitch.cluster"):
        asyncio.run(main())
    lost = [r for r in caplog.records if "lost its lease" in r.getMessage()]
    assert len(lost) == 2


def test_a_redis_back_with_older_data_is_repaired_by_the_renewal_in_both_directions(
    url: str, prefix: str
) -> None:
    """What a Redis restored from an older snapshot (or a failover to a lagging replica)
    looks like while the lease key survived: acquires and releases it acknowledged are gone,
    and no error said so, here without a restart (the keys edited in place, so the
    ``run_id`` stays). The renewal writes the node's field from its own book on the keys it
    holds on and on a sweep's share of those it held on (all three here), so both heal
    within a renewal: a lost acquire (other nodes would admit past ``max_calls`` and spend
    the credit again) and a lost release (a phantom hold refusing calls that fit)."""

    async def main() -> None:
        async with nodes(url, prefix, "a", "b", lease=1.0) as (a, b), raw(url) as client:
            assert await a.acquire("account:x", 3, limit=3)
            assert await a.acquire("credit:x", 500, limit=500)
            assert await a.acquire("account:y", 2, limit=5)
            await a.release("account:y", 2)
            field = a.field
            # The restore point: before a's acquires on x, before its release on y.
            await client.hdel(f"{prefix}:hold:account:x", field)
            await client.hdel(f"{prefix}:hold:credit:x", field)
            await client.hset(f"{prefix}:hold:account:y", field, "2")
            assert await client.get(f"{prefix}:node:a") is not None  # the lease survived
            assert await b.total("account:x") == 0
            assert await b.total("account:y") == 2

            async def healed() -> bool:
                return (
                    await b.total("account:x") == 3
                    and await b.total("credit:x") == 500
                    and await b.total("account:y") == 0
                )

            await eventually(healed, "a's renewal to write its book over the older data")
            assert not await b.acquire("account:x", 1, limit=3)
            assert not await b.acquire("credit:x", 1, limit=500)
            assert a.lease_losses == 0  # no lease was lost: only data
            await a.release("account:x", 3)
            await a.release("credit:x", 500)

    asyncio.run(main())


def test_a_node_id_held_by_a_live_process_is_refused(url: str, prefix: str) -> None:
    async def main() -> None:
        async with nodes(url, prefix, "n1", lease=0.5):
            with pytest.raises(SharedStateConfigError, match="node id 'n1' is in use"):
                await SharedState.connect(url, "n1", lease=0.5, prefix=prefix)
        # Closed cleanly, the id is free at once.
        again = await SharedState.connect(url, "n1", lease=0.5, prefix=prefix)
        await again.close()

    asyncio.run(main())


def test_a_restart_under_the_same_id_drops_the_previous_runs_holdings(
    url: str, prefix: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with node_process(tmp_path, "hold", url, prefix, "n", "1.0", "account:x", "3") as p:
            assert await p.read() == "held"
            p.signal(signal.SIGKILL)
            await p.finish()
        # The new run waits for the dead run's lease, then its holdings no longer count.
        async with nodes(url, prefix, "n", lease=1.0) as (n,):
            assert await n.total("account:x") == 0
            assert await n.acquire("account:x", 3, limit=3)
            await n.release("account:x", 3)

    asyncio.run(main())


def test_a_regain_from_an_acquire_writes_back_the_key_that_found_it(
    url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The acquire that finds the lease gone regains it: its own key (busy with that very
    acquire) must be written back too, or the retry starts the node's field from 0."""

    async def main() -> None:
        async with nodes(url, prefix, "a", "b") as (a, b):
            for _ in range(5):
                assert await a.acquire("account:x", 1, limit=6)
            assert await a.acquire("account:y", 2, limit=6)
            async with raw(url) as client:
                await client.delete(f"{prefix}:node:a")  # a pause longer than the lease
            assert await b.total("account:x") == 0  # b's script drops a's field
            with caplog.at_level(logging.WARNING, logger="softswitch.cluster"):
                assert await a.acquire("account:x", 1, limit=6)
            assert await b.total("account:x") == 6
            assert not await b.acquire("account:x", 1, limit=6)
            assert await b.total("account:y") == 2
            lost = [r.getMessage() for r in caplog.records if "lost its lease" in r.getMessage()]
            assert len(lost) == 1, lost
            assert "re-registered 2 held counters" in lost[0], lost

    asyncio.run(main())


def test_a_busy_node_re_registers_under_constant_traffic(url: str, prefix: str) -> None:
    """After a lost lease, a key that always has a call in flight still gets its field
    written back: Redis must not under-count a busy node for ever."""

    async def main() -> None:
        async with nodes(url, prefix, "a", "b", lease=0.9) as (a, b):
            for _ in range(5):
                assert await a.acquire("account:hot", 1, limit=100)
            async with raw(url) as client:
                await client.delete(f"{prefix}:node:a")
            await b.total("account:hot")
            stop = asyncio.Event()

            async def traffic() -> None:
                while not stop.is_set():
                    if await a.acquire("account:hot", 1, limit=100):
                        await a.release("account:hot")

            task = asyncio.create_task(traffic())
            try:

                async def counted() -> bool:
                    return await b.total("account:hot") >= 5

                await eventually(counted, "the busy node's 5 calls counted again")
            finally:
                stop.set()
                await task
            assert await b.total("account:hot") == 5

    asyncio.run(main())


def test_a_restart_after_a_dead_process_takes_its_id_over_without_waiting(
    url: str, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker restarted after its process died on this host need not wait a whole lease
    (60 s here) for the dead one's key: the process is provably gone."""

    async def main() -> None:
        args = ("hold", url, prefix, "w1", "60", "account:x", "2")
        async with node_process(tmp_path, *args) as p:
            assert await p.read() == "held"
            p.signal(signal.SIGKILL)
            await p.finish()
        with caplog.at_level(logging.INFO, logger="softswitch.cluster"):
            connecting = SharedState.connect(url, "w1", lease=60, prefix=prefix)
            n = await asyncio.wait_for(connecting, 20)  # a bound, far below the lease
        try:
            events = [getattr(r, "event", None) for r in caplog.records]
            assert "lease_takeover" in events
            assert "lease_wait" not in events
            assert await n.total("account:x") == 0  # the dead run's holdings stop counting
        finally:
            await n.close()

    asyncio.run(main())


def test_a_stopped_process_still_holds_its_id(url: str, prefix: str, tmp_path: Path) -> None:
    """A process that exists (here stopped, not dead) is never taken over."""

    async def main() -> None:
        async with node_process(tmp_path, "hold", url, prefix, "w2", "0.6", "account:x", "1") as p:
            assert await p.read() == "held"
            p.signal(signal.SIGSTOP)
            async with raw(url) as client:  # keep its lease alive while it is stopped
                holder = await client.get(f"{prefix}:node:w2")
                await client.pexpire(f"{prefix}:node:w2", 60_000)
            with pytest.raises(SharedStateConfigError, match="node id 'w2' is in use"):
                await SharedState.connect(url, "w2", lease=0.6, prefix=prefix)
            async with raw(url) as client:
                assert await client.get(f"{prefix}:node:w2") == holder

    asyncio.run(main())


def test_a_redis_restarted_from_an_older_snapshot_gets_every_key_at_the_next_renewal(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real restart from a ``SAVE`` made before a release and an acquire, with the lease
    key still alive in it: the node sees a new ``run_id`` and writes every key it has ever
    held on at its next renewal, not a sweep's share (one key per renewal here, so the
    sweep alone would take a minute and a half to reach the lost release)."""
    monkeypatch.setattr(leases, "SWEEP", 1)

    async def main() -> None:
        with running_redis() as server:
            async with nodes(server.url, prefix, "a", "b", lease=9.0) as (a, b):
                for n in range(30):  # keys a has held on before: ahead of y in the sweep
                    assert await a.acquire(f"account:k{n}", 1, limit=5)
                    await a.release(f"account:k{n}")
                assert await a.acquire("account:y", 2, limit=5)
                await first_renewal(a)
                async with raw(server.url) as client:
                    await client.save()
                await a.release("account:y", 2)
                assert await a.acquire("account:x", 3, limit=3)
                server.crash_and_restart()
                async with raw(server.url) as client:  # the snapshot, lease key alive
                    assert await client.hget(f"{prefix}:hold:account:y", a.field) == "2"
                    assert await client.hget(f"{prefix}:hold:account:x", a.field) is None
                    assert await client.get(f"{prefix}:node:a") is not None

                async def healed() -> bool:
                    return await b.total("account:y") == 0 and await b.total("account:x") == 3

                await eventually(healed, "a's renewal to write every key after the restart")
                assert a.lease_losses == 0  # the run_id told it, not a lost lease
                await a.release("account:x", 3)

    asyncio.run(main())


def test_a_failover_and_a_failback_to_the_same_redis_get_every_key_at_the_next_renewal(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same Redis process serving older data without a restart: demoted to a replica of
    a server with an older copy (a failover the node did not follow), resynced from it, then
    promoted again (the failback). Its ``run_id`` stays; its ``master_replid`` does not, and
    the node writes every key at its next renewal, not one key per renewal (helper-85's
    scenario: the lost release of y stayed for minutes)."""
    written = renewals_written(monkeypatch, sweep=1)

    async def main() -> None:
        with running_redis() as first, running_redis() as second:
            async with nodes(first.url, prefix, "a", "b", lease=9.0) as (a, b):
                for n in range(30):  # keys a has held on before: ahead of y in the sweep
                    assert await a.acquire(f"account:k{n}", 1, limit=5)
                    await a.release(f"account:k{n}")
                assert await a.acquire("account:y", 2, limit=5)
                async with raw(first.url) as old, raw(second.url) as spare:
                    for server in (old, spare):  # a master waits 5 s for more replicas
                        await server.config_set("repl-diskless-sync-delay", 0)
                    run_id = (await old.info("server"))["run_id"]
                    await replicate(spare, first.port)  # the spare's copy: y held
                    # The first replica changed the first's master_replid: a renewal that
                    # starts after it has seen that (from here on only the failover's
                    # resync changes it again).
                    after = len(written) + 2
                    await eventually(lambda: _after(written, after), "a renewal since")
                    await spare.execute_command("REPLICAOF", "NO", "ONE")
                    await a.release("account:y", 2)  # acknowledged by the first only
                    await replicate(old, second.port)  # failover: the first resyncs
                    await old.execute_command("REPLICAOF", "NO", "ONE")  # failback
                    assert (await old.info("server"))["run_id"] == run_id
                    assert await old.hget(f"{prefix}:hold:account:y", a.field) == "2"
                    assert await old.get(f"{prefix}:node:a") is not None

                async def healed() -> bool:
                    return await b.total("account:y") == 0

                # A renewal every 3 s: the next one writes every key; the sweep alone
                # would reach y after some thirty of them.
                await eventually(healed, "a's renewal to write every key", within=25.0)
                assert a.lease_losses == 0

    asyncio.run(main())


async def first_renewal(node: SharedState) -> None:
    """Once the node's first renewal has run: a run's first renewal writes every key (it has
    not seen this Redis before), so a test of what later ones write waits for it."""
    lease = node._lease

    async def renewed() -> bool:
        return lease._server is not None

    await eventually(renewed, "the node's first renewal")


async def replicate(client: Redis, port: int) -> None:
    """Make ``client``'s server a replica of 127.0.0.1:``port`` and wait for its sync."""
    await client.execute_command("REPLICAOF", "127.0.0.1", port)
    deadline = time.monotonic() + 20.0
    while (await client.info("replication")).get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        await asyncio.sleep(0.05)


def test_a_redis_that_will_not_say_its_run_id_gets_every_key_at_every_renewal(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user without INFO: the node cannot tell a restart, so it writes every key it
    has held on at each renewal (the cost the sweep saves, for the safety it keeps), and
    says so once."""
    written = renewals_written(monkeypatch, sweep=2)
    user = f"no-info-{prefix}"

    async def main() -> None:
        async with raw(url) as client:
            await client.execute_command(
                "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-info"
            )
            try:
                limited = url.replace("redis://", f"redis://{user}:pw@")
                # One CI run hung here: close() waited for ever for a renewal that lost its
                # cancel (softswitch.cancelling). Bounded, so a hang would fail instead.
                async with asyncio.timeout(60), nodes(limited, prefix, "a", lease=0.6) as (a,):
                    for n in range(8):
                        assert await a.acquire(f"account:k{n}", 1, limit=5)
                        await a.release(f"account:k{n}")
                    written.clear()
                    # The first may have taken its keys before the clear.
                    await eventually(lambda: _after(written, 3), "three renewals")
            finally:
                await client.execute_command("ACL", "DELUSER", user)

    with caplog.at_level(logging.INFO, logger="softswitch.cluster"):
        asyncio.run(main())
    assert written[1:3] == [8, 8]
    said = [r for r in caplog.records if "cannot read Redis's run_id" in r.getMessage()]
    assert len(said) == 1


def test_a_renewal_without_a_restart_writes_a_sweep_not_every_key(
    url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = renewals_written(monkeypatch, sweep=2)

    async def main() -> None:
        async with nodes(url, prefix, "a", lease=0.6) as (a,):
            # A run's first renewal writes everything: it has not seen this Redis yet.
            await eventually(lambda: _after(written, 1), "the first renewal")
            for n in range(8):
                assert await a.acquire(f"account:k{n}", 1, limit=5)
                await a.release(f"account:k{n}")
            assert await a.acquire("account:held", 1, limit=5)
            written.clear()
            # The first may have taken its keys before the clear.
            await eventually(lambda: _after(written, 3), "three renewals")
            await a.release("account:held")

    asyncio.run(main())
    assert written[1:3] == [3, 3]  # the key held, and two of the nine in turn


def renewals_written(monkeypatch: pytest.MonkeyPatch, *, sweep: int) -> list[int]:
    """How many keys each renewal writes from now on (appended as they run), with
    ``SWEEP`` set to ``sweep``."""
    written: list[int] = []
    original = leases.NodeLease._write

    async def counting(self: leases.NodeLease, mode: str, snapshot: dict[str, int]) -> int:
        if mode == "renew":
            written.append(len(snapshot))
        return await original(self, mode, snapshot)

    monkeypatch.setattr(leases.NodeLease, "_write", counting)
    monkeypatch.setattr(leases, "SWEEP", sweep)
    return written


async def _after(written: list[int], count: int) -> bool:
    return len(written) >= count
