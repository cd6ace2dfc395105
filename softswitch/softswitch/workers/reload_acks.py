"""Which SIGHUPs each worker has finished reloading for, in shared memory.

The supervisor numbers the SIGHUPs it passes to each worker (:meth:`ReloadAcks.ask`, before
the signal); a worker's SIGHUP handler reads the number asked so far and, when the reload it
started is over (taken or refused), records it as answered. A worker that dies with a number
not yet answered may have died before it read the file, and so before any worker recorded
the reloaded configuration (``running_config``) its replacement would start on: the
supervisor owes that replacement a SIGHUP once it listens, as it does a worker restarting
during a reload. Numbers, not counts: two SIGHUPs that reach a worker as one (a signal
pending is not queued twice) are both answered by the reload that one started, which read
the file after both were asked.

The supervisor writes ``asked`` and the worker ``answered``, each one aligned 64-bit word per
worker; the supervisor resets both before forking a replacement: no lock.
"""

from __future__ import annotations

import mmap
import struct

__all__ = ["ReloadAcks"]

_U64 = struct.Struct("<Q")


class ReloadAcks:
    def __init__(self, workers: int) -> None:
        """Made before the fork: an anonymous shared mapping, two words per worker."""
        self._memory = mmap.mmap(-1, 2 * _U64.size * max(1, workers))

    def _get(self, worker: int, which: int) -> int:
        return int(_U64.unpack_from(self._memory, _U64.size * (2 * worker + which))[0])

    def _set(self, worker: int, which: int, value: int) -> None:
        _U64.pack_into(self._memory, _U64.size * (2 * worker + which), value)

    def ask(self, worker: int) -> None:
        """In the supervisor, before passing ``worker`` a SIGHUP."""
        self._set(worker, 0, self._get(worker, 0) + 1)

    def asked(self, worker: int) -> int:
        """In the worker, as its SIGHUP handler runs: the SIGHUPs asked so far."""
        return self._get(worker, 0)

    def answer(self, worker: int, upto: int) -> None:
        """In the worker: the reload started when ``upto`` were asked is over."""
        if upto > self._get(worker, 1):
            self._set(worker, 1, upto)

    def unanswered(self, worker: int) -> bool:
        """In the supervisor, once ``worker`` died: a SIGHUP it had not finished."""
        return self._get(worker, 0) > self._get(worker, 1)

    def reset(self, worker: int) -> None:
        """In the supervisor, before forking ``worker`` again: its replacement starts at 0."""
        self._set(worker, 0, 0)
        self._set(worker, 1, 0)
