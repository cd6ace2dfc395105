"""aiosip-shaped programs talking to each other, end to end, over UDP, TCP and WebSocket.

Each test is two or three in-process applications written the way aiosip's documentation
describes them (a dialplan, ``request.prepare``, ``peer.invite``/``subscribe``/
``register`` with ``from_details``, ``dialog.reply``, ``async for``), on loopback sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiosip_support import ALL_PROTOCOLS, FAST, LOCAL, contact, run

from softswitch import aiosip
from softswitch.sip.dialog import DialogError
from softswitch.sip.digest import DigestAuthenticator


class Dialplan(aiosip.BaseDialplan):
    """Routes by method to the coroutines given, the usual aiosip dialplan."""

    def __init__(self, **handlers: Any) -> None:
        self.handlers = handlers

    async def resolve(self, *args: Any, **kwargs: Any) -> Any:
        await super().resolve(*args, **kwargs)
        return self.handlers.get(kwargs["method"].lower())


async def listen(app: aiosip.Application, protocol: aiosip.Transport) -> tuple[str, int]:
    return await app.run(protocol=protocol, local_addr=(LOCAL, 0))


# ---------------------------------------------------------------------------- calls


@ALL_PROTOCOLS
def test_call_through_a_dialplan_uas(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        seen: list[str] = []
        bye = asyncio.Event()
        uas_dialogs: list[aiosip.Dialog] = []

        async def on_invite(request: Any, message: Any) -> None:
            seen.append(f"INVITE {message.payload}")
            dialog = await request.prepare(status_code=100)
            uas_dialogs.append(dialog)
            await dialog.reply(message, status_code=180)
            await asyncio.sleep(0.05)
            await dialog.reply(message, status_code=200, payload="v=0 answer")
            async for message in dialog:
                seen.append(message.method)
                await dialog.reply(message, 200)
                if message.method == "BYE":
                    bye.set()
                    break

        server = aiosip.Application(dialplan=Dialplan(invite=on_invite))
        client = aiosip.Application()
        try:
            port = (await listen(server, protocol))[1]
            peer = await client.connect((LOCAL, port), protocol=protocol)
            assert await client.connect((LOCAL, port), protocol=protocol) is peer
            call = await peer.invite(
                from_details=contact("alice", 5999),
                to_details=contact("bob", port),
                payload="v=0 offer",
            )
            statuses = [r.status_code async for r in call.wait_for_terminate()]
            assert statuses == [100, 180, 200]
            assert call.status_code == 200
            assert call.call_state == aiosip.CallState.Terminated
            assert call.response is not None
            assert call.response.payload == "v=0 answer"
            assert call.to_details["params"]["tag"] == call.response.to_details["params"]["tag"]
            (uas,) = uas_dialogs
            await asyncio.wait_for(uas.wait_confirmed(), 2)  # the stack sent the ACK
            assert call.id is not None
            assert uas.id is not None
            assert uas.id.remote_tag == call.id.local_tag
            async with call:
                pass  # leaving the block hangs up
            await asyncio.wait_for(bye.wait(), 2)
            assert seen == ["INVITE v=0 offer", "BYE"]
            assert call.terminated
            assert uas.terminated
            assert client.dialogs == []
            assert server.dialogs == []
        finally:
            await client.close()
            await server.close()

    run(body)


@ALL_PROTOCOLS
def test_a_ringing_call_closed_by_the_caller_is_cancelled(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        cancelled = asyncio.Event()
        queued: list[str] = []

        async def on_invite(request: Any, message: Any) -> None:
            dialog = await request.prepare(status_code=180)
            async for message in dialog:
                queued.append(message.method)
            assert request.cancelled.is_set()
            cancelled.set()

        server = aiosip.Application(dialplan=Dialplan(invite=on_invite))
        client = aiosip.Application()
        try:
            port = (await listen(server, protocol))[1]
            peer = await client.connect((LOCAL, port), protocol=protocol)
            call = await peer.invite(
                from_details=contact("alice", 5999), to_details=contact("bob", port)
            )
            async for response in call.wait_for_terminate():
                if response.status_code == 180:
                    final = await call.close()
                    assert final is not None
                    assert final.status_code == 487
            assert call.status_code == 487
            assert call.call_state == aiosip.CallState.Completed
            await asyncio.wait_for(cancelled.wait(), 2)
            assert queued == ["CANCEL"]
            with pytest.raises(RuntimeError, match="INVITE failed with 487"):
                await call.ready()
        finally:
            await client.close()
            await server.close()

    run(body)


def test_a_refused_call_reports_its_status_and_leaves_no_dialog() -> None:
    async def body() -> None:
        prepared: list[Any] = []

        async def on_invite(request: Any, message: Any) -> None:
            prepared.append(await request.prepare(status_code=486))

        server = aiosip.Application(dialplan=Dialplan(invite=on_invite))
        client = aiosip.Application()
        try:
            port = (await listen(server, aiosip.UDP))[1]
            peer = await client.connect((LOCAL, port))
            call = await peer.invite(from_details=contact("a", 1), to_details=contact("b", port))
            assert [r.status_code async for r in call.wait_for_terminate()] == [100, 486]
            assert (call.status_code, call.status_message) == (486, "Busy Here")
            assert prepared == [None]  # a final status >= 300 returns no dialog
            assert client.dialogs == []
            assert await call.close() is None
        finally:
            await client.close()
            await server.close()

    run(body)


# ------------------------------------------------------------------- subscriptions


@ALL_PROTOCOLS
def test_subscription_with_notifies_refresh_and_expires_zero(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        refreshes: list[int] = []
        ended = asyncio.Event()

        async def on_subscribe(request: Any, message: Any) -> None:
            expires = int(message.headers["Expires"])
            dialog = await request.prepare(status_code=200, headers={"Expires": expires})
            for n in range(3):
                response = await dialog.notify(payload=str(n))
                assert response.status_code == 200
            async for message in dialog:
                expires = int(message.headers["Expires"])
                refreshes.append(expires)
                await dialog.reply(message, 200, headers={"Expires": expires})
                if expires == 0:
                    break
            assert dialog.terminated  # a 2xx with Expires: 0 ends the subscription
            with pytest.raises(DialogError, match="terminated"):
                await dialog.notify(payload="late")
            ended.set()

        server = aiosip.Application(dialplan=Dialplan(subscribe=on_subscribe))
        client = aiosip.Application()
        try:
            port = (await listen(server, protocol))[1]
            peer = await client.connect((LOCAL, port), protocol=protocol)
            subscription = await peer.subscribe(
                expires=120,
                from_details=contact("watcher", 5999),
                to_details=contact("presentity", port),
                headers={"Event": "presence"},
            )
            assert subscription.status_code == 200
            for n in range(3):
                notify = await asyncio.wait_for(subscription.recv(), 2)
                assert notify.method == "NOTIFY"
                assert notify.payload == str(n)
                assert notify.headers["Event"] == "presence"  # the subscription's event
                assert notify.headers["Subscription-State"] == "active"
                await subscription.reply(notify, status_code=200)
            refreshed = await subscription.refresh(expires=60)
            assert refreshed.status_code == 200
            assert refreshed.headers["Expires"] == "60"
            final = await subscription.close()
            assert final is not None
            assert final.status_code == 200
            await asyncio.wait_for(ended.wait(), 3)
            assert refreshes == [60, 0]
            assert client.dialogs == []
            assert server.dialogs == []
        finally:
            await client.close()
            await server.close()

    run(body)


@ALL_PROTOCOLS
def test_the_notifier_ends_a_subscription_with_a_terminated_notify(
    protocol: aiosip.Transport,
) -> None:
    async def body() -> None:
        async def on_subscribe(request: Any, message: Any) -> None:
            dialog = await request.prepare(status_code=200, headers={"Expires": 60})
            final = await dialog.close()  # RFC 6665 4.2.2: NOTIFY, Subscription-State
            assert final is not None
            assert final.status_code == 200  # answered by the subscriber's stack

        server = aiosip.Application(dialplan=Dialplan(subscribe=on_subscribe))
        client = aiosip.Application()
        try:
            port = (await listen(server, protocol))[1]
            peer = await client.connect((LOCAL, port), protocol=protocol)
            subscription = await peer.subscribe(
                from_details=contact("w", 1), to_details=contact("p", port)
            )
            notifies = [m async for m in subscription]  # ends with the subscription
            assert [m.headers["Subscription-State"] for m in notifies] == [
                "terminated;reason=noresource"
            ]
            assert subscription.terminated
            assert await subscription.close() is None  # nothing left to end
            assert client.dialogs == []
        finally:
            await client.close()
            await server.close()

    run(body)


def test_requests_left_in_a_dialog_queue_are_answered_500_after_32_t1() -> None:
    async def body() -> None:
        notified: list[int] = []

        async def on_subscribe(request: Any, message: Any) -> None:
            dialog = await request.prepare(status_code=200)
            notified.append((await dialog.notify(payload="x")).status_code)

        server = aiosip.Application(dialplan=Dialplan(subscribe=on_subscribe), timers=FAST)
        client = aiosip.Application(timers=FAST)
        try:
            port = (await listen(server, aiosip.UDP))[1]
            peer = await client.connect((LOCAL, port))
            subscription = await peer.subscribe(
                from_details=contact("w", 1), to_details=contact("p", port)
            )
            await asyncio.sleep(32 * FAST.t1 + 0.3)  # nobody reads the NOTIFY
            late = await subscription.recv()  # still there to read, but answered
            assert late.method == "NOTIFY"
            assert await subscription.reply(late, 200) is None
            assert notified == [500]  # the stack answered it for the client
            await subscription.close(fast=True)  # forget it without an un-SUBSCRIBE
        finally:
            await server.close()  # its NOTIFY ending the subscription reaches the client
            await client.close()

    run(body)


# --------------------------------------------------------- registration and digest


class Registrar:
    """A registrar written on the aiosip API, challenging every REGISTER (digest MD5)."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.bindings: dict[str, tuple[str, int]] = {}
        self.seen: list[aiosip.Request] = []
        self.app = aiosip.Application(dialplan=Dialplan(register=self.on_register))

    async def on_register(self, request: Any, message: Any) -> None:
        dialog = request._create_dialog()
        self.seen.append(message)
        await dialog.unauthorized(message, realm="example.test")
        async for message in dialog:
            self.seen.append(message)
            if not dialog.validate_auth(message, self.password):
                await dialog.unauthorized(message, realm="example.test")
                continue
            user = message.to_details["uri"]["user"]
            expires = int(message.headers["Expires"])
            if expires:
                uri = message.contact_details["uri"]
                self.bindings[user] = (uri["host"], uri["port"])
            else:
                self.bindings.pop(user, None)
            await dialog.reply(
                message,
                200,
                headers={"Expires": expires, "Contact": message.headers["Contact"]},
            )
            if not expires:
                break


