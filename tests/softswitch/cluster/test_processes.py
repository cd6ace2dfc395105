"""Two real processes hammering one counter: the limit is never exceeded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster_support import nodes
from node_process import node_process


def test_two_processes_filling_one_key_get_exactly_the_limit(
    url: str, prefix: str, tmp_path: Path
) -> None:
    async def main() -> None:
        args = ("fill", url, prefix)
        async with (
            node_process(tmp_path, *args, "p1", "account:acme", "150", "400") as p1,
            node_process(tmp_path, *args, "p2", "account:acme", "150", "400") as p2,
            nodes(url, prefix, "observer") as (observer,),
        ):
            assert [await p1.read(), await p2.read()] == ["ready", "ready"]
            p1.write()
            p2.write()
            results = [await p1.read_json(), await p2.read_json()]
            assert sum(r["acquired"] for r in results) == 150
            assert await observer.total("account:acme") == 150
            p1.write()
            p2.write()
            assert [await p1.finish(), await p2.finish()] == [0, 0]
            assert await observer.total("account:acme") == 0

    asyncio.run(main())


def test_two_processes_churning_one_key_never_exceed_it(
    url: str, prefix: str, tmp_path: Path
) -> None:
    async def main() -> None:
        args = ("churn", url, prefix)
        async with (
            node_process(tmp_path, *args, "p1", "account:acme", "3", "150", "4") as p1,
            node_process(tmp_path, *args, "p2", "account:acme", "3", "150", "4") as p2,
            nodes(url, prefix, "observer") as (observer,),
        ):
            assert [await p1.read(), await p2.read()] == ["ready", "ready"]
            p1.write()
            p2.write()
            results = [await p1.read_json(), await p2.read_json()]
            assert [await p1.finish(), await p2.finish()] == [0, 0]
            for r in results:
                assert r["acquired"] == r["released"]
                assert r["acquired"] + r["refused"] == 600
                assert r["max_seen"] <= 3
            # Eight tasks for three places: they did contend.
            assert sum(r["refused"] for r in results) > 0
            assert sum(r["acquired"] for r in results) > 0
            assert await observer.total("account:acme") == 0

    asyncio.run(main())
