"""When the switch looks for reference cycles: when live objects grew, not as it allocates.

Reference counting frees a call's objects the moment the engine lets the call go: the
engine cuts the one cycle a call had (call <-> branch), and
``test_finished_calls_leave_no_reference_cycle`` holds an answered call and a failed-over
one to that. The cyclic collector is then a safety net, and CPython's default schedule
makes it an expensive one for a signalling process:

* a call's objects live for seconds (a BYE transaction absorbs retransmissions for 32 s),
  so nearly every object survives the young collections and is traversed by each
  generation on its way to the old one. That work finds nothing to free;
* measured with ``benches/sipp_load.py`` at 1,000 calls/s on two cores, collections cost
  about a fifth of the event loop's CPU and paused it for up to a quarter of a second.
  With them off, the same switch carried 1,000 calls/s step after step; with them on,
  the second step failed every time (4 of 4 runs);
* a full pass walks every live object, about a second at 1,000 calls/s on that machine; a
  periodic full pass collapses a loaded step (tried: a pass every 15 s failed every step).

CPython counts, for its youngest generation, container objects made minus container
objects freed since the last pass, never going below zero. With a large threshold a pass
runs only when the live containers have grown by that much above their lowest point since
the last pass. At a steady load calls end as fast as they start and the count stays level,
so no pass runs; a load that keeps growing, or a defect that leaks cycles, triggers one.
Only containers count: strings and bytes (most of a message's memory) ride along with the
containers holding them, so memory is bounded by the threshold only loosely.

``[server] gc_threshold`` (objects, read at start) sets it. The default, 2,000,000, is above
what 1,000 calls/s keeps alive (about 0.8 million); a pass that does trigger walks the
young objects, about two seconds at the default on two cores, and every tenth pass also
the older ones. Every pass is logged at INFO with its pause, so an operator can see one.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

__all__ = ["quiet_collector", "restore_collector"]

logger = logging.getLogger("softswitch.proxy.collector")

_started: list[float] = []
# (thresholds, enabled) from before the first quiet_collector, and how many switches in this
# process asked for it (two switches in one process restore only when both stopped).
_saved: list[tuple[tuple[int, int, int], bool]] = []
_users = [0]


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


def quiet_collector(threshold: int) -> None:
    """Collect once, freeze start-up objects out of every pass, then collect on growth only.

    Pair every call with :func:`restore_collector`.
    """
    if threshold < 1:
        raise ValueError("threshold must be >= 1")
    if _users[0] == 0:
        # Only the first: a second switch in the process must not pause the first one's
        # calls with a full pass, nor freeze them for good.
        gc.collect()
        gc.freeze()
        _saved.append((gc.get_threshold(), gc.isenabled()))
        gc.callbacks.append(_log)
    _users[0] += 1
    gc.set_threshold(threshold, 10, 10)
    gc.enable()


def restore_collector() -> None:
    """The collector as it was before :func:`quiet_collector`, once its last user stopped.

    Frozen objects stay frozen: they are start-up objects, and unfreezing would also undo
    a freeze made by the embedding program.
    """
    if _users[0] == 0:
        return
    _users[0] -= 1
    if _users[0]:
        return
    if _log in gc.callbacks:
        gc.callbacks.remove(_log)
    _started.clear()
    thresholds, enabled = _saved.pop()
    gc.set_threshold(*thresholds)
    if not enabled:
        gc.disable()
