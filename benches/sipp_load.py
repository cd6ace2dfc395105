"""SIPp load harness: the highest call rate the switch carries with under 0.1% failed calls.

    python benches/sipp_load.py                      # defaults: UDP, 1 s hold, 20 s steps
    python benches/sipp_load.py --step-seconds 20 --rates 100,200,400,800,1000,1200
    python benches/sipp_load.py --media both --skip-direct   # relay vs direct media, one run
    python benches/sipp_load.py --skip-direct --workers 1    # one process (--workers 2: two)
    python benches/sipp_load.py --skip-direct --workers 2 --caller-sockets per-call
    python benches/sipp_load.py --skip-direct --database postgresql   # CDRs in PostgreSQL

One command, bounded, loopback only. The switch runs the default configuration but for its
addresses, the bench's decks and ``drain_timeout = 5``; with ``--workers`` unset it starts as
many worker processes as ``softswitch run`` does by default (one per core), and its CPU is
summed over all of them (and the supervisor). The workers' listen sockets pick a worker by a
hash of each request's Call-ID (``softswitch.workers.steering``), so even the calls of one SIPp
socket (one customer's SBC) spread over the workers; ``--caller-sockets per-call`` (SIPp's
``-t un``) puts each call on a source port of its own, as many customers would.

For each rate, SIPp UAC -> ``softswitch run`` (IP authorisation, LCR routing over two
carriers' decks, CDRs to SQLite: the production path) -> SIPp UAS, for ``--step-seconds`` at
``-r RATE``; a step passes when under 0.1% of its calls failed and under 1% of its messages
were retransmitted. The same SIPp pair connected directly, in the same run, gives the
ceiling the machine allows. The scenarios are the end-to-end tests'
(``tests/e2e/scenarios/callflow``): the UAS copies Record-Route and the UAC follows the
route set, so every ACK and BYE crosses the switch.

``--media relay`` puts the carrier's media through rtpengine (Debian's rtpengine-daemon,
started here in userspace on loopback ports, as the tests start it): every call then costs
an NG offer, answer and delete. ``--media both`` runs the switch ladder twice in the same
run, direct then relayed, and prints rtpengine's CPU per call beside the switch's.

Every SIPp run is bounded (``-m``, ``-timeout``) and killed by PID if it outlives its step;
SIPp's control and media sockets stay on 127.0.0.1; ``-buff_size 4194304`` for bursts.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# rtpengine_tool (and the loopback_ports it uses) from tests/, whose softswitch/ folder (of
# tests) would shadow the installed softswitch package (an editable install's finder comes
# after the path entries): the package is imported first.
import softswitch.media.bencode  # noqa: E402, F401

sys.path.append(str(ROOT / "tests"))

from postgres_tool import Postgres, running_postgres  # noqa: E402
from rtpengine_tool import Rtpengine, running_rtpengine  # noqa: E402

LOCAL = "127.0.0.1"
SCENARIOS = ROOT / "tests" / "e2e" / "scenarios" / "callflow"
NUMBER = "441234567"
DEFAULT_RATES = (100, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 4500, 6000, 9000)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCAL, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Step:
    rate: int
    calls: int
    ok: int
    failed: int
    retransmissions: int
    seconds: float

    @property
    def failed_ratio(self) -> float:
        return self.failed / self.calls if self.calls else 1.0

    @property
    def passed(self) -> bool:
        # Retransmissions counted per call (each call is 7 messages on the UAC side).
        return (
            self.ok > 0
            and self.failed_ratio < 0.001
            and self.retransmissions < 0.01 * 7 * max(self.calls, 1)
        )


def sipp(workdir: Path, name: str, scenario: str, extra: list[str]) -> subprocess.Popen[bytes]:
    argv = [
        shutil.which("sipp") or "sipp",
        "-sf",
        str(SCENARIOS / f"{scenario}.xml"),
        "-i",
        LOCAL,
        "-mi",
        LOCAL,
        "-ci",
        LOCAL,
        "-cp",
        str(free_port()),
        "-buff_size",
        "4194304",
        "-nostdin",
        "-trace_stat",
        "-fd",
        "1",  # a stats row every second: a run killed at its bound still reports
        "-stf",
        str(workdir / f"{name}.csv"),
        *extra,
    ]
    return subprocess.Popen(
        argv,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    process.wait()


def last_stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}


def run_step(
    workdir: Path, target_port: int, uas_port: int, rate: int, args: argparse.Namespace
) -> Step:
    calls = rate * args.step_seconds
    name = f"uac_{target_port}_{rate}"
    bound = args.step_seconds + args.hold_ms / 1000 + 15
    uac = sipp(
        workdir,
        name,
        "uac_call",
        [
            f"{LOCAL}:{target_port}",
            "-s",
            NUMBER,
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-l",
            str(max(rate * (args.hold_ms // 1000 + 3), 100)),
            "-d",
            str(args.hold_ms),
            "-recv_timeout",
            "8000",
            "-timeout",
            f"{int(bound)}s",
            # One UDP socket per call: callers on many source ports, as many customers are
            # (SIPp's own cost differs from one socket's: compare like with like).
            *(["-t", "un", "-max_socket", "16000"] if args.caller_sockets == "per-call" else []),
        ],
    )
    started = time.monotonic()
    try:
        uac.wait(timeout=bound + 5)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop(uac)
    stats = last_stats(workdir / f"{name}.csv")

    def count(column: str) -> int:
        try:
            return int(stats.get(column, "0"))
        except ValueError:
            return 0

    ok, failed = count("SuccessfulCall(C)"), count("FailedCall(C)")
    return Step(
        rate=rate,
        calls=calls,
        ok=ok,
        failed=calls - ok if ok + failed < calls else failed,
        retransmissions=count("Retransmissions(C)"),
        seconds=time.monotonic() - started,
    )


def config(
    workdir: Path,
    port: int,
    gw_port: int,
    spare_port: int,
    billing: str = "none",
    relay: tuple[str, int] | None = None,
    database: str = "cdr.sqlite",
) -> Path:
    (workdir / "sell.csv").write_text("prefix,rate\n44,0.100000\n")
    (workdir / "a.csv").write_text("prefix,rate\n44,0.010000\n")
    (workdir / "b.csv").write_text("prefix,rate\n44,0.020000\n")
    path = workdir / "bench.toml"
    path.write_text(
        f"""
