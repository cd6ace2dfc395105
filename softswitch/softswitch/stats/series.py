"""One series (the switch, an account, a gateway, a destination or a prefix): its three
rings of buckets (every window is read from one of them), and the two levels that are not
windowed, concurrency and calls per second.

Concurrency is a level: +1 when a call starts (or a gateway is seized), -1 when it ends.
At each change the bucket of that moment records the higher of the levels before and after,
so a window's peak is the highest level held at any moment inside it, to the bucket: the
level at the window's start is the level before its first change, and the level now counts
even when nothing changed for hours.

Calls per second are counted per whole second of the clock, ``[s, s + 1)``. The current CPS
is the count of the last whole second, ``[floor(now) - 1, floor(now))``; a window's peak is
the highest count of the seconds in it, the current partial second included. A second always
lies inside one bucket (bucket widths are whole seconds), so the bucket simply keeps the
highest count its seconds reached.

Every event writes to the bucket of ``now`` in each ring, so a series remembers the three
buckets it wrote to last and the span of time all three cover (``Series.current``): events
inside that span, nearly all of them, skip the rings' arithmetic.
"""

from __future__ import annotations

from .aggregate import Bucket, Summary, summarise
from .histogram import pdd_bin
from .windows import RINGS, WINDOWS, Ring, Window, ring_of

__all__ = ["Series"]

#: Each window's ring, by window (a 15m window reads the 1h ring).
_RING_OF = {w: ring_of(w) for w in WINDOWS.values()}


