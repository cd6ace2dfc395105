"""Loopback ports for the servers the tests start: free for UDP and TCP, and never handed out
twice in one test session.

One module for every test folder (the root ``conftest.py`` puts ``tests/`` on the path), so
one set of handed-out ports covers the whole session: two helpers with sets of their own
could give the same port to two servers started close together.
"""

from __future__ import annotations

import socket

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


#: Where blocks of ports come from: below Linux's ephemeral range (32768-60999), so the
#: single ports the system hands out (``bind(0)``) never fragment it.
_BLOCKS = range(20000, 32768)


def free_port(span: int = 1) -> int:
    """A port free for UDP and TCP (with ``span - 1`` free neighbours), never handed out twice.

    Single ports come from the system (``bind(0)``); a block (an rtpengine's RTP ports) is
    the first free run below the ephemeral range: by the end of a session the single ports
    handed out are scattered over the ephemeral range, and a random pick there would rarely
    find a long free run.
    """
    if span > 1:
        return _free_block(span)
    for _ in range(500):
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
        taken = next((p for p in ports if p in _handed_out or not bindable(p)), None)
        if taken is None:
            _handed_out.update(ports)
            return base
        base = taken + 1
    raise RuntimeError(f"no {span} free consecutive ports on 127.0.0.1 in {_BLOCKS}")
