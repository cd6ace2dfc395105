"""Whether an IP address is one of this machine's: what a wildcard listener answers on.

A switch listening on ``0.0.0.0:5060`` writes a concrete address in its Via and
Record-Route (the one the kernel routes each peer from), so a header naming it by address
carries one of the machine's. Counting every host on port 5060 as ours would take a phone's
Via behind a customer's proxy for a loop (482), strip a carrier proxy's Route from the
dialog's requests, and take a carrier's media gateway for the switch.

The test is the kernel's own: a UDP socket can be bound to the address. With
``net.ipv4.ip_nonlocal_bind`` (or its IPv6 twin) set, as some failover setups do, every
address binds and counts as this machine's, as every host did before.

The hosts asked about come from headers anyone can write, so a flood of new ones must not
cost much nor push out the answers that matter: this machine's addresses are kept for good
(there are few), others in a table cleared when full, and at most ``PROBES_PER_SECOND``
bind tests run each second (beyond that an unknown host is not ours, and asked again later).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time

__all__ = ["PROBES_PER_SECOND", "is_machine_address"]

PROBES_PER_SECOND = 200
_NOT_MINE_MAX = 4096

_mine: set[str] = set()
_not_mine: set[str] = set()
_window = [0.0, 0]  # the current second, and bind tests run in it


def is_machine_address(host: str) -> bool:
    """Whether ``host`` (an IP address as text; a name is never one) is this machine's."""
    if host in _mine:
        return True
    if host in _not_mine:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _not(host)
    if address.is_unspecified or address.is_multicast:
        return _not(host)
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
        # Only "not an address here" is an answer; running out of descriptors or buffers
        # says nothing about the address, so it is asked again next time.
        return _not(host) if exc.errno == errno.EADDRNOTAVAIL else False
    _mine.add(host)
    return True


def _not(host: str) -> bool:
    if len(_not_mine) >= _NOT_MINE_MAX:
        _not_mine.clear()
    _not_mine.add(host)
    return False
