"""Several processes opening one fresh SQLite file at once, as the workers of a switch do.

Turning a new file to WAL needs SQLite's exclusive lock, and SQLite gives up at once (no
busy handler) when two connections both hold the read lock and want it: without a retry,
one worker of a fresh start died with "database is locked" on ``PRAGMA journal_mode``.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

from softswitch.store.migrations import latest_version, migrate

#: Processes opening the file together; rounds, each on a new file.
OPENERS = 6
ROUNDS = 8


def _open(path: str, start: Any, errors: Any) -> None:
    try:
        start.wait(timeout=30)
        migrate(Path(path))
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_a_fresh_file_opened_by_several_processes_at_once_migrates_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        path = tmp_path / f"cdr{round_}.sqlite"
        start = ctx.Barrier(OPENERS)
        errors = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(path), start, errors)) for _ in range(OPENERS)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * OPENERS
        failures = []
        while not errors.empty():
            failures.append(errors.get())
        assert failures == [], f"round {round_}: {failures}"
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            versions = conn.execute("SELECT version FROM schema_version").fetchall()
        # Each migration applied once, whoever applied it.
        assert sorted(v for (v,) in versions) == list(range(1, latest_version(path) + 1))
