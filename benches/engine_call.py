"""CPU of a call in the whole engine, without sockets: every stage the switch runs, no kernel.

    python benches/engine_call.py [--calls 20000] [--concurrent 2000] [--repeats 3]

A :class:`softswitch.proxy.server.Switch` is started in this process on the SIPp bench's
configuration (``benches/sipp_load.py``: IP auth, LCR over two carriers, CDRs in SQLite,
the default config otherwise), and calls are fed to its UDP endpoint as datagrams, as the
socket would hand them over (``TransportLayer._on_datagram``). What the switch sends is
caught at the endpoint instead of leaving through ``sendto``: the bench reads the branch,
tags and Record-Route it needs from those bytes and answers as SIPp's caller and carrier
would (100 Trying, INVITE to the carrier, 180, 200, ACK, BYE, the BYE's 200: the six
datagrams received and seven sent of ``tests/captured_call.py``). ``--concurrent`` calls are
up at once (each is hung up ``--concurrent`` calls after it was answered, so the dialog and
transaction tables hold what they hold under load), and the event loop runs between batches,
so the transactions' timers fire as they would.

Figures, in microseconds per call, best of ``--repeats`` runs:

``handlers``: CPU of the event loop's thread inside the switch's receive path for the six
    datagrams (parse, validate, transactions, admission, routing, hunting, relaying, ending,
    CDR record, statistics, serialising what it sends). The thread's CPU clock is read
    around each datagram; the cost of reading it is measured and taken off.
``process``: all of the process's CPU per call over the run, the CDR writer thread, the
    timers and this bench's own message building included (an upper bound).

What it leaves out is what only a real run shows: ``sendto``/``recvfrom`` and the kernel's
loopback delivery, the event loop's wake-ups, and the batching that a busy socket gives.
``benches/sipp_load.py`` measures those; this one is steady enough (a few percent between
runs) to compare two versions of the code on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import softswitch.call.snapshot
import softswitch.proxy.server  # noqa: F401  # before tests/ joins the path (its softswitch/)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from engine_calls import CALLER, LOCAL, SDP_CARRIER, Rig, ScriptedCall, bye_answer, sent_to
from sipp_load import config as bench_config
from sipp_load import free_port

#: Handler CPU by what was received (seconds), over the last run.
by_kind: dict[bytes, float] = {}


async def run(
    calls: int, concurrent: int, express: bool = True, workers: int = 1
) -> tuple[float, float, int]:
    """(handler CPU, process CPU, calls ended) over one run, in seconds."""
    with tempfile.TemporaryDirectory(prefix="engine_call_") as folder:  # its 16 MB CDR store
        return await _run_in(Path(folder), calls, concurrent, express, workers)


async def _run_in(
    workdir: Path, calls: int, concurrent: int, express: bool, workers: int
) -> tuple[float, float, int]:
    port = free_port()
    gw = (LOCAL, free_port())
    path = bench_config(workdir, port, gw[1], free_port())
    async with Rig(path, port, workers=workers) as rig:
        if not express:
            rig.transport.shortcut = None  # every ACK the full way (``proxy.express``)
        sent, endpoint, deliver = rig.sent, rig.endpoint, rig.deliver
        clock = time.thread_time
        by_kind.clear()
        overhead = min(_clock_pair(clock) for _ in range(5))
        handlers = 0.0
        ended = 0

        def feed(data: bytes, source: tuple[str, int]) -> list[tuple[bytes, tuple[str, int]]]:
            nonlocal handlers
            sent.clear()
            start = clock()
            deliver(endpoint, data, source)
            took = clock() - start - overhead
            handlers += took
            kind = data[:12].split(b" ")[1 if data.startswith(b"SIP/") else 0]
            if kind == b"200" and b" BYE\r\n" in data:
                kind = b"200 BYE"
            by_kind[kind] = by_kind.get(kind, 0.0) + took
            return list(sent)

        up: deque[ScriptedCall] = deque()
        process_start = time.process_time()
        for n in range(calls + concurrent):
            if n < calls:
                call = ScriptedCall(f"{n}-bench@127.0.0.1", (LOCAL, port), n, carrier=gw)
                out = feed(call.invite(), CALLER)
                sent_to(out, CALLER, b"SIP/2.0 100")
                call.carrier_invite = sent_to(out, gw, b"INVITE ")
                sent_to(feed(call.carrier_answer(b"180 Ringing"), gw), CALLER, b"SIP/2.0 180")
                answer = call.carrier_answer(b"200 OK", SDP_CARRIER)
                call.answered(sent_to(feed(answer, gw), CALLER, b"SIP/2.0 200"))
                sent_to(feed(call.in_dialog(b"ACK", 1, "ack"), CALLER), gw, b"ACK ")
                up.append(call)
            if len(up) > concurrent or (n >= calls and up):
                call = up.popleft()
                bye = sent_to(feed(call.in_dialog(b"BYE", 2, "bye"), CALLER), gw, b"BYE ")
                sent_to(feed(bye_answer(bye), gw), CALLER, b"SIP/2.0 200")
                ended += 1
            if n % 64 == 0:
                await asyncio.sleep(0)  # the loop's turn: due timers fire, batches flush
        rig.switch.cdrs.flush(60)
        process = time.process_time() - process_start
    return handlers, process, ended


def _clock_pair(clock: object) -> float:
    assert callable(clock)
    start = clock()
    for _ in range(1000):
        clock()
    return (clock() - start) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-express", action="store_true", help="the ACKs the full way, not the express lane"
    )
    parser.add_argument("--by-message", action="store_true", help="handler CPU per message")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="above 1: the switch is the primary of that many workers (shared tables), alone",
    )
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    new_loop = asyncio.new_event_loop
    if args.event_loop == "uvloop":
        import uvloop

        new_loop = uvloop.new_event_loop
    results = []
    for _ in range(args.repeats):
        gc.collect()
        with asyncio.Runner(loop_factory=new_loop) as runner:
            handlers, process, ended = runner.run(
                run(args.calls, args.concurrent, not args.no_express, args.workers)
            )
        results.append((handlers / ended * 1e6, process / ended * 1e6))
        print(f"  handlers {results[-1][0]:7.1f} µs/call   process {results[-1][1]:7.1f} µs/call")
        if args.by_message:
            for kind, seconds in by_kind.items():
                print(f"    {kind.decode():8} {seconds / ended * 1e6:6.1f} µs")
    best = min(r[0] for r in results), min(r[1] for r in results)
    spread = max(r[0] for r in results) / best[0] - 1
    print(
        f"best of {args.repeats} ({args.calls} calls, {args.concurrent} up at once):"
        f" handlers {best[0]:.1f} µs/call (spread {spread:.1%}), process {best[1]:.1f} µs/call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
