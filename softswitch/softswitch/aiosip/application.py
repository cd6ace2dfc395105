"""The application: wires the transports, the transaction layer and dialogs to your handlers.

Data moves one way through here. Bytes become messages in the transports (UDP and TCP from
``softswitch.transport``, WebSocket from ``websocket``); every message goes to
``softswitch.sip.transaction.TransactionLayer`` first, run by the stack's transaction driver
(the same loop the proxy engine runs on), which carries out the layer's actions and hands
this module what is the user agent's to decide: a request or response no transaction
matched, what a transaction passes up, a transaction that gave up or ended. That is
dispatched to a conversation (:class:`Dialog`), a route, the dialplan, or a waiting caller.

How an incoming request finds its place, in order: a request with a To tag belongs to the
dialog with that id (or to the conversation we opened with that tag, for a NOTIFY that
overtook the 2xx to our SUBSCRIBE); a request without one continues a conversation a
handler still holds (same Call-ID and From tag, while that handler runs or after its
401/407 challenge: a request retried with credentials); anything else is new, for
``app.router`` and then the dialplan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import traceback
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Final, TypeVar

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
from softswitch.transport import Address, Flow, Limits, Transport

from .addressing import contact_for, destination, uri_host
from .auth import Challenger, credentials_for
from .contact import Contact, Uri, as_name_addr
from .dialog import Dialog, _bad_expires, _expires
from .dialplan import BaseDialplan
from .incoming import DIALOG_CREATING, IncomingRequest
from .messages import STACK_HEADERS, adopt
from .outgoing import PendingRequest
from .peer import Peer
from .router import Handler, Router
from .transports import AppDriver, AppTransport

__all__ = ["DEFAULTS", "Application"]

logger = logging.getLogger("softswitch.aiosip")

H = TypeVar("H", bound=Handler)

#: aiosip's ``Application.defaults``; ``defaults=`` overrides any of them.
DEFAULTS: Final[dict[str, Any]] = {
    "user_agent": "softswitch",
    "override_contact_host": None,
    "dialog_closing_delay": 30,
}

_UNSET: Final = object()

Middleware = Callable[[Handler], Any]


def _ends_subscription(dialog: Dialog, request: Request) -> bool:
    """A NOTIFY saying our subscription is over (RFC 6665 4.1.3): the stack answers it and
    ends the dialog, as it does for a BYE."""
    if request.method != "NOTIFY" or dialog.inbound or dialog.method != "SUBSCRIBE":
        return False
    state = request.headers.get("Subscription-State") or ""
    return state.split(";", 1)[0].strip().lower() == "terminated"


class Application(MutableMapping[str, Any]):
    """A SIP user agent (client and server at once), with aiosip's constructor and methods.

    ``await app.run(local_addr=..., protocol=UDP)`` starts a listener (call it once per
    transport); ``await app.connect(addr)`` gives a :class:`Peer` to send requests to;
    ``await app.close()`` ends the dialogs still up and stops everything. Incoming requests
    go to ``app.router`` (``@app.route("OPTIONS")``) and then to ``dialplan``.

    aiosip's keywords: ``loop`` is what :attr:`loop` returns (the application always runs
    on the loop it is awaited in); ``dialplan``; ``defaults`` (``user_agent``,
    ``override_contact_host``, ``dialog_closing_delay``); ``debug`` (a handler's traceback
    becomes the body of its 500); ``middleware`` (factories wrapping each handler).
    ``dns_resolver`` is accepted and unused: names are resolved with the loop's resolver.
    The application is also a mapping for the program's own state (``app['db'] = ...``).
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        middleware: Iterable[Middleware] = (),
        defaults: dict[str, Any] | None = None,
        debug: bool = False,
        dialplan: BaseDialplan | None = None,
        dns_resolver: object = None,
        router: Router | None = None,
        user: str = "softswitch",
        user_agent: Any = _UNSET,
        timers: TimerConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._loop = loop
        self.defaults: dict[str, Any] = {**DEFAULTS, **(defaults or {})}
        if user_agent is not _UNSET:
            self.defaults["user_agent"] = user_agent
        self.debug = debug
        self.dialplan = dialplan if dialplan is not None else BaseDialplan()
        self.dns = dns_resolver
        self._middleware = tuple(middleware)
        self._state: dict[str, Any] = {}
        self.router = router or Router()
        self.user = user
        self.driver = AppDriver(
            on_unmatched=self._on_unmatched,
            on_response=self._on_response,
            on_request=self._on_request,
            on_gave_up=self._give_up,
            on_terminated=self._forget_transaction,
            logger=logger,
            timers=timers,
            limits=limits,
        )
        self.transport: AppTransport = self.driver.app_transport
        self.transactions = self.driver.transactions
        self._clients: dict[Transaction, PendingRequest] = {}
        self._servers: dict[Transaction, IncomingRequest] = {}
        self._dialogs: dict[DialogId, Dialog] = {}
        self._local: dict[tuple[str, str], Dialog] = {}
        self._remote: dict[tuple[str, str], Dialog] = {}
        self._peers: dict[Peer, Flow] = {}
        self._peer_index: dict[tuple[Transport, Address, str | None, str | None], Peer] = {}
        self._challenger = Challenger()

    # -- aiosip's attributes ------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The ``loop=`` given, else the running loop, else the thread's current loop."""
        if self._loop is not None:
            return self._loop
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.get_event_loop_policy().get_event_loop()

    @property
    def user_agent(self) -> str | None:
        value = self.defaults.get("user_agent")
        return None if value is None else str(value)

    @property
    def peers(self) -> list[Peer]:
        return list(self._peers)

    @property
    def dialogs(self) -> list[Dialog]:
        """Every conversation still up, each once."""
        seen: dict[int, Dialog] = {}
        for table in (self._dialogs, self._local, self._remote):
            for dialog in table.values():
                seen.setdefault(id(dialog), dialog)
        return list(seen.values())

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __len__(self) -> int:
        return len(self._state)

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return True

    # -- public -------------------------------------------------------------------------

    def route(self, method: str) -> Callable[[H], H]:
        """``@app.route("OPTIONS")``: register a handler on :attr:`router`."""
        return self.router.route(method)

    async def run(
        self,
        *,
        local_addr: tuple[str, int] | None = None,
        protocol: Transport = Transport.UDP,
        sock: object = None,
        **kwargs: Any,
    ) -> Address:
        """Start listening; returns the bound address (port 0 picks a free one).

        ``local_addr`` defaults to ``("127.0.0.1", 5060)``. aiosip's ``sock=`` (a socket
        made by the caller) is not supported.
        """
        if sock is not None:
            raise NotImplementedError("sock= is not supported: pass local_addr=(host, port)")
        return await self.transport.listen(protocol, local_addr or ("127.0.0.1", 5060))

    async def connect(
        self,
        remote_addr: tuple[str, int] | str,
        protocol: Transport = Transport.UDP,
        *,
        local_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> Peer:
        """A peer to send requests to; a TCP or WebSocket connection is opened (or reused).

        For ``protocol=WS`` the remote address may be aiosip's ``'ws://host:port'`` URL;
        ``local_addr`` is then not used (a WebSocket client's address is its connection).
        """
        if isinstance(remote_addr, str):
            if protocol is not Transport.WS:
                raise ValueError("a URL remote address needs protocol=aiosip.WS")
            flow = await self.transport.websocket.connect(remote_addr)
            return self._peer_for(flow, protocol, None, remote_addr)
        local_host = None
        if local_addr is not None and protocol is not Transport.WS:
            local_host = local_addr[0]
            if local_addr[1] and (protocol, local_addr) not in self.transport.listeners:
                await self.run(local_addr=local_addr, protocol=protocol)
        flow = await self.transport.connect(protocol, remote_addr, local_host=local_host)
        return self._peer_for(flow, protocol, local_host, None)

    def _peer_for(
        self, flow: Flow, protocol: Transport, local_host: str | None, url: str | None
    ) -> Peer:
        """One Peer per destination, reused by later ``connect`` calls (as aiosip did)."""
        key = (protocol, flow.remote, local_host, url)
        peer = self._peer_index.get(key)
        if peer is None:
            peer = Peer(self, flow.remote, protocol, local_host)
            peer.url = url
            self._peer_index[key] = peer
        self._peers[peer] = flow
        return peer

    async def close(self, timeout: float = 5.0) -> None:
        """End every conversation still up as :meth:`Dialog.close` does (BYE, un-SUBSCRIBE,
        un-REGISTER; at most ``timeout`` seconds for all), then stop everything."""
        dialogs = [d for d in self.dialogs if not d.terminated]
        if dialogs and not self.driver.closed:
            closing = asyncio.gather(*(d.close() for d in dialogs), return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(closing, timeout)
        self.driver.stop()
        for dialog in self.dialogs:
            dialog._terminate()
        for pending in self._clients.values():
            pending._fail(ConnectionAbortedError("application closed"))
        await self.driver.close()

    # -- peers --------------------------------------------------------------------------

    async def _peer_connect(self, peer: Peer) -> Flow:
        if peer.url is not None:
            flow = await self.transport.websocket.connect(peer.url)
        else:
            flow = await self.transport.connect(
                peer.protocol, peer.remote_addr, local_host=peer.local_host
            )
        self._peers[peer] = flow
        return flow

    def _peer_flow(self, peer: Peer) -> Flow | None:
        return self._peers.get(peer)

    def _close_peer(self, peer: Peer) -> None:
        self._peer_index.pop((peer.protocol, peer.remote_addr, peer.local_host, peer.url), None)
        flow = self._peers.pop(peer, None)
        if flow is not None and flow.transport is Transport.WS:
            self.transport.websocket.close_flow(flow)

    # -- building messages --------------------------------------------------------------

    def _outgoing_headers(self, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A program's headers, less those the stack writes, plus our User-Agent."""
        out = []
        for name, value in items:
            if name.lower() in STACK_HEADERS:
                logger.debug("ignored %s header given by the program: the stack sets it", name)
            else:
                out.append((name, value))
        agent = self.user_agent
        if agent and "user-agent" not in {name.lower() for name, _ in out}:
            out.append(("User-Agent", agent))
        return out

    def _via(self, flow: Flow) -> Via:
        host, port = self.transport.sent_by(flow)
        return Via.new(str(flow.transport), uri_host(host), port or None, rport=True)

    def _contact(self, flow: Flow, user: str | None = None) -> NameAddr:
        host, port = self.transport.sent_by(flow)
        override = self.defaults.get("override_contact_host")
        if override and flow.transport is not Transport.WS:
            host = str(override)
        return contact_for(user or self.user, (host, port), flow.transport)

    # -- sending: this package's convention ---------------------------------------------

    def _send_out_of_dialog(
        self,
        peer: Peer,
        method: str,
        target: URI,
        *,
        from_: NameAddr | None,
        to: NameAddr | None,
        headers: list[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> PendingRequest:
        extra = self._outgoing_headers(headers)
        call_id: str | None = None
        cseq = 0
        from_tagged = from_

        async def build(credentials: list[tuple[str, str]]) -> tuple[Request, Flow]:
            nonlocal call_id, cseq, from_tagged
            flow = await self._peer_connect(peer)
            sent_by = self.transport.sent_by(flow)
            if from_tagged is None:
                from_tagged = NameAddr(SipURI(user=self.user, host=uri_host(sent_by[0])))
            if from_tagged.tag is None:
                from_tagged = from_tagged.with_tag(secrets.token_hex(8))
            call_id = call_id or f"{secrets.token_hex(12)}@{uri_host(sent_by[0])}"
            cseq += 1
            request = adopt(
                Request.build(
                    method,
                    target,
                    via=self._via(flow),
                    from_=from_tagged,
                    to=to or NameAddr(target),
                    call_id=call_id,
                    cseq=cseq,
                    contact=self._contact(flow) if method in DIALOG_CREATING else None,
                    headers=extra + credentials,
                    body=body,
                    content_type=content_type,
                )
            )
            self._start_client(pending, request, flow)
            return request, flow

        pending = PendingRequest(build, self.driver.spawn, canceller=self._send_cancel)
        return pending

    def _send_cancel(self, invite: PendingRequest) -> PendingRequest:
        assert invite.request is not None
        assert invite.flow is not None
        cancel = adopt(make_cancel(invite.request))
        flow = invite.flow

        async def build(credentials: list[tuple[str, str]]) -> tuple[Request, Flow]:
            self._start_client(pending, cancel, flow)
            return cancel, flow

        pending = PendingRequest(build, self.driver.spawn)
        return pending

    # -- sending: aiosip's conversations ------------------------------------------------

    def _open_dialog(
        self,
        peer: Peer,
        method: str,
        *,
        from_details: Contact | None,
        to_details: Contact | None,
        contact_details: Contact | None,
        password: str | None,
        call_id: str | None,
        headers: list[tuple[str, str]],
        cseq: int,
        payload: str | bytes | None,
        dialog_factory: type[Dialog] | None,
        timeout: float | None,
        content_type: str | None,
    ) -> Dialog:
        """Start aiosip's ``peer.request``: a UAC conversation and its first request."""
        host = uri_host(peer.remote_addr[0])
        if from_details is None:
            from_details = Contact(uri=f"sip:{self.user}@{host}")
        if to_details is None:
            aor = from_details["uri"] if method == "REGISTER" else peer.default_uri
            to_details = Contact(uri=str(aor))
        local = from_details.copy()  # the caller's object is theirs to reuse
        local.add_tag()
        remote = to_details.copy()
        remote["params"].pop("tag", None)
        factory = dialog_factory or Dialog
        dialog = factory(
            self,
            transport=peer.protocol,
            inbound=False,
            method=method,
            call_id=call_id or f"{secrets.token_hex(12)}@{host}",
            local_tag=str(local["params"]["tag"]),
            remote_tag=None,
            from_details=local,
            to_details=remote,
            contact_details=contact_details,
            peer=peer,
            password=password,
        )
        dialog.cseq = cseq
        self._local[(dialog.call_id, dialog.local_tag)] = dialog
        body = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
        target = self._request_uri(method, remote)
        dialog.pending = self._send_session(
            dialog, method, target, headers, body, content_type, timeout, opening=True
        )
        return dialog

    @staticmethod
    def _request_uri(method: str, to: Contact) -> URI:
        """aiosip's Request-URI: the To URI without parameters; for REGISTER without the
        user part too, as RFC 3261 10.2 asks (the registrar's domain)."""
        address: Uri = to["uri"]
        uri = address.to_uri()
        if isinstance(uri, SipURI):
            uri = uri.with_(params={}, headers={}, password=None)
            if method == "REGISTER":
                uri = uri.with_(user=None)
        return uri

    def _send_session(
        self,
        dialog: Dialog,
        method: str,
        target: URI,
        headers: list[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        timeout: float | None,
        *,
        opening: bool = False,
    ) -> PendingRequest:
        """A request of a conversation that is not (yet) an RFC dialog: same Call-ID, From
        and To as the first one, the next CSeq, to the same peer."""
        extra = self._outgoing_headers(headers)

        async def build(credentials: list[tuple[str, str]]) -> tuple[Request, Flow]:
            if dialog.peer is not None and not dialog.inbound:
                flow = await self._peer_connect(dialog.peer)
            elif dialog.flow is not None:
                flow = await self._reach(dialog.flow)
            else:
                raise ConnectionError("this conversation has no peer to send to")
            dialog.flow = flow
            dialog.cseq += 1
            contact = None
            if dialog.contact_details is not None:
                contact = as_name_addr(dialog.contact_details)
            elif method in DIALOG_CREATING or method == "REGISTER":
                contact = self._contact(flow, dialog.from_details["uri"]["user"])
            to = dialog.to_details.to_name_addr()
            if dialog.inbound and dialog.remote_tag:
                to = to.with_tag(dialog.remote_tag)
            request = adopt(
                Request.build(
                    method,
                    target,
                    via=self._via(flow),
                    from_=dialog.from_details.to_name_addr(),
                    to=to,
                    call_id=dialog.call_id,
                    cseq=dialog.cseq,
                    contact=contact,
                    headers=extra + credentials,
                    body=body,
                    content_type=content_type,
                )
            )
            if opening:
                dialog.original_msg = request
            self._start_client(pending, request, flow)
            return request, flow

        canceller = self._send_cancel if method == "INVITE" else None
        pending = PendingRequest(
            build,
            self.driver.spawn,
            dialog=dialog,
            canceller=canceller,
            password=dialog.password,
            timeout=timeout,
        )
        return pending

    async def _reach(self, flow: Flow) -> Flow:
        """A flow to the same peer as ``flow``: itself for UDP and open connections."""
        if flow.transport is Transport.UDP:
            return flow
        if flow.transport is Transport.WS:
            if self.transport.websocket.is_open(flow):
                return flow
            raise ConnectionError("the WebSocket connection of this dialog is closed")
        return await self.transport.connect(flow.transport, flow.remote)

    def _send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        timeout: float | None = None,
    ) -> PendingRequest:
        state = dialog.state
        if state is None:
            if dialog.original_msg is not None and not dialog.inbound:
                target = dialog.original_msg.uri
            else:
                target = dialog.to_details["uri"].to_uri()
            return self._send_session(dialog, method, target, headers, body, content_type, timeout)
        extra = self._outgoing_headers(headers)

        async def build(credentials: list[tuple[str, str]]) -> tuple[Request, Flow]:
            flow = await self._dialog_flow(dialog)
            request = adopt(
                state.create_request(
                    method,
                    via=self._via(flow),
                    contact=self._contact(flow) if method in DIALOG_CREATING else None,
                    headers=extra + credentials,
                    body=body,
                    content_type=content_type,
                )
            )
            self._start_client(pending, request, flow)
            return request, flow

        pending = PendingRequest(
            build, self.driver.spawn, dialog=dialog, password=dialog.password, timeout=timeout
        )
        return pending

    async def _dialog_flow(self, dialog: Dialog) -> Flow:
        """The next hop of an in-dialog request: the first route, else the remote target;
        over WebSocket, the dialog's connection (RFC 7118 5)."""
        if dialog.transport is Transport.WS:
            if dialog.flow is not None and self.transport.websocket.is_open(dialog.flow):
                return dialog.flow
            if dialog.peer is not None and not dialog.inbound:
                return await self._peer_connect(dialog.peer)
            raise ConnectionError("the WebSocket connection of this dialog is closed")
        assert dialog.state is not None
        ruri, routes = dialog.state.request_target()
        protocol, addr = destination(routes[0].uri if routes else ruri, dialog.transport)
        return await self.transport.connect(protocol, addr)

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
        if incoming.answered:
            self._log_late_reply(incoming, status)
            return
        dialog = incoming.dialog
        if request.method in DIALOG_CREATING and 101 <= status < 300 and response.to_tag:
            if not response.contact:
                user = None if dialog is None else dialog.from_details["uri"]["user"]
                response.headers.add("Contact", str(self._contact(incoming.flow, user)))
            if dialog is None or dialog.state is None:
                dialog = self._uas_state(incoming, response)
            elif status >= 200 and dialog.state.state is State.EARLY:
                dialog.state.state = State.CONFIRMED
        outputs = self.transactions.respond(incoming.transaction, response, self.driver.now())
        if status >= 200:
            incoming.final = response
            if incoming._expiry_guard is not None:
                incoming._expiry_guard.cancel()
                incoming._expiry_guard = None
        self.driver.process(outputs)
        if dialog is None:
            return
        if status >= 200:
            dialog._last_final = status
        if request.method == "INVITE":
            if 200 <= status < 300:
                dialog._retransmit_2xx(response, incoming.flow)
            elif status >= 300 and dialog.state is not None and dialog.state.state is State.EARLY:
                dialog._terminate()  # only an early dialog dies with its INVITE (12.3)
        elif request.method in ("SUBSCRIBE", "REGISTER") and 200 <= status < 300:
            source = response if response.headers.get("Expires") else request
            if _expires(source) == 0:
                dialog._terminate()  # the subscription or registration is over
            else:
                dialog._arm_expiry(source)

    def _uas_state(self, incoming: IncomingRequest, response: Response) -> Dialog | None:
        """Attach (or make) the RFC dialog our 1xx/2xx to a dialog-creating request makes."""
        request = incoming.message
        try:
            state = DialogState.as_uas(request, response)
        except DialogError as exc:
            logger.info("no dialog: %s", exc, extra={"call_id": request.call_id})
            return incoming.dialog
        dialog = incoming.dialog or self._uas_dialog(incoming, None)
        dialog._attach(state)
        self._dialogs[state.id] = dialog
        return dialog

    def _uas_dialog(self, incoming: IncomingRequest, factory: type[Dialog] | None) -> Dialog:
        """The conversation a request from the peer opens, seen from our side."""
        request = incoming.message
        flow = incoming.flow
        local_tag = incoming.to_tag
        to, from_ = request.to, request.from_
        if to is None or from_ is None or request.call_id is None:
            raise DialogError("a conversation needs From, To and Call-ID")
        dialog = (factory or Dialog)(
            self,
            transport=flow.transport,
            inbound=True,
            method=request.method,
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag,
            from_details=Contact.from_name_addr(to.with_tag(local_tag)),
            to_details=Contact.from_name_addr(from_),
            flow=flow,
            peer=Peer(self, flow.remote, flow.transport, flow.local[0]),
            original=request,
        )
        dialog._arm_expiry(request)  # before it is findable: a dialog never lives untimed
        self._local[(dialog.call_id, local_tag)] = dialog
        if from_.tag is not None:
            self._remote[(dialog.call_id, from_.tag)] = dialog
        incoming.dialog = dialog
        return dialog

    def _incoming_for(self, message: Request) -> IncomingRequest:
        tx = self.transactions.match_server(message)
        incoming = self._servers.get(tx) if tx is not None else None
        if incoming is None:
            raise LookupError("no open server transaction for this request")
        return incoming

    def _log_late_reply(self, incoming: IncomingRequest, status: int) -> None:
        """aiosip programs answer BYE and CANCEL themselves; the stack already did."""
        final = incoming.final
        level = logging.DEBUG if incoming.method in ("BYE", "CANCEL") else logging.INFO
        logger.log(
            level,
            "%d to %s not sent: it was already answered %s",
            status,
            incoming.method,
            final.status if final is not None else "",
            extra={"call_id": incoming.message.call_id},
        )

    # -- what the transaction driver hands over -----------------------------------------

    def _on_unmatched(self, message: Request | Response, flow: Flow, now: float) -> None:
        message = adopt(message)
        if isinstance(message, Response):
            self._stray_response(message)
        elif message.method == "ACK":
            self._ack_for_2xx(message)
        else:
            self._new_request(message, flow, now)

    def _on_response(self, tx: ClientTransaction, response: Response) -> None:
        pending = self._clients.get(tx)
        if pending is not None:
            self._client_response(pending, tx.request, adopt(response))

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
        if pending is None or pending.done:
            return
        response = adopt(Response.for_request(tx.request, status, None))
        dialog = pending.dialog
        if dialog is not None and status == 408 and dialog.state is not None:
            dialog._terminate()
        self._final_of(pending, response)

    def _forget_transaction(self, tx: Transaction) -> None:
        self._clients.pop(tx, None)
        incoming = self._servers.pop(tx, None)
        if incoming is not None and incoming._expiry_guard is not None:
            incoming._expiry_guard.cancel()

    # -- receiving responses ------------------------------------------------------------

    def _client_response(
        self, pending: PendingRequest, request: Request, response: Response
    ) -> None:
        if response.status in (401, 407) and pending._may_retry():
            assert pending.password is not None
            credentials = credentials_for(
                request, response, password=pending.password, username=pending.username
            )
            if credentials is not None:
                pending._retry(credentials)
                return
        dialog = pending.dialog
        ok = 200 <= response.status < 300
        if dialog is not None:
            if dialog.state is not None:
                dialog.state.on_response(request, response)
                if dialog.state.state is State.TERMINATED or (
                    request.method == "BYE" and response.status >= 200
                ):
                    dialog._terminate()
            elif ok and request.method in DIALOG_CREATING and dialog.pending is pending:
                self._uac_state(dialog, request, response)
        elif request.method == "INVITE" and ok:
            dialog = self._uac_dialog(request, response, pending.flow)
            pending.dialog = dialog
        if dialog is not None and request.method == "INVITE" and ok and dialog.state is not None:
            self.driver.spawn(self._send_ack(dialog, request))
        if response.status >= 200:
            self._final_of(pending, response)
        else:
            pending._deliver(response)

    def _final_of(self, pending: PendingRequest, response: Response) -> None:
        """A final response: aiosip's results on the conversation it opened, then the caller."""
        dialog = pending.dialog
        try:
            if dialog is not None and dialog.pending is pending:
                dialog._deliver_final(response)
                if response.status >= 300:
                    dialog._terminate()  # the conversation never started
                else:
                    dialog._arm_expiry(response)
        finally:
            pending._deliver(response)  # the caller gets its answer whatever happened above

    def _uac_state(self, dialog: Dialog, request: Request, response: Response) -> None:
        try:
            state = DialogState.as_uac(request, response)
        except DialogError as exc:
            logger.info("2xx makes no dialog: %s", exc, extra={"call_id": request.call_id})
            return
        dialog._attach(state)
        self._dialogs[state.id] = dialog

    def _uac_dialog(self, request: Request, response: Response, flow: Flow | None) -> Dialog | None:
        """The dialog of a 2xx to an INVITE sent with this package's ``peer.request``."""
        try:
            state = DialogState.as_uac(request, response)
        except DialogError as exc:
            logger.info("2xx makes no dialog: %s", exc, extra={"call_id": request.call_id})
            return None
        dialog = Dialog(
            self,
            transport=flow.transport if flow else Transport.UDP,
            inbound=False,
            method="INVITE",
            call_id=state.id.call_id,
            local_tag=state.id.local_tag,
            remote_tag=state.id.remote_tag,
            from_details=Contact.from_name_addr(state.local_uri),
            to_details=Contact.from_name_addr(state.remote_uri),
            flow=flow,
            original=request,
            state=state,
        )
        self._dialogs[state.id] = dialog
        self._local[(dialog.call_id, dialog.local_tag)] = dialog
        return dialog

    async def _send_ack(self, dialog: Dialog, invite: Request) -> None:
        """The UAC core's ACK for a 2xx: a new request, no transaction (RFC 3261 13.2.2.4)."""
        cseq = invite.cseq
        assert cseq is not None
        assert dialog.state is not None
        flow = await self._dialog_flow(dialog)
        ack = adopt(dialog.state.create_request("ACK", via=self._via(flow), cseq=cseq.seq))
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

    # -- receiving requests -------------------------------------------------------------

    def _ack_for_2xx(self, ack: Request) -> None:
        dialog_id = DialogId.for_incoming_request(ack)
        dialog = self._dialogs.get(dialog_id) if dialog_id is not None else None
        if dialog is None:
            logger.debug("ACK matches no dialog", extra={"call_id": ack.call_id})
            return
        dialog._on_ack(ack)

    def _conversation_for(self, request: Request) -> Dialog | None:
        """The conversation a request continues (see the module docstring), if any."""
        call_id, to_tag, from_tag = request.call_id, request.to_tag, request.from_tag
        if call_id is None:
            return None
        if to_tag is not None:
            dialog_id = DialogId.for_incoming_request(request)
            found = self._dialogs.get(dialog_id) if dialog_id is not None else None
            if found is None:
                found = self._local.get((call_id, to_tag))
                if found is not None and found.remote_tag not in (None, from_tag):
                    found = None  # another fork's request, or a stranger's
            return found
        if from_tag is None:
            return None
        found = self._remote.get((call_id, from_tag))
        if found is not None and not found._holds_requests():
            return None  # its handler is done: a refresh is a new request, for the dialplan
        return found

    def _new_request(self, request: Request, flow: Flow, now: float) -> None:
        if request.method == "CANCEL":
            self._cancel(request, flow, now)
            return
        tx, outputs = self.driver.open_server(request, flow, now)
        dialog = self._conversation_for(request)
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
        dialog = invite.dialog
        if dialog is not None:
            dialog._enqueue(adopt(cancel))  # aiosip's dialogs saw the CANCEL; it is answered
        self._answer(invite, Response.for_request(invite.message, 487, to_tag=invite.to_tag))
        if dialog is not None and (
            dialog.state is None or dialog.state.state is not State.CONFIRMED
        ):
            dialog._terminate()

    def _dispatch(self, incoming: IncomingRequest) -> None:
        if _bad_expires(incoming.message):
            logger.info(
                "%s with a malformed Expires answered 400",
                incoming.method,
                extra={"call_id": incoming.message.call_id},
            )
            self._reply_now(incoming, 400, "Bad Expires")
            return
        if incoming.dialog is not None or incoming.message.to_tag is not None:
            self._dispatch_in_dialog(incoming)
            return
        self.driver.spawn(self._route_new(incoming), incoming.message.call_id)

    def _dispatch_in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.message
        dialog = incoming.dialog
        if dialog is None or dialog.terminated:
            self._reply_now(incoming, 481)
            return
        if dialog.state is not None and request.to_tag is not None:
            refusal = dialog.state.on_request(request)
            if refusal is not None:
                self._reply_now(incoming, refusal.status, refusal.reason)
                return
        dialog._arm_expiry(request)
        ends = request.method == "BYE" or _ends_subscription(dialog, request)
        handler = dialog.router.get(request.method)
        if handler is not None:
            self.driver.spawn(self._run_handler(handler, incoming), request.call_id)
        else:
            if ends:
                self._reply_now(incoming, 200)
            if not dialog._enqueue(request):
                if not incoming.answered:
                    self._reply_now(incoming, 503, "Dialog Queue Full")
            elif not incoming.answered:
                self._guard(incoming)
        if ends:
            dialog._terminate()

    def _guard(self, incoming: IncomingRequest) -> None:
        """Answer ``500`` for the program if it leaves a queued request unanswered for
        ``32*T1`` (16 s by default), so that its transaction ends."""
        delay = 32 * self.transactions.config.t1

        def fire() -> None:
            incoming._expiry_guard = None
            if not incoming.answered and not self.driver.closed:
                logger.warning(
                    "%s in a dialog left unanswered; answering 500",
                    incoming.method,
                    extra={"call_id": incoming.message.call_id},
                )
                self._reply_now(incoming, 500, "No Response From Application")

        incoming._expiry_guard = asyncio.get_running_loop().call_later(delay, fire)

    async def _route_new(self, incoming: IncomingRequest) -> None:
        """A new request: ``app.router``, then the dialplan; 405/501 when neither answers."""
        request = incoming.message
        handler = self.router.get(request.method)
        if handler is None:
            flow = incoming.flow
            try:
                handler = await self.dialplan.resolve(
                    method=request.method,
                    message=request,
                    protocol=flow.transport,
                    local_addr=flow.local,
                    remote_addr=flow.remote,
                )
            except Exception:
                self._handler_failed(incoming, "dialplan")
                return
        if handler is None or not callable(handler):
            if self.router.methods:
                allow = ", ".join(["ACK", "CANCEL", *self.router.methods])
                self._reply_now(incoming, 405, headers=[("Allow", allow)])
            else:
                self._reply_now(incoming, 501)
            return
        await self._run_handler(handler, incoming)

    def _reply_now(
        self,
        incoming: IncomingRequest,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if incoming.answered:
            return
        to_tag = None if status == 100 else incoming.to_tag
        response = Response.for_request(
            incoming.message, status, reason, to_tag=to_tag, headers=headers, body=body
        )
        self._answer(incoming, adopt(response))

    async def _run_handler(self, handler: Handler, incoming: IncomingRequest) -> None:
        request = incoming.message
        try:
            for factory in reversed(self._middleware):
                handler = await factory(handler)
            await handler(incoming, request)
        except Exception:
            self._handler_failed(incoming, f"{request.method} handler")
            return
        finally:
            dialog = incoming.dialog
            if dialog is not None and dialog.original_msg is request:
                dialog._opener_done = True  # nobody reads its queue for new requests now
        if not incoming.answered and not incoming.cancelled.is_set():
            logger.warning(
                "%s handler returned without a final response",
                request.method,
                extra={"call_id": request.call_id},
            )
            self._reply_now(incoming, 500, "No Final Response From Handler")

    def _handler_failed(self, incoming: IncomingRequest, what: str) -> None:
        """Log a program's exception; answer 500 (with the traceback when ``debug``)."""
        request = incoming.message
        logger.exception("%s failed", what, extra={"call_id": request.call_id})
        if incoming.answered:
            return
        if self.debug:
            text = traceback.format_exc().encode()
            self._reply_now(incoming, 500, headers=[("Content-Type", "text/plain")], body=text)
        else:
            self._reply_now(incoming, 500)

    # -- bookkeeping --------------------------------------------------------------------

    def _forget_dialog(self, dialog: Dialog) -> None:
        if dialog.id is not None and self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]
        local = (dialog.call_id, dialog.local_tag)
        if self._local.get(local) is dialog:
            del self._local[local]
        if dialog.remote_tag is not None:
            remote = (dialog.call_id, dialog.remote_tag)
            if self._remote.get(remote) is dialog:
                del self._remote[remote]
