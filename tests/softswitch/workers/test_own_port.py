"""A worker's own port in the transport: named in our Via and the socket a new UDP flow
uses; a request on a caller's flow (a BYE towards the caller) and a response leave from the
socket the caller sent to, which is all its NAT or firewall lets in."""

from __future__ import annotations

import asyncio
import socket

from loopback_ports import LOCAL, free_port
from softswitch.sip import Request, Response, parse_message
from softswitch.transport import Flow, Transport, TransportLayer, loop_factory
from softswitch.workers.sockets import bind_worker_sockets, close_all


def _request(call_id: str, method: str = "OPTIONS") -> Request:
    message = parse_message(
        (
            f"{method} sip:peer@{LOCAL} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL}:9;branch=z9hG4bK-{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def test_requests_to_the_caller_and_responses_leave_from_the_listen_socket() -> None:
    port = free_port()
    (group,) = bind_worker_sockets([f"udp:{LOCAL}:{port}"], 1, None)
    (own_address,) = [a for t, a in group.own_addresses() if t is Transport.UDP]

    async def body() -> None:
        layer = TransportLayer(lambda message, flow: None)
        for transport, sock, own in group.sockets:
            await layer.adopt(transport, sock, own=own)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind((LOCAL, 0))
                peer.settimeout(2.0)
                shared_flow = Flow(Transport.UDP, (LOCAL, port), peer.getsockname())
                # Our Via names the own port whichever socket the flow is on.
                assert layer.sent_by(shared_flow) == own_address
                # A BYE towards the caller leaves from the port the caller sent to ...
                assert layer.send(shared_flow, _request("req", "BYE"))
                _, source = await asyncio.to_thread(peer.recvfrom, 65535)
                assert source == (LOCAL, port)
                # ... and so does a response.
                response = Response.for_request(_request("resp"), 200)
                assert layer.send(shared_flow, response)
                _, source = await asyncio.to_thread(peer.recvfrom, 65535)
                assert source == (LOCAL, port)
                # A new flow to a peer (a gateway) is on the own port.
                flow = await layer.connect(Transport.UDP, peer.getsockname())
                assert flow.local == own_address
        finally:
            await layer.close()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(asyncio.wait_for(body(), 10))
    finally:
        close_all([group])


def test_two_listen_hosts_each_flow_named_and_sent_by_its_own_interface() -> None:
    """One own port per listen host: a flow on the first host names the first host's own
    port, not the last one adopted, and a new flow to a peer leaves from the interface the
    kernel routes it through."""
    second = "127.0.0.2"
    port = free_port()
    listen = [f"udp:{LOCAL}:{port}", f"udp:{second}:{port}"]
    (group,) = bind_worker_sockets(listen, 1, None)
    own = {a[0]: a for t, a in group.own_addresses()}
    assert set(own) == {LOCAL, second}

    async def body() -> None:
        layer = TransportLayer(lambda message, flow: None)
        for transport, sock, is_own in group.sockets:
            await layer.adopt(transport, sock, own=is_own)
        try:
            first = Flow(Transport.UDP, (LOCAL, port), (LOCAL, 9))
            other = Flow(Transport.UDP, (second, port), (second, 9))
            assert layer.sent_by(first) == own[LOCAL]
            assert layer.sent_by(other) == own[second]
            # The kernel routes every loopback peer from 127.0.0.1: the first host's.
            flow = await layer.connect(Transport.UDP, (LOCAL, 9))
            assert flow.local == own[LOCAL]
        finally:
            await layer.close()

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(asyncio.wait_for(body(), 10))
    finally:
        close_all([group])
