"""SIPp against the aiosip-shaped API, both ways, over UDP and TCP.

SIPp is an independent implementation: if its built-in ``uac`` completes calls against our
UAS, and our UAC completes calls against its built-in ``uas``, the transport, transaction
and dialog layers interoperate, not just agree with themselves. Every SIPp run is bounded
(``-m``, ``-timeout``, ``-timeout_error``), bound to 127.0.0.1 on free ports, and killed by
PID if it outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from callflow_harness import bindable, free_port, sipp_binary

from sipp_tool import SippResult
from softswitch import aiosip

pytestmark = pytest.mark.e2e

LOCAL = "127.0.0.1"
CALLS = 5
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
PROTOCOLS = pytest.mark.parametrize(
    ("protocol", "sipp_transport"),
    [(aiosip.UDP, "u1"), (aiosip.TCP, "t1")],
    ids=["udp", "tcp"],
)


@pytest.fixture
def sipp() -> str:
    return sipp_binary()


class Sipp:
    """One SIPp process, bounded and confined to loopback."""

    def __init__(self, binary: str, workdir: Path, scenario: str, extra: list[str]) -> None:
        self.workdir = workdir
        self.stat_file = workdir / f"{scenario}_stat.csv"
        self.screen_file = workdir / f"{scenario}_screen.log"
        self.error_file = workdir / f"{scenario}_errors.log"
        self.sip_port = free_port()
        self.argv = [
            binary,
            "-sn",
            scenario,
            *extra,
            "-i",
            LOCAL,
            "-p",
            str(self.sip_port),
            "-mi",
            LOCAL,
            "-mp",
            str(free_port(span=4)),
            "-ci",
            LOCAL,
            "-cp",
            str(free_port()),
            "-m",
            str(CALLS),
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-trace_screen",
            "-screen_file",
            str(self.screen_file),
            "-trace_err",
            "-error_file",
            str(self.error_file),
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

    async def wait(self, timeout: float = 30.0) -> SippResult:
        assert self.process is not None
        _, stderr = await asyncio.wait_for(self.process.communicate(), timeout)
        returncode = self.process.returncode
        assert returncode is not None
        return SippResult(returncode, self._stats(), self._output(stderr))

    async def stop(self) -> None:
        """Kill by PID if still running, and reap it so no zombie or pipe leaks."""
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
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1], strict=False))

    def _output(self, stderr: bytes) -> str:
        parts = [stderr.decode(errors="replace")]
        for path in (self.screen_file, self.error_file):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)


async def listening(protocol: aiosip.Transport, port: int, timeout: float = 5.0) -> None:
    """Until SIPp's SIP socket is up, so our first INVITE is not refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if protocol is aiosip.TCP:
            try:
                _, writer = await asyncio.open_connection(LOCAL, port)
            except OSError:
                pass
            else:
                writer.close()
                await writer.wait_closed()
                return
        elif not bindable(port):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"SIPp did not listen on {port}")


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), 40)

    aiosip.run(bounded())


@PROTOCOLS
def test_sipp_uac_calls_our_uas(
    sipp: str, tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        app = aiosip.Application()
        invites: list[str | None] = []
        dialogs: list[aiosip.Dialog] = []

        @app.route("INVITE")
        async def invite(request: aiosip.IncomingRequest, message: aiosip.Request) -> None:
            invites.append(message.call_id)
            await request.reply(180)
            dialogs.append(await request.prepare(200, body=SDP, content_type="application/sdp"))

        addr = await app.run(local_addr=(LOCAL, 0), protocol=protocol)
        uac = Sipp(sipp, tmp_path, "uac", [f"{LOCAL}:{addr[1]}", "-t", sipp_transport])
        try:
            await uac.start()
            result = await uac.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == CALLS, result.explain()
            assert result.count("FailedCall(C)") == 0, result.explain()
            assert len(invites) == len(set(invites)) == CALLS
            # Every call was hung up by SIPp's BYE, which the stack answered and ended.
            assert len(dialogs) == CALLS
            for dialog in dialogs:
                await asyncio.wait_for(dialog.wait_closed(), 2)
            assert app.dialogs == []
        finally:
            await uac.stop()
            await app.close()

    run(body)


@PROTOCOLS
def test_our_uac_calls_sipp_uas(
    sipp: str, tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        uas = Sipp(sipp, tmp_path, "uas", ["-t", sipp_transport])
        app = aiosip.Application()
        try:
            await uas.start()
            await listening(protocol, uas.sip_port)
            peer = await app.connect(
                (LOCAL, uas.sip_port), protocol=protocol, local_addr=(LOCAL, 0)
            )
            for _ in range(CALLS):
                pending = peer.request(
                    "INVITE",
                    f"sip:service@{LOCAL}:{uas.sip_port}",
                    body=SDP,
                    content_type="application/sdp",
                )
                statuses = [response.status async for response in pending]
                assert statuses[-1] == 200, statuses
                assert 180 in statuses
                dialog = pending.dialog
                assert dialog is not None
                bye = await dialog.bye()
                assert bye.status == 200
                assert dialog.terminated
            result = await uas.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == CALLS, result.explain()
            assert result.count("FailedCall(C)") == 0, result.explain()
        finally:
            await uas.stop()
            await app.close()

    run(body)