[server]
listen = ["udp:{LOCAL}:{port}"]
database = "{database}"
drain_timeout = 5

[management]
listen = "off"

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "a"
file = "a.csv"

[[rate_decks]]
id = "b"
file = "b.csv"

[[accounts]]
id = "bench"
ips = ["{LOCAL}"]
rate_deck = "sell"
routing_plan = "main"
billing = "{billing}"

[[gateways]]
id = "carrier_a"
address = "{LOCAL}:{gw_port}"
rate_deck = "a"

[[gateways]]
id = "carrier_b"
address = "{LOCAL}:{spare_port}"
rate_deck = "b"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["carrier_a", "carrier_b"]
strategy = "lcr"
"""
    )
    if relay is not None:
        text = path.read_text().replace(
            '[[gateways]]\nid = "carrier_a"', '[[gateways]]\nid = "carrier_a"\nmedia = "relay"'
        )
        text += f'\n[[media_relays]]\nid = "rtp1"\naddress = "{relay[0]}:{relay[1]}"\n'
        path.write_text(text)
    if billing != "none":
        # Credit for every call the ladder can place: the bench measures metering, not
        # refusals. Booked as an operator's top-up would be, before the switch starts.
        from softswitch.billing import ledger
        from softswitch.billing.money import to_nanos

        with ledger.connect(workdir / "cdr.sqlite", create=True) as conn:
            at = datetime.datetime.now(datetime.UTC)
            amount = to_nanos(Decimal("1000000"))
            ledger.book(conn, ledger.Booking("bench", "topup", amount, "bench credit", at))
    return path


def process_cpu(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user + system) a process has used, all threads, or one thread's (the
    event loop's is the process id's), from /proc."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def switch_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the switch: every process of it (all threads), and the main threads
    alone (each worker's event loop; a supervisor's main thread too)."""
    total = loops = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += process_cpu(p)
            loops += process_cpu(p, p)
    return total, loops


