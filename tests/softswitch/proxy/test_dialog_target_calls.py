"""A carrier that answers from another address than its gateway's (a front door balancing
over media gateways without record-routing): the call's ACK, BYE and the switch's own BYE
go to the answering gateway's Contact; with ``dialog_target = "address"`` to the gateway.

A whole switch in this process (``tests/engine_calls.py``): the datagrams it sends, caught."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine_calls import (
    CALLER,
    LOCAL,
    Rig,
    ScriptedCall,
    bye_answer,
    header_lines,
    one_carrier_config,
    sent_to,
)
from loopback_ports import free_port
from softswitch.call.refusal import EndReason
from softswitch.proxy.calls import Call, Phase


def only_to(out: list[tuple[bytes, tuple[str, int]]], what: bytes) -> tuple[str, int]:
    """Where the one datagram starting with ``what`` went."""
    (dest,) = [to for data, to in out if data.startswith(what)]
    return dest


@pytest.mark.parametrize("follows", [True, False], ids=["contact", "address"])
def test_the_callers_ack_and_bye_go_where_the_carrier_answered_from(
    tmp_path: Path, follows: bool
) -> None:
    # The media gateway on an address no account or gateway has (127/8 is all loopback).
    port, gateway, answering = free_port(), (LOCAL, free_port()), ("127.0.0.2", free_port())
    extra = "" if follows else 'dialog_target = "address"'
    config = one_carrier_config(tmp_path, port, gateway, extra)
    expected = answering if follows else gateway

    async def main() -> None:
        async with Rig(config, port) as rig:
            call = ScriptedCall("front-door@127.0.0.1", (LOCAL, port), n=1, carrier=answering)
            rig.answer(call, gateway)  # the 180 and 200 come back through the front door
            assert only_to(rig.feed(call.in_dialog(b"ACK", 1, "ack"), CALLER), b"ACK ") == expected
            out = rig.feed(call.in_dialog(b"BYE", 2, "bye"), CALLER)
            assert only_to(out, b"BYE ") == expected
            bye = sent_to(out, expected, b"BYE ")
            # The BYE's 200 comes from where the BYE went, and reaches the caller.
            sent_to(rig.feed(bye_answer(bye), expected), CALLER, b"SIP/2.0 200")
            # Its packets are the carrier's: known, never counted by pike.
            guard = rig.switch.pipeline.guard
            assert guard.is_known(*answering, guard.clock()) is follows
            assert guard.is_known("127.0.0.3", 5060, guard.clock()) is False

    asyncio.run(main())


def test_the_switchs_own_bye_goes_where_the_carrier_answered_from(tmp_path: Path) -> None:
    port, gateway, answering = free_port(), (LOCAL, free_port()), (LOCAL, free_port())
    config = one_carrier_config(tmp_path, port, gateway)

    async def main() -> None:
        async with Rig(config, port) as rig:
            call = ScriptedCall("hangup@127.0.0.1", (LOCAL, port), n=2, carrier=answering)
            rig.answer(call, gateway)
            rig.feed(call.in_dialog(b"ACK", 1, "ack"), CALLER)
            (live,) = rig.switch.engine.calls()
            assert isinstance(live, Call)
            assert live.phase is Phase.ANSWERED
            rig.sent.clear()
            assert rig.switch.engine.hang_up(live, EndReason.OPERATOR_HANGUP)
            byes = {to for data, to in rig.sent if data.startswith(b"BYE ")}
            assert byes == {answering, CALLER}

    asyncio.run(main())


class ThroughCarrierProxy(ScriptedCall):
    """A carrier whose own proxy record-routes: its entry tops the Record-Route of the
    answers, above ours; the caller's route set is the Record-Route reversed (12.1.2)."""

    def __init__(self, *args: object, proxy: bytes, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.proxy = proxy

    def carrier_answer(self, status: bytes, body: bytes = b"") -> bytes:
        head, rest = super().carrier_answer(status, body).split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        first = next(i for i, line in enumerate(lines) if line.lower().startswith(b"record-route:"))
        lines.insert(first, b"Record-Route: <sip:" + self.proxy + b";lr>")
        return b"\r\n".join(lines) + b"\r\n\r\n" + rest

    def answered(self, ok: bytes) -> None:
        super().answered(ok)
        self.route.reverse()


def test_a_wildcard_listener_tells_a_carrier_proxy_on_its_port_from_itself(
    tmp_path: Path,
) -> None:
    """Listening on 0.0.0.0 with the carrier's proxy on the same port number (5060 for both
    in real life): the proxy's Record-Route entry is not ours, so the dialog goes through
    it, with its Route kept."""
    port, answering = free_port(), ("198.18.0.20", 5080)
    proxy = ("198.18.0.7", port)  # a public carrier, on our port number
    config = one_carrier_config(tmp_path, port, proxy)

    async def main() -> None:
        async with Rig(config, port, host="0.0.0.0") as rig:
            call = ThroughCarrierProxy(
                "wildcard@127.0.0.1",
                (LOCAL, port),
                n=3,
                carrier=answering,
                proxy=b"%s:%d" % (proxy[0].encode(), proxy[1]),
            )
            rig.answer(call, proxy)
            out = rig.feed(call.in_dialog(b"BYE", 2, "bye"), CALLER)
            bye = sent_to(out, proxy, b"BYE ")
            routes = [line for line in header_lines(bye) if line.lower().startswith(b"route:")]
            assert routes == [b"Route: <sip:%s:%d;lr>" % (proxy[0].encode(), port)]

    asyncio.run(main())


def test_a_wildcard_listener_is_itself_on_its_machines_addresses_and_names_only(
    tmp_path: Path,
) -> None:
    """Listening on 0.0.0.0: a request whose earlier Via names another host on our port
    number (a phone behind the customer's proxy, both on 5060 in real life) is no loop, one
    naming this machine on our port is (482); a Route naming the switch by a name (a
    phone's outbound proxy) is still ours, stripped before the carrier gets the INVITE."""
    port, gateway = free_port(), ("198.18.0.7", free_port())
    config = one_carrier_config(tmp_path, port, gateway)

    def via_below(invite: bytes, host: bytes) -> bytes:
        via = b"Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKphone" % (host, port)
        return invite.replace(b"\r\nFrom:", b"\r\n" + via + b"\r\nFrom:")

    async def main() -> None:
        async with Rig(config, port, host="0.0.0.0") as rig:
            phone = ScriptedCall("behind-a-proxy@127.0.0.1", (LOCAL, port), n=4)
            out = rig.feed(via_below(phone.invite(), b"198.18.0.5"), CALLER)
            sent_to(out, CALLER, b"SIP/2.0 100")
            sent_to(out, gateway, b"INVITE ")

            looped = ScriptedCall("looped@127.0.0.1", (LOCAL, port), n=5)
            out = rig.feed(via_below(looped.invite(), b"127.0.0.1"), CALLER)
            sent_to(out, CALLER, b"SIP/2.0 482")

            named = ScriptedCall("outbound-proxy@127.0.0.1", (LOCAL, port), n=6)
            route = b"Route: <sip:switch.example:%d;lr>" % port
            invite = named.invite().replace(b"\r\nFrom:", b"\r\n" + route + b"\r\nFrom:")
            forwarded = sent_to(rig.feed(invite, CALLER), gateway, b"INVITE ")
            assert b"switch.example" not in forwarded

    asyncio.run(main())
