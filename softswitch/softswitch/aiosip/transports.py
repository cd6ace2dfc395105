"""The application's transports: the stack's UDP and TCP, plus WebSocket, behind one face.

``softswitch.transport.TransportLayer`` carries UDP and TCP for the switch and for this
package alike; aiosip programs also speak SIP over WebSocket (RFC 7118). Rather than teach
the switch's transport a protocol it does not serve, this subclass sends flows of
``Transport.WS`` to :class:`~softswitch.aiosip.websocket.WebSocketLayer` and everything else
to the stack, and :class:`AppDriver` runs the transaction layer over it, treating WS as
the reliable transport it is (no retransmissions, RFC 3261 17.1.1.2 and 17.1.2.2).

A message that arrives over WS goes through the same checks as one over UDP: parsed with
the stack's parser, refused by ``validate_request``/``validate_response`` with a stateless
reply where one can be sent (on the same connection), and only then handed up.
"""

from __future__ import annotations

import logging
from typing import Any

from softswitch.sip import (
    Request,
    Response,
    SipParseError,
    parse_message,
    validate_request,
    validate_response,
)
from softswitch.sip.transaction import ClientTransaction, ServerTransaction
from softswitch.transaction_driver import Outputs, TransactionDriver
from softswitch.transport import Address, Flow, Limits, MessageHandler, Transport, TransportLayer

from .websocket import WebSocketLayer

__all__ = ["AppDriver", "AppTransport"]

logger = logging.getLogger("softswitch.aiosip.websocket")


class AppTransport(TransportLayer):
    """UDP and TCP as the stack carries them, and WS through a :class:`WebSocketLayer`."""

    def __init__(self, on_message: MessageHandler, *, limits: Limits | None = None) -> None:
        super().__init__(on_message, limits=limits)
        self._deliver = on_message
        self.websocket = WebSocketLayer(self._on_ws_data, self.limits)

    async def listen(self, transport: Transport, local_addr: Address) -> Address:
        if transport is Transport.WS:
            return await self.websocket.listen(local_addr)
        return await super().listen(transport, local_addr)

    @property
    def listeners(self) -> list[tuple[Transport, Address]]:
        return super().listeners + [(Transport.WS, a) for a in self.websocket.listeners]

    async def connect(
        self, transport: Transport, remote: Address, *, local_host: str | None = None
    ) -> Flow:
        if transport is Transport.WS:
            open_flow = self.websocket.flow_to(remote)
            if open_flow is not None:
                return open_flow
            host = f"[{remote[0]}]" if ":" in remote[0] else remote[0]
            return await self.websocket.connect(f"ws://{host}:{remote[1]}")
        return await super().connect(transport, remote, local_host=local_host)

    def send(self, flow: Flow, message: Request | Response) -> bool:
        if flow.transport is not Transport.WS:
            return super().send(flow, message)
        data = bytes(message)
        if len(data) > self.limits.max_message_size:
            logger.info("dropped outbound WS message of %d bytes: too large", len(data))
            return False
        return self.websocket.send(flow, data)

    def send_response(self, response: Response, request_flow: Flow) -> None:
        if request_flow.transport is not Transport.WS:
            super().send_response(response, request_flow)
        elif not self.send(request_flow, response):
            # RFC 7118 5: a WS client is reachable only over its connection; it is gone.
            logger.info(
                "dropped %d response: WS connection %s:%d is closed",
                response.status,
                *request_flow.remote,
                extra={"transport": "WS", "call_id": response.call_id},
            )

    def sent_by(self, flow: Flow) -> Address:
        if flow.transport is Transport.WS:
            host, port = self.websocket.sent_by(flow)
            return (host, port or 0)
        return super().sent_by(flow)

    async def close(self) -> None:
        await self.websocket.close()
        await super().close()

    def _on_ws_data(self, data: bytes, flow: Flow) -> None:
        """One WebSocket message: parse, check, refuse or hand up (as for a datagram)."""
        try:
            message = parse_message(data, stream=False)
            refusal = (
                validate_request(message)
                if isinstance(message, Request)
                else validate_response(message)
            )
        except SipParseError as exc:
            logger.info("malformed WS message from %s:%d: %s", *flow.remote, exc.reason)
            if not data.lstrip(b"\r\n").startswith(b"SIP/"):
                reply = Response.for_parse_error(exc)
                if reply is not None:
                    self.websocket.send(flow, bytes(reply))
            return
        except Exception:  # a parser bug must not take the connection down
            logger.exception("parser failed on %d bytes over WS", len(data))
            return
        if refusal is not None:
            status, reason = refusal
            logger.info("refused WS message from %s:%d: %d %s", *flow.remote, status, reason)
            if isinstance(message, Request) and message.method != "ACK":
                self.websocket.send(flow, bytes(Response.for_request(message, status, reason)))
            return
        self._deliver(message, flow)


class AppDriver(TransactionDriver):
    """The stack's transaction driver over :class:`AppTransport`."""

    def __init__(self, *, limits: Limits | None = None, **kwargs: Any) -> None:
        super().__init__(limits=limits, **kwargs)
        self.app_transport = AppTransport(self._on_message, limits=limits)
        self.transport = self.app_transport

    def open_client(
        self, request: Request, flow: Flow, now: float
    ) -> tuple[ClientTransaction, Outputs]:
        return self.transactions.send_request(
            request, now, reliable=flow.transport is not Transport.UDP, peer=flow
        )

    def open_server(
        self, request: Request, flow: Flow, now: float
    ) -> tuple[ServerTransaction, Outputs]:
        return self.transactions.create_server(
            request, now, reliable=flow.transport is not Transport.UDP, peer=flow
        )