@ALL_PROTOCOLS
def test_register_with_digest_then_unregister(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        registrar = Registrar("hunter2")
        client = aiosip.Application()
        try:
            port = (await listen(registrar.app, protocol))[1]
            peer = await client.connect((LOCAL, port), protocol=protocol)
            registration = await peer.register(
                from_details=contact("alice", port),
                to_details=contact("alice", port),
                contact_details=contact("alice", 5999),
                password="hunter2",
            )
            assert registration.status_code == 200
            assert registrar.bindings == {"alice": (LOCAL, 5999)}
            first, second = registrar.seen
            assert "Authorization" not in first.headers
            auth = second.auth
            assert auth is not None
            assert auth["username"] == "alice"
            assert auth["realm"] == "example.test"
            assert second.call_id == first.call_id
            assert second.cseq is not None
            assert first.cseq is not None
            assert second.cseq.seq == first.cseq.seq + 1
            # Unregistering is challenged too, and answered by the stack for the caller.
            unregistered = await registration.close()
            assert unregistered is not None
            assert unregistered.status_code == 200
            assert registrar.bindings == {}
            assert len(registrar.seen) == 4
        finally:
            await client.close()
            await registrar.app.close()

    run(body)


def test_a_wrong_password_raises_after_two_authenticated_attempts() -> None:
    async def body() -> None:
        registrar = Registrar("right")
        client = aiosip.Application()
        try:
            port = (await listen(registrar.app, aiosip.TCP))[1]
            peer = await client.connect((LOCAL, port), protocol=aiosip.TCP)
            with pytest.raises(aiosip.exceptions.AuthentificationFailed):
                await peer.register(
                    from_details=contact("alice", port),
                    to_details=contact("alice", port),
                    password="wrong",
                )
            assert len(registrar.seen) == 3  # as aiosip: the first, then two with credentials
            assert all("Authorization" in m.headers for m in registrar.seen[1:])
            assert client.dialogs == []
        finally:
            await client.close()
            await registrar.app.close()

    run(body)


def test_without_a_password_a_challenge_is_the_answer() -> None:
    async def body() -> None:
        registrar = Registrar("right")
        client = aiosip.Application()
        try:
            port = (await listen(registrar.app, aiosip.UDP))[1]
            peer = await client.connect((LOCAL, port))
            registration = await peer.register(
                from_details=contact("alice", port), to_details=contact("alice", port)
            )
            assert registration.status_code == 401
            assert len(registrar.seen) == 1
        finally:
            await client.close()
            await registrar.app.close()

    run(body)


def test_a_proxy_challenge_407_is_answered_with_proxy_authorization() -> None:
    async def body() -> None:
        proxy_auth = DigestAuthenticator(realm="proxy.test", secret=b"0123456789abcdef0123")
        outcomes: list[str] = []

        async def on_invite(request: Any, message: Any) -> None:
            credentials = message.headers.get("Proxy-Authorization")
            if credentials is None:
                now = asyncio.get_running_loop().time()
                (challenge,) = proxy_auth.challenges(now)[:1]
                await request.prepare(407, headers={"Proxy-Authenticate": challenge})
                return
            now = asyncio.get_running_loop().time()
            result = proxy_auth.verify(credentials, method="INVITE", now=now, password="s3cret")
            outcomes.append(result.reason)
            await request.prepare(200 if result.ok else 403)

        server = aiosip.Application(dialplan=Dialplan(invite=on_invite))
        client = aiosip.Application()
        try:
            port = (await listen(server, aiosip.UDP))[1]
            peer = await client.connect((LOCAL, port))
            call = await peer.invite(
                from_details=contact("alice", 1), to_details=contact("bob", port), password="s3cret"
            )
            await call.ready()
            assert outcomes == ["ok"]
            await call.close()
        finally:
            await client.close()
            await server.close()

    run(body)


# ------------------------------------------------------------- a back-to-back relay


class Relay:
    """A back-to-back user agent on the aiosip API: each call from A is placed anew to the
    callee (a second, independent dialog), its progress relayed back, and a BYE from
    either side relayed to the other."""

    def __init__(self, protocol: aiosip.Transport) -> None:
        self.protocol = protocol
        self.callee: tuple[str, int] = (LOCAL, 0)
        self.app = aiosip.Application(dialplan=Dialplan(invite=self.on_invite))

    async def on_invite(self, request: Any, message: Any) -> None:
        inbound = await request.prepare(status_code=100)
        peer = await inbound.app.connect(self.callee, protocol=self.protocol)
        outbound = await peer.invite(
            from_details=aiosip.Contact.from_header(f"sip:relay@{LOCAL}"),
            to_details=aiosip.Contact.from_header(
                f"sip:{message.to_details['uri']['user']}@{LOCAL}:{self.callee[1]}"
            ),
            payload=message.payload,
        )
        async for response in outbound.wait_for_terminate():
            if 100 < response.status_code < 200:
                await inbound.reply(message, response.status_code)
            elif response.status_code >= 200:
                await inbound.reply(message, response.status_code, payload=response.payload)
        if outbound.status_code != 200:
            return
        hang_up = asyncio.ensure_future(outbound.wait_closed())
        async for request_in in inbound:
            if request_in.method == "BYE":  # the caller hung up: so does the relay
                hang_up.cancel()
                await outbound.close()
                return
        await inbound.close()  # the callee hung up first (the inbound queue ended)


@ALL_PROTOCOLS
def test_back_to_back_relay(protocol: aiosip.Transport) -> None:
    async def body() -> None:
        callee_seen: list[str] = []

        async def callee(request: Any, message: Any) -> None:
            callee_seen.append(f"{message.method} {message.payload}")
            dialog = await request.prepare(status_code=180)
            await dialog.reply(message, 200, payload="answer")
            async for message in dialog:
                callee_seen.append(message.method)

        relay = Relay(protocol)
        b = aiosip.Application(dialplan=Dialplan(invite=callee))
        a = aiosip.Application()
        try:
            relay.callee = await listen(b, protocol)
            port = (await listen(relay.app, protocol))[1]
            peer = await a.connect((LOCAL, port), protocol=protocol)
            call = await peer.invite(
                from_details=contact("alice", 1), to_details=contact("bob", port), payload="offer"
            )
            statuses = [r.status_code async for r in call.wait_for_terminate()]
            assert statuses == [100, 180, 200]
            assert call.response is not None
            assert call.response.payload == "answer"
            await call.close()
            for _ in range(40):
                if b.dialogs == [] and relay.app.dialogs == []:
                    break
                await asyncio.sleep(0.05)
            assert callee_seen == ["INVITE offer", "BYE"]
            assert relay.app.dialogs == []
            assert b.dialogs == []
        finally:
            for app in (a, relay.app, b):
                await app.close()

    run(body)
