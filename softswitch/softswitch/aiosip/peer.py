"""A remote SIP element we send requests to, the object aiosip's ``app.connect`` returned."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from softswitch.sip import URI, NameAddr, SipURI, parse_uri
from softswitch.transport import Address, Transport

from .addressing import uri_host
from .outgoing import PendingRequest, RequestFailedError

if TYPE_CHECKING:
    from .application import Application
    from .dialog import Dialog

__all__ = ["Peer"]


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

    def __repr__(self) -> str:
        return f"<aiosip.Peer {self.protocol} {self.remote_addr[0]}:{self.remote_addr[1]}>"

    @property
    def default_uri(self) -> SipURI:
        params: dict[str, str | None] = (
            {"transport": "tcp"} if self.protocol is Transport.TCP else {}
        )
        host, port = self.remote_addr
        return SipURI(host=uri_host(host), port=port, params=params)

    def request(
        self,
        method: str,
        uri: URI | str | None = None,
        *,
        from_: NameAddr | None = None,
        to: NameAddr | None = None,
        headers: Iterable[tuple[str, str]] = (),
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
            headers=headers,
            body=body,
            content_type=content_type,
        )

    async def invite(
        self,
        uri: URI | str | None = None,
        *,
        from_: NameAddr | None = None,
        to: NameAddr | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Dialog:
        """Place a call and return its confirmed dialog; RequestFailedError on a non-2xx answer.

        Use ``peer.request("INVITE", ...)`` instead to watch provisional responses.
        """
        pending = self.request(
            "INVITE",
            uri,
            from_=from_,
            to=to,
            headers=headers,
            body=body,
            content_type=content_type,
        )
        response = await pending
        if not 200 <= response.status < 300 or pending.dialog is None:
            raise RequestFailedError(response)
        return pending.dialog
