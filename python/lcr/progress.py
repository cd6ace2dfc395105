"""A progress line on stderr for long jobs (loading big decks, re-rating CDR files).

Quiet unless asked or attached to a terminal, so scripts and logs stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Prints ``label: 42% (420,000 rows)`` at most every ``interval`` seconds."""

    def __init__(
        self,
        label: str,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.2,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def __call__(self, rows: int, done: int, total: int) -> None:
        """Reports ``rows`` handled and ``done`` of ``total`` units (bytes, rows) so far."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        share = f"{100 * done // total:3d}% " if total else ""
        self.stream.write(f"\r{self.label}: {share}({rows:,} rows)")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