def ladder(
    label: str,
    workdir: Path,
    target: int,
    uas_port: int,
    args: argparse.Namespace,
    pid: int | None = None,
    relay_pid: int | None = None,
    db_pid: int | None = None,
) -> int:
    """Step up the rates until one fails; ``pid``: the switch, whose CPU per call is shown
    (and ``relay_pid``'s, rtpengine's, when the media is relayed; ``db_pid``'s, PostgreSQL's
    server processes, when the CDRs go there)."""
    best = 0
    for rate in args.rates:
        uas = sipp(
            workdir,
            f"uas_{target}_{rate}",
            "uas_answer",
            [
                "-p",
                str(uas_port),
                "-mp",
                str(free_port()),
                "-timeout",
                f"{args.step_seconds + 30}s",
            ],
        )
        time.sleep(0.3)
        cpu_before, loop_before = switch_cpu(pid) if pid is not None else (0.0, 0.0)
        relay_before = process_cpu(relay_pid) if relay_pid is not None else 0.0
        db_before = switch_cpu(db_pid)[0] if db_pid is not None else 0.0
        try:
            step = run_step(workdir, target, uas_port, rate, args)
        finally:
            stop(uas)
        cpu = ""
        if pid is not None and step.ok:
            # The switch's CPU over the step (calls' tails included) per call carried.
            cpu_after, loop_after = switch_cpu(pid)
            total = (cpu_after - cpu_before) / step.ok * 1e3
            loop = (loop_after - loop_before) / step.ok * 1e3
            cpu = f"  {total:.2f} ms CPU/call ({loop:.2f} in the event loops' threads)"
            if relay_pid is not None:
                relay_cpu = (process_cpu(relay_pid) - relay_before) / step.ok * 1e3
                cpu += f" + {relay_cpu:.2f} ms rtpengine"
            if db_pid is not None:
                db_cpu = (switch_cpu(db_pid)[0] - db_before) / step.ok * 1e3
                cpu += f" + {db_cpu:.2f} ms PostgreSQL"
        verdict = "pass" if step.passed else "FAIL"
        print(
            f"{label:>8} {rate:>6} cps: {step.ok:>7} ok {step.failed:>6} failed "
            f"({step.failed_ratio:.3%}) {step.retransmissions:>6} retransmissions  {verdict}"
            f"{cpu}",
            flush=True,
        )
        if not step.passed:
            break
        best = rate
        time.sleep(args.hold_ms / 1000 + 1)
    return best


