"""The supervisor of ``softswitch run --workers N`` (N > 1): no SIP, only processes.

At start, before any fork: the sockets (``sockets``), the shared live state (``live``), the
statistics channel (``statistics``). Then the workers are forked (the fork start method:
each child runs ``proxy.server.serve`` with its :class:`Seat`): the primary first, alone
until it listens (it migrates the database and closes the calls of a dead run with no
sibling racing it), then the others together (the statistics and live-call channels too:
``statistics``, ``peers``); "softswitch: ready" is printed once every one of them listens.
A worker that fails before it is ready stops the start: every worker is stopped and the
supervisor exits with that worker's status (2: the configuration or the database refused,
as one process exits), 1 when it gave none. A switch that cannot start one worker would not
start the next either.

Afterwards:

* a worker that dies is logged, its share of calls in the shared limits released, and it
  is started again after a back-off (0.5 s, doubling with each death in a row up to 30 s; a
  worker that ran a minute starts the count again). The new one re-reads the configuration
  file, so it runs what the others run since the last SIGHUP. The credit the dead worker
  held for billed accounts stays held until the new one has recovered its calls (their
  debits in the ledger) and takes it over (``workers.credit.WorkerCredit.take_over``); if
  the supervisor stops instead, every worker stops and the shared memory goes with them.
* SIGHUP is passed to every worker (each reloads as one process does). A worker restarted
  but not listening yet (it ignores SIGHUP until it can reload), or dead and waiting for its
  restart, may have read the configuration the others ran before this reload: it is passed
  the SIGHUP once it listens; so is the replacement of a worker that died before its
  reload was over (``reload_acks``). The supervisor reads the file's ``[server] drain_timeout``
  then too (a file that does not load changes nothing, logged);
* SIGTERM / SIGINT are passed to every worker (each drains as one process does); the
  supervisor exits 0 once all have exited (after ``drain_timeout`` + 30 s it kills those left:
  the file's as of the last reload, or the workers' own when longer, a reload they refused
  leaving them on theirs).
* a supervisor that is killed (``kill -9``) takes its workers with it (``PR_SET_PDEATHSIG``).

Signals are taken with ``sigtimedwait`` (blocked, never handled asynchronously), so the
supervisor is a plain loop with no handler racing it; a worker unblocks them after the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from softswitch.config import Config, ConfigError, load_config
from softswitch.store.errors import StoreError
from softswitch.store.opening import describe_database

from . import MAX_WORKERS
from .handoff import handoff_channels
from .live import SharedState
from .peers import peer_channels
from .seat import Seat
from .sockets import WorkerSockets, bind_worker_sockets, close_all
from .statistics import stats_channel, worker_died
from .steering import SteeringKey

__all__ = ["Supervisor"]

logger = logging.getLogger("softswitch.workers")

_PR_SET_PDEATHSIG: Final = 1
_SIGNALS: Final = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
#: Seconds a worker has to listen after its fork.
START_TIMEOUT: Final = 60.0
_BACKOFF_FIRST: Final = 0.5
_BACKOFF_MAX: Final = 30.0
#: A worker that lived this long before dying is restarted after the first back-off.
_STABLE_AFTER: Final = 60.0
#: Seconds beyond ``drain_timeout`` a stopping worker has before it is killed.
KILL_GRACE: Final = 30.0

Runner = Callable[[Config, Path | None, Sequence[str] | None, Seat], int]


class Supervisor:
    """Forks ``workers`` workers, each running ``run(config, path, listen, seat)`` (its exit
    status), and keeps them running until SIGTERM/SIGINT."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int,
        run: Runner,
        config_path: Path | None = None,
        listen: Sequence[str] | None = None,
        steering_key: SteeringKey | None = None,
    ) -> None:
        if workers > MAX_WORKERS:
            raise ValueError(f"at most {MAX_WORKERS} workers, got {workers}")
        self.config = config
        self.config_path = config_path
        self.listen = list(listen or config.server.listen)
        self.workers = workers
        self._run = run
        self._sockets: list[WorkerSockets] = []
        self._shared: SharedState | None = None
        self._pids: dict[int, int] = {}  # pid -> worker index
        self._started: dict[int, float] = {}  # worker index -> when it was forked
        self._deaths: dict[int, int] = {}  # worker index -> deaths in a row
        self._due: dict[int, float] = {}  # worker index -> when to start it again
        self._ready_r = -1
        #: The exit status of a worker that failed at start (0: none did, or by a signal).
        self._start_failure = 0
        self._ready_w = -1
        self._stats: list[socket.socket] = []  # the primary's end, the others' end
        self._peers: list[tuple[socket.socket, socket.socket]] = []
        self._handoff: list[tuple[socket.socket, socket.socket]] = []
        #: SIGTERM/SIGINT came during the start: stop the started workers, exit 0.
        self._stop_asked = False
        #: Workers forked and not listening yet (each says so with a byte on the pipe).
        self._starting: set[int] = set()
        #: Workers owed a SIGHUP once they listen: a reload came during the start (every
        #: worker, once all listen), or while the worker was starting again or waiting to.
        self._hup_queued: set[int] = set()
        #: ``[server] drain_timeout`` of the file as of the last reload (the start's first).
        self._drain_timeout = config.server.drain_timeout
        #: The Call-ID hash's key of the listen groups' programs and of every worker's
        #: hand-off (through its ``Seat``), for the supervisor's whole life: a restarted
        #: worker is forked from it and hashes as the kernel does. A new random one per
        #: start by default; a test passes its own to know each Call-ID's owner.
        self.steering_key = SteeringKey.random() if steering_key is None else steering_key

    # -- the whole life ------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise, stop; the exit status (0 after a clean stop)."""
        self._sockets = bind_worker_sockets(
            self.listen,
            self.workers,
            self.config.server.worker_port_base,
            steer_by_call_id=self.config.server.steer_by_call_id,
            steering_key=self.steering_key,
        )
        self._shared = SharedState.for_config(self.config, workers=self.workers)
        self._ready_r, self._ready_w = os.pipe()
        self._stats = list(stats_channel())
        self._peers = peer_channels(self.workers)
        self._handoff = handoff_channels(self.workers)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            # The primary first: it migrates the database and closes a dead run's calls
            # alone; then the others, together.
            self._spawn(0)
            ok = self._wait_ready({0})
            if ok:
                for index in range(1, self.workers):
                    self._spawn(index)
                ok = self._wait_ready(set(range(1, self.workers)))
            if not ok:
                self._stop_all()
                if self._stop_asked:  # asked to stop: the workers drained, a clean stop
                    return 0
                # A worker's own verdict when it gave one (2: the configuration or the
                # database refused), else 1.
                return self._start_failure or 1
            self._announce()
            if self._hup_queued:
                logger.warning("reload asked during the start: passing SIGHUP to the workers")
                self._hup_queued.clear()
                self.reread_config()
                for index in self._pids.values():
                    self._shared.reload_acks.ask(index)
                self._signal_all(signal.SIGHUP)
            self._supervise()
            return 0
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            close_all(self._sockets)
            os.close(self._ready_r)
            os.close(self._ready_w)
            for sock in [*self._stats, *(end for pair in self._peers for end in pair)]:
                sock.close()
            for sock in (end for pair in self._handoff for end in pair):
                sock.close()

    def _announce(self) -> None:
        for item in self.listen:
            print(f"softswitch: listening on {item} ({self.workers} workers)", flush=True)
        for index, group in enumerate(self._sockets):
            own = ", ".join(
                f"{t.name.lower()}:{_host(a[0])}:{a[1]}" for t, a in group.own_addresses()
            )
            print(f"softswitch: worker {index} own port {own}", flush=True)
        config = self.config
        print(
            f"softswitch: ready ({len(config.accounts)} accounts, {len(config.gateways)}"
            f" gateways, CDRs in {describe_database(config.server.database)},"
            f" {self.workers} workers)",
            flush=True,
        )

    # -- workers -------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        assert self._shared is not None
        own = tuple(a for group in self._sockets for a in group.own_addresses())
        group = self._sockets[index]
        supervisor = os.getpid()
        seat = Seat(
            index,
            self.workers,
            self._shared,
            group,
            own,
            self._ready_w,
            self._stats[0],
            self._stats[1],
            tuple(self._peers),
            tuple(self._handoff),
            supervisor,
        )
        self._shared.reload_acks.reset(index)
        pid = os.fork()
        if pid == 0:  # the worker
            _die_with(supervisor)
            code = 1
            try:
                code = self._worker(seat)
            except BaseException:
                logger.exception("worker %d failed", index)
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        self._pids[pid] = index
        self._starting.add(index)
        self._started[index] = time.monotonic()
        logger.info("worker %d started (pid %d)", index, pid)

    def _worker(self, seat: Seat) -> int:
        """In the child: fresh signal state, the siblings' sockets dropped, then the switch."""
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop takes it over
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.close(self._ready_r)
        close_all(self._sockets, keep=seat.sockets)
        seat.close_unused()
        _tag_logs(seat.index)
        config = self.config
        if seat.index in self._deaths:
            # A restart: what the others run (their last reload), else the start's; the
            # file only when that one was too large to record (``running_config``).
            assert self._shared is not None
            running = self._shared.running.read()
            if isinstance(running, Config):
                config = running
            elif running is False and self.config_path is not None:
                try:
                    config = load_config(self.config_path)
                except ConfigError as exc:
                    logger.error("the configuration does not load; starting the start's:\n%s", exc)
        return self._run(config, self.config_path, self.listen, seat)

    def _wait_ready(self, waiting: set[int]) -> bool:
        """The ``waiting`` workers listening (True), or one that died or took too long, or
        SIGTERM/SIGINT came (False)."""
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"softswitch: workers {sorted(waiting)} not ready in time", file=sys.stderr)
                return False
            readable, _, _ = select.select([self._ready_r], [], [], min(left, 0.2))
            if readable:
                for byte in os.read(self._ready_r, 256):
                    waiting.discard(byte)
                    self._starting.discard(byte)
            for pid, status in self._reap():
                index = self._pids.pop(pid)
                if os.WIFEXITED(status):
                    self._start_failure = os.WEXITSTATUS(status)
                print(
                    f"softswitch: worker {index} exited at start ({_status(status)})",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            info = signal.sigtimedwait(_SIGNALS - {signal.SIGCHLD}, 0)
            if info is not None and info.si_signo == signal.SIGHUP:
                self._hup_queued.update(range(self.workers))
            elif info is not None:
                self._stop_asked = True
                return False
        return True

    def _supervise(self) -> None:
        while True:
            wait = 1.0
            if self._due:
                wait = max(0.0, min(self._due.values()) - time.monotonic())
            info = signal.sigtimedwait(_SIGNALS, min(wait, 1.0))
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self._stop_all()
                return
            self._drain_ready()
            # Deaths first: a worker that died is restarted later, and owed the reload.
            for pid, status in self._reap():
                self._died(pid, status)
            if info is not None and info.si_signo == signal.SIGHUP:
                self._reload()
            now = time.monotonic()
            for index, when in list(self._due.items()):
                if when <= now:
                    del self._due[index]
                    self._spawn(index)

    def _reload(self) -> None:
        """SIGHUP: to every worker that listens; owed to those starting again or waiting
        to (each may have read the configuration the others ran before this reload, and
        one starting ignores SIGHUP until it can reload), passed once each listens."""
        self.reread_config()
        late = self._starting | set(self._due)
        self._hup_queued.update(late)
        now = sorted(pid for pid, index in self._pids.items() if index not in late)
        assert self._shared is not None
        for pid in now:
            self._shared.reload_acks.ask(self._pids[pid])
        if late:
            logger.warning(
                "reload: passing SIGHUP to workers (pids %s); workers %s get it once they"
                " listen (restarting)",
                now,
                sorted(late),
            )
        else:
            logger.warning("reload: passing SIGHUP to workers (pids %s)", now)
        for pid in now:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def reread_config(self) -> None:
        """The file's ``[server] drain_timeout`` for the stop's deadline (a reload: the
        workers drain for the reloaded value); a file that does not load keeps the value."""
        if self.config_path is None:
            return
        try:
            drain_timeout = load_config(self.config_path).server.drain_timeout
        except (ConfigError, OSError) as exc:
            logger.error(
                "reload: the configuration does not load; the supervisor keeps"
                " drain_timeout %g s for the stop's deadline:\n%s",
                self._drain_timeout,
                exc,
            )
            return
        self._drain_timeout = drain_timeout

    def kill_after(self) -> float:
        """Seconds a stop gives the workers before it kills those left: ``KILL_GRACE``
        beyond the longest ``drain_timeout`` they may drain for, the file's as of the last
        reload or what they run (their last reload accepted, else the start's)."""
        running: Config | bool | None = None
        if self._shared is not None:
            try:
                running = self._shared.running.read()
            except Exception:  # a record that does not read: the start's then
                logger.exception("the configuration the workers run does not read")
        ran = running if isinstance(running, Config) else self.config
        return max(self._drain_timeout, ran.server.drain_timeout) + KILL_GRACE

    def _died(self, pid: int, status: int) -> None:
        index = self._pids.pop(pid)
        self._starting.discard(index)
        assert self._shared is not None
        released = self._shared.release_worker(index)
        lived = time.monotonic() - self._started.get(index, 0.0)
        deaths = 1 if lived >= _STABLE_AFTER else self._deaths.get(index, 0) + 1
        self._deaths[index] = deaths
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (deaths - 1))
        logger.error(
            "worker %d (pid %d) died (%s) after %.1f s; its %d call counts (accounts' and"
            " gateways') released from the shared limits (its credit held is let go by its"
            " replacement, once recovery has debited its calls); restarting it in %.1f s",
            index,
            pid,
            _status(status),
            lived,
            released,
            delay,
        )
        self._due[index] = time.monotonic() + delay
        if self._shared.reload_acks.unanswered(index):
            # It may have died before reading the file, and before any worker recorded the
            # reloaded configuration its replacement would start on.
            self._hup_queued.add(index)
            logger.warning(
                "worker %d died before its reload was over: its replacement gets SIGHUP"
                " once it listens",
                index,
            )
        worker_died(self._stats[1], index)  # the primary drops its calls from the levels

    def _stop_all(self) -> None:
        """SIGTERM to every worker; wait until all have exited (then kill what is left)."""
        self._due.clear()
        if self._pids:
            logger.warning("stopping: %d workers draining", len(self._pids))
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.kill_after()
        while self._pids:
            if time.monotonic() > deadline:
                logger.error("workers (pids %s) still running: killing them", sorted(self._pids))
                self._signal_all(signal.SIGKILL)
                deadline = float("inf")
            info = signal.sigtimedwait(_SIGNALS, 0.2)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self._signal_all(signal.SIGTERM)
            for pid, status in self._reap():
                index = self._pids.pop(pid)
                if status != 0:
                    logger.warning("worker %d exited (%s)", index, _status(status))

    def _signal_all(self, sig: int) -> None:
        for pid in list(self._pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _drain_ready(self) -> None:
        """Read the bytes of restarted workers that came up (nothing waits for them); pass
        each the SIGHUP it is owed."""
        while select.select([self._ready_r], [], [], 0)[0]:
            for index in os.read(self._ready_r, 256):
                if index not in self._starting:
                    continue
                self._starting.discard(index)
                if index in self._hup_queued:
                    self._hup_queued.discard(index)
                    pid = self.pids.get(index)
                    if pid is not None:
                        assert self._shared is not None
                        self._shared.reload_acks.ask(index)
                        logger.warning(
                            "reload asked while worker %d started: passing SIGHUP to it"
                            " now it listens (pid %d)",
                            index,
                            pid,
                        )
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGHUP)

    def _reap(self) -> list[tuple[int, int]]:
        out = []
        while self._pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self._pids:
                out.append((pid, status))
        return out

    @property
    def pids(self) -> dict[int, int]:
        """Worker index -> pid of the workers running now."""
        return {index: pid for pid, index in self._pids.items()}


