"""How many SIGHUPs each worker has finished reloading for, in shared memory.

The supervisor passes SIGHUP to every worker that listens and counts them; a worker adds one
here when the reload a SIGHUP started is over (taken or refused). A worker that dies with a
SIGHUP not yet answered may have died before it read the file, and so may the running
configuration record it would have written (``running_config``): its replacement could start
on the configuration from before the reload while the others run the new one. So the
supervisor owes that replacement a SIGHUP once it listens, as it does a worker restarting
during a reload. Only the worker writes its counter (one aligned 64-bit word) and only the
supervisor resets it, before forking the replacement: no lock.
"""

from __future__ import annotations

import mmap
import struct

__all__ = ["ReloadAcks"]

_U64 = struct.Struct("<Q")


class ReloadAcks:
    def __init__(self, workers: int) -> None:
        """Made before the fork: an anonymous shared mapping, one counter per worker."""
        self._memory = mmap.mmap(-1, _U64.size * max(1, workers))

    def done(self, worker: int) -> int:
        """SIGHUPs whose reload ``worker`` (this run of it) has finished."""
        return int(_U64.unpack_from(self._memory, _U64.size * worker)[0])

    def add(self, worker: int) -> None:
        """In the worker: one more SIGHUP's reload is over."""
        _U64.pack_into(self._memory, _U64.size * worker, self.done(worker) + 1)

    def reset(self, worker: int) -> None:
        """In the supervisor, before forking ``worker`` again: its replacement starts at 0."""
        _U64.pack_into(self._memory, _U64.size * worker, 0)
