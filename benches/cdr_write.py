"""CPU the CDR writer thread spends per CDR: what the switch pays for durable records.

    python benches/cdr_write.py                    # 5,000 CDRs, SQLite in a temp dir
    python benches/cdr_write.py -n 20000 --batch 25
    python benches/cdr_write.py --database postgresql://user@127.0.0.1:5432/db

The records look like the switch's (two attempts, four amounts, every timestamp set), each
billed call's start mark queued at its answer as the switch does (``--no-starts`` leaves
them out). They are enqueued ``--batch`` at a time, waiting for each group to be committed
(``flush``) before the next, so every group commit has ``--batch`` records: 25 is about what
the writer sees at 500 calls/s with a millisecond of fsync. The figure is the writer
thread's own CPU clock (``pthread_getcpuclockid``), read before and after, so the caller's
record building and the disk's fsync wait (not CPU) are left out; the whole process's CPU
(``time.process_time``) is printed beside it. Nothing here is a timed assertion: compare
runs of the same command before and after a change, on the same machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from softswitch.cdr import CallStart, CdrAttempt, CdrRecord
from softswitch.store.opening import open_cdr_store

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def record(i: int) -> CdrRecord:
    start = T0 + dt.timedelta(seconds=i / 500)
    return CdrRecord(
        call_id=f"{i:08d}-bench@192.0.2.10",
        account_id="acme",
        source="192.0.2.10:5060",
        caller="alice",
        callee_dialed="447911123456",
        callee_normalised="447911123456",
        callee_sent="777911123456",
        gateway_id="gwb",
        route_prefix="447",
        invite_at=start,
        ring_at=start + dt.timedelta(seconds=1.25),
        answer_at=start + dt.timedelta(seconds=4),
        end_at=start + dt.timedelta(seconds=65.5),
        end_reason="normal_clearing",
        status=200,
        q850=16,
        hangup_side="callee",
        attempts=(
            CdrAttempt("gwa", 503, "failed", start, start + dt.timedelta(seconds=0.5)),
            CdrAttempt(
                "gwb",
                200,
                "answered",
                start + dt.timedelta(seconds=0.5),
                start + dt.timedelta(seconds=65.5),
                request_uri="sip:777911123456@192.0.2.2:5060",
                ring_at=start + dt.timedelta(seconds=1.25),
            ),
        ),
        sell_rate=Decimal("0.200000"),
        sell_cost=Decimal("0.205000"),
        buy_rate=Decimal("0.150000"),
        buy_cost=Decimal("0.153750"),
    )


def run(database: str, n: int, batch: int, starts: bool) -> tuple[float, float]:
    """(writer thread CPU seconds, process CPU seconds) for ``n`` CDRs."""
    records = [record(i) for i in range(n)]
    marks = [CallStart(r, "sell", "buy", 3600.0) for r in records] if starts else []
    store = open_cdr_store(database)
    try:
        ident = store.writer_thread_id
        assert ident is not None
        clock = time.pthread_getcpuclockid(ident)
        thread0, process0 = time.clock_gettime(clock), time.process_time()
        for first in range(0, n, batch):
            if starts:
                for mark in marks[first : first + batch]:
                    store.open_call(mark)
                store.flush()
            for r in records[first : first + batch]:
                store.enqueue(r)
            store.flush()
        thread1, process1 = time.clock_gettime(clock), time.process_time()
    finally:
        store.close()
    return thread1 - thread0, process1 - process0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="CDRs to write (default 5000)")
    parser.add_argument("--batch", type=int, default=25, help="CDRs per group commit")
    parser.add_argument("--database", help="SQLite file or postgresql:// URL (default: temp)")
    parser.add_argument("--no-starts", action="store_true", help="no call start marks")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            database = args.database or str(Path(tmp) / f"cdr{i}.sqlite")
            results.append(run(database, args.n, args.batch, not args.no_starts))
    thread, process = min(results)
    per = 1000 / args.n
    print(
        f"{args.n} CDRs, {args.batch} per commit, starts {'off' if args.no_starts else 'on'}:"
        f" writer thread {thread * per * 1000:.1f} ms CPU per 1000 CDRs"
        f" (process {process * per * 1000:.1f} ms), best of {args.repeat}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