def _die_with(supervisor: int) -> None:
    """The worker gets SIGKILL when its supervisor dies, however it dies (``kill -9``):
    a switch killed is killed whole, as one process is, and its restart finds the ports
    free and the dead run's calls to close. Linux's ``PR_SET_PDEATHSIG``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:
        logger.warning("a worker will outlive a killed supervisor: %s", exc)
    if os.getppid() != supervisor:  # it died before the request took effect
        os._exit(1)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _tag_logs(index: int) -> None:
    """Every log line of a worker says which: ``worker=N`` after the level."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        fmt = formatter._fmt if formatter is not None else None
        if fmt and "level=%(levelname)s" in fmt and "worker=" not in fmt:
            fmt = fmt.replace("level=%(levelname)s", f"level=%(levelname)s worker={index}")
            handler.setFormatter(logging.Formatter(fmt))


def run_worker(
    config: Config,
    config_path: Path | None,
    listen: Sequence[str] | None,
    seat: Seat,
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> int:
    """A worker's life: ``serve`` on a fresh event loop; its exit status."""
    from softswitch.proxy.server import serve

    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(serve(config, config_path=config_path, listen=listen, seat=seat))
    except ConfigError as exc:
        print(f"error: configuration refused:\n{exc}", file=sys.stderr)
        return 2
    except StoreError as exc:  # the database: unreachable, or `softswitch migrate` it first
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"softswitch: worker {seat.index}: {exc}", file=sys.stderr)
        return 1
    return 0
