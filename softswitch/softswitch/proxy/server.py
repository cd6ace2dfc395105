"""The switch as a process: configuration in, engine and prober running, signals handled.

``softswitch run`` calls :func:`serve`. Signals, as operators expect them:

* SIGTERM / SIGINT: stop taking new calls (503 ``shutting_down``), wait up to
  ``[server] drain_timeout`` seconds for calls in progress, then hang up what is left (BYE
  to both sides, CDRs written) and exit 0.
* SIGHUP: reload the file and every deck *off the event loop*; when the whole new
  configuration is valid, swap the snapshot in one assignment (calls in progress keep the
  one they started with) and restart the prober; when not, log every problem and keep
  running on the old one. Listen addresses and the database are not changed by a reload.
  A SIGHUP during a reload is answered by the next one, which starts when it ends (the
  running one may have read the file before the edit that SIGHUP is for).

The management HTTP API (``softswitch.management``, ``[management]``) runs in the same event
loop from the moment the switch listens until it stops; it reads and changes this object's
parts (engine, live state, snapshot, meter, statistics), never copies of them.

Registered contacts (``softswitch.registrar``) are loaded from the database at start, swept
of the expired every ``registrar.SWEEP_INTERVAL`` seconds, and kept across reloads (a reload
that takes ``register`` away from an account stops its contacts being used, not stored).

``[[alarms]]`` (``softswitch.alarms``) are evaluated on the same loop from the moment the
switch listens until it stops; a reload hands them the new rules and keeps what is raised.

One of several workers (``softswitch.workers``, ``seat`` given): the supervisor bound the
sockets and made the shared live state; the management API, the prober and the alarms run in
the primary worker only, and the supervisor hears "ready" from each worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from softswitch import __version__
from softswitch.alarms import AlarmRunner, Alarms
from softswitch.billing.meter import CreditMeter
from softswitch.call.authorise import make_authenticator
from softswitch.call.billing import deck_cost
from softswitch.call.live import LiveState
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cancelling import cancel_and_wait
from softswitch.config import Config, ConfigError, ConfigProblem, is_loopback, load_config
from softswitch.management import ManagementServer
from softswitch.management.calls import answer_peer
from softswitch.media.control import media_control
from softswitch.media.metrics import MediaCollector
from softswitch.registrar import BindingWriter, Registrar, Registrations
from softswitch.registrar import load as load_bindings
from softswitch.registrar.node_sync import NodeSync
from softswitch.stats import Statistics
from softswitch.stats.prometheus import Metrics
from softswitch.store.opening import describe_database, open_cdr_store
from softswitch.store.recovery import STALE_HEARTBEATS
from softswitch.store.sweep import RecoverySweep
from softswitch.transport import Limits, Transport
from softswitch.workers.statistics import ForwardingStatistics

from .collector import quiet_collector, restore_collector
from .engine import UDP_RECEIVE_BUFFER, Engine
from .pipeline import Pipeline
from .probe import Prober, ProbeTarget

if TYPE_CHECKING:
    from softswitch.cluster.admission import SharedLimits
    from softswitch.workers.seat import Seat

__all__ = ["Switch", "serve"]

logger = logging.getLogger("softswitch.proxy.server")


def _listen_item(text: str) -> tuple[Transport, tuple[str, int]]:
    proto, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    transport = Transport.TCP if proto.lower() == "tcp" else Transport.UDP
    return transport, (host.strip("[]"), int(port))


def probe_targets(snapshot: Snapshot) -> list[ProbeTarget]:
    return [
        ProbeTarget(
            g.id,
            Transport.TCP if g.transport == "tcp" else Transport.UDP,
            g.address,
            g.probe,
        )
        for g in snapshot.config.gateways
        if g.enabled and g.probe > 0 and g.registered is None
    ]


def _same_database(a: Path | str, b: Path | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.resolve() == b.resolve()


class Switch:
    """Engine, pipeline, prober and CDR store of one running switch."""

    def __init__(
        self,
        config: Config,
        snapshot: Snapshot,
        config_path: Path | None,
        seat: Seat | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        #: This process's place among several workers (None: the one process).
        self.seat = seat
        self.live = LiveState() if seat is None else seat.live()
        #: Where CDRs, open calls, the ledger and registrations live (``softswitch.store``):
        #: read at start only, as the reload refuses to move it.
        self.database = config.server.database
        self.cdrs = open_cdr_store(self.database)
        self.meter = CreditMeter(
            self.cdrs,
            self.database,
            self.cdrs.run_id,
            slice=config.billing.slice,
            sync_interval=config.billing.sync_interval,
        )
        # A secret of this process's own, never shared with the other workers: a nonce is
        # then good at the one process that keeps its nonce counts, so a captured request
        # replayed with another Call-ID (to reach another worker) or after a restart gets
        # ``stale``, never a call. A client's request that answers a challenge carries the
        # challenged request's Call-ID, so it reaches the worker that issued the nonce.
        nonces = make_authenticator(config, os.urandom(32))
        #: Live statistics and Prometheus metrics: the Switch keeps them, so reloads do too.
        #: A worker other than the primary records its own and sends them to the primary,
        #: which counts every worker's (``softswitch.workers.statistics``).
        forwarding = None if seat is None else seat.statistics()
        self.stats = forwarding if forwarding is not None else Statistics(metrics=Metrics())
        self._inbox = None if seat is None else seat.inbox(self.stats)
        #: The primary's line to the other workers' live calls (None: one process, or
        #: not the primary); the management API lists and hangs up through it.
        self.peers = None if seat is None else seat.peers()
        #: ``[[alarms]]`` on those statistics; raised alarms survive reloads too.
        self.alarms = Alarms(self.stats, self.live, metrics=self.stats.metrics)
        self.alarms.configure(config, time.monotonic())
        self._alarm_runner = AlarmRunner(self.alarms)
        #: Registered contacts (``softswitch.registrar``), loaded at start, kept across
        #: reloads; the writer keeps them in the ``registrations`` table of the database.
        #: Several workers share their changes (``workers.registrations``).
        self.registrations = Registrations() if seat is None else self._seat_registrations(seat)
        self.pipeline = Pipeline(
            snapshot,
            self.live,
            nonces,
            self.cdrs,
            meter=self.meter,
            stats=self.stats,
            registrations=self.registrations,
        )
        guard = self.pipeline.guard
        if seat is not None:
            guard.share_pike(seat.count)  # one source's packets are spread over the workers
        self.registrar = Registrar(
            self.registrations,
            BindingWriter(self.database),
            snapshot=lambda: self.pipeline.snapshot,
            nonces=nonces,
            live=self.live,
            guard=guard,
            keeper=seat is None or seat.primary,
        )
        if seat is not None:
            from softswitch.workers.credit import WorkerCredit

            # Billed accounts' credit across the workers (Redis's, if set, replaces it).
            self.meter.share_credit(WorkerCredit.of(seat.shared, seat.index), "workers")
        self._sweeper: asyncio.Task[None] | None = None
        #: Other nodes' registrations on a shared PostgreSQL (``registrar.node_sync``).
        self._node_sync: NodeSync | None = None
        self._recovery: RecoverySweep | None = None
        #: The media relays (None without ``[[media_relays]]``): read at start only.
        self.media = media_control(config)
        metrics = self.stats.metrics
        if self.media is not None and metrics is not None:
            metrics.registry.register(MediaCollector(self.media))
        self.engine = Engine(
            self.pipeline,
            limits=transport_limits(config),
            user_agent=f"softswitch/{__version__}",
            source_filter=guard.packet,
            media=self.media,
        )
        self.meter.hang_up = self.engine.hang_up
        self.engine.registrar = self.registrar
        #: ``[server] shared_state``: the account limits across nodes (None: per node);
        #: connected in :meth:`start`, read at start only.
        self.shared: SharedLimits | None = None
        self.prober = Prober(self.engine.options, self.live.mark_gateway)
        self._reloading: asyncio.Task[None] | None = None
        #: Why the last reload was refused (every problem, one per line); None after a good one.
        self.reload_error: str | None = None
        self.management = ManagementServer(self)
        self._answer_calls = answer_peer(self.engine)
        self._answerer = None if seat is None else seat.answerer(self._answer_calls)
        #: The requests another worker owns, handed to it (``workers.handoff``).
        self._handoff = None if seat is None else seat.handoff()
        #: Reload asks not answered yet, for the next run (``request_reload``).
        self._reload_asks: list[asyncio.Future[bool]] = []
        #: The management API's reloads asked of the supervisor, waiting for its SIGHUP.
        self._relayed: list[asyncio.Future[bool]] = []
        self._reloads_stopped = False

    def _seat_registrations(self, seat: Seat) -> Registrations:
        """A worker's registered contacts, kept in step with the other workers' through
        the journal in shared memory; another worker's contact is trusted here too."""
        from softswitch.workers.registrations import SharedRegistrations

        database = self.database
        shared = SharedRegistrations(
            seat.shared.bindings,
            seat.index,
            lambda: load_bindings(database, time.time(), settled=True),
        )
        shared.learned = lambda binding: self.pipeline.guard.trust(binding.source_ip)
        return shared

    async def start(self, listen: Sequence[str]) -> None:
        """Close the calls a dead run left open, listen on every address, then start
        probing; warn about a config that refuses all.

        An address that cannot be bound raises ``OSError`` whose message names it, e.g.
        ``cannot listen on udp:127.0.0.1:5060: address already in use``.
        """
        for warning in self.config.warnings():
            logger.warning("%s", warning)
        # Calls that were up when an earlier run died (kill -9, crash, power cut): their CDRs,
        # rated as a normal CDR is, before this run takes a call. Off the event loop.
        rate = functools.partial(deck_cost, self.pipeline.snapshot)
        # Then, across workers, the credit a dead predecessor held is let go (failed: retried).
        await self.meter.recover_then_take_over(
            functools.partial(self.cdrs.recover, rate), self.cdrs.heartbeat_interval
        )
        # Balances after recovery: the dead run's calls are debited by now.
        await asyncio.to_thread(self.meter.load)
        # Who was registered when the last run stopped (the expired ones are dropped).
        # A worker reads the tombstones too: they judge the ring's changes (``restore``).
        settled = self.registrations.shared_table
        bindings = await asyncio.to_thread(
            functools.partial(load_bindings, settled=settled), self.database, time.time()
        )
        self.registrations.restore(bindings)
        live = len(self.registrations.every())
        if live:
            logger.warning("registrations: %d live contacts loaded", live)
        self.pipeline.trust_registrations()
        if self.registrar.writer is not None and self.registrar.writer.postgres:
            # Other nodes on the database take REGISTERs too: theirs, as they commit.
            self._node_sync = NodeSync(
                str(self.database),
                self.registrations,
                learned=lambda binding: self.pipeline.guard.trust(binding.source_ip),
            )
            self._node_sync.start()
        self._sweeper = asyncio.get_running_loop().create_task(self.registrar.sweep_forever())
        self.meter.start()
        if self.primary:
            # A dead node's (or worker's) calls settled while we run, not at the next start.
            self._recovery = RecoverySweep(
                self.cdrs, rate, self.cdrs.heartbeat_interval, self.meter.refresh
            )
            self._recovery.start()
        await self._share_limits(listen)
        if self.media is not None:
            await self.media.start()
        if self.seat is not None:
            await self._listen_seat(self.seat)
        for item in listen if self.seat is None else ():
            transport, addr = _listen_item(item)
            try:
                bound = await self.engine.listen(transport, addr)
            except OSError as exc:
                shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
                where = f"{transport.name.lower()}:{shown}:{addr[1]}"
                reason = os_reason(exc)
                raise OSError(f"cannot listen on {where}: {reason}") from exc
            host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            print(
                f"softswitch: listening on {transport.name.lower()}:{host}:{bound[1]}", flush=True
            )
        if self._answerer is not None:
            self._answerer.start()
        if not self.primary:
            return
        if self._inbox is not None:
            self._inbox.start()
        self.prober.start(probe_targets(self.pipeline.snapshot))
        self._alarm_runner.start()
        # The management API last: it shows (and may change) a switch that takes calls.
        await self.management.start(self.config.management)

    def _credit_grace(self, lease: float = 10.0) -> float:
        """Seconds this node's credit holds in Redis count after its last renewal, should it
        die: until another node's sweep finds its run dead (its heartbeat
        ``STALE_HEARTBEATS`` intervals old, then the next sweep, one more interval), settles
        its calls in the ledger, and every node has read those debits (``sync_interval``:
        this node's stands for every node's, so give them one), plus a lease of slack; at
        most an hour (a ``sync_interval`` that long reads debits later than it covers)."""
        from softswitch.cluster.leases import MAX_GRACE  # with the rest of cluster: lazily

        heartbeat = self.cdrs.heartbeat_interval
        settled = (STALE_HEARTBEATS + 1) * heartbeat + self.config.billing.sync_interval
        return min(settled + lease, MAX_GRACE)

    async def _share_limits(self, listen: Sequence[str]) -> None:
        """With ``[server] shared_state``: this process's client of the limits every node
        shares, before any call is taken. Each worker of several is a client of its own
        (``<node_id>/<index>``): Redis then counts every worker's calls exactly, and a
        worker's death frees its slots by its own lease."""
        server = self.config.server
        if server.shared_state is None:
            return
        from softswitch.cluster.admission import SharedLimits
        from softswitch.cluster.errors import SharedStateConfigError
        from softswitch.cluster.metrics import SharedStateCollector

        node_id = server.node_id or default_node_id(listen)
        if self.seat is not None:
            node_id = f"{node_id}/{self.seat.index}"
        shared = SharedLimits(server.shared_state, node_id, grace=self._credit_grace())
        try:
            await shared.start()
        except SharedStateConfigError as e:  # an id in use, a password Redis refuses
            key = "server.node_id" if "node id" in str(e) else "server.shared_state"
            where = str(self.config_path) if self.config_path is not None else "configuration"
            raise ConfigError([ConfigProblem(where, key, str(e))]) from None
        self.shared = shared
        self.pipeline.shared = shared
        # Billed accounts' credit across nodes too: Redis's counters span every worker of
        # every node, so they replace the workers' shared memory.
        self.meter.share_credit(shared.credit, "nodes")
        self.engine.shared_admission = self.pipeline.shared_admit
        self.engine.shared_gateway = self.pipeline.shared_claim
        shared.blocks.start(self._mirror_block)  # blocks found in Redis, into ours
        metrics = self.stats.metrics
        if metrics is not None:
            metrics.registry.register(SharedStateCollector(shared))

    def _mirror_block(self, ip: str, seconds_left: float) -> bool:
        """A block across nodes into this node's own list (the guard's and authorise's):
        whether it is new here."""
        blocks = self.pipeline.live.blocks
        now = time.monotonic()
        new = not blocks.is_blocked(ip, now)
        return blocks.block(ip, now + seconds_left, now) and new

    @property
    def primary(self) -> bool:
        """The one process, or the primary of several workers (API, prober, alarms)."""
        return self.seat is None or self.seat.primary

    async def _listen_seat(self, seat: Seat) -> None:
        """A worker's sockets, bound by its supervisor; its siblings' own ports are ours.

        Its own ports and its siblings' first, the shared listen sockets last: a restarted
        worker finds INVITEs queued in its listen socket while it was dead, and handles them
        as soon as that socket is adopted; relayed before its own port was, their Via and
        Record-Route would name the shared port, and the answers would go to whichever
        worker the kernel picks. The hand-off diverts from the first listen datagram on,
        and takes the handed ones once every listen socket is there to answer from."""
        for _, address in seat.own_addresses:
            self.engine.add_ours(address)
        handoff = self._handoff
        if handoff is not None:
            from softswitch.workers.handoff import blocked_sources

            # A blocked source is dropped before it costs a hand-off (and its owner's queue).
            self.engine.transport.blocked = blocked_sources(self.pipeline.guard)
            self.engine.transport.divert = handoff.divert
        for own_first in (True, False):
            for transport, sock, own in seat.sockets.sockets:
                if own is own_first:
                    await self.engine.adopt(transport, sock, own=own)
        if handoff is not None:
            handoff.start(self.engine.transport.inject)

    async def reload(self) -> bool:
        """Load the file and its decks again; swap them in atomically if all is valid."""
        if self.config_path is None:
            logger.warning("reload asked, but the demo configuration has no file to re-read")
            return False
        path = self.config_path
        try:
            config, snapshot = await asyncio.to_thread(_load, path)
        except ConfigError as exc:
            logger.error("reload refused, keeping the running configuration:\n%s", exc)
            self.reload_error = str(exc)
            return False
        refusal = self._reload_refusal(config)
        if refusal is not None:
            logger.error("reload refused, keeping the running configuration: %s", refusal)
            self.reload_error = refusal
            return False
        self.reload_error = None
        if (config.media, config.media_relays) != (self.config.media, self.config.media_relays):
            logger.warning("[media] and [[media_relays]] are read at start: restart to change them")
        self.config = config
        # Bindings of accounts whose credentials changed go first: taking the snapshot
        # re-trusts the addresses of the bindings left.
        self.registrar.forget_changed(self.pipeline.snapshot, snapshot)
        self.pipeline.use(snapshot)  # the one assignment calls see
        if self.shared is not None:  # [billing] sync_interval is part of the grace
            self.shared.set_grace(self._credit_grace())
        if self.seat is not None:  # the slots of ids the configuration no longer has
            self.seat.shared.forget_absent(config)
            self.seat.shared.running.record(config)  # what a restarted worker will run
        self.alarms.configure(config, time.monotonic())  # new rules; raised alarms kept
        self._alarm_runner.wake()
        # [server] realm and digest_algorithms change with it (authorise reads the realm from
        # the snapshot, the challenges from the authenticator). The authenticator itself is
        # kept, so nonce counts carry over. A client answering a challenge of the old realm
        # is challenged again; one answering with an algorithm no longer offered is refused
        # once, then challenged again.
        nonces = self.pipeline.nonces
        nonces.realm = config.server.realm
        nonces.algorithms = config.server.digest_algorithms
        if self.primary:
            self.prober.start(probe_targets(snapshot))
        logger.warning("configuration reloaded from %s", path)
        print("softswitch: reloaded", flush=True)
        return True

    def _reload_refusal(self, config: Config) -> str | None:
        """Why ``config`` cannot be taken while running (None: it can). What was bound at
        start stays bound: the API on a non-loopback address must keep a token, and the
        database the CDR writer and the credit meter use cannot move under them."""
        bound = self.management.address
        if bound is not None and not is_loopback(bound[0]) and not config.management.token:
            return (
                f"management.token: required while the management API listens on"
                f" {bound[0]}:{bound[1]} (not a loopback address); restart to change listen"
            )
        if self.media is None and config.media_relays:
            return (
                "media_relays: the switch started without media relays and reads them at"
                " start only; restart to add them"
            )
        if self.seat is not None:  # the workers' shared tables, sized at start
            refused = self.seat.shared.refusal(config)
            if refused is not None:
                return refused
        if not _same_database(config.server.database, self.database):
            return (
                f"server.database: the switch writes {describe_database(self.database)}; a"
                f" reload cannot move it to {describe_database(config.server.database)}"
                " (restart to change it)"
            )
        return None

    def request_reload(self) -> asyncio.Future[bool]:
        """Ask this process for a reload (its SIGHUP): the verdict of the first reload that
        starts after this ask, so it has read the file as it is now.

        One reload runs at a time. An ask while one runs waits for the next, which every
        ask made meanwhile shares: two SIGHUPs after two edits end on the second edit (the
        running reload may have read the file before it), and a stream of asks never
        leaves one waiting for more than the running reload and its own."""
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[bool] = loop.create_future()
        if self._reloads_stopped:
            verdict.set_result(False)
            return verdict
        self._reload_asks.append(verdict)
        if self._reloading is None or self._reloading.done():
            self._reloading = loop.create_task(self._run_reloads())
        return verdict

    def reload_everywhere(self) -> asyncio.Future[bool]:
        """A reload of every worker (the management API): this one's verdict.

        One process: :meth:`request_reload`. Several workers: a SIGHUP to the supervisor,
        which passes it on as it does an operator's (numbered, ``workers.reload_acks``; to
        a worker restarting, once it listens; its own stop deadline read again), and this
        worker's verdict is that of the reload its SIGHUP starts. A supervisor that does not
        pass it on within :data:`RELOAD_RELAY_TIMEOUT` (stopping) leaves this worker to
        reload on its own."""
        seat = self.seat
        if seat is None or seat.supervisor is None:
            return self.request_reload()
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[bool] = loop.create_future()
        self._relayed.append(verdict)

        def not_relayed() -> None:
            if verdict in self._relayed:
                self._relayed.remove(verdict)
                logger.warning("the supervisor did not pass the reload on: reloading here")
                _chain(self.request_reload(), verdict)

        loop.call_later(RELOAD_RELAY_TIMEOUT, not_relayed)
        os.kill(seat.supervisor, signal.SIGHUP)
        return verdict

    def sighup(self) -> asyncio.Future[bool]:
        """This process's SIGHUP: a reload, whose verdict also answers the management API's
        asks the supervisor relayed here (:meth:`reload_everywhere`)."""
        verdict = self.request_reload()
        relayed, self._relayed = self._relayed, []
        for waiting in relayed:
            _chain(verdict, waiting)
        return verdict

    async def _run_reloads(self) -> None:
        """:meth:`reload` for the asks queued, each run answering those made before it
        started, until none is left (or the switch stops)."""
        while self._reload_asks and not self._reloads_stopped:
            asks, self._reload_asks = self._reload_asks, []
            try:
                done = await self.reload()
            except asyncio.CancelledError:
                for verdict in asks:
                    verdict.cancel()
                raise
            except Exception as exc:  # a bug: logged, its asks answered with it, and the
                # asks made meanwhile still get their run (helper-87)
                logger.exception("reload failed")
                for verdict in asks:
                    if not verdict.done():
                        verdict.set_exception(exc)
                        verdict.exception()  # a SIGHUP's ask is not awaited: no second log
                continue
            for verdict in asks:
                if not verdict.done():
                    verdict.set_result(done)

    async def _stop_reloads(self) -> None:
        """No reload after the stop (a reload running is cancelled: its load, in a thread,
        ends on its own; its swap never happens), and the asks waiting are cancelled: a run
        after the stop restarted the prober of a closed engine (helper-86)."""
        self._reloads_stopped = True
        running = self._reloading
        if running is not None and not running.done():
            await cancel_and_wait(running)
        for verdict in [*self._reload_asks, *self._relayed]:
            verdict.cancel()
        self._reload_asks.clear()
        self._relayed.clear()

    @property
    def reloading(self) -> asyncio.Task[None] | None:
        """The reloads in progress (the one running and those asked meanwhile), if any."""
        task = self._reloading
        return None if task is None or task.done() else task

    async def stop(self, grace: float) -> None:
        self.pipeline.draining = True
        await self.engine.drain(grace)
        # The API stays up while calls drain (an operator watches them, or hangs one up).
        await self.management.stop()
        await self._stop_reloads()
        await self._alarm_runner.stop()
        await self.prober.stop()
        if self._handoff is not None:  # nothing handed is taken once the sockets close
            self._handoff.stop()
        await self.engine.close()
        if self.shared is not None:
            await self.shared.close()  # after the calls ended: their slots are back
        if self._inbox is not None:
            self._inbox.stop()
        if isinstance(self.stats, ForwardingStatistics):
            self.stats.flush()  # the ends of the calls just drained, to the primary
        if self._answerer is not None:
            self._answerer.stop()
        if self.media is not None:
            await self.media.close()  # after the calls' deletes are sent
        if self._recovery is not None:
            await self._recovery.close()
        await self.meter.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._node_sync is not None:
            await asyncio.to_thread(self._node_sync.stop)
        if self.registrar.writer is not None:
            await asyncio.to_thread(self.registrar.writer.close)
        self.cdrs.close()


