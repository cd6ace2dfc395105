"""The switch as a process: configuration in, engine and prober running, signals handled.

``softswitch run`` calls :func:`serve`. Signals, as operators expect them:

* SIGTERM / SIGINT: stop taking new calls (503 ``shutting_down``), wait up to
  ``[server] drain_timeout`` seconds for calls in progress, then hang up what is left (BYE
  to both sides, CDRs written) and exit 0.
* SIGHUP: reload the file and every deck *off the event loop*; when the whole new
  configuration is valid, swap the snapshot in one assignment (calls in progress keep the
  one they started with) and restart the prober; when not, log every problem and keep
  running on the old one. Listen addresses and the database are not changed by a reload.

The management HTTP API (``softswitch.management``, ``[management]``) runs in the same event
loop from the moment the switch listens until it stops; it reads and changes this object's
parts (engine, live state, snapshot, meter, statistics), never copies of them.

Registered contacts (``softswitch.registrar``) are loaded from the database at start, swept
of the expired every ``registrar.SWEEP_INTERVAL`` seconds, and kept across reloads (a reload
that takes ``register`` away from an account stops its contacts being used, not stored).

``[[alarms]]`` (``softswitch.alarms``) are evaluated on the same loop from the moment the
switch listens until it stops; a reload hands them the new rules and keeps what is raised.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from softswitch import __version__
from softswitch.alarms import AlarmRunner, Alarms
from softswitch.billing.meter import CreditMeter
from softswitch.call.authorise import make_authenticator
from softswitch.call.billing import deck_cost
from softswitch.call.live import LiveState
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrStore
from softswitch.config import Config, ConfigError, is_loopback, load_config
from softswitch.management import ManagementServer
from softswitch.media.control import media_control
from softswitch.media.metrics import MediaCollector
from softswitch.registrar import BindingWriter, Registrar, Registrations
from softswitch.registrar import load as load_bindings
from softswitch.stats import Statistics
from softswitch.stats.prometheus import Metrics
from softswitch.transport import Limits, Transport

from .collector import quiet_collector, restore_collector
from .engine import UDP_RECEIVE_BUFFER, Engine
from .pipeline import Pipeline
from .probe import Prober, ProbeTarget

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


class Switch:
    """Engine, pipeline, prober and CDR store of one running switch."""

    def __init__(self, config: Config, snapshot: Snapshot, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self.live = LiveState()
        self.cdrs = CdrStore(config.server.database)
        self.meter = CreditMeter(
            self.cdrs,
            config.server.database,
            self.cdrs.run_id,
            slice=config.billing.slice,
            sync_interval=config.billing.sync_interval,
        )
        nonces = make_authenticator(config, os.urandom(32))
        #: Live statistics and Prometheus metrics: the Switch keeps them, so reloads do too.
        self.stats = Statistics(metrics=Metrics())
        #: ``[[alarms]]`` on those statistics; raised alarms survive reloads too.
        self.alarms = Alarms(self.stats, self.live, metrics=self.stats.metrics)
        self.alarms.configure(config, time.monotonic())
        self._alarm_runner = AlarmRunner(self.alarms)
        #: Registered contacts (``softswitch.registrar``), loaded at start, kept across
        #: reloads; the writer keeps them in the ``registrations`` table of the database.
        self.registrations = Registrations()
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
        self.registrar = Registrar(
            self.registrations,
            BindingWriter(config.server.database),
            snapshot=lambda: self.pipeline.snapshot,
            nonces=nonces,
            live=self.live,
            guard=guard,
        )
        self._sweeper: asyncio.Task[None] | None = None
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
        self.prober = Prober(self.engine.options, self.live.mark_gateway)
        self._reloading: asyncio.Task[bool] | None = None
        #: Why the last reload was refused (every problem, one per line); None after a good one.
        self.reload_error: str | None = None
        self.management = ManagementServer(self)

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
        try:
            await asyncio.to_thread(self.cdrs.recover, rate)
        except Exception:
            logger.exception("closing the calls of a dead run failed; retried at the next start")
        # Balances after recovery: the dead run's calls are debited by now.
        await asyncio.to_thread(self.meter.load)
        # Who was registered when the last run stopped (the expired ones are dropped).
        bindings = await asyncio.to_thread(load_bindings, self.cdrs.path, time.time())
        for binding in bindings:
            self.registrations.put(binding)
        if bindings:
            logger.warning("registrations: %d live contacts loaded", len(bindings))
        self.pipeline.trust_registrations()
        self._sweeper = asyncio.get_running_loop().create_task(self.registrar.sweep_forever())
        self.meter.start()
        if self.media is not None:
            await self.media.start()
        for item in listen:
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
        self.prober.start(probe_targets(self.pipeline.snapshot))
        self._alarm_runner.start()
        # The management API last: it shows (and may change) a switch that takes calls.
        await self.management.start(self.config.management)

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
        if config.server.database.resolve() != self.cdrs.path.resolve():
            return (
                f"server.database: the switch writes {self.cdrs.path}; a reload cannot move"
                f" it to {config.server.database} (restart to change it)"
            )
        return None

    def request_reload(self) -> asyncio.Task[bool]:
        """Start a reload (SIGHUP, the management API) unless one runs; the one running."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self.reload())
        return self._reloading

    @property
    def reloading(self) -> asyncio.Task[bool] | None:
        """The reload in progress, if any."""
        task = self._reloading
        return None if task is None or task.done() else task

    async def stop(self, grace: float) -> None:
        self.pipeline.draining = True
        await self.engine.drain(grace)
        # The API stays up while calls drain (an operator watches them, or hangs one up).
        await self.management.stop()
        await self._alarm_runner.stop()
        await self.prober.stop()
        await self.engine.close()
        if self.media is not None:
            await self.media.close()  # after the calls' deletes are sent
        await self.meter.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.registrar.writer is not None:
            await asyncio.to_thread(self.registrar.writer.close)
        self.cdrs.close()


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


def _load(path: Path) -> tuple[Config, Snapshot]:
    config = load_config(path)
    return config, build_snapshot(config)


async def serve(
    config: Config,
    *,
    config_path: Path | None = None,
    listen: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the switch until SIGTERM/SIGINT (or ``stop`` is set), then drain and exit."""
    snapshot = await asyncio.to_thread(build_snapshot, config)
    switch = Switch(config, snapshot, config_path)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_collector(config.server.gc_threshold)
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, switch.request_reload)
        await switch.start(listen or config.server.listen)
        print(
            f"softswitch: ready ({len(config.accounts)} accounts, "
            f"{len(config.gateways)} gateways, CDRs in {config.server.database}, "
            f"event loop {type(loop).__module__.split('.')[0]})",
            flush=True,
        )
        await stop.wait()
        logger.warning("stopping: draining %d calls", switch.engine.active_calls)
    finally:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await switch.stop(switch.config.server.drain_timeout)
        finally:
            restore_collector()
