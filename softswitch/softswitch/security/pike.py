"""Per-source request rates and blocks, on a monotonic clock, with bounded memory.

Like Kamailio's pike module: requests are counted per source IP in fixed windows of
``window`` seconds; the request that takes a source over ``rate`` in one window blocks it.
Fixed windows (rather than a sliding log) keep one small list per source, so a flood costs
a dict look-up per packet; the price is that a source may send up to twice ``rate`` across a
window boundary before it is caught, which the documentation states.

Nothing here reads a clock: every call takes ``now`` (``time.monotonic()`` in the switch), so
the tests drive time by hand. Memory stays bounded under a flood from spoofed sources:
entries whose window has passed are swept whenever the table has doubled since the last
sweep, so the table holds about the sources seen in the last window or two.
"""

from __future__ import annotations

__all__ = ["MAX_BLOCKS", "Blocklist", "Pike"]

#: The table is never swept below this many entries (sweeping a small dict buys nothing).
_MIN_SWEEP = 4096


class Pike:
    """Counts requests per source; :meth:`hit` says when a source went over the rate."""

    __slots__ = ("_counts", "_sweep_at", "rate", "window")

    def __init__(self, rate: int, window: float) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self.rate = rate
        self.window = window
        #: source -> [window start, requests in that window]
        self._counts: dict[str, list[float]] = {}
        self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        return len(self._counts)

    def hit(self, source: str, now: float) -> bool:
        """Count one request; True when it takes ``source`` over the rate in this window.

        Only the request that crosses the line returns True, so the caller blocks and logs
        once; with ``rate`` 0 the limit is off and this is always False.
        """
        if self.rate <= 0:
            return False
        entry = self._counts.get(source)
        if entry is None or now - entry[0] >= self.window:
            if entry is None and len(self._counts) >= self._sweep_at:
                self._sweep(now)
            self._counts[source] = [now, 1.0]
            return self.rate < 1
        entry[1] += 1
        return entry[1] == self.rate + 1

    def forget(self, source: str) -> None:
        self._counts.pop(source, None)

    def _sweep(self, now: float) -> None:
        horizon = now - self.window
        # A new dict rather than deletions: a dict never shrinks its table in place.
        self._counts = {k: v for k, v in self._counts.items() if v[0] > horizon}
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._counts))


#: Blocks held at once; past it new blocks are refused (logged by the caller), so that a
#: flood from spoofed sources, each crossing pike's rate, cannot grow the list without bound.
MAX_BLOCKS = 100_000


class Blocklist:
    """Sources blocked until a moment; expired entries vanish as they are asked about."""

    __slots__ = ("_sweep_at", "_until", "max_blocks")

    def __init__(self, max_blocks: int = MAX_BLOCKS) -> None:
        self._until: dict[str, float] = {}
        self._sweep_at = _MIN_SWEEP
        self.max_blocks = max_blocks

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, source: object) -> bool:
        return source in self._until

    def block(self, source: str, until: float, now: float) -> bool:
        """Block ``source`` until ``until`` (a later block is never shortened); False when
        the list is full of unexpired blocks and ``source`` could not be added."""
        if source not in self._until:
            if len(self._until) >= self._sweep_at:
                self._sweep(now)
            if len(self._until) >= self.max_blocks:
                return False
        if until > self._until.get(source, float("-inf")):
            self._until[source] = until
        return True

    def is_blocked(self, source: str, now: float) -> bool:
        until = self._until.get(source)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[source]
        return False

    def unblock(self, source: str) -> bool:
        """Lift a block (an operator's command); whether there was one."""
        return self._until.pop(source, None) is not None

    def blocked(self, now: float) -> dict[str, float]:
        """Sources blocked at ``now`` and the seconds each has left."""
        return {k: until - now for k, until in self._until.items() if until > now}

    def _sweep(self, now: float) -> None:
        self._until = {k: v for k, v in self._until.items() if v > now}
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._until))
