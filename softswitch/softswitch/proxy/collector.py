"""When the switch looks for reference cycles: when memory grew, not as it allocates.

Reference counting frees a call's objects the moment the engine lets the call go: the
engine cuts the one cycle a call had (call <-> branch), and a test holds the call flows to
that (``test_finished_calls_leave_no_reference_cycle``). The cyclic collector is then a
safety net, and CPython's default schedule makes it an expensive one for a signalling
process:

* a call's objects live for seconds (a BYE transaction absorbs retransmissions for 32 s),
  so nearly every object survives the young collections and is traversed by each
  generation on its way to the old one. That work finds nothing to free;
* measured with ``benches/sipp_load.py`` at 1,000 calls/s on two cores, collections cost
  about a fifth of the event loop's CPU and paused it for up to a quarter of a second.
  With them off, the same switch carried 1,000 calls/s step after step; with them on,
  the second step failed every time (4 of 4 runs);
* a full pass walks every live object, about a second at 1,000 calls/s on that machine: a
  periodic full pass collapses a loaded step (tried: a pass every 15 s failed every step).

CPython's young-generation threshold counts *net* new objects (allocations minus frees
since the last collection), so a large threshold means: collect only when the number of
live objects has grown by that much. At a steady load, calls end as fast as they start and
the count stays level, so no pass runs; a load that keeps growing, or a defect that leaks
cycles, triggers one, and memory stays bounded. ``[server] gc_threshold`` (objects)
sets it; the default, 2,000,000, is above what 1,000 calls/s keeps alive (about 0.8
million objects). Every pass is logged at INFO with how long it paused the loop.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "quiet_collector", "restore_collector"]

logger = logging.getLogger("softswitch.proxy.collector")

DEFAULT_THRESHOLD = 2_000_000

_started: list[float] = []
_saved: list[tuple[int, int, int]] = []


def _log(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
        return
    took = time.perf_counter() - _started.pop() if _started else 0.0
    logger.info(
        "cycle collection: generation %d, %d unreachable objects, paused %.3f s",
        info.get("generation", -1),
        info.get("collected", 0),
        took,
    )


def quiet_collector(threshold: int = DEFAULT_THRESHOLD) -> None:
    """Collect once, freeze start-up objects out of every pass, then collect on growth only."""
    if threshold < 1:
        raise ValueError("threshold must be >= 1")
    if not _saved:
        _saved.append(gc.get_threshold())
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 10, 10)
    if _log not in gc.callbacks:
        gc.callbacks.append(_log)
    gc.enable()


def restore_collector() -> None:
    """The thresholds from before :func:`quiet_collector` (an embedded switch stopped)."""
    if _log in gc.callbacks:
        gc.callbacks.remove(_log)
    _started.clear()
    gc.unfreeze()
    if _saved:
        gc.set_threshold(*_saved.pop())
