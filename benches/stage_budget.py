"""Where a call's CPU goes: a py-spy raw profile of the switch, split into call-flow stages.

    python benches/sipp_load.py --rates 500 --step-seconds 30 --skip-direct &
    py-spy record -p "$(pgrep -f 'softswitch.cli run')" -d 20 -r 200 -f raw --threads \\
        -o /tmp/switch.txt
    python benches/stage_budget.py /tmp/switch.txt --cpu-ms 1.74 --loop-ms 1.44

py-spy samples only threads that are not asleep, so within the event loop's thread (which
never blocks but in epoll) each stage's share of the samples is its share of that thread's
CPU, and ``--loop-ms`` (the bench's "in the event loop's thread" for the same step) turns
shares into milliseconds per call. The other threads (the CDR writer above all) also count
as running while they wait for the disk in fsync, so their samples overstate their CPU:
they are reported together as ``--cpu-ms`` minus ``--loop-ms``, the /proc figure.

A sample is charged to the first stage whose pattern matches one of its frames, innermost
frame first: a send inside the hunting stage counts as "socket send", not as hunting.

The stages and what they stand for are listed in ``STAGES``; anything unmatched in the
event loop's thread is "event loop and glue" (uvloop's own work, callbacks, the frames
between stages).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

# (stage, pattern over one frame "function (file:line)"); innermost-first matching.
STAGES: tuple[tuple[str, str], ...] = (
    ("socket send (kernel loopback included)", r"_DatagramEndpoint\.send |\bsendto\b"),
    ("SIP parse", r"\(softswitch/sip/parser\.py"),
    ("SIP validate", r"\(softswitch/sip/validate\.py"),
    (
        "SIP header fields (lazy parse, serialise)",
        r"\(softswitch/sip/(headers|fields|uri|message)\.py",
    ),
    ("CDR and billing records", r"build_cdr|\(softswitch/cdr\.py|\(softswitch/billing/"),
    ("statistics and metrics", r"\(softswitch/stats/|prometheus_client"),
    ("admission: auth, limits, route, select", r"Pipeline\.admit|\(softswitch/call/"),
    (
        "transaction layer and timers",
        r"\(softswitch/sip/(transaction|timers|deadline_queue)\.py|"
        r"\(softswitch/transaction_driver\.py|\(softswitch/deadline\.py",
    ),
    ("proxy: hunting, relaying, dialogs, ending", r"\(softswitch/proxy/"),
    ("transport: receive, screen, framing", r"\(softswitch/(transport|security)"),
)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in STAGES)


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in _COMPILED:
            if pattern.search(frame):
                return name
    return "event loop and glue"


def budget(path: Path) -> tuple[collections.Counter[str], int]:
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        total += n
        if "MainThread" not in thread:
            name = re.sub(r"^thread \(\S+\): ", "", thread.strip().strip('"'))
            shares[f"other thread: {name}"] += n
        else:
            shares[stage_of(frames)] += n
    return shares, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy record -f raw --threads output")
    parser.add_argument("--cpu-ms", type=float, help="the step's CPU per call, all threads")
    parser.add_argument("--loop-ms", type=float, help="the step's CPU per call, event loop")
    args = parser.parse_args(argv)
    shares, _ = budget(args.profile)
    loop_total = sum(n for name, n in shares.items() if not name.startswith("other thread"))
    if not loop_total:
        print("no samples of the event loop's thread", file=sys.stderr)
        return 1
    print(f"event loop's thread: {loop_total} samples")
    for name, n in shares.most_common():
        if name.startswith("other thread"):
            continue
        ms = f"{n / loop_total * args.loop_ms:6.3f} ms" if args.loop_ms else ""
        print(f"{n / loop_total:7.1%} {ms}  {name}")
    others = sorted(name for name in shares if name.startswith("other thread"))
    if args.cpu_ms and args.loop_ms:
        names = ", ".join(o.removeprefix("other thread: ") for o in others)
        print(f"        {args.cpu_ms - args.loop_ms:6.3f} ms  other threads: {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
