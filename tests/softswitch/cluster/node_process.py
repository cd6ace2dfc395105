"""``cluster_node.py`` run as a real process, driven from a test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import softswitch

__all__ = ["NodeProcess", "node_process"]

SCRIPT = Path(__file__).with_name("cluster_node.py")
#: The package this test imported (the tree under test), first on the node's path too: the
#: interpreter's installed copy may be another checkout's.
PACKAGE_ROOT = str(Path(softswitch.__file__).resolve().parents[1])


class NodeProcess:
    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    async def read(self, within: float = 60.0) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), within)
        if not line:
            raise AssertionError(f"node process ended early:\n{self.log.read_text()[-3000:]}")
        return line.decode().strip()

    async def read_json(self) -> dict[str, Any]:
        value = json.loads(await self.read())
        assert isinstance(value, dict)
        return value

    def write(self, text: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def finish(self, within: float = 60.0) -> int:
        return await asyncio.wait_for(self.process.wait(), within)


@contextlib.asynccontextmanager
async def node_process(tmp: Path, *args: str) -> AsyncIterator[NodeProcess]:
    """The node process for the ``async with``; killed afterwards if still running. Its cwd
    is ``tmp`` (the repository's root would shadow the installed package)."""
    log = tmp / f"node-{args[3]}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=tmp,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p
                ),
            },
        )
    node = NodeProcess(process, log)
    try:
        yield node
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
            await process.wait()
