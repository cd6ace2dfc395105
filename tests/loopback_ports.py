"""Loopback ports for the servers the tests start: free for UDP and TCP, and never handed out
twice in one test session.

One module for every test folder (the root ``conftest.py`` puts ``tests/`` on the path), so
one set of handed-out ports covers the whole session: two helpers with sets of their own
could give the same port to two servers started close together.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["LOCAL", "bindable", "free_port"]

LOCAL = "127.0.0.1"

_handed_out: set[int] = set()


def bindable(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now, for UDP and for TCP."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((LOCAL, port))
            except OSError:
                return False
    return True


def _ephemeral_range() -> range:
    """The ports Linux gives to outgoing connections and ``bind(0)`` (32768-60999 by default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


_EPHEMERAL = _ephemeral_range()


def _avoided(port: int, ports: range) -> bool:
    """Whether ``port`` of ``ports`` is one to avoid: in the ephemeral range, unless that
    covers all of ``ports`` (a host with ``ip_local_port_range`` 1024-65535), where only
    the checks against what is bound are left."""
    covered = _EPHEMERAL.start <= ports.start and ports.stop <= _EPHEMERAL.stop
    return not covered and port in _EPHEMERAL


#: Where ports come from: outside the ephemeral range. A port picked there could be given,
#: between the check and the server's own bind, to an outgoing connection of any process as
#: its local port (a CI run failed on that: redis-server found its port taken). Single ports
#: walk one range from a random start, blocks (an rtpengine's RTP ports) take the first free
#: run of another, so a long run is still found late in a session.
_SINGLES = range(10000, 20000)
_BLOCKS = range(20000, 32768)
_next_single = random.randrange(len(_SINGLES))


def free_port(span: int = 1) -> int:
    """A port free for UDP and TCP (with ``span - 1`` free neighbours), never handed out twice."""
    if span > 1:
        return _free_block(span)
    global _next_single
    for _ in range(len(_SINGLES)):
        port = _SINGLES[_next_single % len(_SINGLES)]
        _next_single += 1
        if port not in _handed_out and not _avoided(port, _SINGLES) and bindable(port):
            _handed_out.add(port)
            return port
    for _ in range(500):  # an ephemeral range covering ours: take the system's pick
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOCAL, 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out and bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def _free_block(span: int) -> int:
    base = _BLOCKS.start
    while base + span <= _BLOCKS.stop:
        ports = range(base, base + span)
        taken = next(
            (p for p in ports if p in _handed_out or _avoided(p, _BLOCKS) or not bindable(p)),
            None,
        )
        if taken is None:
            _handed_out.update(ports)
            return base
        base = taken + 1
    raise RuntimeError(f"no {span} free consecutive ports on 127.0.0.1 in {_BLOCKS}")
