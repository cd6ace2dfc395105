"""Whether an IP address is one of this machine's: what a wildcard listener answers on.

A switch listening on ``0.0.0.0:5060`` writes a concrete address in its Via and
Record-Route (the one the kernel routes each peer from, ``TransportLayer.sent_by``), so a
header naming it by address carries one of the machine's. Counting every host on port 5060
as ours would take a phone's Via behind a customer's proxy for a loop (482), strip a carrier
proxy's Route from the dialog's requests, and take a carrier's media gateway for the switch.

An address the switch wrote is ours for good (``note_own``): no test, no budget. Any other
is tested the kernel's way, by binding a UDP socket to it. With ``net.ipv4.ip_nonlocal_bind``
(or its IPv6 twin) set, as some failover setups do, every address binds and counts as this
machine's, as every host did before.

The hosts asked about come from headers anyone can write, so a flood of new ones must not
cost much nor push out the answers that matter: at most ``PROBES_PER_SECOND`` bind tests run
each second (beyond that an unknown host is not ours, and is asked again later), and the
tables of tested hosts are bounded and cleared when full, never the addresses we wrote.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time

__all__ = ["PROBES_PER_SECOND", "is_machine_address", "note_own", "wildcard_answers"]

PROBES_PER_SECOND = 200
_TABLE_MAX = 4096
#: Bind errors that say nothing about the address (asked again next time).
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN})

_own: set[str] = set()  # addresses the switch wrote in a Via or Record-Route
_mine: set[str] = set()  # tested: this machine's
_not_mine: set[str] = set()  # tested: not this machine's
_window = [0.0, 0]  # the current second, and bind tests run in it


def note_own(host: str) -> None:
    """``host`` is an address the switch writes as its own (a wildcard listener's route
    source): ours without a test, whatever a flood of other hosts does to the budget."""
    if host not in _own and len(_own) < _TABLE_MAX:
        _own.add(host)


def wildcard_answers(host: str) -> bool:
    """Whether a wildcard listener answers as ``host``: one of this machine's addresses, or a
    host name (the switch resolves no names, so a Route naming it by name is taken as it)."""
    known = _known(host)
    if known is not None:
        return known
    address = _address(host)
    return True if address is None else _probe(host, address)


def is_machine_address(host: str) -> bool:
    """Whether ``host`` (an IP address as text; a name is never one) is this machine's."""
    known = _known(host)
    if known is not None:
        return known
    address = _address(host)
    return False if address is None else _probe(host, address)


def _known(host: str) -> bool | None:
    """The answer kept for an address, or None (never kept for a name: names are unbounded,
    and whether one is ours depends on who asks)."""
    if host in _own or host in _mine:
        return True
    if host in _not_mine:
        return False
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _probe(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The kernel's answer for an address not asked about before, within the budget."""
    if address.is_unspecified or address.is_multicast:
        return _keep(_not_mine, host, False)
    now = time.monotonic()
    if now - _window[0] >= 1.0:
        _window[0], _window[1] = now, 0
    if _window[1] >= PROBES_PER_SECOND:
        return False
    _window[1] += 1
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError as exc:
        return False if exc.errno in _TRANSIENT else _keep(_not_mine, host, False)
    return _keep(_mine, host, True)


def _keep(table: set[str], host: str, answer: bool) -> bool:
    if len(table) >= _TABLE_MAX:
        table.clear()
    table.add(host)
    return answer
