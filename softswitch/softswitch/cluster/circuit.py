"""Stop asking a Redis that just failed, for a short back-off, then ask once.

While Redis is down every question would otherwise wait the client's whole ``timeout``
(1 s) before failing: each admission, each credit hold, each gateway claim, each failover
branch, so a Redis outage would add seconds to every call's setup. After a failure
(``SharedStateUnavailableError``) the node's :class:`Circuit` (one per ``Link``, so one per
``SharedState``, shared by admission, credit, blocks and the lease) answers "unavailable" at
once for ``backoff`` seconds; then one question goes to Redis (a probe) while the others
still fail at once; its success closes the circuit, its failure starts another back-off.
The callers' failure policy is unchanged, only immediate: limits fall back to the node's
own, credit fails closed, blocks fail open.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from .errors import SharedStateError, SharedStateUnavailableError

__all__ = ["Circuit"]


class Circuit:
    def __init__(self, backoff: float = 1.0) -> None:
        self.backoff = backoff
        self.skipped = 0
        """Questions answered "unavailable" without asking Redis."""
        self._failed_at: float | None = None
        self._probing = False

    @property
    def open(self) -> bool:
        """Redis failed last time it was asked (and no question has succeeded since)."""
        return self._failed_at is not None

    @contextlib.contextmanager
    def asking(self, where: str, *, always: bool = False) -> Iterator[None]:
        """Around one question to Redis: raises at once while backing off (unless
        ``always``)."""
        probe = False
        if self._failed_at is not None and not always:
            since = time.monotonic() - self._failed_at
            if since < self.backoff or self._probing:
                self.skipped += 1
                raise SharedStateUnavailableError(
                    f"{where}: Redis unavailable: it failed {since:.1f} s ago; not asked"
                    f" again for {self.backoff:.1f} s"
                )
            self._probing = probe = True
        try:
            yield
        except SharedStateUnavailableError:
            self._failed_at = time.monotonic()
            raise
        except SharedStateError:
            self._failed_at = None  # Redis answered (an error): it is up
            raise
        else:
            self._failed_at = None
        finally:
            if probe:
                self._probing = False
