"""aiosip-shaped programs against SIPp, an independent SIP implementation, over UDP and TCP.

Calls (both directions), a subscription with refresh and ``Expires: 0``, REGISTER with
digest (both directions: SIPp's ``verifyauth`` checks our credentials, our registrar checks
SIPp's) and a back-to-back relay between two SIPp instances. SIPp has no WebSocket, so WS
is covered by ``test_aiosip_flows.py`` between our own programs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiosip_support import LOCAL, SIPP_PROTOCOLS, Sipp, contact, run
from test_aiosip_flows import Dialplan, Registrar, Relay

from softswitch import aiosip

pytestmark = pytest.mark.e2e

CALLS = 3


@SIPP_PROTOCOLS
def test_sipp_calls_a_dialplan_uas(
    tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        invites: list[str] = []
        byes: list[str] = []

        async def on_invite(request: Any, message: Any) -> None:
            invites.append(message.headers["Call-ID"])
            dialog = await request.prepare(status_code=100)
            await dialog.reply(message, status_code=180)
            await dialog.reply(message, status_code=200)
            async for message in dialog:
                await dialog.reply(message, 200)
                if message.method == "BYE":
                    byes.append(message.headers["Call-ID"])
                    break

        app = aiosip.Application(dialplan=Dialplan(invite=on_invite))
        addr = await app.run(protocol=protocol, local_addr=(LOCAL, 0))
        uac = Sipp(tmp_path, "uac", [f"{LOCAL}:{addr[1]}", "-t", sipp_transport], calls=CALLS)
        try:
            await uac.start()
            result = await uac.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == CALLS, result.explain()
            assert len(set(invites)) == CALLS
            await asyncio.sleep(0.1)
            assert sorted(byes) == sorted(invites)
            assert app.dialogs == []
        finally:
            await uac.stop()
            await app.close()

    run(body, 30)


@SIPP_PROTOCOLS
def test_our_uac_calls_sipp(
    tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        uas = Sipp(tmp_path, "uas", ["-t", sipp_transport], calls=CALLS)
        app = aiosip.Application()
        try:
            await uas.start()
            await uas.listening(protocol)
            peer = await app.connect((LOCAL, uas.port), protocol=protocol)
            for _ in range(CALLS):
                call = await peer.invite(
                    from_details=contact("alice", 5999),
                    to_details=contact("service", uas.port),
                    payload="v=0\r\n",
                )
                async with call:
                    statuses = [r.status_code async for r in call.wait_for_terminate()]
                    assert statuses[-1] == 200, statuses
                    assert 180 in statuses
                assert call.terminated
            result = await uas.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == CALLS, result.explain()
        finally:
            await uas.stop()
            await app.close()

    run(body, 30)


@SIPP_PROTOCOLS
def test_subscription_to_sipp_with_refresh_and_expires_zero(
    tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        notifier = Sipp(tmp_path, "notifier.xml", ["-t", sipp_transport])
        app = aiosip.Application()
        try:
            await notifier.start()
            await notifier.listening(protocol)
            peer = await app.connect((LOCAL, notifier.port), protocol=protocol)
            subscription = await peer.subscribe(
                expires=120,
                from_details=contact("watcher", 5999),
                to_details=contact("notifier", notifier.port),
                headers={"Event": "presence"},
            )
            assert subscription.status_code == 200
            notify = await asyncio.wait_for(subscription.recv(), 5)
            assert notify.payload.strip() == "open"
            await subscription.reply(notify, 200)
            assert (await subscription.refresh(expires=60)).status_code == 200
            final = await subscription.close()
            assert final is not None
            assert final.status_code == 200
            result = await notifier.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == 1, result.explain()
            assert app.dialogs == []
        finally:
            await notifier.stop()
            await app.close()

    run(body, 30)


@SIPP_PROTOCOLS
def test_register_with_digest_at_a_sipp_registrar(
    tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        registrar = Sipp(tmp_path, "registrar.xml", ["-t", sipp_transport])
        app = aiosip.Application()
        try:
            await registrar.start()
            await registrar.listening(protocol)
            peer = await app.connect((LOCAL, registrar.port), protocol=protocol)
            registration = await peer.register(
                from_details=contact("alice", registrar.port),
                to_details=contact("alice", registrar.port),
                password="hunter2",
            )
            assert registration.status_code == 200  # SIPp's verifyauth accepted us
            unregistered = await registration.close()
            assert unregistered is not None
            assert unregistered.status_code == 200
            result = await registrar.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == 1, result.explain()
        finally:
            await registrar.stop()
            await app.close()

    run(body, 30)


@SIPP_PROTOCOLS
def test_sipp_registers_with_digest_at_our_registrar(
    tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        registrar = Registrar("hunter2")
        addr = await registrar.app.run(protocol=protocol, local_addr=(LOCAL, 0))
        client = Sipp(
            tmp_path,
            "register_client.xml",
            [f"{LOCAL}:{addr[1]}", "-t", sipp_transport, "-au", "alice", "-ap", "hunter2"],
        )
        try:
            await client.start()
            result = await client.wait()
            assert result.returncode == 0, result.explain()
            assert result.count("SuccessfulCall(C)") == 1, result.explain()
            assert registrar.bindings == {"alice": (LOCAL, client.port)}
            assert len(registrar.seen) == 2
        finally:
            await client.stop()
            await registrar.app.close()

    run(body, 30)


@SIPP_PROTOCOLS
def test_back_to_back_relay_between_two_sipps(
    tmp_path: Path, protocol: aiosip.Transport, sipp_transport: str
) -> None:
    async def body() -> None:
        relay = Relay(protocol)
        uas = Sipp(tmp_path, "uas", ["-t", sipp_transport], calls=CALLS, name="callee")
        try:
            await uas.start()
            await uas.listening(protocol)
            relay.callee = (LOCAL, uas.port)
            addr = await relay.app.run(protocol=protocol, local_addr=(LOCAL, 0))
            uac = Sipp(
                tmp_path,
                "uac",
                [f"{LOCAL}:{addr[1]}", "-t", sipp_transport],
                calls=CALLS,
                name="caller",
            )
            try:
                await uac.start()
                caller = await uac.wait()
                assert caller.returncode == 0, caller.explain()
                assert caller.count("SuccessfulCall(C)") == CALLS, caller.explain()
            finally:
                await uac.stop()
            callee = await uas.wait()
            assert callee.returncode == 0, callee.explain()
            assert callee.count("SuccessfulCall(C)") == CALLS, callee.explain()
            assert relay.app.dialogs == []
        finally:
            await uas.stop()
            await relay.app.close()

    run(body, 40)
