"""PDD's fixed-bin histogram and its 95th percentile: a p95 without keeping every sample.

A window's p95 must be mergeable across time buckets and cheap to record, so each bucket
counts PDDs into fixed bins (a sparse ``{bin: count}``) instead of keeping the values. The
bins are fine where PDD usually lies and coarse where only the order of magnitude matters:

    [0 s, 1 s)     10 ms wide   bins 0-99
    [1 s, 10 s)    100 ms wide  bins 100-189
    [10 s, 60 s)   1 s wide     bins 190-239
    [60 s, ...)    one bin      bin 240 (its upper edge is the largest PDD seen)

A value sits in the bin whose lower edge is <= it and whose upper edge is > it (values are
whole milliseconds, so 10 ms is in the second bin, ``[10, 20)``).

The p95 rule, exactly: sort the window's ``n`` PDDs; the nearest-rank 95th percentile is the
one at rank ``ceil(0.95 * n)`` (1-based). Its bin is the first whose cumulative count reaches
that rank; the reported p95 is that bin's upper edge, or the largest PDD of the window if that
is smaller. It is never below the true percentile and at most one bin width above it: 10 ms
below 1 s, 100 ms below 10 s, 1 s below 60 s.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["OVERFLOW_BIN", "bin_upper_ms", "pdd_bin", "percentile_ms"]

#: The one bin for 60 s and more.
OVERFLOW_BIN = 240


def pdd_bin(ms: int) -> int:
    """The bin of a PDD of ``ms`` whole milliseconds (a negative one counts as 0)."""
    if ms < 1000:
        return ms // 10 if ms > 0 else 0
    if ms < 10_000:
        return 100 + (ms - 1000) // 100
    if ms < 60_000:
        return 190 + (ms - 10_000) // 1000
    return OVERFLOW_BIN


def bin_upper_ms(index: int) -> int | None:
    """The bin's upper edge in milliseconds (exclusive); None for the overflow bin."""
    if index < 100:
        return (index + 1) * 10
    if index < 190:
        return 1000 + (index - 99) * 100
    if index < OVERFLOW_BIN:
        return 10_000 + (index - 189) * 1000
    return None


def percentile_ms(
    bins: Mapping[int, int], count: int, max_ms: int, percent: int = 95
) -> int | None:
    """The module's percentile rule over ``bins`` holding ``count`` values whose largest is
    ``max_ms``; None when there are none. ``percent`` is a whole number (95 for p95)."""
    if count <= 0:
        return None
    rank = (percent * count + 99) // 100  # ceil(percent/100 * count), in integers
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            upper = bin_upper_ms(index)
            return max_ms if upper is None else min(upper, max_ms)
    return max_ms  # unreachable when count matches bins; the honest answer if it does not
