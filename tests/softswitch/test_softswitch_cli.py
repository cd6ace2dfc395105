"""``softswitch run`` as a user starts it: a real process on loopback, probed over SIP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import softswitch
from softswitch.aiosip import Application
from softswitch.cli import parse_listen
from softswitch.transport import Transport


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_listen_addresses() -> None:
    assert parse_listen("udp:127.0.0.1:5060") == (Transport.UDP, ("127.0.0.1", 5060))
    assert parse_listen("tcp:[::1]:5070") == (Transport.TCP, ("::1", 5070))
    with pytest.raises(ValueError, match="must look like"):
        parse_listen("sctp:1.2.3.4:5060")


def test_run_without_config_starts_the_demo_switch(tmp_path: Path) -> None:
    """The README's first command: the embedded demo answers OPTIONS and runs INVITEs
    through the call flow (here an INVITE without a number: refused 484 with a Reason, and
    a CDR written under the state folder)."""
    port = free_udp_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "softswitch.cli", "run", "--listen", f"udp:127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
        # The repository root would shadow the package with the distribution folder.
        cwd=Path(softswitch.__file__).parents[1],
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        assert "listening on udp" in process.stdout.readline()
        assert "ready" in process.stdout.readline()

        async def probe() -> tuple[int, int, str | None]:
            client = Application()
            try:
                peer = await client.connect(("127.0.0.1", port), local_addr=("127.0.0.1", 0))
                options = await peer.request("OPTIONS")
                invite = await peer.request("INVITE")
                return options.status, invite.status, invite.headers.get("Reason")
            finally:
                await client.close()

        options, invite, reason = asyncio.run(asyncio.wait_for(probe(), 10))
        assert options == 200
        assert invite == 484
        assert reason is not None
        assert "cause=28" in reason
    finally:
        process.terminate()
        code = process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    assert code == 0
    assert (tmp_path / "softswitch" / "cdr.sqlite").exists()


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlisten = 5\n")
    done = subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=Path(softswitch.__file__).parents[1],
        timeout=30,
    )
    assert done.returncode == 2
    assert "server.listen" in done.stderr


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """``softswitch route ... | head -1``: no traceback when the reader is gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "softswitch.cli", "route", "--account", "demo", "447911123456"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(softswitch.__file__).parents[1],
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""
