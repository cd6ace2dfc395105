"""The per-hop edits a record-routing proxy makes to what it relays (RFC 3261 16.3-16.7).

Pure functions over messages: the engine decides *where* a message goes, this module decides
*what* goes there. A forwarded request is a copy (the original stays intact for the next
fail-over branch), keeps every header it arrived with byte for byte except the ones a proxy
owns (Via, Record-Route, Route, Max-Forwards, Proxy-Authorization for our own realm) and,
in a branch's INVITE, the caller-ID fields the switch rewrites (From and
P-Asserted-Identity, their user part only: ``call.cli``), and its body untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from softswitch.sip import NameAddr, Request, Response, SipParseError, SipURI, Via, parse_name_addr
from softswitch.sip.digest import DigestParseError, parse_credentials
from softswitch.transport import Address, Transport

__all__ = [
    "DEFAULT_MAX_FORWARDS",
    "MAX_FORWARDS_LIMIT",
    "Hop",
    "check_request",
    "copy_request",
    "own_uri",
    "prepare_branch",
    "prepare_in_dialog",
    "relay_response",
]

DEFAULT_MAX_FORWARDS: Final = 70


@dataclass(frozen=True, slots=True)
class Hop:
    """One side of the switch as a peer sees it: the transport and our address on it."""

    transport: Transport
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def own_uri(hop: Hop) -> SipURI:
    """The loose-routing URI peers use to reach this hop (Record-Route, our Route entries)."""
    params: dict[str, str | None] = {"lr": None}
    if hop.transport is Transport.TCP:
        params = {"transport": "tcp", "lr": None}
    return SipURI(host=_uri_host(hop.host), port=hop.port, params=params)


@functools.lru_cache(maxsize=64)
def _record_route(hop: Hop) -> str:
    """Our Record-Route value for ``hop`` (the same for every call through it)."""
    return str(NameAddr(own_uri(hop)))


def check_request(request: Request, is_ours: Callable[[str, int], bool]) -> tuple[int, str] | None:
    """The sanity checks of RFC 3261 16.3 that ``validate_request`` leaves to a proxy.

    483 when Max-Forwards is exhausted; 482 when one of our own Via entries is already in
    the request (the request came back to us: a carrier routes the number to us, or two
    switches route to each other); 420 for a Proxy-Require we cannot honour. Missing or
    malformed essential headers were already answered 400 by the transport.
    """
    try:
        max_forwards = request.max_forwards
        vias = request.via
    except SipParseError as exc:
        return 400, exc.reason
    if max_forwards is not None and max_forwards <= 0 and request.method != "OPTIONS":
        return 483, "Too Many Hops"
    for via in vias[1:] if vias else ():
        if is_ours(via.host.strip("[]"), via.port or 5060):
            return 482, "Loop Detected"
    if request.headers.get("Proxy-Require") is not None:
        return 420, "Bad Extension"
    return None


def copy_request(request: Request) -> Request:
    """An independent copy that keeps the received header bytes."""
    return request.copy()


#: The largest Max-Forwards we send: a received value beyond it (the grammar allows ten
#: digits) is counted down to it rather than refused.
MAX_FORWARDS_LIMIT: Final = 2**31


def _decrement_max_forwards(request: Request) -> None:
    current = request.max_forwards
    request.max_forwards = (
        DEFAULT_MAX_FORWARDS if current is None else min(max(current - 1, 0), MAX_FORWARDS_LIMIT)
    )


def _strip_own_routes(request: Request, is_ours: Callable[[str, int], bool]) -> None:
    """Remove the Route entries that name us (16.4), however many we record-routed."""
    while True:
        top = request.headers.get("Route")
        if top is None:
            return
        try:
            uri = parse_name_addr(top).uri
        except SipParseError:
            return
        if not isinstance(uri, SipURI) or not is_ours(uri.host.strip("[]"), uri.port or 5060):
            return
        request.headers.pop_first("Route")


def prepare_branch(
    request: Request,
    *,
    uri: SipURI,
    via: Via | str,
    record_route: Iterable[Hop],
    is_ours: Callable[[str, int], bool],
    realm: str | None = None,
    replace_headers: Iterable[tuple[str, str]] = (),
    route: str = "",
) -> Request:
    """The INVITE for one gateway (16.6): new Request-URI, our Via and Record-Route on top.

    ``record_route`` lists our hops from the gateway's side to the caller's side: two
    entries when the legs use different transports or sockets (RFC 5658 double
    record-routing), so each peer reaches us the way it reached us before.
    ``replace_headers``: fields that replace the caller's of the same name, where they
    were (the caller-ID a gateway gets, ``call.cli.header_edits``). ``route``: a Route set
    that goes first (a registered contact's Path, RFC 3327 5.3; 16.6 step 6 pre-loads it).
    """
    out = copy_request(request)
    out.uri = uri
    for name, value in replace_headers:
        out.headers.set(name, value)
    _strip_own_routes(out, is_ours)
    if route:
        out.headers.prepend("Route", route)
    _decrement_max_forwards(out)
    _remove_own_credentials(out, realm)
    for hop in reversed(list(record_route)):
        out.headers.prepend("Record-Route", _record_route(hop))
    out.push_via(via)
    return out


def _remove_own_credentials(request: Request, realm: str | None) -> None:
    """RFC 3261 22.3: a proxy consumes the credentials for its own realm and forwards the
    rest, so that a carrier's own 407 can be answered end to end by the caller. Ours never
    reach a gateway: a credential that names our realm, or that cannot be read but mentions
    it, is removed. ``realm`` None (no realm known): every Proxy-Authorization is removed."""
    values = request.headers.get_all("Proxy-Authorization")
    if not values:
        return
    keep = [] if realm is None else [v for v in values if not _names_realm(v, realm)]
    if len(keep) == len(values):
        return
    request.headers.remove("Proxy-Authorization")
    for value in keep:
        request.headers.add("Proxy-Authorization", value)


def _names_realm(credentials: str, realm: str) -> bool:
    try:
        return parse_credentials(credentials).realm == realm
    except DigestParseError:
        return f'realm="{realm}"' in credentials or f"realm={realm}" in credentials


def prepare_in_dialog(
    request: Request, *, via: Via | str, is_ours: Callable[[str, int], bool]
) -> Request:
    """A mid-dialog request on its way through (16.4, 16.6): our Routes off, our Via on."""
    out = copy_request(request)
    _strip_own_routes(out, is_ours)
    _decrement_max_forwards(out)
    out.push_via(via)
    return out


def relay_response(response: Response, *, restore: Iterable[tuple[str, str]] = ()) -> Response:
    """A response on its way back (16.7 step 3): a copy without our Via.

    ``restore``: fields put back as the caller sent them, for a branch whose INVITE had them
    replaced (a gateway echoes the ``From`` it got; the caller gets its own back).
    """
    out = response.copy()
    out.pop_via()
    for name, value in restore:
        out.headers.set(name, value)
    return out
