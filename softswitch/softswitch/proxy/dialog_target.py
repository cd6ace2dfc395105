"""Where a call's later requests to a carrier go: the dialog's next hop, or the gateway.

RFC 3261 12.2.1.1: a request inside a dialog goes to the first entry of the route set
(the callee's Record-Route beyond us) or, without one, to the remote target (the callee's
Contact). A carrier's front door that balances INVITEs over its media gateways without
record-routing (Kamailio's dispatcher, many SBC clusters) answers from a gateway whose
Contact is that gateway; the ACK and BYE sent back to the front door get a 404 or are
dropped (Kamailio's default script), so the carrier never hears the caller hang up.

The switch therefore follows the callee's Contact or Record-Route (``dialog_target =
"contact"``, the default) where that is safe to do on the call path, and otherwise keeps
the flow the INVITE used, which is also what ``dialog_target = "address"`` always does:

* UDP, to an IP address of the same family: no name to resolve and no connection to open
  while the ACK waits. A TCP call keeps its connection (the carrier's own, which it
  expects the dialog on); a host name or ``sips:`` keeps the gateway's address.
* In the gateway's own scope (loopback, RFC 6598 shared, private, public): a private target
  behind a public gateway is the inside of a NAT the carrier forgot to fix, reachable only
  through its address; a public target of a gateway reached over a private network (an
  interconnect, a VPN) may not be reachable from here at all; a loopback one behind any
  other gateway is this machine. And the same socket must reach it.
* A host: not "any" (``0.0.0.0`` reaches this machine), multicast, broadcast, reserved or
  link-local (no interface named), nor an IPv4 address written as IPv6.
* Never one of our own addresses (a loop): the exact listener, or a wildcard listener on
  one of this machine's addresses (``machine_address``), not every host on our port.

Only where to send changes; what is sent (the Request-URI the caller wrote, our Route
entries removed) stays as ``forward.prepare_in_dialog`` makes it. The target comes from the
carrier's answer, never from a caller's Request-URI: a caller cannot make the switch send
to a host of its choosing (a gateway can, as RFC 3261 intends: ``"address"`` is for one not
trusted with that).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from softswitch.sip import NameAddr, SipURI
from softswitch.transport import Flow, Transport

__all__ = ["beyond_us", "dialog_flow"]

IsOurs = Callable[[str, int], bool]

#: The scopes a dialog's target must share with its gateway's address (``_scope``); any
#: other address is "public". IPv6 loopback and link-local addresses of either family are
#: never a target (``_unusable``).
_SCOPES = tuple(
    (scope, tuple(ipaddress.ip_network(n) for n in networks))
    for scope, networks in (
        ("loopback", ("127.0.0.0/8",)),
        ("shared", ("100.64.0.0/10",)),  # RFC 6598: a carrier-grade NAT's inside
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    )
)


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def dialog_flow(
    flow: Flow, contact: Sequence[NameAddr], beyond: Sequence[NameAddr], is_ours: IsOurs
) -> Flow:
    """The flow a dialog's requests to the callee go out on, given the flow of the INVITE
    and the callee's answer: its ``Contact`` and the callee's part of its Record-Route
    (``beyond``, from ``beyond_us``)."""
    if flow.transport is not Transport.UDP:
        return flow
    uri = beyond[-1].uri if beyond else contact[0].uri if contact else None
    if not isinstance(uri, SipURI):
        return flow
    if uri.scheme.lower() != "sip" or uri.transport not in (None, "udp"):
        return flow
    host = (uri.maddr or uri.host).strip("[]")
    port = uri.port or 5060
    if port == flow.remote[1] and host == flow.remote[0]:
        return flow  # the usual answer: the gateway's own address (no address parsing)
    try:
        address = ipaddress.ip_address(host)
        remote = ipaddress.ip_address(flow.remote[0])
    except ValueError:
        return flow
    if address.version != remote.version or _unusable(address) or _scope(address) != _scope(remote):
        return flow
    target = (str(address), port)
    if target == flow.remote or is_ours(*target):
        return flow
    return Flow(Transport.UDP, flow.local, target)


def beyond_us(
    record_route: Sequence[NameAddr], sent: Sequence[NameAddr], ours: int
) -> list[NameAddr]:
    """The callee's part of a response's Record-Route, in received order: the entries above
    those of the INVITE we sent (``sent``, whose first ``ours`` are the switch's own and the
    rest the caller's side). Each proxy tops the list, so the callee's side comes first and
    ``sent`` ends it, as it was; a callee that changed those, told by our own entries.

    Told by what we sent, not by our addresses: an entry of ours may name a socket we do
    not listen on (an IPv4 gateway reached from an IPv6 listener), and with a wildcard
    listener a carrier's proxy on our port number would pass for us. Not by any entry we
    sent either: one proxy record-routing both sides of the switch is on both."""
    keys = [_hop_key(entry) for entry in record_route]
    n = len(sent)
    if n and keys[len(keys) - n :] == [_hop_key(entry) for entry in sent]:
        return list(record_route[: len(keys) - n])
    own = {_hop_key(entry) for entry in sent[:ours]}
    for i, key in enumerate(keys):
        if key in own:
            return list(record_route[:i])
    return list(record_route)


def _hop_key(entry: NameAddr) -> object:
    """What names a route entry's hop: a SIP URI's host and port, else the URI's text."""
    uri = entry.uri
    if isinstance(uri, SipURI):
        return (uri.host.strip("[]").lower(), uri.port or 5060)
    return str(uri)


def _scope(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Where an address is reached from: its own machine, a NAT's inside, a private network,
    or anywhere ("public")."""
    for scope, networks in _SCOPES:
        if any(address in network for network in networks):
            return scope
    return "public"


def _unusable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """No host to send a dialog to: "any" (which reaches this machine), "this network",
    multicast, broadcast and the reserved ranges, and an IPv4 address in IPv6 form (whose
    scope the rules above would not see)."""
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return True
    if address.is_link_local:  # needs an interface to be sent to, which a URI does not say
        return True
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped is not None
    return address in _THIS_NETWORK
