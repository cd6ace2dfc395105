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


def free_port(span: int = 1) -> int:
    """A port free for UDP and TCP (with ``span - 1`` free neighbours), never handed out twice."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOCAL, 0))
            port = int(probe.getsockname()[1])
        ports = range(port, port + span)
        if port + span < 65536 and not _handed_out & set(ports) and all(map(bindable, ports)):
            _handed_out.update(ports)
            return port
    raise RuntimeError("no free port range on 127.0.0.1")
