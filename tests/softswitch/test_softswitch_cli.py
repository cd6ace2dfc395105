"""``softswitch run`` as a user starts it: a real process on loopback, probed over SIP."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import softswitch
from loopback_ports import free_port
from softswitch.aiosip import Application
from softswitch.call.snapshot import build_snapshot
from softswitch.cli import parse_listen
from softswitch.config import demo_config, load_config
from softswitch.proxy.server import Switch
from softswitch.transport import Transport


def test_listen_addresses() -> None:
    assert parse_listen("udp:127.0.0.1:5060") == (Transport.UDP, ("127.0.0.1", 5060))
    assert parse_listen("tcp:[::1]:5070") == (Transport.TCP, ("::1", 5070))
    with pytest.raises(ValueError, match="must look like"):
        parse_listen("sctp:1.2.3.4:5060")
    # Never wrapped around to another port (70000 would have been 4464).
    with pytest.raises(ValueError, match="port must be a number from 1 to 65535"):
        parse_listen("udp:127.0.0.1:70000")
    with pytest.raises(ValueError, match=r"'999\.1\.1\.1' is not a valid IPv4 address"):
        parse_listen("udp:999.1.1.1:5060")


def test_run_without_config_starts_the_demo_switch(tmp_path: Path) -> None:
    """The README's first command: the embedded demo answers OPTIONS and runs INVITEs
    through the call flow (here an INVITE without a number: refused 484 with a Reason, and
    a CDR written under the state folder)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softswitch.cli",
            "run",
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--management",  # not the demo's 127.0.0.1:8080: another program may hold it
            "off",
        ],
        stdout=subprocess.PIPE,
        text=True,
        # The repository root would shadow the package with the distribution folder.
        cwd=Path(softswitch.__file__).parents[1],
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        # One line per listen address, one per worker's own ports (a worker per core), ready.
        lines = [process.stdout.readline() for _ in range(2)]
        while "ready" not in lines[-1] and len(lines) < 10:
            lines.append(process.stdout.readline())
        assert "listening on udp" in lines[0], lines
        assert "ready" in lines[-1], lines

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


# -- operator-proof errors: one line naming the file or the flag, no traceback --------------


def softswitch_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softswitch.cli", *args],
        capture_output=True,
        text=True,
        cwd=Path(softswitch.__file__).parents[1],
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_check_config_of_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    path.write_bytes(b'[server]\nrealm = "caf\xe9"\n')
    done = softswitch_cli("check-config", str(path))
    assert done.returncode == 1
    assert done.stderr == (
        f"error: {path}:2: not UTF-8 text: byte 0xe9 at column 13; save the file as UTF-8\n"
        f"{path}: 1 problem\n"
    )


def test_listen_with_a_port_over_65535_names_the_flag() -> None:
    done = softswitch_cli("run", "--listen", "udp:127.0.0.1:70000")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "softswitch run: error: argument --listen: port must be a number from 1 to 65535,"
        " got 'udp:127.0.0.1:70000'"
    )
    assert done.stdout == ""


def test_an_unknown_log_level_lists_the_choices() -> None:
    done = softswitch_cli("run", "--log-level", "VERBOSE")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("softswitch run: error: argument --log-level: invalid choice: 'VERBOSE'")
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert level in last


def test_a_log_level_in_lower_case_is_accepted(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    done = softswitch_cli("run", "--log-level", "debug", "--config", str(missing))
    assert done.returncode == 2  # past the arguments, refused for the file
    assert done.stderr == (
        f"error: configuration refused:\n{missing}: cannot read: No such file or directory\n"
    )


@pytest.fixture
def taken_udp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def taken_tcp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_an_address_in_use_is_named(
    proto: str, taken_udp: int, taken_tcp: int, tmp_path: Path
) -> None:
    port = taken_udp if proto == "udp" else taken_tcp
    done = softswitch_cli(
        "run", "--listen", f"{proto}:127.0.0.1:{port}", env={"XDG_STATE_HOME": str(tmp_path)}
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"softswitch: cannot listen on {proto}:127.0.0.1:{port}: address already in use\n"
    )
    assert done.stdout == ""


def test_switch_start_names_an_address_in_use(taken_udp: int, tmp_path: Path) -> None:
    """The same on the standard event loop (the command above runs uvloop when present)."""
    config = demo_config(tmp_path)  # its CDRs in tmp_path, not in the package
    switch = Switch(config, build_snapshot(config), None)

    async def main() -> None:
        try:
            await switch.start([f"udp:127.0.0.1:{taken_udp}"])
        finally:
            await switch.stop(0)

    with pytest.raises(
        OSError, match=r"^cannot listen on udp:127\.0\.0\.1:[0-9]+: address already in use$"
    ):
        asyncio.run(main())


def _switch(tmp_path: Path, text: str) -> tuple[Path, Switch]:
    path = tmp_path / "switch.toml"
    path.write_text(
        f'[server]\ndatabase = "{tmp_path / "cdr.sqlite"}"\n{text}\n[management]\nlisten = "off"\n'
    )
    config = load_config(path)
    return path, Switch(config, build_snapshot(config), path)


def test_start_warns_about_no_accounts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path, switch = _switch(tmp_path, "")

    async def main() -> None:
        try:
            await switch.start(["udp:127.0.0.1:0"])
        finally:
            await switch.stop(0)

    with caplog.at_level(logging.WARNING, logger="softswitch"):
        asyncio.run(main())
    assert f"{path}: no accounts: every call will be refused" in caplog.messages
    assert "listening on udp:127.0.0.1:" in capsys.readouterr().out


def test_a_reload_of_a_file_that_is_not_utf8_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP reloads in a thread: the error is logged, the running configuration kept."""
    path, switch = _switch(tmp_path, "")
    path.write_bytes(b'[server]\nrealm = "caf\xe9"\n')

    async def main() -> bool:
        try:
            return await switch.reload()
        finally:
            await switch.stop(0)

    with caplog.at_level(logging.WARNING, logger="softswitch"):
        assert asyncio.run(main()) is False
    assert caplog.messages == [
        "reload refused, keeping the running configuration:\n"
        f"{path}:2: not UTF-8 text: byte 0xe9 at column 13; save the file as UTF-8"
    ]
