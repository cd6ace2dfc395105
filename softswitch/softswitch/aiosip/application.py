"""The application: wires the transport, the transaction layer and dialogs to your handlers.

Data moves one way through here. Bytes become messages in ``softswitch.transport``; every
message goes to ``softswitch.sip.transaction.TransactionLayer`` first, run by
``softswitch.transaction_driver`` (the same loop the proxy engine runs on), which carries
out the layer's actions and hands this module what is the user agent's to decide: a
request or response no transaction matched, what a transaction passes up, a transaction
that gave up or ended. That is dispatched to a route, a dialog or a waiting caller.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TypeVar

from softswitch.sip import URI, NameAddr, Request, Response, SipURI, Via
from softswitch.sip.dialog import Dialog as DialogState
from softswitch.sip.dialog import DialogError, DialogId
from softswitch.sip.dialog import DialogState as State
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    make_cancel,
)
from softswitch.transaction_driver import TransactionDriver
from softswitch.transport import Address, Flow, Limits, Transport

from .addressing import contact_for, destination, uri_host
from .dialog import Dialog
from .incoming import DIALOG_CREATING, IncomingRequest
from .outgoing import PendingRequest
from .peer import Peer
from .router import Handler, Router

__all__ = ["Application"]

logger = logging.getLogger("softswitch.aiosip")

H = TypeVar("H", bound=Handler)


class Application:
    """A SIP user agent (client and server at once) with handlers per method.

    ``await app.run(local_addr=..., protocol=UDP)`` starts a listener (call it once per
    transport); ``await app.connect(addr)`` gives a :class:`Peer` to send requests to;
    ``await app.close()`` stops everything.
    """

    def __init__(
        self,
        *,
        router: Router | None = None,
        user: str = "softswitch",
        user_agent: str | None = "softswitch",
        timers: TimerConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.router = router or Router()
        self.user = user
        self.user_agent = user_agent
        self.driver = TransactionDriver(
            on_unmatched=self._on_unmatched,
            on_response=self._on_response,
            on_request=self._on_request,
            on_gave_up=self._give_up,
            on_terminated=self._forget_transaction,
            logger=logger,
            timers=timers,
            limits=limits,
        )
        self.transport = self.driver.transport
        self.transactions = self.driver.transactions
        self._clients: dict[Transaction, PendingRequest] = {}
        self._servers: dict[Transaction, IncomingRequest] = {}
        self._dialogs: dict[DialogId, Dialog] = {}

    # -- public -------------------------------------------------------------------------

    def route(self, method: str) -> Callable[[H], H]:
        """``@app.route("OPTIONS")``: register a handler on :attr:`router`."""
        return self.router.route(method)

    async def run(
        self,
        *,
        local_addr: tuple[str, int] = ("127.0.0.1", 5060),
        protocol: Transport = Transport.UDP,
    ) -> Address:
        """Start listening; returns the bound address (port 0 picks a free one)."""
        return await self.transport.listen(protocol, local_addr)

    async def connect(
        self,
        remote_addr: tuple[str, int],
        *,
        protocol: Transport = Transport.UDP,
        local_addr: tuple[str, int] | None = None,
    ) -> Peer:
        """A peer to send requests to; a TCP connection is opened (or reused) now."""
        local_host = None
        if local_addr is not None:
            local_host = local_addr[0]
            if local_addr[1] and (protocol, local_addr) not in self.transport.listeners:
                await self.run(local_addr=local_addr, protocol=protocol)
        flow = await self.transport.connect(protocol, remote_addr, local_host=local_host)
        return Peer(self, flow.remote, protocol, local_host)

    async def close(self) -> None:
        self.driver.stop()
        for dialog in list(self._dialogs.values()):
            dialog._terminate()
        for pending in self._clients.values():
            pending._fail(ConnectionAbortedError("application closed"))
        await self.driver.close()

    @property
    def dialogs(self) -> list[Dialog]:
        return list(self._dialogs.values())

    # -- sending ------------------------------------------------------------------------

    def _send_out_of_dialog(
        self,
        peer: Peer,
        method: str,
        target: URI,
        *,
        from_: NameAddr | None,
        to: NameAddr | None,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> PendingRequest:
        extra = list(headers)

        async def start(pending: PendingRequest) -> tuple[Request, Flow]:
            flow = await self.transport.connect(
                peer.protocol, peer.remote_addr, local_host=peer.local_host
            )
            sent_by = self.transport.sent_by(flow)
            me = SipURI(user=self.user, host=uri_host(sent_by[0]))
            if self.user_agent:
                extra.append(("User-Agent", self.user_agent))
            request = Request.build(
                method,
                target,
                via=self._via(flow),
                from_=from_ or NameAddr(me),
                to=to or NameAddr(target),
                call_id=f"{secrets.token_hex(12)}@{uri_host(sent_by[0])}",
                cseq=1,
                contact=self._contact(flow) if method in DIALOG_CREATING else None,
                headers=extra,
                body=body,
                content_type=content_type,
            )
            self._start_client(pending, request, flow)
            return request, flow

        return PendingRequest(start, self.driver.spawn, canceller=self._send_cancel)

    def _send_cancel(self, invite: PendingRequest) -> PendingRequest:
        assert invite.request is not None
        assert invite.flow is not None
        cancel = make_cancel(invite.request)
        flow = invite.flow

        async def start(pending: PendingRequest) -> tuple[Request, Flow]:
            self._start_client(pending, cancel, flow)
            return cancel, flow

        return PendingRequest(start, self.driver.spawn)

    def _send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> PendingRequest:
        extra = list(headers)
        if self.user_agent:
            extra.append(("User-Agent", self.user_agent))

        async def start(pending: PendingRequest) -> tuple[Request, Flow]:
            flow = await self._dialog_flow(dialog)
            request = dialog.state.create_request(
                method,
                via=self._via(flow),
                contact=self._contact(flow) if method in DIALOG_CREATING else None,
                headers=extra,
                body=body,
                content_type=content_type,
            )
            self._start_client(pending, request, flow)
            return request, flow

        return PendingRequest(start, self.driver.spawn, dialog=dialog)

    async def _dialog_flow(self, dialog: Dialog) -> Flow:
        """The next hop of an in-dialog request: the first route, else the remote target."""
        ruri, routes = dialog.state.request_target()
        protocol, addr = destination(routes[0].uri if routes else ruri, dialog.transport)
        return await self.transport.connect(protocol, addr)

    def _via(self, flow: Flow) -> Via:
        host, port = self.transport.sent_by(flow)
        return Via.new(str(flow.transport), uri_host(host), port, rport=True)

    def _contact(self, flow: Flow) -> NameAddr:
        return contact_for(self.user, self.transport.sent_by(flow), flow.transport)

    def _start_client(self, pending: PendingRequest, request: Request, flow: Flow) -> None:
        if self.driver.closed:
            raise ConnectionAbortedError("application closed")
        tx, outputs = self.driver.open_client(request, flow, self.driver.now())
        pending.request, pending.flow = request, flow
        self._clients[tx] = pending
        self.driver.process(outputs)

    # -- answering ----------------------------------------------------------------------

    def _answer(self, incoming: IncomingRequest, response: Response) -> None:
        """Send a response through the request's transaction, making dialogs on the way."""
        request = incoming.message
        status = response.status
        if request.method in DIALOG_CREATING and 101 <= status < 300:
            if not response.contact:
                response.headers.add("Contact", str(self._contact(incoming.flow)))
            if incoming.dialog is None:
                try:
                    state = DialogState.as_uas(request, response)
                except DialogError as exc:
                    logger.info("no dialog: %s", exc, extra={"call_id": request.call_id})
                else:
                    incoming.dialog = Dialog(self, state, incoming.flow.transport)
                    self._dialogs[state.id] = incoming.dialog
            elif status >= 200:
                incoming.dialog.state.state = State.CONFIRMED
        outputs = self.transactions.respond(incoming.transaction, response, self.driver.now())
        if status >= 200:
            incoming.final = response
        self.driver.process(outputs)
        dialog = incoming.dialog
        if dialog is not None and request.method == "INVITE":
            if 200 <= status < 300:
                dialog._retransmit_2xx(response, incoming.flow)
            elif status >= 300 and dialog.state.state is State.EARLY:
                dialog._terminate()  # only an early dialog dies with its INVITE (12.3)

    def _incoming_for(self, message: Request) -> IncomingRequest:
        tx = self.transactions.match_server(message)
        incoming = self._servers.get(tx) if tx is not None else None
        if incoming is None:
            raise LookupError("no open server transaction for this request")
        return incoming

    # -- what the transaction driver hands over -----------------------------------------

    def _on_unmatched(self, message: Request | Response, flow: Flow, now: float) -> None:
        if isinstance(message, Response):
            self._stray_response(message)
        elif message.method == "ACK":
            self._ack_for_2xx(message)
        else:
            self._new_request(message, flow, now)

    def _on_response(self, tx: ClientTransaction, response: Response) -> None:
        pending = self._clients.get(tx)
        if pending is not None:
            self._client_response(pending, tx.request, response)

    def _on_request(self, tx: ServerTransaction, request: Request) -> None:
        incoming = self._servers.get(tx)
        if incoming is not None:
            self._dispatch(incoming)

    def _give_up(self, tx: Transaction, status: int, why: str) -> None:
        pending = self._clients.get(tx)
        logger.info(
            "%s transaction gave up: %s",
            tx.request.method,
            why,
            extra={"call_id": tx.request.call_id},
        )
        if pending is not None:
            pending._deliver(Response.for_request(tx.request, status, None))
            if pending.dialog is not None and status == 408:
                pending.dialog._terminate()

    def _forget_transaction(self, tx: Transaction) -> None:
        self._clients.pop(tx, None)
        self._servers.pop(tx, None)

    # -- receiving ----------------------------------------------------------------------

    def _client_response(
        self, pending: PendingRequest, request: Request, response: Response
    ) -> None:
        dialog = pending.dialog
        if dialog is not None:
            dialog.state.on_response(request, response)
            if dialog.terminated or (request.method == "BYE" and response.status >= 200):
                dialog._terminate()
        elif request.method == "INVITE" and 200 <= response.status < 300:
            dialog = self._uac_dialog(request, response, pending.flow)
            pending.dialog = dialog
        if dialog is not None and request.method == "INVITE" and 200 <= response.status < 300:
            self.driver.spawn(self._send_ack(dialog, request))
        pending._deliver(response)

    def _uac_dialog(self, request: Request, response: Response, flow: Flow | None) -> Dialog | None:
        try:
            state = DialogState.as_uac(request, response)
        except DialogError as exc:
            logger.info("2xx makes no dialog: %s", exc, extra={"call_id": request.call_id})
            return None
        dialog = Dialog(self, state, flow.transport if flow else Transport.UDP)
        self._dialogs[state.id] = dialog
        return dialog

    async def _send_ack(self, dialog: Dialog, invite: Request) -> None:
        """The UAC core's ACK for a 2xx: a new request, no transaction (RFC 3261 13.2.2.4)."""
        cseq = invite.cseq
        assert cseq is not None
        flow = await self._dialog_flow(dialog)
        ack = dialog.state.create_request("ACK", via=self._via(flow), cseq=cseq.seq)
        dialog._remember_ack(ack, flow)
        self.transport.send(flow, ack)

    def _stray_response(self, response: Response) -> None:
        dialog_id = DialogId.for_incoming_response(response)
        dialog = self._dialogs.get(dialog_id) if dialog_id is not None else None
        cseq = response.cseq
        if (
            dialog is not None
            and cseq is not None
            and cseq.method == "INVITE"
            and 200 <= response.status < 300
        ):
            dialog._resend_ack()
            return
        logger.debug(
            "stray %d response dropped", response.status, extra={"call_id": response.call_id}
        )

    def _ack_for_2xx(self, ack: Request) -> None:
        dialog_id = DialogId.for_incoming_request(ack)
        dialog = self._dialogs.get(dialog_id) if dialog_id is not None else None
        if dialog is None:
            logger.debug("ACK matches no dialog", extra={"call_id": ack.call_id})
            return
        dialog._on_ack(ack)

    def _new_request(self, request: Request, flow: Flow, now: float) -> None:
        if request.method == "CANCEL":
            self._cancel(request, flow, now)
            return
        tx, outputs = self.driver.open_server(request, flow, now)
        dialog = None
        if request.to_tag is not None:
            dialog_id = DialogId.for_incoming_request(request)
            dialog = self._dialogs.get(dialog_id) if dialog_id is not None else None
        self._servers[tx] = IncomingRequest(self, request, flow, tx, dialog)
        self.driver.process(outputs)

    def _cancel(self, cancel: Request, flow: Flow, now: float) -> None:
        """CANCEL (RFC 3261 9.2): 200 for the CANCEL, 487 for the INVITE still pending."""
        tx, outputs = self.driver.open_server(cancel, flow, now)
        self.driver.process(outputs)
        invite_tx = self.transactions.match_cancel(cancel)
        invite = self._servers.get(invite_tx) if invite_tx is not None else None
        if invite is None or invite.answered:
            status = 481 if invite is None else 200
            response = Response.for_request(cancel, status)
            self.driver.process(self.transactions.respond(tx, response, now))
            return
        self.driver.process(
            self.transactions.respond(
                tx, Response.for_request(cancel, 200, to_tag=invite.to_tag), now
            )
        )
        invite.cancelled.set()
        self._answer(invite, Response.for_request(invite.message, 487, to_tag=invite.to_tag))

    def _dispatch(self, incoming: IncomingRequest) -> None:
        request = incoming.message
        if request.to_tag is not None:
            self._dispatch_in_dialog(incoming)
            return
        handler = self.router.get(request.method)
        if handler is None:
            allow = ", ".join(["ACK", "CANCEL", *self.router.methods])
            self._reply_now(incoming, 405, headers=[("Allow", allow)])
            return
        self.driver.spawn(self._run_handler(handler, incoming))

    def _dispatch_in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.message
        dialog = incoming.dialog
        if dialog is None:
            self._reply_now(incoming, 481)
            return
        refusal = dialog.state.on_request(request)
        if refusal is not None:
            self._reply_now(incoming, refusal.status, refusal.reason)
            return
        handler = dialog.router.get(request.method)
        if handler is not None:
            self.driver.spawn(self._run_handler(handler, incoming))
        else:
            if request.method == "BYE":
                self._reply_now(incoming, 200)
            if dialog._wants_queue():
                dialog._enqueue(request)
            elif not incoming.answered:
                self._reply_now(incoming, 501)
        if request.method == "BYE":
            dialog._terminate()

    def _reply_now(
        self,
        incoming: IncomingRequest,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        to_tag = None if status == 100 else incoming.to_tag
        response = Response.for_request(
            incoming.message, status, reason, to_tag=to_tag, headers=headers
        )
        self._answer(incoming, response)

    async def _run_handler(self, handler: Handler, incoming: IncomingRequest) -> None:
        request = incoming.message
        try:
            await handler(incoming, request)
        except Exception:
            logger.exception(
                "%s handler failed", request.method, extra={"call_id": request.call_id}
            )
            if not incoming.answered:
                self._reply_now(incoming, 500)
            return
        if not incoming.answered and not incoming.cancelled.is_set():
            logger.warning(
                "%s handler returned without a final response",
                request.method,
                extra={"call_id": request.call_id},
            )
            self._reply_now(incoming, 500, "No Final Response From Handler")

    # -- bookkeeping --------------------------------------------------------------------

    def _forget_dialog(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]
