"""The configuration the workers run, kept where a restarted worker finds it.

A worker that dies is replaced by a fork of the supervisor, which holds the configuration of
the start. The others may have reloaded since (SIGHUP, the management API), and the file may
have changed since without a reload; the replacement must run what its siblings run, not
either of those. So each worker, after a reload it accepted, records the parsed
configuration here (pickled, in a shared mapping the supervisor made before the fork), and
the supervisor hands the latest record to a worker it restarts.

What is recorded is the parsed file; the rate decks it names are read again by the new
worker as they are on disk then (``softswitch.proxy.server`` builds its snapshot at start).
A configuration whose pickle exceeds :data:`SIZE` is not recorded: a restart then reads the
file as it is, and says so in the log. A record is marked as being written before its bytes
change and carries a CRC-32 of them once written, so a worker killed half-way through a
record (its lock is taken over) leaves one that reads as "read the file", never a pickle
cut short that every later restart would fail on.
"""

from __future__ import annotations

import logging
import mmap
import pickle
import struct
import zlib
from typing import Final

from softswitch.config import Config

from .table import ProcessLock

__all__ = ["SIZE", "RunningConfig"]

logger = logging.getLogger("softswitch.workers")

#: Bytes kept for the pickled configuration (the mapping's pages are used only as filled).
SIZE: Final = 16 * 1024 * 1024
#: The record's length (or a mark below) and the CRC-32 of its bytes.
_HEADER = struct.Struct("<qI")
#: The header's length when the latest configuration did not fit.
_TOO_LARGE: Final = -1
#: The header's length while a record is being written.
_WRITING: Final = -2


class RunningConfig:
    """Made before the fork; :meth:`record` in a worker, :meth:`read` in the supervisor."""

    def __init__(self, lock: ProcessLock) -> None:
        self._lock = lock
        self._memory = mmap.mmap(-1, _HEADER.size + SIZE)

    def record(self, config: Config) -> None:
        """``config`` is what this worker runs now (a reload it accepted)."""
        data = pickle.dumps(config, pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if len(data) > SIZE:
                _HEADER.pack_into(self._memory, 0, _TOO_LARGE, 0)
                logger.warning(
                    "the configuration (%d bytes pickled) exceeds %d: a restarted worker"
                    " will read the file as it is then",
                    len(data),
                    SIZE,
                )
                return
            _HEADER.pack_into(self._memory, 0, _WRITING, 0)
            self._memory[_HEADER.size : _HEADER.size + len(data)] = data
            _HEADER.pack_into(self._memory, 0, len(data), zlib.crc32(data))

    def read(self) -> Config | bool | None:
        """The latest recorded configuration; None when no reload was recorded (the start's
        is the one), False when there is none to use (read the file): the latest did not
        fit, or its writer died half-way (logged)."""
        with self._lock:
            length, crc = _HEADER.unpack_from(self._memory, 0)
            if length == _TOO_LARGE:
                return False
            if length == 0:
                return None
            if length == _WRITING or not 0 < length <= SIZE:
                data = None
            else:
                data = bytes(self._memory[_HEADER.size : _HEADER.size + length])
        if data is None or zlib.crc32(data) != crc:
            logger.error(
                "the configuration the workers run was not recorded whole (a worker died"
                " writing it): a restarted worker reads the file as it is"
            )
            return False
        config = pickle.loads(data)
        if not isinstance(config, Config):
            raise TypeError(f"the recorded configuration is a {type(config).__name__}")
        return config
