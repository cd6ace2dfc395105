"""``softswitch replay``: what a period of real calls would have earned and cost with
candidate decks (a carrier's new price list, a new sell deck) in place of today's.

    softswitch replay --config switch.toml --cdrs var/cdr.sqlite \\
        --deck carrier_a=carrier_a-2027.csv --from 2026-11-01 --to 2026-12-01

prints, per destination and gateway, calls, minutes, revenue, cost and margin as recorded
and as re-rated, then how many calls would go to a different first gateway or be refused,
with the first of them. ``--csv OUT`` writes the table as CSV (``-``: standard output).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from lcr.progress import Progress

from ..call.snapshot import build_snapshot
from ..commands import parse_time
from ..config import ConfigError, load_config
from .candidates import CandidateError, parse_deck_args, with_candidates
from .report import Report
from .reroute import replay_batch
from .source import ReplaySourceError, count_cdrs, read_cdrs

__all__ = ["add_subcommand", "replay"]


def replay(
    config_path: str,
    cdrs: str,
    decks: Sequence[str] = (),
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    csv_out: str | None = None,
    progress: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run a replay and print its report; 0 done, 1 the operator's input is wrong.

    ``progress``: show the progress line on ``err`` (None: when it is a terminal).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        candidates = parse_deck_args(decks)
        config = with_candidates(load_config(config_path), candidates)
        snapshot = build_snapshot(config)
    except CandidateError as e:
        print(f"error: {e}", file=err)
        return 1
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=err)
        return 1
    path = Path(cdrs)
    report = Report()
    shown = Progress(f"replaying {path}", enabled=progress, stream=err)
    read = [0]
    try:
        total = count_cdrs(path, since, until) if path.is_file() else None
        size = path.stat().st_size if path.is_file() else 0
        for batch in read_cdrs(path, since, until, read=read):
            report.add(batch, replay_batch(snapshot, batch))
            if total is None:
                shown(report.calls, min(read[0], size), size)
            else:
                shown(report.calls, report.calls, total)
    except ReplaySourceError as e:
        shown.close()
        print(f"error: {e}", file=err)
        return 1
    except UnicodeDecodeError as e:
        shown.close()
        print(f"error: {path}: not valid UTF-8 ({e.reason} at byte {e.start})", file=err)
        return 1
    shown.close()
    if csv_out == "-":
        report.write_csv(out)
    else:
        if csv_out is not None:
            with open(csv_out, "w", newline="", encoding="utf-8") as handle:
                report.write_csv(handle)
        for line in report.table_lines():
            print(line, file=out)
    summary = err if csv_out == "-" else out
    for line in report.summary_lines():
        print(line, file=summary)
    return 0


def add_subcommand(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``replay`` on the ``softswitch`` parser."""
    p = commands.add_parser(
        "replay",
        help="re-route and re-rate recorded calls with candidate decks: margin before/after",
        description=(
            "Re-route and re-rate a period of recorded calls (CDRs) with candidate decks in"
            " place of the configuration's, and show per destination and gateway the calls,"
            " minutes, revenue, cost and margin before and after (docs/replay.md)."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the switch's configuration")
    p.add_argument(
        "--cdrs",
        required=True,
        metavar="CDRS",
        help="the switch's SQLite CDR database, or a CSV export (softswitch cdr --csv)",
    )
    p.add_argument(
        "--deck",
        action="append",
        default=[],
        metavar="ID=FILE",
        help="a candidate deck in place of the configuration's deck ID (repeatable)",
    )
    p.add_argument("--from", dest="since", type=parse_time, metavar="TIME", help="ISO time")
    p.add_argument("--to", dest="until", type=parse_time, metavar="TIME", help="ISO time")
    p.add_argument("--csv", metavar="OUT", help="also write the table as CSV to OUT (-: stdout)")
    p.add_argument(
        "--progress", action="store_true", help="show progress even when not on a terminal"
    )
    p.set_defaults(handler=_run)


def _run(a: argparse.Namespace) -> int:
    return replay(
        a.config,
        a.cdrs,
        a.deck,
        since=a.since,
        until=a.until,
        csv_out=a.csv,
        progress=True if a.progress else None,
    )
