"""Redis for the tests: a real server (Debian's ``redis-server``) on loopback.

``running_redis()`` starts ``redis-server`` in the foreground in a temporary directory, bound
to 127.0.0.1 on a port from ``loopback_ports``, with persistence off (``--save ""``,
``--appendonly no``), logging to a file there; it returns once the server answers PING and
stops it (SIGTERM, then SIGKILL) afterwards. ``Redis.pause()``/``resume()`` stop and continue
the process (SIGSTOP/SIGCONT), for tests of a Redis that does not answer;
``Redis.crash_and_restart()`` kills it and starts it again from its last ``SAVE``.

The ``redis_server`` fixture is one server for the whole session (tests keep apart by key
prefix); a test that stops its Redis starts its own with ``running_redis()``.

A missing binary fails the test under CI (the test command installs the package) and skips
it elsewhere, like ``rtpengine_tool`` and ``postgres_tool``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopback_ports import LOCAL, free_port

__all__ = ["Redis", "redis_binary", "redis_server", "running_redis"]


def redis_binary() -> str:
    """The ``redis-server`` on PATH (or in /usr/bin, /usr/sbin); fail under CI, skip elsewhere."""
    path = shutil.which("redis-server") or shutil.which(
        "redis-server", path="/usr/bin:/usr/sbin:/usr/local/bin"
    )
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("redis-server is not installed and CI is set: install redis-server")
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    return path


def ping(port: int, timeout: float = 0.2) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING within ``timeout``."""
    try:
        with socket.create_connection((LOCAL, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Redis:
    """A running redis-server: its port, process and log, and how it was started."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    command: list[str]
    root: Path

    @property
    def url(self) -> str:
        return f"redis://{LOCAL}:{self.port}/0"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def wait_ready(self, start_timeout: float = 10.0) -> None:
        """Return once the server answers PING; fail the test with its log if it exits or
        does not answer within ``start_timeout`` seconds."""
        deadline = time.monotonic() + start_timeout
        while not ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"redis-server did not answer PING (exit code {self.process.returncode}):\n"
                    f"{' '.join(self.command)}\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)

    def crash_and_restart(self) -> None:
        """SIGKILL (nothing saved on the way down), then start again on the same port and
        folder: it loads the ``dump.rdb`` of the last ``SAVE``, as a crashed Redis comes back
        with its last snapshot."""
        self.resume()
        self.process.kill()
        self.process.wait()
        self.process = _spawn(self.command, self.root, self.log_path)
        self.wait_ready()


def _spawn(command: list[str], root: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=root
        )


@contextlib.contextmanager
def running_redis(*, start_timeout: float = 10.0) -> Iterator[Redis]:
    """A redis-server on 127.0.0.1 without persistence (but ``SAVE`` on demand), for the
    ``with`` block."""
    binary = redis_binary()
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redis-")))
        port = free_port()
        command = [
            binary,
            "--port", str(port),
            "--bind", LOCAL,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(root),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        log_path = root / "redis.log"
        server = Redis(_spawn(command, root, log_path), port, log_path, command, root)
        stack.callback(server.stop)
        server.wait_ready(start_timeout)
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """The session's Redis, shared by every test that asks for it (keys kept apart by
    prefix)."""
    with running_redis() as server:
        yield server
