"""From SIP URIs to socket addresses and back, the little of RFC 3263 a UA needs without DNS.

A full RFC 3263 resolver (NAPTR, SRV) belongs to the proxy's routing; here a URI's host,
port, ``maddr`` and ``transport`` parameter decide where a request goes, which is what
dialogs with SIPp-like peers and carriers addressed by IP need.
"""

from __future__ import annotations

from softswitch.sip import URI, NameAddr, SipURI
from softswitch.transport import Address, Transport

__all__ = ["contact_for", "destination", "uri_host"]

DEFAULT_PORT = 5060


def uri_host(host: str) -> str:
    """A host as written in a URI or a Via: IPv6 addresses need brackets there."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def destination(uri: URI, default: Transport) -> tuple[Transport, Address]:
    """Where a request for ``uri`` is sent, and over what (RFC 3263 4.1 and 4.2, minus DNS)."""
    if not isinstance(uri, SipURI):
        raise ValueError(f"cannot send to a {uri.scheme}: URI without a routing table")
    transport = default
    if uri.transport == "tcp":
        transport = Transport.TCP
    elif uri.transport == "udp":
        transport = Transport.UDP
    elif uri.transport in ("ws", "wss"):
        transport = Transport.WS
    host = _bare(uri.maddr or uri.host)
    return transport, (host, uri.port or DEFAULT_PORT)


def contact_for(user: str | None, sent_by: Address, transport: Transport) -> NameAddr:
    """Our Contact: where the peer sends in-dialog requests, on the transport we used.

    A port of 0 means none (a WebSocket client's ``.invalid`` host, RFC 7118 5.2).
    """
    params: dict[str, str | None] = {}
    if transport is not Transport.UDP:
        params["transport"] = transport.lower()
    port = sent_by[1] or None
    return NameAddr(SipURI(user=user, host=uri_host(sent_by[0]), port=port, params=params))