class Series:
    """The counters of one key of one dimension."""

    __slots__ = (
        "before",
        "before_count",
        "buckets",
        "calls",
        "count",
        "rings",
        "second",
        "span_end",
        "span_start",
    )

    def __init__(self) -> None:
        self.rings: tuple[Ring, ...] = tuple(Ring(w) for w in RINGS)
        #: Calls (or gateway seizures) in progress now.
        self.calls = 0
        #: The second being counted, its count so far, and the one counted before it.
        self.second = -1
        self.count = 0
        self.before = -1
        self.before_count = 0
        #: The rings' buckets of the last event, and the span ``[start, end)`` of the clock
        #: in which they are still each ring's bucket of ``now`` (empty until an event).
        self.buckets: tuple[Bucket, ...] = ()
        self.span_start = float("inf")
        self.span_end = float("-inf")

    def current(self, now: float) -> tuple[Bucket, ...]:
        """Each ring's bucket of ``now`` (``Ring.at``), one per ring in ``RINGS`` order."""
        if self.span_start <= now < self.span_end:
            return self.buckets
        buckets = tuple([ring.at(now) for ring in self.rings])
        start, end = float("-inf"), float("inf")
        for ring, bucket in zip(self.rings, buckets, strict=True):
            number = bucket.number
            if ring.slots[number % ring.count] is not bucket:
                # A throwaway bucket (the clock ran backwards): not to be reused.
                return buckets
            start = max(start, number * ring.width)
            end = min(end, (number + 1) * ring.width)
        self.buckets, self.span_start, self.span_end = buckets, start, end
        return buckets

    # -- levels ------------------------------------------------------------------------------

    def _arrival(self, now: float) -> int:
        """Count one more attempt (or seizure) this second; the second's count so far.

        An arrival stamped with an earlier second than the one being counted is a late one:
        another worker's event, sent in a batch a few milliseconds after it happened
        (``workers.statistics``), or the primary reading its inbox after its own events of
        the new second. It counts in the second it belongs to when that is the one kept
        (``before``), and is not counted otherwise: it must not make its old second the
        current one again and throw away the count in progress. (``now`` is the monotonic
        clock, the same in every worker, so only lateness makes it go back.)"""
        second = int(now // 1)
        if second < self.second:
            if second == self.before:
                self.before_count += 1
                return self.before_count
            return 0
        if second != self.second:
            self.before, self.before_count = self.second, self.count
            self.second, self.count = second, 0
        self.count += 1
        return self.count

    def cps(self, now: float) -> int:
        """Attempts in the last whole second."""
        last = int(now // 1) - 1
        if self.second == last:
            return self.count
        if self.before == last:
            return self.before_count
        return 0

    def start(self, now: float) -> None:
        """A call (or a seizure) starts: one more arrival this second, the level rises."""
        cps = self._arrival(now)
        self.calls += 1
        level = self.calls
        for bucket in self.current(now):
            if cps > bucket.peak_cps:
                bucket.peak_cps = cps
            if level > bucket.peak_calls:
                bucket.peak_calls = level

    def down(self) -> int:
        """A call (or a seizure) ends: the level held until now falls. Returns that level,
        for the caller to record with the call's outcome (:meth:`outcome`'s ``level``);
        :meth:`release` records it by itself."""
        held = self.calls
        self.calls = held - 1 if held > 0 else 0
        return held

    def release(self, now: float) -> None:
        """A seizure ends without an outcome of its own (the gateway's is the call's)."""
        held = self.down()
        for bucket in self.current(now):
            if held > bucket.peak_calls:
                bucket.peak_calls = held

    # -- outcomes ----------------------------------------------------------------------------

    def refused(self, now: float, status: int, reason: str) -> None:
        """A refusal: an arrival and an unanswered attempt at once."""
        self.outcome(
            now,
            answered=False,
            ner=False,
            seizures=0,
            duration_ms=0,
            pdd_ms=None,
            status=status,
            reason=reason,
            cps=self._arrival(now),
        )

    def outcome(
        self,
        now: float,
        *,
        answered: bool,
        ner: bool,
        seizures: int,
        duration_ms: int,
        pdd_ms: int | None,
        status: int | None,
        reason: str | None,
        level: int = 0,
        cps: int = 0,
    ) -> None:
        """One attempt ended (a call's, or a gateway's seizure): counted in every window.

        ``status`` and ``reason`` are tallied as a failure when the attempt was not answered
        (``status`` None: no final status came, only the reason is tallied). ``level`` and
        ``cps`` are a concurrency and a CPS count to fold into the buckets' peaks in the same
        pass (0: none).
        """
        pdd_index = pdd_bin(pdd_ms) if pdd_ms is not None else 0
        self.record(
            now, answered, ner, seizures, duration_ms, pdd_ms, pdd_index, status, reason, level, cps
        )

    def record(
        self,
        now: float,
        answered: bool,
        ner: bool,
        seizures: int,
        duration_ms: int,
        pdd_ms: int | None,
        pdd_index: int,
        status: int | None,
        reason: str | None,
        level: int,
        cps: int,
    ) -> None:
        """:meth:`outcome` with its arguments in a row and the PDD's bin (``pdd_bin``) worked
        out by the caller: a call's outcome is recorded in up to four series at once."""
        for b in self.current(now):
            b.attempts += 1
            b.seizures += seizures
            if level > b.peak_calls:
                b.peak_calls = level
            if cps > b.peak_cps:
                b.peak_cps = cps
            if ner:
                b.ner += 1
            if answered:
                b.answered += 1
                b.duration_ms += duration_ms
            else:
                if status is not None:
                    tally = b.by_status
                    if tally is None:
                        tally = b.by_status = {}
                    tally[status] = tally.get(status, 0) + 1
                if reason is not None:
                    reasons = b.by_reason
                    if reasons is None:
                        reasons = b.by_reason = {}
                    reasons[reason] = reasons.get(reason, 0) + 1
            if pdd_ms is not None:
                b.pdd_count += 1
                b.pdd_ms += pdd_ms
                if pdd_ms > b.pdd_max_ms:
                    b.pdd_max_ms = pdd_ms
                bins = b.pdd_bins
                if bins is None:
                    bins = b.pdd_bins = {}
                bins[pdd_index] = bins.get(pdd_index, 0) + 1

    # -- reading -----------------------------------------------------------------------------

    def summary(self, dimension: str, key: str, window: Window, now: float) -> Summary:
        ring = self.rings[_RING_OF[window]]
        return summarise(
            ring.live(now, window.count),
            dimension=dimension,
            key=key,
            window=window.name,
            seconds=window.seconds,
            calls_now=self.calls,
            cps_now=self.cps(now),
        )

    def answers(self, window: Window, now: float) -> tuple[int, int]:
        """(attempts, answered) over the window: the two counts an ASR needs, without the
        rest of a summary (quality routing asks for them on every call)."""
        attempts = answered = 0
        for b in self.rings[_RING_OF[window]].live(now, window.count):
            attempts += b.attempts
            answered += b.answered
        return attempts, answered

    def idle(self, now: float) -> bool:
        """Nothing in progress and nothing in any window: the series may be forgotten."""
        return self.calls == 0 and all(ring.idle(now) for ring in self.rings)
