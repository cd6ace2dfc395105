"""A remote SIP element we send requests to, the object aiosip's ``app.connect`` returned.

Two calling conventions meet here, told apart by their arguments:

* aiosip's: ``await peer.request(method, from_details=..., to_details=..., password=...,
  headers=..., payload=...)`` (and ``register``, ``subscribe``, ``invite``) returns a
  :class:`Dialog` whose ``status_code`` and ``status_message`` are the final response's;
  ``invite`` returns as soon as the INVITE is sent, to be followed with
  ``dialog.wait_for_terminate()``.
* this package's own: ``peer.request(method, uri, headers=[...], body=...)`` returns a
  :class:`PendingRequest` to await for the final :class:`Response` or to iterate for every
  response; ``await peer.invite(uri)`` returns the answered call's dialog.

A call passing ``from_details``, ``to_details`` or any other argument only aiosip had is
aiosip's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final, overload

from softswitch.sip import URI, NameAddr, SipURI, parse_uri
from softswitch.transport import Address, Transport

from .addressing import uri_host
from .contact import Contact
from .messages import HeadersArg, header_items
from .outgoing import PendingRequest, RequestFailedError

if TYPE_CHECKING:
    from .application import Application
    from .dialog import Dialog

__all__ = ["Peer"]

#: Keyword arguments that only aiosip's ``Peer.request`` had.
AIOSIP_ARGUMENTS: Final = frozenset(
    {
        "from_details",
        "to_details",
        "contact_details",
        "password",
        "call_id",
        "cseq",
        "payload",
        "dialog_factory",
        "timeout",
        "expires",
    }
)


def _is_aiosip_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return bool(args and isinstance(args[0], Contact)) or not AIOSIP_ARGUMENTS.isdisjoint(kwargs)


class Peer:
    """Requests to one address over one transport.

    Out-of-dialog requests go to :attr:`remote_addr` whatever their Request-URI says; that is
    the "outbound proxy" model every carrier trunk uses, and what aiosip did.
    """

    def __init__(
        self,
        app: Application,
        remote_addr: Address,
        protocol: Transport,
        local_host: str | None = None,
    ) -> None:
        self.app = app
        self.remote_addr = remote_addr
        self.protocol = protocol
        self.local_host = local_host
        #: aiosip's ``ws://host:port`` address, for a WebSocket peer connected by URL.
        self.url: str | None = None

    def __repr__(self) -> str:
        return f"<aiosip.Peer {self.protocol} {self.remote_addr[0]}:{self.remote_addr[1]}>"

    @property
    def peer_addr(self) -> Address:
        """aiosip's name for :attr:`remote_addr`."""
        return self.remote_addr

    @property
    def local_addr(self) -> Address | None:
        """The local address our requests leave from, once a flow exists (aiosip's)."""
        flow = self.app._peer_flow(self)
        return None if flow is None else flow.local

    @property
    def default_uri(self) -> SipURI:
        params: dict[str, str | None] = {}
        if self.protocol is not Transport.UDP:
            params["transport"] = self.protocol.lower()
        host, port = self.remote_addr
        return SipURI(host=uri_host(host), port=port, params=params)

    async def close(self) -> None:
        """Close the connection to the peer (TCP, WS); UDP has none to close."""
        self.app._close_peer(self)

    # -- this package's convention ------------------------------------------------------

    def send(
        self,
        method: str,
        uri: URI | str | None = None,
        *,
        from_: NameAddr | None = None,
        to: NameAddr | None = None,
        headers: HeadersArg = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> PendingRequest:
        """Send ``method`` to the peer; ``uri`` defaults to ``sip:<peer host>:<port>``."""
        target = parse_uri(uri) if isinstance(uri, str) else (uri or self.default_uri)
        return self.app._send_out_of_dialog(
            self,
            method,
            target,
            from_=from_,
            to=to,
            headers=header_items(headers),
            body=body,
            content_type=content_type,
        )

    # -- both conventions ---------------------------------------------------------------

    @overload
    def request(
        self,
        method: str,
        uri: URI | str | None = None,
        *,
        from_: NameAddr | None = None,
        to: NameAddr | None = None,
        headers: HeadersArg = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> PendingRequest: ...

    @overload
    def request(
        self,
        method: str,
        from_details: Contact | None = None,
        to_details: Contact | None = None,
        contact_details: Contact | None = None,
        password: str | None = None,
        call_id: str | None = None,
        headers: HeadersArg = None,
        cseq: int = 0,
        payload: str | bytes | None = None,
        dialog_factory: type[Dialog] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Dialog]: ...

    def request(
        self, method: str, *args: Any, **kwargs: Any
    ) -> PendingRequest | Coroutine[Any, Any, Dialog]:
        """aiosip's ``await peer.request(method, from_details=..., ...)`` -> Dialog, or this
        package's ``peer.request(method, uri, ...)`` -> PendingRequest (see the module)."""
        if _is_aiosip_call(args, kwargs):
            return self._open(method, *args, **kwargs)
        return self.send(method, *args, **kwargs)

    async def _open(
        self,
        method: str,
        from_details: Contact | None = None,
        to_details: Contact | None = None,
        contact_details: Contact | None = None,
        password: str | None = None,
        call_id: str | None = None,
        headers: HeadersArg = None,
        cseq: int = 0,
        payload: str | bytes | None = None,
        dialog_factory: type[Dialog] | None = None,
        timeout: float | None = None,
        expires: int | None = None,
        *,
        wait: bool = True,
        **kwargs: Any,
    ) -> Dialog:
        """aiosip's request: open a conversation, wait for its final response (unless it is
        a call), return the dialog. Credentials refused to the end raise
        ``AuthentificationFailed``; a cancelled wait sends CANCEL (for an INVITE)."""
        from .dialog import raise_if_refused

        items = header_items(headers)
        if expires is not None and "expires" not in {n.lower() for n, _ in items}:
            items.append(("Expires", str(int(expires))))
        dialog = self.app._open_dialog(
            self,
            method,
            from_details=from_details,
            to_details=to_details,
            contact_details=contact_details,
            password=password,
            call_id=call_id,
            headers=items,
            cseq=cseq,
            payload=payload,
            dialog_factory=dialog_factory,
            timeout=timeout,
            content_type=kwargs.get("content_type"),
        )
        if not wait:
            return dialog
        pending = dialog.pending
        assert pending is not None
        try:
            await pending
        except asyncio.CancelledError:
            dialog.cancel()
            raise
        raise_if_refused(dialog)
        return dialog

    def register(self, expires: int = 3600, **kwargs: Any) -> Coroutine[Any, Any, Dialog]:
        """REGISTER with ``Expires`` (aiosip's default 3600 s); returns the registration's
        dialog: ``dialog.refresh()`` renews it, ``dialog.close()`` unregisters."""
        return self._open("REGISTER", expires=expires or None, **kwargs)

    def subscribe(self, expires: int = 3600, **kwargs: Any) -> Coroutine[Any, Any, Dialog]:
        """SUBSCRIBE with ``Expires``; NOTIFYs arrive in the dialog (``async for``), and
        ``dialog.close()`` ends the subscription with ``Expires: 0``."""
        return self._open("SUBSCRIBE", expires=expires or None, **kwargs)

    @overload
    async def invite(
        self,
        uri: URI | str | None = None,
        *,
        from_: NameAddr | None = None,
        to: NameAddr | None = None,
        headers: HeadersArg = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Dialog: ...

    @overload
    async def invite(
        self,
        *,
        from_details: Contact | None = None,
        to_details: Contact | None = None,
        contact_details: Contact | None = None,
        password: str | None = None,
        headers: HeadersArg = None,
        payload: str | bytes | None = None,
        dialog_factory: type[Dialog] | None = None,
        **kwargs: Any,
    ) -> Dialog: ...

    async def invite(self, *args: Any, **kwargs: Any) -> Dialog:
        """Place a call.

        aiosip's form (``from_details=``, ``to_details=`` ...) returns the dialog as soon as
        the INVITE is sent: follow it with ``dialog.wait_for_terminate()`` or
        ``await dialog.ready()``. This package's form (``uri``, ``headers``, ``body``)
        returns once the call is answered, and raises RequestFailedError otherwise; use
        ``peer.request("INVITE", ...)`` to watch provisional responses.
        """
        if _is_aiosip_call(args, kwargs):
            return await self._open("INVITE", *args, wait=False, **kwargs)
        pending = self.send("INVITE", *args, **kwargs)
        response = await pending
        if not 200 <= response.status < 300 or pending.dialog is None:
            raise RequestFailedError(response)
        return pending.dialog
