"""Bounded, loopback-only attacks on the switch: a SIP flood from one source, and what came back.

Used by ``test_public_port.py`` and ``benches/flood.py``. Run as a script it floods and prints
a JSON summary, so the sender does not share a process (nor a GIL) with the test:

    python tests/e2e/attack.py --source 127.0.0.3 --target 127.0.0.1:5060 --rate 5000 --seconds 20

Every run is bounded by ``--seconds`` and sends only to the loopback address given (anything
else is refused). The INVITEs differ in Call-ID and branch, as a real flood's do, so none is a
retransmission the switch could answer from a transaction.

The switch of ``switch_config`` runs ONE process (``[server] workers = 1``): the callers
measure one process (``process_cpu``/``process_rss`` of the pid they started, the rate one
event loop sustains, pike's per-process counts). With the default, one worker per core, that
pid would be the supervisor, which handles no SIP.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class FloodResult:
    sent: int = 0
    seconds: float = 0.0
    #: Responses the flooding source received, by status code.
    responses: dict[str, int] = field(default_factory=dict)

    @property
    def received(self) -> int:
        return sum(self.responses.values())


def invite(i: int, source: tuple[str, int], target: tuple[str, int], agent: str) -> bytes:
    host, port = source
    lines = [
        f"INVITE sip:44{i % 10**9:09d}@{target[0]}:{target[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-flood-{i}",
        "Max-Forwards: 70",
        f"From: <sip:1000@{host}:{port}>;tag=flood{i}",
        f"To: <sip:44{i % 10**9:09d}@{target[0]}>",
        f"Call-ID: flood-{i}@{host}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:1000@{host}:{port}>",
        f"User-Agent: {agent}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def options(i: int, source: tuple[str, int], target: tuple[str, int], agent: str) -> bytes:
    return invite(i, source, target, agent).replace(b"INVITE", b"OPTIONS")


def malformed(i: int, source: tuple[str, int], target: tuple[str, int], agent: str) -> bytes:
    """An INVITE whose CSeq is not a number: a parse error answered 400."""
    return invite(i, source, target, agent).replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")


_MAKERS = {"INVITE": invite, "OPTIONS": options, "MALFORMED": malformed}


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to send to {host}: loopback addresses only")


def flood(
    source_ip: str,
    target: tuple[str, int],
    rate: int,
    seconds: float,
    *,
    method: str = "INVITE",
    agent: str = "flood-test",
    linger: float = 1.0,
) -> FloodResult:
    """Send ``rate`` requests a second for ``seconds`` from ``source_ip``; count the answers."""
    _check_loopback(target[0])
    _check_loopback(source_ip)
    make = _MAKERS[method]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((source_ip, 0))
    source = sock.getsockname()
    responses: Counter[str] = Counter()
    stop = threading.Event()

    def receive() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            parts = data.split(b" ", 2)
            responses[parts[1].decode(errors="replace") if len(parts) > 1 else "?"] += 1

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate)
        while sent < due:
            # A full socket buffer loses the packet, as a real network would.
            with contextlib.suppress(OSError):
                sock.sendto(make(sent, source, target, agent), target)
            sent += 1
        time.sleep(0.001)
    elapsed = time.monotonic() - start
    time.sleep(linger)  # answers still in flight
    stop.set()
    receiver.join()
    sock.close()
    return FloodResult(sent, round(elapsed, 3), dict(responses))


def switch_config(
    workdir: Path, port: int, gateway_port: int, security: str = "", host: str = "127.0.0.1"
) -> Path:
    """A switch with one customer (``host``) and one carrier; ``security`` is ``[security]``'s
    body. The flood's source must be another loopback address (127.0.0.3). One worker
    process (``workers = 1``): what the callers measure is that one process."""
    (workdir / "sell.csv").write_text("prefix,destination,rate\n44,UK,0.100000\n")
    (workdir / "buy.csv").write_text("prefix,destination,rate\n44,UK,0.010000\n")
    path = workdir / "switch.toml"
    path.write_text(
        f"""
[server]
listen = ["udp:{host}:{port}", "tcp:{host}:{port}"]
database = "cdr.sqlite"
drain_timeout = 2
workers = 1

[defaults]
setup_timeout = 2

[security]
{security}

[management]
listen = "off"

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "buy"
file = "buy.csv"

[[accounts]]
id = "customer"
ips = ["{host}"]
rate_deck = "sell"
routing_plan = "default"

[[gateways]]
id = "carrier"
address = "{host}:{gateway_port}"
rate_deck = "buy"

[[routes]]
plan = "default"
prefix = "44"
gateways = ["carrier"]
"""
    )
    return path


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_rss(pid: int) -> int:
    """Resident memory of a process in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="127.0.0.3")
    parser.add_argument("--target", required=True, help="HOST:PORT of the switch (loopback)")
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--method", choices=sorted(_MAKERS), default="INVITE")
    parser.add_argument("--agent", default="flood-test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    result = flood(
        args.source,
        (host, int(port)),
        args.rate,
        args.seconds,
        method=args.method,
        agent=args.agent,
    )
    text = json.dumps(asdict(result))
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
