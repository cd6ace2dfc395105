"""The switch's last hour as a time series, for the dashboard's charts (``GET /api/history``).

The statistics answer *windows* (sums over the last 5 minutes, hour, day: ``stats``); a
chart needs a line. So the management server samples the switch-wide series itself: once a
second it reads ``Statistics.query("switch", "all", "5m")`` (the one object the API and
alarms read), and every :data:`EVERY` seconds it keeps a point in a ring of :data:`POINTS`
(one hour). Nothing on the call path changes; the cost is one query a second (a few to a
few tens of microseconds) and about 120 KB for a full ring.

Why sample rather than read the statistics' buckets: the buckets of the hour hold one
minute each and keep only *peaks* of concurrency and CPS, so they cannot say how many calls
were up at a moment, and they are the stats package's insides. Sampling reads only its
public answer. The price: history starts when the switch starts (it is not kept across a
restart, like the statistics), and a point's ASR, ACD and PDD are those of the 5 minutes
before it (a rolling figure, as an operator watches them), not of the point's 5 seconds.

A point:

    t          wall-clock time of the sample (ISO 8601, UTC)
    calls      admitted calls in progress at that moment
    cps        attempts per second over the point's seconds: the mean of the per-second
               counts (each whole second read once, just after it ends; a second the loop
               was too late to read is left out of the mean, never counted twice)
    attempts, answered, asr, acd, pdd
               the switch's 5-minute window at that moment (``pdd``: its average)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from ..cancelling import cancel_and_wait
from .errors import ApiError, json_response
from .table import INTEGER, NUMBER, STRING, TIME, Endpoint, Param, array, nullable, obj, query_time

__all__ = ["ENDPOINTS", "EVERY", "HISTORY", "POINTS", "History"]

logger = logging.getLogger("softswitch.management")

#: Seconds between two points.
EVERY: Final = 5
#: Points kept: one hour.
POINTS: Final = 3600 // EVERY
#: The window each point's ASR, ACD and PDD are over.
WINDOW: Final = "5m"
#: How long after a whole second the sampler reads it (the loop may run a little late).
_AFTER: Final = 0.05


class _Statistics(Protocol):
    def query(self, dimension: str, key: str, window: str, now: float) -> Any: ...


@dataclass(frozen=True, slots=True)
class Point:
    at_ms: int
    calls: int
    cps: float
    attempts: int
    answered: int
    asr: float | None
    acd: float | None
    pdd: float | None

    def view(self) -> dict[str, Any]:
        at = dt.datetime.fromtimestamp(self.at_ms / 1000, dt.UTC)
        return {
            "t": at.isoformat(timespec="milliseconds"),
            "calls": self.calls,
            "cps": self.cps,
            "attempts": self.attempts,
            "answered": self.answered,
            "asr": self.asr,
            "acd": self.acd,
            "pdd": self.pdd,
        }


class History:
    """The ring of points and the task that fills it (started and stopped with the API).

    ``clock`` is the statistics' monotonic clock, ``wall`` the time printed on a point; both
    are parameters so tests drive them (:meth:`tick`) without waiting.
    """

    def __init__(
        self,
        stats: _Statistics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats
        self._clock = clock
        self._wall = wall
        self._points: deque[Point] = deque(maxlen=POINTS)
        self._task: asyncio.Task[None] | None = None
        #: The whole second read last, and the per-second counts since the last point.
        self._read = -1
        self._arrivals = 0
        self._seconds = 0
        self._due: float | None = None

    def tick(self, now: float) -> None:
        """Read the second that just ended; keep a point when one is due."""
        summary = self.stats.query("switch", "all", WINDOW, now)
        second = math.floor(now) - 1  # the whole second ``cps.current`` counts
        if second != self._read:
            self._read = second
            self._arrivals += int(summary["cps"]["current"])
            self._seconds += 1
        if self._due is None:
            self._due = now + EVERY
            return
        if now < self._due:
            return
        # The next point EVERY seconds after this one was due; or after now, when the loop
        # fell a whole step behind (a stalled loop must not produce a burst of points).
        self._due = now + EVERY if now - self._due >= EVERY else self._due + EVERY
        pdd = summary["pdd"]["avg"]
        self._points.append(
            Point(
                at_ms=round(self._wall() * 1000),
                calls=int(summary["concurrent"]["current"]),
                cps=round(self._arrivals / self._seconds, 3) if self._seconds else 0.0,
                attempts=int(summary["attempts"]),
                answered=int(summary["answered"]),
                asr=summary["asr"],
                acd=summary["acd"],
                pdd=pdd,
            )
        )
        self._arrivals = self._seconds = 0

    def points(self, since_ms: int | None = None) -> list[dict[str, Any]]:
        """The points after ``since_ms`` (wall-clock milliseconds), oldest first."""
        return [p.view() for p in self._points if since_ms is None or p.at_ms > since_ms]

    async def _run(self) -> None:
        while True:
            now = self._clock()
            # Just after the next whole second, so each tick reads a second that has ended.
            await asyncio.sleep(math.floor(now) + 1 + _AFTER - now)
            try:
                self.tick(self._clock())
            except Exception:  # a bug here must not end the history, nor the switch
                logger.exception("dashboard history: a sample failed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)


#: The switch's history, kept in the application (``app[HISTORY]``; absent: no statistics).
HISTORY = web.AppKey("history", History)


async def get_history(request: web.Request) -> web.StreamResponse:
    history = request.app.get(HISTORY)
    if history is None:
        raise ApiError(503, "this switch keeps no statistics")
    since = query_time(request, "since")
    since_ms = None if since is None else round(since.timestamp() * 1000)
    return json_response({"every": EVERY, "window": WINDOW, "points": history.points(since_ms)})


POINT = obj(
    {
        "t": TIME,
        "calls": {**INTEGER, "description": "admitted calls in progress then"},
        "cps": {**NUMBER, "description": "attempts per second over the point's seconds"},
        "attempts": {**INTEGER, "description": "attempts in the 5 minutes before it"},
        "answered": {**INTEGER, "description": "answered calls in the 5 minutes before it"},
        "asr": nullable(NUMBER),
        "acd": nullable({**NUMBER, "description": "seconds"}),
        "pdd": nullable({**NUMBER, "description": "average, seconds"}),
    }
)

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/history",
        get_history,
        "The switch's last hour, a point every 5 seconds",
        "statistics",
        description=(
            "Switch-wide figures sampled by the server every 5 s into a ring of one hour (the"
            " dashboard's charts): calls in progress, attempts per second, and the 5-minute"
            " window's attempts, answered, ASR, ACD and average PDD at each point. Starts"
            " empty when the switch starts. Ask with `since` (the last `t` you have) to get"
            " only newer points."
        ),
        query=(Param("since", "only points after this ISO 8601 time (UTC without an offset)"),),
        response=obj(
            {
                "every": {**INTEGER, "description": "seconds between points"},
                "window": {**STRING, "description": "the window of attempts ... pdd"},
                "points": array(POINT),
            }
        ),
        errors={400: "a malformed since", 503: "the switch keeps no statistics"},
    ),
)
