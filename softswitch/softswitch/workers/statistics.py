"""Statistics across workers: every worker's call events, counted by the primary.

``Statistics`` is fed five kinds of event by the pipeline (a call started, ended or was
refused; a gateway seized or released). With several workers the primary (worker 0) keeps
the statistics the management API, ``/metrics`` and the alarms read; each other worker
sends it every event over a Unix datagram socket pair the supervisor made before the fork
(pickled: the socket pair is reachable by these processes only), and the primary records
it as if it had happened there. A worker also records its own events locally, without
Prometheus metrics, because quality routing (``call.quality``) reads a gateway's recent ASR
in the worker that routes the call; that ASR is the worker's.

Events travel in batches: what a worker records within :data:`FLUSH_AFTER` (at most
:data:`BATCH` events) goes as one datagram, so a call's four events cost the two processes
one send and one receive rather than four of each, and the primary sees them a few
milliseconds late. ``ForwardingStatistics.flush`` sends what waits at once: a worker that
stops calls it last.

Sends never block the call path: when the primary falls behind and the socket's buffer is
full, the batch is dropped and its events counted, and the count is logged (at most once a
minute). The supervisor keeps both ends open, so events sent while the primary restarts
wait for it.

A worker that dies never sends the ends of its calls in progress, nor the events still
waiting in its batch. Every event names its worker, so the primary knows each worker's
calls in progress and gateway claims; the supervisor, having reaped a worker, sends
:data:`WORKER_DIED` on the same channel (after everything that worker sent), and the
primary drops what that worker still held (``Statistics.calls_lost``). A primary that
restarts starts its statistics from nothing: its windows, and the levels of the calls in
progress then; the ends of those calls later find no start and are clamped at zero rather
than pushing a level below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import time
from collections import Counter
from typing import Any, Final

from softswitch.stats import Statistics
from softswitch.stats.events import CallEnded, CallRefused, CallStarted

__all__ = ["WORKER_DIED", "ForwardingStatistics", "StatsInbox", "stats_channel", "worker_died"]

logger = logging.getLogger("softswitch.workers")

#: Bytes of socket buffer asked for on both ends (Linux caps it at net.core.[rw]mem_max).
_BUFFER: Final = 4 * 1024 * 1024
#: How long a worker's events wait for others to share their datagram (seconds): short
#: beside any statistics window, long enough that a busy worker sends tens at once.
FLUSH_AFTER: Final = 0.005
#: Events in one datagram at most (a pickled event is a few hundred bytes: well under
#: what the primary reads at once, :data:`_DATAGRAM`).
BATCH: Final = 64
_DATAGRAM: Final = 256 * 1024
_REPORT_EVERY: Final = 60.0
_KINDS: Final = frozenset(
    ("call_started", "call_ended", "call_refused", "gateway_seized", "gateway_released")
)


#: The supervisor's message: ``(WORKER_DIED, worker index, monotonic now)``.
WORKER_DIED: Final = "worker_died"


def worker_died(outbox: socket.socket, index: int) -> None:
    """Tell the primary that worker ``index`` died (the supervisor, having reaped it)."""
    try:
        outbox.send(pickle.dumps((WORKER_DIED, index, time.monotonic()), pickle.HIGHEST_PROTOCOL))
    except OSError as exc:
        logger.warning("statistics: cannot tell worker 0 that worker %d died: %s", index, exc)


def stats_channel() -> tuple[socket.socket, socket.socket]:
    """(the primary's end, the other workers' end): made by the supervisor before the fork."""
    inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock, option in ((inbox, socket.SO_RCVBUF), (outbox, socket.SO_SNDBUF)):
        with contextlib.suppress(OSError):  # the system default then
            sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
        sock.setblocking(False)
    return inbox, outbox


class ForwardingStatistics(Statistics):
    """A non-primary worker's statistics: recorded here, and sent to the primary."""

    def __init__(self, outbox: socket.socket, worker: int) -> None:
        super().__init__(metrics=None)
        self._outbox = outbox
        self._worker = worker
        self.dropped = 0
        self._reported = 0.0
        self._waiting: list[tuple[str, Any, float, int]] = []
        self._timer: asyncio.TimerHandle | None = None

    def _send(self, kind: str, event: Any, now: float) -> None:
        self._waiting.append((kind, event, now, self._worker))
        if len(self._waiting) >= BATCH:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a tool, a test): nothing would flush it later
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Send the waiting events now, as one datagram."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        if waiting:
            self._send_batch(waiting)

    def _send_batch(self, waiting: list[tuple[str, Any, float, int]]) -> None:
        data = pickle.dumps(waiting, pickle.HIGHEST_PROTOCOL)
        if len(data) > _DATAGRAM // 2 and len(waiting) > 1:
            # Calls with very many attempts make big events: halves, each within what the
            # primary reads at once and the socket's buffer takes.
            half = len(waiting) // 2
            self._send_batch(waiting[:half])
            self._send_batch(waiting[half:])
            return
        try:
            self._outbox.send(data)
        except (BlockingIOError, OSError) as exc:
            self.dropped += len(waiting)
            wall = time.monotonic()
            if wall - self._reported >= _REPORT_EVERY:
                self._reported = wall
                logger.warning(
                    "statistics: %d events not sent to worker 0 so far (%s)", self.dropped, exc
                )

    def call_started(self, event: CallStarted, now: float) -> None:
        super().call_started(event, now)
        self._send("call_started", event, now)

    def call_ended(self, event: CallEnded, now: float) -> None:
        super().call_ended(event, now)
        self._send("call_ended", event, now)

    def call_refused(self, event: CallRefused, now: float) -> None:
        super().call_refused(event, now)
        self._send("call_refused", event, now)

    def gateway_seized(self, gateway: str, now: float) -> None:
        super().gateway_seized(gateway, now)
        self._send("gateway_seized", gateway, now)

    def gateway_released(self, gateway: str, now: float) -> None:
        super().gateway_released(gateway, now)
        self._send("gateway_released", gateway, now)


