"""Group commit under load: commits are at least ``commit_gap`` apart, so what a busy switch
writes meanwhile shares one commit; a write after a pause is committed at once."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from store_support import record

from softswitch.billing.ledger import Booking
from softswitch.cdr import CallStart, CdrRecord, CdrStore
from softswitch.store.records import Reservation


class CountingStore(CdrStore):
    """The SQLite store, remembering each commit's number of CDRs and when it began."""

    commits: list[tuple[float, int]]

    def _insert(
        self,
        conn: sqlite3.Connection,
        starts: Sequence[CallStart],
        records: Sequence[tuple[CdrRecord, Booking | None]],
        slices: Sequence[Reservation] = (),
        *,
        escape: bool = False,
    ) -> None:
        self.commits.append((time.monotonic(), len(records)))
        super()._insert(conn, starts, records, slices, escape=escape)


def test_writes_during_the_gap_share_the_next_commit(tmp_path: Path) -> None:
    CountingStore.commits = []
    store = CountingStore(tmp_path / "cdr.sqlite")
    store.commit_gap = 0.2
    try:
        began = time.monotonic()
        store.write(record("first")).result(5)
        assert time.monotonic() - began < 0.15  # an idle store commits at once
        futures = []
        for i in range(20):  # 20 CDRs over ~40 ms, well within one gap
            futures.append(store.write(record(f"c{i}")))
            time.sleep(0.002)
        for future in futures:
            future.result(5)
        sizes = [n for _, n in store.commits]
        assert sum(sizes) == 21
        assert len(sizes) <= 3, sizes  # the first, then one or two, not twenty
        starts = [t for t, _ in store.commits]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(gap >= 0.19 for gap in gaps), gaps
    finally:
        store.close()
    reopened = CdrStore(tmp_path / "cdr.sqlite")
    try:
        assert len(reopened.query(limit=100)) == 21
    finally:
        reopened.close()
