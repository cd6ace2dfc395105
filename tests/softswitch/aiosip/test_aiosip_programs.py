"""Programs written as an aiosip user writes them, run as a user runs them.

``programs/*.py`` are ordinary aiosip 0.2 programs (``Application(loop=...)``, a
``BaseDialplan``, ``request.prepare``, ``dialog.reply``, ``async for``, ``peer.invite``,
``subscribe`` and ``register``) whose only departure from aiosip is ``from softswitch
import aiosip``. Each test starts them as subprocesses on free loopback ports, over UDP,
TCP and WebSocket, checks what they print, and stops the servers with Ctrl-C, after which
they must close their application and exit 0.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from aiosip_support import HERE, Program, free_port

from softswitch import aiosip

pytestmark = pytest.mark.e2e

PROGRAMS = HERE / "programs"
PROTOCOLS = pytest.mark.parametrize("protocol", ["udp", "tcp", "ws"])


def start(workdir: Path, name: str, *args: str) -> Program:
    """``programs/<name>.py`` run from a directory of its own in ``workdir`` (its output
    files go next to it), with ``args`` as its command line."""
    home = workdir / name
    home.mkdir(exist_ok=True)
    return Program(Path(shutil.copy(PROGRAMS / f"{name}.py", home)), *args)


def clean(err: str) -> bool:
    """No traceback, and no task that died unnoticed, on a program's standard error."""
    return "Traceback" not in err and "never retrieved" not in err


def run_to_end(program: Program) -> list[str]:
    """The lines a program that ends by itself printed; it must succeed."""
    code, out, err = program.finish()
    assert code == 0, f"{out}\n{err[-3000:]}"
    assert clean(err), err[-3000:]
    return out.splitlines()


def interrupt(server: Program) -> list[str]:
    """Ctrl-C a server: it closes its application and exits 0; the lines it printed."""
    server.interrupt()
    code, out, err = server.finish()
    assert code == 0, f"{out}\n{err[-3000:]}"
    assert clean(err), err[-3000:]
    assert out.splitlines()[-1:] == ["shutting down"], out
    return out.splitlines()


def stop_all(*programs: Program | None) -> None:
    for program in programs:
        if program is not None:
            program.kill()


@PROTOCOLS
def test_a_call_answered_by_a_dialplan_uas(tmp_path: Path, protocol: str) -> None:
    port = free_port()
    uas = start(tmp_path, "call_uas", "-p", protocol, "--port", str(port))
    uac = None
    try:
        uas.wait_for_output("listening on")
        uac = start(
            tmp_path,
            "call_uac",
            *("-p", protocol, "--server-port", str(port), "--local-port", str(free_port())),
            *("-u", "alice", "--callee", "bob", "-d", "0.3"),
        )
        assert run_to_end(uac) == [
            "100 Trying",
            "180 Ringing",
            "200 OK",
            "talking",
            "hung up: 200",
        ]
        uas.wait_for_output("hung up by: alice")
        assert interrupt(uas)[1:] == [
            "ringing: alice",
            "answered: alice",
            "hung up by: alice",
            "shutting down",
        ]
    finally:
        stop_all(uac, uas)


def notifications(lines: list[str]) -> list[str]:
    """The NOTIFY lines, which must be the updates 1, 2, 3 ... in order."""
    notified = [line for line in lines if line.startswith("notified: ")]
    assert notified == [f"notified: update {n}" for n in range(1, len(notified) + 1)], lines
    return notified


@PROTOCOLS
def test_a_subscription_renewed_then_ended_with_expires_zero(tmp_path: Path, protocol: str) -> None:
    port = free_port()
    notifier = start(tmp_path, "presence_notifier", "-p", protocol, "--port", str(port))
    watcher = None
    try:
        notifier.wait_for_output("listening on")
        watcher = start(
            tmp_path,
            "presence_watcher",
            *("-p", protocol, "--server-port", str(port), "--local-port", str(free_port())),
            *("-u", "alice", "--renewals", "2", "--pause", "0.4", "--expires", "30"),
        )
        lines = run_to_end(watcher)
        assert len(notifications(lines)) >= 3, lines
        assert [line for line in lines if not line.startswith("notified: ")] == [
            "renewed: 200",
            "renewed: 200",
            "unsubscribed: 200",
        ]
        notifier.wait_for_output("alice stopped watching")
        assert interrupt(notifier)[1:] == [
            "watched by alice for 30s",
            "alice renewed for 30s",
            "alice renewed for 30s",
            "alice stopped watching",
            "shutting down",
        ]
    finally:
        stop_all(watcher, notifier)


