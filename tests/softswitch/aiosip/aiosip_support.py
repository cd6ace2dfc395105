"""What the aiosip tests share: bounded runs, free loopback ports, SIPp and program processes.

Everything binds to 127.0.0.1 on ports the kernel hands out; every run has a deadline, and
every process started here is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from loopback_ports import LOCAL as LOCAL  # the aiosip tests import these from here
from loopback_ports import bindable
from loopback_ports import free_port as free_port
from sipp_tool import SippResult, sipp_binary
from softswitch import aiosip
from softswitch.sip.timers import TimerConfig

HERE = Path(__file__).parent
SCENARIOS = HERE / "scenarios"

#: Short SIP timers so that a lost message shows within a test's budget.
FAST = TimerConfig(t1=0.05, t2=0.2, t4=0.2, timer_d=0.2)

ALL_PROTOCOLS = pytest.mark.parametrize(
    "protocol", [aiosip.UDP, aiosip.TCP, aiosip.WS], ids=["udp", "tcp", "ws"]
)
SIPP_PROTOCOLS = pytest.mark.parametrize(
    ("protocol", "sipp_transport"), [(aiosip.UDP, "u1"), (aiosip.TCP, "t1")], ids=["udp", "tcp"]
)


def run(body: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    """Run a test body on the package's loop, failing it after ``timeout`` seconds."""

    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout)

    aiosip.run(bounded())


def contact(user: str, port: int, host: str = LOCAL) -> aiosip.Contact:
    return aiosip.Contact.from_header(f"sip:{user}@{host}:{port}")


# ----------------------------------------------------------------------------- SIPp


class Sipp:
    """One SIPp process on loopback: ``-m`` calls, bounded by ``-timeout``, killed by PID."""

    def __init__(
        self, workdir: Path, scenario: str, extra: list[str], *, calls: int = 1, name: str = ""
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        label = name or Path(scenario).stem
        self.stat_file = workdir / f"{label}_stat.csv"
        self.log_files = [workdir / f"{label}_screen.log", workdir / f"{label}_errors.log"]
        builtin = not scenario.endswith(".xml")
        self.argv = [
            sipp_binary(),
            *(["-sn", scenario] if builtin else ["-sf", str(SCENARIOS / scenario)]),
            *extra,
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
            str(calls),
            "-timeout",
            "15s",
            "-timeout_error",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-trace_screen",
            "-screen_file",
            str(self.log_files[0]),
            "-trace_err",
            "-error_file",
            str(self.log_files[1]),
        ]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def listening(self, protocol: aiosip.Transport, timeout: float = 5.0) -> None:
        """Until SIPp's SIP socket is up, so that a first request is not refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if protocol is aiosip.TCP:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection(LOCAL, self.port)
                    writer.close()
                    await writer.wait_closed()
                    return
            elif not bindable(self.port):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"SIPp did not listen on {self.port}")

    async def wait(self, timeout: float = 25.0) -> SippResult:
        assert self.process is not None
        _, stderr = await asyncio.wait_for(self.process.communicate(), timeout)
        returncode = self.process.returncode
        assert returncode is not None
        parts = [stderr.decode(errors="replace")]
        for path in self.log_files:
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return SippResult(returncode, self._stats(), "\n".join(parts))

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await process.communicate()

    def _stats(self) -> dict[str, str]:
        if not self.stat_file.exists():
            return {}
        rows = list(csv.reader(self.stat_file.read_text().splitlines(), delimiter=";"))
        return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}


# ------------------------------------------------------------------ user programs


class Program:
    """A Python program run as a user runs it (``python file.py args``), stopped by PID.

    Its output goes to files next to it, so a test can watch it while it runs.
    """

    def __init__(self, path: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONUNBUFFERED": "1"}
        self.stdout_path = path.with_suffix(f".{len(args)}.out")
        self.stderr_path = path.with_suffix(f".{len(args)}.err")
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(path), *args],
                cwd=path.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        """Until ``text`` appears on the program's standard output."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} never printed (exit {self.process.poll()}):\n"
                    f"{self.stdout}\n{self.stderr[-3000:]}"
                )
            time.sleep(0.05)

    def interrupt(self) -> None:
        """Ctrl-C, as a user stops a server."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)

    def finish(self, timeout: float = 15.0) -> tuple[int, str, str]:
        """Wait for the exit; the exit code, standard output and error."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.process.args} did not finish:\n{self.stdout}\n{self.stderr[-3000:]}"
            ) from None
        return self.process.returncode, self.stdout, self.stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