def default_node_id(listen: Sequence[str]) -> str:
    """``<hostname>:<port>``, the port of the first listen address: unique among the nodes
    of a cluster as long as no two of one host listen on the same port."""
    port = _listen_item(listen[0])[1][1] if listen else 5060
    return f"{socket.gethostname()}:{port}"


def os_reason(exc: OSError) -> str:
    """Why a bind failed, in the errno's words ("address already in use"), which uvloop
    keeps on the cause; the loop's own wording repeats the address less clearly."""
    errors = (exc, exc.__cause__, exc.__context__)
    coded = [e for e in errors if isinstance(e, OSError) and e.errno]
    first = coded[0] if coded else exc
    if first.errno and first.errno > 0:
        reason = os.strerror(first.errno)
    else:  # socket.gaierror: a resolver code, not an errno
        reason = first.strerror or str(first)
    return reason[:1].lower() + reason[1:]


def transport_limits(config: Config) -> Limits:
    """``[server]``'s TCP caps and timeouts as the transport's limits (read at start)."""
    server = config.server
    return Limits(
        udp_receive_buffer=UDP_RECEIVE_BUFFER,
        max_connections=server.tcp_max_connections,
        max_connections_per_ip=server.tcp_max_per_ip,
        idle_timeout=server.tcp_idle_timeout,
        header_timeout=server.tcp_header_timeout,
    )


