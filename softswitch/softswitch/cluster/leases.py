"""A node's lease: the key that says "this node is alive, count what it holds".

``<prefix>:node:<node_id>`` holds the node's *incarnation* (random, new at every connect)
and expires ``lease`` seconds after it was last renewed (PX, on Redis's clock). A background
task renews it every ``lease / 3``. Hash fields are ``<node_id>#<incarnation>``, so:

* a node that dies (kill -9, a lost host) stops renewing; within ``lease`` seconds its key
  is gone and the next admission script on each counter deletes its fields: its calls stop
  counting against the limits and its credit reservations go back;
* a node restarted under the same id gets a new incarnation, so its previous run's fields
  stop counting at once; if the previous run was a process of this host that no longer
  exists (``incarnations``: a worker its supervisor restarts, a crash) it takes the key over
  at once, else it waits at connect for the old key to expire, at most ``lease``;
* two live processes started with one id cannot both hold the lease: the second one's
  connect fails with ``SharedStateConfigError`` once it has waited a lease for it;
* credit holds (``credit:<account>`` keys, ``keys.lingers``) outlive the lease by a
  ``grace``: each renewal also sets ``<prefix>:seen:<node_id>#<incarnation>`` to expire
  ``grace`` seconds later, and a dead holder's credit field counts while that key lives. A
  dead node's calls are debited only once another node's recovery finds its run dead and
  settles it; until then its reserved credit must stay counted somewhere, or another node
  would spend it again. A clean stop deletes the key with the lease;
* a node that loses its lease while alive (paused longer than ``lease``: a stopped process,
  a frozen VM, Redis unreachable for that long, Redis restarted without its data) notices
  at its next renewal or admission, logs a WARNING (``event=lease_lost``) and takes the
  lease again with the same incarnation, writing every holding it still has in one script
  (a key another call is writing at that moment is written by the next renewal).
  Between the expiry and that moment the other nodes did not count those holdings and may
  have admitted up to that much more: a pause longer than the lease overshoots the limits by
  at most what the paused node held (the log line says how long the lease was not renewed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

from .connection import Link
from .errors import SharedStateConfigError, SharedStateError, SharedStateUnavailableError
from .holdings import SWEEP, Holdings, Snapshot
from .incarnations import dead_here, new_incarnation
from .keys import Keys
from .scripts import LEASE, LEAVE

__all__ = ["MAX_GRACE", "NodeLease"]

#: The longest grace a node's credit holds may outlive its lease by (an hour).
MAX_GRACE = 3600.0

logger = logging.getLogger("softswitch.cluster")


class NodeLease:
    def __init__(
        self,
        link: Link,
        keys: Keys,
        node_id: str,
        lease: float,
        book: Holdings,
        *,
        grace: float = 0.0,
    ):
        if not node_id or any(c.isspace() for c in node_id):
            raise SharedStateConfigError(f"node id {node_id!r}: empty or has spaces")
        if not 0.3 <= lease <= 3600:
            raise SharedStateConfigError(f"lease {lease!r}: must be 0.3 to 3600 seconds")
        self.node_id = node_id
        self.incarnation = new_incarnation()
        self.field = f"{node_id}#{self.incarnation}"
        self.key = keys.node(node_id)
        self.seen_key = keys.seen(self.field)
        self.lease = lease
        #: Seconds this incarnation's credit holds count after its last renewal (0: none).
        self.grace = 0.0
        self.set_grace(grace)
        self.losses = 0
        """How many times this node found its lease gone and took it again."""
        self._link = link
        self._keys = keys
        self._book = book
        self._renewed_at: float | None = None
        self._failing = False
        #: Who held the data (``_server_id``) when the last renewal writing every key ran.
        self._server: str | None = None
        self._info_refused = False

    def set_grace(self, grace: float) -> None:
        """The grace of the renewals from now on: 0 (none) or from the lease to an hour."""
        if grace and not self.lease <= grace <= MAX_GRACE:
            raise SharedStateConfigError(
                f"grace {grace!r}: must be 0 (none) or from the lease ({self.lease}) to"
                f" {MAX_GRACE:g} seconds"
            )
        self.grace = grace

    @property
    def period(self) -> float:
        return self.lease / 3

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _write(self, mode: str, snapshot: Snapshot) -> int:
        keys = [self.key, self.seen_key, *(self._keys.hold(k) for k in snapshot)]
        args: list[str | int] = [
            self.incarnation,
            max(1, round(self.lease * 1000)),
            self.field,
            mode,
            max(0, round(self.grace * 1000)),
        ]
        args.extend(snapshot.values())
        code = int(await self._link.run(LEASE, keys, args))
        if code == 1 or (code == 0 and mode == "claim"):  # the lease and the amounts written
            self._renewed_at = self._now()
            self._book.repaired(snapshot)
        return code

    async def claim(self) -> None:
        """Take the lease at connect, waiting up to a lease (and a renewal period) for the
        key of a previous run under this id to expire."""
        deadline = self._now() + self.lease + self.period
        waited = False
        while await self._write("claim", {}) < 0:
            if await self._drop_dead():
                continue
            if self._now() >= deadline:
                raise SharedStateConfigError(
                    f"node id {self.node_id!r} is in use: another live process renews its"
                    f" lease {self.key!r}; give each node (and each worker) its own id"
                )
            if not waited:
                waited = True
                logger.info(
                    "shared state: node id %s still has a lease (a previous run?); waiting"
                    " up to %.1f s for it to expire",
                    self.node_id,
                    self.lease,
                    extra={"event": "lease_wait", "node_id": self.node_id},
                )
            await asyncio.sleep(min(0.1, self.period))

    async def _drop_dead(self) -> bool:
        """The lease is held by a process of this host that no longer exists (a worker the
        supervisor restarts, a crashed run): delete its key, if still that one's, at once."""
        holder = await self._link.command("GET", self.key)
        if not isinstance(holder, str) or not dead_here(holder):
            return False
        await self._link.run(LEAVE, [self.key], [holder, ""])
        logger.info(
            "shared state: node id %s was held by a dead process (%s); taking it over",
            self.node_id,
            holder,
            extra={"event": "lease_takeover", "node_id": self.node_id},
        )
        return True

    async def renew(self) -> None:
        """One renewal: the lease, and this node's field written from its own book
        (``Holdings.repairing``) on the keys it holds on, the unsure ones and a sweep's share
        of the rest. On every key it has ever held on when Redis's ``run_id`` is not the one
        of the last such write: a Redis that came back with older data (a restart from its
        last snapshot, a failover to a lagging replica) while the lease key survived has
        lost acquires or releases that no error reported, and would count this node's calls
        wrong until they end (:meth:`_server_id` says how that is seen). A Redis that will not
        say gets every key at every renewal."""
        server = await self._server_id()
        everything = server is None or server != self._server
        repair = self._book.repairing(everything=everything, sweep=SWEEP)
        async with repair as snapshot:
            code = await self._write("renew", snapshot)
        if code == 1 and everything:
            self._server = server
        if code < 0:
            self._taken()
        if code == 0:
            await self.regain()

    async def _server_id(self) -> str | None:
        """Who holds the data: the ``run_id`` of the Redis answering (new at each start of a
        server, so a restart or a failover to another server changes it) and its
        ``master_replid`` (new when a replica is promoted, and taken from its master when a
        server resyncs as a replica: a failover and a failback to the same process, which
        then serves the copy it resynced, keep the ``run_id`` but not this); None when it
        will not say (INFO not allowed)."""
        try:
            info = await self._link.command("INFO")
        except SharedStateUnavailableError:
            raise
        except SharedStateError as e:
            if not self._info_refused:
                self._info_refused = True
                logger.info(
                    "shared state: node %s cannot read Redis's run_id (%s): every renewal"
                    " writes every counter this node has held on",
                    self.node_id,
                    e,
                    extra={"event": "run_id_unknown", "node_id": self.node_id},
                )
            return None
        if not isinstance(info, dict):
            return None
        run_id, replid = info.get("run_id"), info.get("master_replid")
        if not isinstance(run_id, str) or not run_id:
            return None
        return f"{run_id}/{replid}"

    async def regain(self) -> None:
        """The lease is not ours in Redis (expired, or Redis lost it): take it again and
        write every holding this node has."""
        missed = None if self._renewed_at is None else self._now() - self._renewed_at
        async with self._book.repairing(everything=True) as snapshot:
            code = await self._write("claim", snapshot)
        if code < 0:
            self._taken()
        if code == 0:
            self.losses += 1
            logger.warning(
                "shared state: node %s lost its lease (not renewed for %s, lease %.1f s);"
                " took it again and re-registered %d held counters%s",
                self.node_id,
                "?" if missed is None else f"{missed:.1f} s",
                self.lease,
                sum(1 for held in snapshot.values() if held),
                "" if not self._book.unsure else f" ({len(self._book.unsure)} busy: next renewal)",
                extra={"event": "lease_lost", "node_id": self.node_id},
            )

    def _taken(self) -> NoReturn:
        raise SharedStateError(
            f"node id {self.node_id!r}: another process holds its lease {self.key!r};"
            " this node's holdings are not counted (two processes with one node id?)"
        )

    async def keep_alive(self) -> None:
        """The background task: renew every ``lease / 3`` until cancelled. Failures are
        logged once when they start and once when they stop."""
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.renew()
            except SharedStateError as e:
                if not self._failing:
                    logger.warning(
                        "shared state: node %s cannot renew its lease: %s",
                        self.node_id,
                        e,
                        extra={"event": "lease_renew_failed", "node_id": self.node_id},
                    )
                self._failing = True
                continue
            except Exception:  # a bug must not stop the renewals: the holdings would go
                logger.exception(
                    "shared state: node %s: renewal failed",
                    self.node_id,
                    extra={"event": "lease_renew_failed", "node_id": self.node_id},
                )
                continue
            if self._failing:
                self._failing = False
                logger.info(
                    "shared state: node %s renews its lease again",
                    self.node_id,
                    extra={"event": "lease_renewed", "node_id": self.node_id},
                )

    async def leave(self) -> None:
        """A clean stop: the lease and this node's fields go at once."""
        held = set(self._book.items()) | self._book.unsure
        keys = [self.key, self.seen_key, *(self._keys.hold(k) for k in sorted(held))]
        await self._link.run(LEAVE, keys, [self.incarnation, self.field], always=True)
