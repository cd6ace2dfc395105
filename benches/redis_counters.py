"""What one call's admission costs through the shared state: acquire + release pairs.

    python benches/redis_counters.py                      # its own redis-server on loopback
    python benches/redis_counters.py -n 20000 --concurrency 1 16
    python benches/redis_counters.py --url redis://127.0.0.1:6379/0

One asyncio client (``softswitch.cluster.SharedState``, one node) runs ``-n`` acquire +
release pairs on one account key, ``--concurrency`` of them at a time (1: one call after the
other, each paying the round trip; more: the pairs of concurrent calls overlap on the
connection pool, as under load), and ``admit_rate`` calls (a ``max_cps`` check). It prints
pairs per second and the latency of single acquires and releases (median, 99th percentile),
and the client process's CPU per pair (``time.process_time``): the switch pays that CPU on
its event loop, the rest is waiting for Redis. Without ``--url`` it starts
``redis-server`` (Debian's) on a free loopback port with persistence off, and stops it.
Nothing here is a timed assertion: compare runs of the same command on the same machine,
and note the machine's load beside the figure (``os.getloadavg`` is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator

from softswitch.cluster import SharedState


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="redis-bench-") as root:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(
            [binary, *args, "--dir", root],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.3f}"


async def bench(url: str, pairs: int, concurrency: int) -> None:
    state = await SharedState.connect(url, f"bench-{os.getpid()}", prefix="bench")
    acquires: list[float] = []
    releases: list[float] = []
    rates: list[float] = []
    per_task = max(1, pairs // concurrency)

    async def calls() -> None:
        clock = time.perf_counter
        for _ in range(per_task):
            t0 = clock()
            assert await state.acquire("account:bench", 1, limit=1_000_000)
            t1 = clock()
            await state.release("account:bench", 1)
            t2 = clock()
            acquires.append(t1 - t0)
            releases.append(t2 - t1)

    async def rate_checks() -> None:
        clock = time.perf_counter
        for _ in range(per_task):
            t0 = clock()
            await state.admit_rate("account:bench", 1_000_000, 1.0)
            rates.append(clock() - t0)

    try:
        await asyncio.gather(*(calls() for _ in range(min(concurrency, 4))))  # warm-up
        acquires.clear()
        releases.clear()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(calls() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        done = per_task * concurrency
        await asyncio.gather(*(rate_checks() for _ in range(concurrency)))
    finally:
        await state.close()
    pair = statistics.median(a + r for a, r in zip(acquires, releases, strict=True))
    print(
        f"concurrency {concurrency:3d}: {done / wall:8.0f} acquire+release pairs/s;"
        f" acquire median {ms(acquires, 0.5)} ms, p99 {ms(acquires, 0.99)} ms;"
        f" release median {ms(releases, 0.5)} ms; admit_rate median {ms(rates, 0.5)} ms;"
        f" pair median {pair * 1000:.3f} ms; client CPU {cpu / done * 1e6:.0f} µs per pair"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running Redis (default: start one on loopback)")
    parser.add_argument("-n", "--pairs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    options = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with contextlib.ExitStack() as stack:
        url = options.url or stack.enter_context(local_redis())
        for concurrency in options.concurrency:
            asyncio.run(bench(url, options.pairs, concurrency))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