def _on_sighup(switch: Switch, seat: Seat | None) -> None:
    if seat is None:
        switch.sighup()
        return
    upto = seat.reload_asked()  # before the reload reads the file

    def over(verdict: asyncio.Future[bool]) -> None:
        if not verdict.cancelled():  # cancelled: the worker stops before reloading
            seat.reloaded(upto)

    switch.sighup().add_done_callback(over)


def _chain(source: asyncio.Future[bool], target: asyncio.Future[bool]) -> None:
    """``target`` gets ``source``'s outcome."""

    def copy(done: asyncio.Future[bool]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
            target.exception()
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


#: Seconds the management API's reload waits for the supervisor to pass its SIGHUP on.
RELOAD_RELAY_TIMEOUT: Final = 5.0


def _sighup_while_stopping() -> None:
    logger.warning("reload asked while stopping: ignored")


def _load(path: Path) -> tuple[Config, Snapshot]:
    config = load_config(path)
    return config, build_snapshot(config)


async def serve(
    config: Config,
    *,
    config_path: Path | None = None,
    listen: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    seat: Seat | None = None,
) -> None:
    """Run the switch until SIGTERM/SIGINT (or ``stop`` is set), then drain and exit.

    ``seat``: this process is one of several workers (``softswitch.workers.supervisor``)."""
    snapshot = await asyncio.to_thread(build_snapshot, config)
    switch = Switch(config, snapshot, config_path, seat)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_collector(config.server.gc_threshold)
    # A worker drains on the supervisor's SIGTERM only. A terminal's Ctrl-C (SIGINT) reaches
    # the whole process group: the supervisor turns it into that SIGTERM, and a worker that
    # took the SIGINT itself would find the default action back (its handlers go when the
    # drain starts) and be killed by the SIGTERM in the middle of its drain.
    stop_signals = (signal.SIGINT, signal.SIGTERM) if seat is None else (signal.SIGTERM,)
    if seat is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for sig in stop_signals:
            loop.add_signal_handler(sig, stop.set)
        # Several workers: the supervisor passes SIGHUP to each, none asks the others, and
        # each says when the reload a SIGHUP started is over (``workers.reload_acks``).
        loop.add_signal_handler(signal.SIGHUP, _on_sighup, switch, seat)
        await switch.start(listen or config.server.listen)
        if seat is not None:
            seat.ready()  # the supervisor says "ready" when every worker has
        else:
            print(
                f"softswitch: ready ({len(config.accounts)} accounts, "
                f"{len(config.gateways)} gateways,"
                f" CDRs in {describe_database(config.server.database)}, "
                f"event loop {type(loop).__module__.split('.')[0]})",
                flush=True,
            )
        await stop.wait()
        logger.warning("stopping: draining %d calls", switch.engine.active_calls)
    finally:
        try:
            for sig in stop_signals:
                loop.remove_signal_handler(sig)
            # Not SIGHUP's default (it ends the process: a reload during the drain dropped
            # the calls being drained; helper-87): logged and ignored.
            loop.add_signal_handler(signal.SIGHUP, _sighup_while_stopping)
            await switch.stop(switch.config.server.drain_timeout)
        finally:
            restore_collector()
