"""Several worker processes behind one set of listen addresses (``softswitch run --workers N``).

With one worker the switch is the single process it always was: nothing here runs. With N > 1
the modules read in the order of a start:

``sockets``     the listen sockets (one ``SO_REUSEPORT`` socket per worker and address) and
                each worker's own port, all bound by the supervisor before the fork, so a port
                in use is one clear error at start and a restarted worker gets the same ones
``table``       a fixed-size open-addressing table in shared memory under a process lock
``steering``    the classic BPF program that picks a UDP request's worker by its Call-ID, and
                the same choice in Python over the header section (``call_id_owner``)
``handoff``     hands a datagram the kernel gave the wrong worker on to its owner, once
``live``        :class:`SharedLiveState`, the ``LiveState`` backend on that table (limits,
                CPS windows, gateway up/down, overrides, auth failures, blocks)
``credit``      billed accounts' credit holds of every worker, on the same table
``registrations`` the journal of registered contacts every worker applies
``supervisor``  forks the workers, restarts one that dies, passes on SIGHUP and SIGTERM
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_WORKERS"]

#: The most worker processes a switch runs (``--workers``, ``[server] workers``, one per
#: core): a worker says it listens with one byte, its index (``seat.Seat.ready``).
MAX_WORKERS: Final = 256
