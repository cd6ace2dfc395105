"""Who sent a request that a trusted SIP proxy forwarded (``[server] trusted_proxies``).

A balancer in front of several nodes (Kamailio's dispatcher, OpenSIPS' load_balancer)
forwards a customer's INVITE from its own address, so the switch would see one source for
every customer: IP authorisation would match the balancer, and one customer's wrong
passwords would get the balancer blocked for all of them. The balancer knows the customer's
address (the source of the packet it received) and writes it into the request it forwards,
in the header fields FreeSWITCH reads from its trusted proxies: ``X-AUTH-IP`` (and
``X-AUTH-PORT``), e.g. in Kamailio ``remove_hf("X-AUTH-IP"); append_hf("X-AUTH-IP:
$si\\r\\n")`` first thing for every request (in-dialog ones too: a client can shape a
REGISTER as one).

Why a header the proxy writes and not the Vias: the client's own Via reaches the switch as
the client wrote it, with a ``received`` added by the proxy only when the sent-by did not
name the source (RFC 3261 18.2.1). A client whose sent-by is its real address can add a
``received`` naming someone else's address, which the proxy leaves alone: judged by the
Vias, it would be IP-authorised as that someone.

Only a source listed as trusted is believed: from any other source these fields are not
read at all. A request from a trusted proxy without the field is the proxy's own (an
OPTIONS probe), unless it is an INVITE or a REGISTER: those are always a customer's, and a
proxy that names none (misconfigured, or a request it did not mean to forward) must not get
the proxy's own standing, which a registration made through the proxy would otherwise lend
it. Those, requests with a field that is not an address or with the field more than once
(a proxy that appends its own without removing the client's), and requests that name a
trusted proxy as the client, name nobody for sure: ``UNIDENTIFIED``, refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final

from ..config import IpRule
from ..sip.message import Request
from ..transport import Flow

__all__ = ["CLIENT_IP", "CLIENT_PORT", "UNIDENTIFIED", "TrustedProxies", "client_address"]

#: The header fields a trusted proxy writes (FreeSWITCH's names).
CLIENT_IP: Final = "X-AUTH-IP"
CLIENT_PORT: Final = "X-AUTH-PORT"
#: The client of a request whose proxy named it ambiguously or wrongly: refused.
UNIDENTIFIED: Final = ("", 0)
_PORT: Final = re.compile("[0-9]{1,5}")
#: Requests always placed for a client: from a proxy they must name one.
_CLIENTS_ONLY: Final = frozenset({"INVITE", "REGISTER"})
#: Sources remembered (trusted or not) before the cache starts over.
_CACHE_MAX = 65536


def client_address(request: Request) -> tuple[str, int] | None:
    """The client a proxy named in ``request``: None when it named none, ``UNIDENTIFIED``
    when the fields are repeated or not an address and a port. Without ``X-AUTH-PORT``
    the port is 0, which no ``ips`` rule with a port matches."""
    headers = request.headers
    ips = headers.get_all(CLIENT_IP)
    if not ips:
        return None
    ports = headers.get_all(CLIENT_PORT)
    if len(ips) != 1 or len(ports) > 1:
        return UNIDENTIFIED
    try:
        address = ipaddress.ip_address(ips[0].strip().strip("[]"))
    except ValueError:
        return UNIDENTIFIED
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:192.0.2.7 is 192.0.2.7
    ip = str(mapped or address)
    if not ports:
        return ip, 0
    port = ports[0].strip()
    if _PORT.fullmatch(port) is None or not 0 < int(port) < 65536:  # ASCII digits only
        return UNIDENTIFIED
    return ip, int(port)


class TrustedProxies:
    """The proxies of one configuration, and the client behind each request they forward."""

    def __init__(self, rules: Sequence[IpRule]) -> None:
        self._rules = tuple(rules)
        self._cache: dict[tuple[str, int], bool] = {}

    def trusts(self, ip: str, port: int) -> bool:
        """Whether ``(ip, port)`` is a trusted proxy's (cached per address)."""
        key = (ip, port)
        known = self._cache.get(key)
        if known is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache = {}
            try:
                address = ipaddress.ip_address(ip.strip("[]"))
            except ValueError:
                known = False
            else:
                known = any(rule.matches(address, port) for rule in self._rules)
            self._cache[key] = known
        return known

    def client_of(self, request: Request, remote: tuple[str, int]) -> tuple[str, int] | None:
        """The client behind ``request`` when a trusted proxy sent it from ``remote``
        (``UNIDENTIFIED`` when it named one wrongly); None when ``remote`` is not a trusted
        proxy or the request is the proxy's own."""
        if not self._rules or not self.trusts(*remote):
            return None
        client = client_address(request)
        if client is None:
            return UNIDENTIFIED if request.method in _CLIENTS_ONLY else None
        if client != UNIDENTIFIED and self.trusts(*client):
            # A proxy named as the client would lend its own standing (a registration
            # made through it, say) to whoever wrote the field.
            return UNIDENTIFIED
        return client

    def flow_of(self, request: Request, flow: Flow) -> Flow:
        """``flow`` with the client behind a trusted proxy filled in (unchanged otherwise)."""
        client = self.client_of(request, flow.remote)
        if client is None:
            return flow
        return Flow(flow.transport, flow.local, flow.remote, client)
