"""The forward stage's pure part: the Request-URI a gateway receives.

The number sent is the normalised number with ``strip_digits`` leading digits removed and
``add_prefix`` put in front (carriers often want a routing prefix such as ``0011#``-style
tech prefixes of their own). The host and port are the gateway's; ``;transport=tcp`` is added
for TCP gateways so the next hop's responses and in-dialog requests stay on TCP.
"""

from __future__ import annotations

from ..config import Gateway
from ..sip.uri import SipURI, escape

__all__ = ["gateway_request_uri", "sent_number"]


def sent_number(gateway: Gateway, number: str) -> str:
    """The callee number as the gateway will see it (the CDR's "callee as sent")."""
    return gateway.add_prefix + number[gateway.strip_digits :]


def gateway_request_uri(gateway: Gateway, number: str) -> SipURI:
    params: dict[str, str | None] = {"transport": "tcp"} if gateway.transport == "tcp" else {}
    return SipURI(
        scheme="sip",
        user=escape(sent_number(gateway, number)),
        host=gateway.host,
        port=gateway.port,
        params=params,
    )