@PROTOCOLS
def test_registration_with_digest_and_a_back_to_back_relay(tmp_path: Path, protocol: str) -> None:
    """bob's notifier registers (digest) with the registrar; alice subscribes to bob at the
    registrar, which relays through a second subscription of its own."""
    registrar_port = free_port()
    registrar = start(
        tmp_path,
        "registrar",
        "-p",
        protocol,
        "--port",
        str(registrar_port),
        "--account",
        "bob:s3cret",
    )
    notifier = watcher = None
    try:
        registrar.wait_for_output("listening on")
        notifier_port = free_port()
        notifier = start(
            tmp_path,
            "presence_notifier",
            *("-p", protocol, "--port", str(notifier_port), "--register-at", str(registrar_port)),
            *("-u", "bob", "--password", "s3cret"),
        )
        registrar.wait_for_output(f"registered bob at 127.0.0.1:{notifier_port}")
        notifier.wait_for_output("registration: 200")
        watcher = start(
            tmp_path,
            "presence_watcher",
            *("-p", protocol, "--server-port", str(registrar_port)),
            *("--local-port", str(free_port()), "-u", "alice", "--target", "bob"),
            *("--renewals", "1", "--pause", "0.5", "--expires", "30"),
        )
        lines = run_to_end(watcher)
        assert len(notifications(lines)) >= 3, lines
        assert [line for line in lines if not line.startswith("notified: ")] == [
            "renewed: 200",
            "unsubscribed: 200",
        ]
        registrar.wait_for_output("alice stopped watching bob")
        assert interrupt(notifier)[1:] == [
            "registration: 200",
            "watched by alice for 30s",
            "alice renewed for 30s",
            "alice stopped watching",
            "shutting down",
        ]
        registrar.wait_for_output("unregistered bob")  # app.close() unregisters
        assert interrupt(registrar)[1:] == [
            f"registered bob at 127.0.0.1:{notifier_port}",
            "relaying bob to alice",
            "alice stopped watching bob",
            "unregistered bob",
            "shutting down",
        ]
    finally:
        stop_all(watcher, notifier, registrar)


def test_a_watcher_of_an_unregistered_user_is_refused(tmp_path: Path) -> None:
    port = free_port()
    registrar = start(tmp_path, "registrar", "--port", str(port), "--account", "bob:s3cret")
    watcher = None
    try:
        registrar.wait_for_output("listening on")
        watcher = start(
            tmp_path,
            "presence_watcher",
            *("--server-port", str(port), "--local-port", str(free_port()), "--target", "bob"),
        )
        code, out, _ = watcher.finish()
        assert (code, out.splitlines()) == (1, ["refused: 404"])
        assert "watcher asked for bob, who is not registered" in interrupt(registrar)
    finally:
        stop_all(watcher, registrar)


def test_the_programs_use_only_names_the_package_has() -> None:
    """Every ``aiosip.<name>`` the programs use exists (a typo would fail only at run time)."""
    used: set[str] = set()
    for path in PROGRAMS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "aiosip"
            ):
                used.add(node.attr)
    assert {"Application", "BaseDialplan", "Contact", "UDP", "TCP", "WS"} <= used
    assert used <= set(dir(aiosip))


def test_the_programs_are_ordinary_python_files() -> None:
    names = sorted(path.name for path in PROGRAMS.iterdir())
    assert names == [
        "call_uac.py",
        "call_uas.py",
        "presence_notifier.py",
        "presence_watcher.py",
        "registrar.py",
    ]
    for name in names:
        text = (PROGRAMS / name).read_text()
        assert text.count("\nfrom softswitch import aiosip\n") == 1, name
