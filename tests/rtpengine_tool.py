"""rtpengine for the tests: a real daemon on loopback, and a fake NG server.

``running_rtpengine()`` starts Debian's ``rtpengine`` (package ``rtpengine-daemon``) in the
foreground, forwarding in userspace only (``--table=-1``: no kernel module, no iptables),
ignoring ``/etc/rtpengine/rtpengine.conf`` (``--config-file=none``), bound to 127.0.0.1
with an NG port and a block of RTP ports from ``loopback_ports`` (so no other server of the
session is handed one of them), logging to a file in a temporary directory. It returns once
the daemon answers ``ping`` and stops it (SIGTERM, then SIGKILL) afterwards.

A missing binary fails the test under CI (the test command installs the package) and skips
it elsewhere, like ``sipp_tool``.

``FakeNg`` is a few lines of NG server whose answers a test scripts: dropping a request,
answering out of order, never answering, or answering like a healthy relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from loopback_ports import LOCAL, free_port
from softswitch.media.bencode import Value, decode, encode

__all__ = ["FakeNg", "Rtpengine", "rtpengine_binary", "running_rtpengine"]


def rtpengine_binary() -> str:
    """The ``rtpengine`` on PATH (or in /usr/bin, /usr/sbin); fail under CI, skip elsewhere."""
    path = shutil.which("rtpengine") or shutil.which(
        "rtpengine", path="/usr/bin:/usr/sbin:/usr/local/bin"
    )
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("rtpengine is not installed and CI is set: install rtpengine-daemon")
        pytest.skip("rtpengine is not installed (Debian package rtpengine-daemon)")
    return path


def ng_ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether an NG server answers ``ping`` on ``host:port`` within ``timeout``."""
    cookie = os.urandom(6).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(cookie + b" " + encode({"command": "ping"}), (host, port))
            data, _ = sock.recvfrom(65535)
        except OSError:
            return False
    return data == cookie + b" " + encode({"result": "pong"})


@dataclass
class Rtpengine:
    """A running rtpengine: where its NG port is, its RTP port range, its log."""

    process: subprocess.Popen[bytes]
    host: str
    ng_port: int
    port_min: int
    port_max: int
    log_path: Path
    command: list[str] = field(default_factory=list)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _port_block(count: int) -> int:
    """The first of ``count`` loopback ports free now, never handed out to another server."""
    # rtpengine wants an even RTP port with the odd RTCP port after it.
    base = free_port(span=count + 1)
    return base + 1 if base % 2 else base


@contextlib.contextmanager
def running_rtpengine(
    *,
    ports: int = 200,
    extra_args: tuple[str, ...] = (),
    log_level: int = 6,
    delete_delay: int = 0,
    start_timeout: float = 10.0,
    log_dir: Path | None = None,
) -> Iterator[Rtpengine]:
    """A userspace-only rtpengine on 127.0.0.1 for the ``with`` block.

    ``ports`` RTP ports are reserved (four per relayed two-party call: RTP and RTCP each
    side); ``delete_delay=0`` frees a deleted call's ports at once (the daemon's default
    keeps them 30 s); ``extra_args`` go on the command line as they are, e.g.
    ``("--timeout=5",)`` or ``("--max-sessions=1",)``.
    """
    binary = rtpengine_binary()
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rtpengine-")))
        log_path = log_dir / "rtpengine.log"
        ng_port = free_port()
        port_min = _port_block(ports)
        port_max = port_min + ports - 1
        command = [
            binary,
            "--config-file=none",
            "--foreground",
            "--table=-1",
            f"--interface={LOCAL}",
            f"--listen-ng={LOCAL}:{ng_port}",
            f"--port-min={port_min}",
            f"--port-max={port_max}",
            f"--delete-delay={delete_delay}",
            "--num-threads=2",
            "--log-stderr",
            f"--log-level={log_level}",
            *extra_args,
        ]
        log_file = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
        engine = Rtpengine(process, LOCAL, ng_port, port_min, port_max, log_path, command)
        stack.callback(engine.stop)
        deadline = time.monotonic() + start_timeout
        while not ng_ping(LOCAL, ng_port):
            if process.poll() is not None or time.monotonic() > deadline:
                engine.stop()
                pytest.fail(
                    f"rtpengine did not answer ping (exit code {process.returncode}):\n"
                    f"{' '.join(command)}\n{engine.log()[-3000:]}"
                )
            time.sleep(0.05)
        yield engine


# --- a fake NG server -----------------------------------------------------------------------

Handler = Callable[["FakeNg", str, dict[str, Value]], Any]
"""Decides the fate of one request: return a reply dictionary to send it, ``None`` to stay
silent (the handler may also hold the cookie and send later with ``FakeNg.reply``)."""


def pong(_server: FakeNg, _cookie: str, request: dict[str, Value]) -> dict[str, Any] | None:
    """A healthy relay's answer to ``ping`` (and ``ok`` to everything else)."""
    return {"result": "pong" if request.get("command") == b"ping" else "ok"}


class FakeNg(asyncio.DatagramProtocol):
    """An NG server on 127.0.0.1 that answers as ``handler`` says and records requests."""

    def __init__(self, handler: Handler = pong) -> None:
        self.handler = handler
        self.received: list[tuple[str, dict[str, Value]]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: Any = None

    @classmethod
    async def start(cls, handler: Handler = pong) -> FakeNg:
        server = cls(handler)
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server, local_addr=(LOCAL, 0)
        )
        return server

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's datagram transport does not subclass DatagramTransport)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.peer = addr
        cookie, _, body = data.partition(b" ")
        request = decode(body)
        assert isinstance(request, dict)
        self.received.append((cookie.decode(), request))
        answer = self.handler(self, cookie.decode(), request)
        if answer is not None:
            self.reply(cookie.decode(), answer)

    def reply(self, cookie: str, answer: Any, *, raw: bytes | None = None) -> None:
        """Send ``answer`` (bencoded) or ``raw`` bytes under ``cookie`` to the last client."""
        assert self.transport is not None
        body = raw if raw is not None else encode(answer)
        self.transport.sendto(cookie.encode() + b" " + body, self.peer)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