class StatsInbox:
    """The primary's end: each event from another worker recorded in ``stats``."""

    def __init__(self, inbox: socket.socket, stats: Statistics) -> None:
        self._inbox = inbox
        self._stats = stats
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Per worker: its calls in progress (by account, destination, prefix) and its
        #: gateway claims, as its events told; what its death leaves to drop.
        self._calls: dict[int, Counter[tuple[str, str | None, str | None]]] = {}
        self._claims: dict[int, Counter[str]] = {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._inbox.fileno(), self._read)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._inbox.fileno())
            self._loop = None

    def _read(self) -> None:
        for _ in range(256):  # then let the loop serve SIP before reading on
            try:
                data = self._inbox.recv(_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            try:
                message = pickle.loads(data)
                if message[0] == WORKER_DIED:
                    self._drop(*message[1:])
                    continue
                batch: list[tuple[str, Any, float, int]] = list(message)
            except Exception:
                logger.exception("statistics: an unreadable event from a worker")
                continue
            for kind, event, now, worker in batch:
                if kind in _KINDS:
                    try:
                        self._track(kind, event, worker)
                        getattr(self._stats, kind)(event, now)
                    except Exception:
                        logger.exception("statistics: an unreadable event from a worker")

    def _track(self, kind: str, event: Any, worker: int) -> None:
        if kind == "call_started" or kind == "call_ended":
            key = (event.account, event.destination, event.prefix)
            calls = self._calls.setdefault(worker, Counter())
            if kind == "call_started":
                calls[key] += 1
            elif calls[key] > 1:
                calls[key] -= 1
            else:
                del calls[key]
        elif kind == "gateway_seized" or kind == "gateway_released":
            claims = self._claims.setdefault(worker, Counter())
            if kind == "gateway_seized":
                claims[event] += 1
            elif claims[event] > 1:
                claims[event] -= 1
            else:
                del claims[event]

    def _drop(self, worker: int, now: float) -> None:
        """Worker ``worker`` died: its calls in progress and claims leave the levels."""
        calls = self._calls.pop(worker, Counter())
        claims = self._claims.pop(worker, Counter())
        lost = [CallStarted(*key) for key, n in calls.items() for _ in range(n)]
        released = [gateway for gateway, n in claims.items() for _ in range(n)]
        if lost or released:
            logger.warning(
                "statistics: worker %d died with %d calls in progress and %d gateway"
                " claims; dropped from the levels",
                worker,
                len(lost),
                len(released),
            )
            self._stats.calls_lost(lost, released, now)