def through_switch(
    label: str,
    workdir: Path,
    uas_port: int,
    spare_port: int,
    args: argparse.Namespace,
    relay: Rtpengine | None,
    postgres: Postgres | None = None,
) -> int:
    """One ladder through a switch started for it (-1: the switch did not start)."""
    switch_port = free_port()
    address = (relay.host, relay.ng_port) if relay is not None else None
    for name in ("cdr.sqlite", "cdr.sqlite-wal", "cdr.sqlite-shm"):
        with contextlib.suppress(FileNotFoundError):
            (workdir / name).unlink()  # each switch its own CDRs (and credit)
    database = "cdr.sqlite"
    if postgres is not None:
        database = postgres.database()  # a fresh one, migrated as an operator would
        subprocess.run(
            [sys.executable, "-m", "softswitch.cli", "migrate", "--database", database],
            cwd=ROOT / "softswitch",
            check=True,
            stdout=subprocess.DEVNULL,
        )
    path = config(workdir, switch_port, uas_port, spare_port, args.billing, address, database)
    switch = subprocess.Popen(
        [
            sys.executable,
            *(["-m", "cProfile", "-o", str(args.cprofile)] if args.cprofile else []),
            "-m",
            "softswitch.cli",
            "run",
            "--config",
            str(path),
            *(["--workers", str(args.workers)] if args.workers is not None else []),
        ],
        cwd=ROOT / "softswitch",
        stdout=subprocess.PIPE,
        stderr=(workdir / f"{label}.log").open("wb"),
        env={**os.environ, "SOFTSWITCH_EVENT_LOOP": args.event_loop},
    )
    try:
        assert switch.stdout is not None
        while b"ready" not in (line := switch.stdout.readline()):
            if switch.poll() is not None:
                print((workdir / f"{label}.log").read_text(), file=sys.stderr)
                return -1
        print(line.decode().strip(), flush=True)
        relay_pid = relay.process.pid if relay is not None else None
        db_pid = None
        if postgres is not None:  # the postmaster; its backends are its children
            pidfile = postgres.socket_dir.parent / "data" / "postmaster.pid"
            db_pid = int(pidfile.read_text().split()[0])
        return ladder(label, workdir, switch_port, uas_port, args, switch.pid, relay_pid, db_pid)
    finally:
        switch.send_signal(signal.SIGTERM)
        try:
            switch.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop(switch)
        if switch.stdout is not None:
            switch.stdout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument("--step-seconds", type=int, default=20)
    parser.add_argument("--hold-ms", type=int, default=1000)
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the switch's event loop (SOFTSWITCH_EVENT_LOOP; auto: uvloop when installed)",
    )
    parser.add_argument(
        "--billing",
        choices=("none", "prepaid", "postpaid"),
        default="none",
        help="the bench account's billing mode (prepaid: metered against a large balance)",
    )
    parser.add_argument(
        "--media",
        choices=("direct", "relay", "both"),
        default="direct",
        help="the carrier's media: direct, relayed through rtpengine, or both ladders in one run",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the CDR store: SQLite (the default) or a PostgreSQL server the bench starts on"
        " loopback (Debian's postgresql), fsync on",
    )
    parser.add_argument(
        "--caller-sockets",
        choices=("one", "per-call"),
        default="one",
        help="the SIPp caller's UDP sockets: one for all calls (one customer's SBC), or one"
        " per call (many source ports, as many customers)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="the switch's worker processes (softswitch run --workers; default: the"
        " switch's own default, one per core); CPU is summed over all of them",
    )
    parser.add_argument(
        "--cprofile",
        type=Path,
        help="run the switch under cProfile, writing its stats here at exit (call counts"
        " per call; the profiler's own overhead inflates the CPU figures)",
    )
    args = parser.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",")]
    if shutil.which("sipp") is None:
        print("sipp is not on PATH (Debian package sip-tester)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sipp_load_") as tmp:
        workdir = Path(tmp)
        uas_port, spare_port = free_port(), free_port()
        direct = 0
        if not args.skip_direct:
            direct = ladder("direct", workdir, uas_port, uas_port, args)
        results: list[tuple[str, int]] = []
        with contextlib.ExitStack() as stack:
            relay = None
            postgres = None
            if args.database == "postgresql":
                postgres = stack.enter_context(running_postgres())
            if args.media != "direct":
                # 4 ports a call: room for 2,000 calls up at once.
                relay = stack.enter_context(running_rtpengine(ports=8000))
            for media in ("direct", "relay") if args.media == "both" else (args.media,):
                label = "switch" if media == "direct" else "relayed"
                through = through_switch(
                    label,
                    workdir,
                    uas_port,
                    spare_port,
                    args,
                    relay if media == "relay" else None,
                    postgres,
                )
                if through < 0:
                    return 1
                results.append((media, through))
        print()
        for media, through in results:
            print(
                f"switch: {through} calls/s with <0.1% failed (UDP, {args.hold_ms} ms hold, "
                f"{args.step_seconds} s steps, IP auth + LCR + CDRs, billing {args.billing},"
                f" media {media}, workers {args.workers or 'default'}, {args.database},"
                f" caller sockets {args.caller_sockets})"
            )
        if direct:
            through = results[0][1]
            print(
                f"direct: {direct} calls/s (SIPp to SIPp, same run); "
                f"switch/direct = {through / direct:.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
