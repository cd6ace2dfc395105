"""The pieces the call-flow tests share: free ports, a bounded SIPp, the switch as a process.

Everything runs on 127.0.0.1. Each SIPp run is bounded (``-m``, ``-timeout``,
``-timeout_error``) and stopped by PID; the switch is ``softswitch run --config FILE`` in a
subprocess, as an operator starts it, and stopped by PID too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import softswitch
from loopback_ports import bindable, free_port
from sipp_tool import sipp_binary

LOCAL = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "scenarios" / "callflow"


def scenario(name: str, workdir: Path, **replace: str) -> Path:
    """A scenario file, with placeholders (``EXPECTED``, ``STATUS``) filled in when asked."""
    source = SCENARIOS / f"{name}.xml"
    if not replace:
        return source
    text = source.read_text()
    for key, value in replace.items():
        text = text.replace(key, value)
    suffix = "_".join(v.split()[0] for v in replace.values())
    target = workdir / f"{name}_{suffix}.xml"
    target.write_text(text)
    return target


@dataclass
class Sipp:
    """One SIPp process. ``uas`` instances listen on ``port``; a ``uac`` calls ``target``."""

    workdir: Path
    name: str
    scenario: Path
    args: list[str] = field(default_factory=list)
    calls: int = 1
    timeout: float = 15.0
    transport: str = "u1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, target: str | None = None) -> Sipp:
        argv = [
            sipp_binary(),
            *([target] if target else []),
            "-sf",
            str(self.scenario),
            "-t",
            self.transport,
            "-i",
            LOCAL,
            "-p",
            str(self.port),
            "-mi",
            LOCAL,
            "-mp",
            str(free_port(span=4)),
            "-ci",
            LOCAL,
            "-cp",
            str(free_port()),
            "-m",
            str(self.calls),
            "-timeout",
            f"{int(self.timeout)}s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(self.workdir / f"{self.name}_errors.log"),
            "-trace_msg",
            "-message_file",
            str(self.workdir / f"{self.name}_messages.log"),
            *self.args,
        ]
        self.process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if target is None:
            self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.transport.startswith("t"):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((LOCAL, self.port), 0.2),
                ):
                    return
            elif not bindable(self.port):
                return
            time.sleep(0.02)
        raise TimeoutError(f"SIPp {self.name} did not listen on {self.port}")

    def wait(self, timeout: float | None = None) -> int:
        assert self.process is not None
        try:
            _, stderr = self.process.communicate(timeout=timeout or self.timeout + 5)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self.stderr = stderr.decode(errors="replace")
        return int(self.process.returncode)

    def explain(self) -> str:
        parts = [f"--- sipp {self.name} stderr\n{getattr(self, 'stderr', '')[-2000:]}"]
        for suffix in ("errors.log", "messages.log"):
            path = self.workdir / f"{self.name}_{suffix}"
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def messages(self) -> str:
        path = self.workdir / f"{self.name}_messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.communicate()


@dataclass
class Switch:
    """``softswitch run --config FILE`` in a subprocess."""

    config: Path
    database: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Switch:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "softswitch.cli",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-level",
                    "INFO",
                ],
                # The repository root would shadow the package with the distribution folder.
                cwd=Path(softswitch.__file__).parents[1],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                # A process group of its own, as a switch started from a terminal has: a
                # test can send it the terminal's Ctrl-C (``signal_group``), and pytest's own
                # Ctrl-C does not reach it (the fixtures stop it).
                start_new_session=True,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"switch exited: {self.log.read_text()[-3000:]}")
            if "ready" in line:
                return self
        raise TimeoutError("switch not ready")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def signal_group(self, sig: int) -> None:
        """``sig`` to the switch's whole process group (its workers too), as a terminal's
        Ctrl-C (SIGINT) reaches every process of the foreground group."""
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def stop(self) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def cdrs(self, expected: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The CDR rows, waiting until ``expected`` are there (writing is asynchronous)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = read_cdrs(self.database)
            if len(rows) >= expected:
                return rows
            time.sleep(0.05)
        return rows


def read_cdrs(database: Path) -> list[dict[str, Any]]:
    if not database.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=2)) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM cdrs ORDER BY id")]
    except sqlite3.OperationalError:
        return []
