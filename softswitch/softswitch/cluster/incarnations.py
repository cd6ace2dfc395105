"""A lease's incarnation: which process holds a node id, so a restart can tell a dead one.

The lease key's value (and the tail of the node's hash fields) is
``<host>/<pid>/<random>``: random so a restarted process never counts its predecessor's
fields, and naming the host and process so that a process started on the same host (a
supervisor restarting a worker that died, a node restarted after a crash) can see that the
process still holding the lease is gone and take over its id at once rather than wait a
whole lease for the key to expire. Only a process that provably does not exist on this host
counts as dead: another host, this very process (it may hold the id through another
connection) or a pid that exists (even reused, or stopped) is treated as alive, so two live
processes never share an id.
"""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["dead_here", "new_incarnation"]


def new_incarnation() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(6)}"


def dead_here(incarnation: str) -> bool:
    """True only if ``incarnation`` is a process of this host that no longer exists."""
    parts = incarnation.split("/")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False  # an older format, or another writer: not provably dead
    host = "/".join(parts[:-2])
    pid = int(parts[-2])
    if host != socket.gethostname() or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False
