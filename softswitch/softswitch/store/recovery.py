"""Which runs are dead, and the CDRs of the calls they left up: the same for every database.

A store registers each process that writes through it as a run (``switch_runs``) and keeps
its heartbeat fresh; at start the next run closes the open calls of the dead ones. Deciding
who is dead and what a cut call's CDR says is the same question whatever the database, so
the SQLite and the PostgreSQL stores both ask it here and only run the SQL themselves.

A run is dead when it stopped cleanly, when its heartbeat is more than three of its intervals
old, or when it ran on this host and its pid is gone, a zombie or exiting (or is ours,
reused: a container restarted). A run on another host with a fresh heartbeat is alive
whatever else is known: its pids mean nothing here. On a database shared by several nodes
that is what keeps one node's start from settling the calls another node is still carrying.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from softswitch.billing.ledger import Booking
from softswitch.billing.money import to_nanos
from softswitch.call.refusal import END_REASONS, EndReason

from .records import CdrRecord, Rater, RecoveredRun, RowLike, parse_ts, ts

__all__ = [
    "LIVE_RUNS",
    "STALE_HEARTBEATS",
    "log_alive",
    "log_recovered",
    "pid_running",
    "recovered_calls",
    "recovered_cdr",
    "recovered_debit",
    "recovered_run",
    "run_is_alive",
]

logger = logging.getLogger("softswitch.cdr")

#: Run ids of the stores open in this process: alive whatever their pid says.
LIVE_RUNS: set[str] = set()

#: A run whose heartbeat is this many of its intervals old is dead.
STALE_HEARTBEATS = 3


#: ``PF_EXITING`` in ``/proc/<pid>/stat``'s flags: the process is in ``exit()``.
_PF_EXITING = 0x4


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` lives on this host (someone else's counts).

    A process that has exited but is not yet reaped (a zombie, ``Z``; ``X`` while it is
    reaped) or is exiting right now (``PF_EXITING``: a ``kill -9`` taking effect) still
    answers ``kill(pid, 0)``, yet it will never write again: dead. The workers of a killed
    supervisor are such processes for a moment (they are killed by ``PR_SET_PDEATHSIG`` and
    reaped by init), so a restart right after the kill used to take their runs for live
    ones. ``/proc/<pid>/stat`` says which; without ``/proc`` (not Linux) existence is all
    that is known.

    A pid that was reused by an unrelated process after the run died looks alive here:
    ``run_is_alive`` asks this only of runs whose heartbeat is fresh, so a reused pid can
    delay a dead run's recovery by at most its heartbeat's staleness bound.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return False  # /proc is there and the pid is not
        return _pid_exists(pid)
    except OSError:
        return _pid_exists(pid)
    # "pid (comm) state ppid pgrp session tty tpgid flags ...": comm may hold spaces or
    # parentheses, so the fields are counted from the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 7:
        return _pid_exists(pid)
    state, flags = fields[0], int(fields[6])
    return state not in ("Z", "X", "x") and not flags & _PF_EXITING


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def run_is_alive(run: RowLike, now: dt.datetime, host: str) -> bool:
    """Whether the ``switch_runs`` row ``run`` may still be carrying calls, seen from a
    store on ``host`` at ``now`` (the database's clock where it has one)."""
    if run["stopped_at"] is not None:
        return False
    heartbeat = parse_ts(run["heartbeat_at"])
    stale_after = STALE_HEARTBEATS * float(run["heartbeat_interval"])
    if heartbeat is None or (now - heartbeat).total_seconds() > stale_after:
        return False
    if run["host"] != host:
        return True  # another host's pids mean nothing here: trust its heartbeat
    if run["pid"] == os.getpid():
        return run["run_id"] in LIVE_RUNS
    return pid_running(int(run["pid"]))


def recovered_cdr(
    row: RowLike, run: RowLike, heartbeat: dt.datetime, rate: Rater | None
) -> CdrRecord:
    """The CDR of an open call (an ``open_calls`` row) its run's death cut: ended at the
    run's last heartbeat, never before the answer nor past what the switch would have let
    it last (its maximum duration, the seconds its credit covered)."""
    at_answer = CdrRecord.from_row(json.loads(row["record"]))
    answer_at = at_answer.answer_at
    if answer_at is None:
        raise ValueError("no answer time")
    end_at = max(heartbeat, answer_at)  # never before the answer: duration 0, not negative
    if row["max_duration"] is not None and row["max_duration"] > 0:
        # The switch would have cut the call at its maximum (and billed exactly that).
        end_at = min(end_at, answer_at + dt.timedelta(seconds=float(row["max_duration"])))
    if row["billed_account"] is not None:
        # Never beyond the seconds the call's credit covered: the switch cuts it there.
        covered = row["billed_until"] or 0
        end_at = min(end_at, answer_at + dt.timedelta(seconds=covered))
    attempts = tuple(
        dataclasses.replace(a, ended_at=end_at)
        if a.outcome == "answered" and a.ended_at is None
        else a
        for a in at_answer.attempts
    )
    note = (
        f"system failure: run {run['run_id']} (pid {run['pid']}) died;"
        f" billed to its last heartbeat {ts(heartbeat)}"
    )
    status, q850 = END_REASONS[EndReason.SYSTEM_FAILURE]
    record = dataclasses.replace(
        at_answer,
        end_reason=EndReason.SYSTEM_FAILURE,  # what the call start already says, made sure
        status=status,
        q850=q850,
        hangup_side="switch",
        end_at=end_at,
        duration=None,  # recomputed: answer to end, never negative
        billsec=None,
        attempts=attempts,
        detail=f"{at_answer.detail}; {note}" if at_answer.detail else note,
    )
    if rate is not None and record.callee_normalised is not None:
        number, billsec = record.callee_normalised, record.billsec or 0
        try:
            record.sell_cost = rate(row["sell_deck"], number, answer_at, billsec)
            if record.gateway_id is not None:
                record.buy_cost = rate(row["buy_deck"], number, answer_at, billsec)
        except Exception:  # a costing bug must not cost us the record
            logger.exception("costing a recovered call failed", extra={"call_id": row["call_id"]})
            record.sell_cost = record.buy_cost = None
            record.detail += "; costing failed, see the log"
    return record


def recovered_debit(account_id: str, record: CdrRecord) -> Booking:
    """The ledger debit of a recovered call: its CDR's sell cost (0, logged, when it could
    not be rated: the CDR says so too, and an operator settles it by hand)."""
    if record.sell_cost is None:
        logger.error(
            "recovered call of billed account %s has no sell cost: debited 0",
            account_id,
            extra={"call_id": record.call_id},
        )
    amount = to_nanos(record.sell_cost) if record.sell_cost is not None else 0
    return Booking(account_id, "call", -amount, record.call_id, record.end_at)


def recovered_calls(
    rows: Sequence[RowLike],
    run: RowLike,
    heartbeat: dt.datetime,
    rate: Rater | None,
) -> tuple[list[CdrRecord], list[Booking]]:
    """The CDRs and ledger debits of a dead run's open calls; an unreadable row (a bug or
    a damaged database) is logged loudly with all that is known, and skipped."""
    records: list[CdrRecord] = []
    debits: list[Booking] = []
    for row in rows:
        try:
            record = recovered_cdr(row, run, heartbeat, rate)
            records.append(record)
            if row["billed_account"] is not None:
                debits.append(recovered_debit(row["billed_account"], record))
        except (ValueError, TypeError, KeyError) as e:
            logger.error(
                "open call %s of run %s unreadable (%s), dropped; row=%s",
                row["call_id"],
                run["run_id"],
                e,
                # keys(): iterating a sqlite3.Row gives its values
                json.dumps({k: row[k] for k in row.keys()}, default=str),  # noqa: SIM118
                extra={"call_id": row["call_id"]},
            )
    return records, debits


def recovered_run(run: RowLike, heartbeat: dt.datetime, calls: int) -> RecoveredRun:
    """What ``recover`` reports of one dead run."""
    return RecoveredRun(
        run_id=run["run_id"],
        host=run["host"],
        pid=int(run["pid"]),
        started_at=parse_ts(run["started_at"]) or heartbeat,
        heartbeat_at=heartbeat,
        calls=calls,
    )


def log_alive(run: RowLike) -> None:
    """A live run with calls up (``open_left``, counted by the query) is worth a WARNING: if
    it is in fact dead, its calls wait for its heartbeat to go stale. A live run with none
    (a sibling worker, another node between calls) is the normal case and says nothing."""
    if not run["open_left"]:
        return
    logger.warning(
        "run %s (pid %s on %s) looks alive: its %d open calls are left to it",
        run["run_id"],
        run["pid"],
        run["host"],
        run["open_left"],
    )


def log_recovered(runs: Sequence[RecoveredRun]) -> None:
    """One warning per dead run whose calls were closed."""
    for run in runs:
        if run.calls:
            logger.warning(
                "closed %d calls of run %s (pid %d on %s, started %s) as %s,"
                " billed to its last heartbeat %s",
                run.calls,
                run.run_id,
                run.pid,
                run.host,
                ts(run.started_at),
                EndReason.SYSTEM_FAILURE,
                ts(run.heartbeat_at),
            )
