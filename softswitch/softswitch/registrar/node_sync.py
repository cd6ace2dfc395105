"""Registered contacts across nodes that share one PostgreSQL database, kept in step by
PostgreSQL's ``LISTEN``/``NOTIFY``.

Behind a load balancer or DNS SRV a device registers through one node and is called
through any. Every node's writer announces each change its commit made to the
``registrations`` table on :data:`~.store.CHANNEL`, in the same transaction
(``registrar.store``): the notice is delivered when, and only if, the change is in the
table, and notices arrive in commit order. A :class:`NodeSync` per process (each worker of
a node has its own, as it has its own index and writer, so no worker waits for another to
pass changes on) listens on a connection of its own, in a thread of its own, and hands
the notices to the event loop, which applies them to the index with the rules the table
follows (``Registrations.put_if_newer`` and ``forget_if_older``, which the workers' journal
applies too):

- a binding replaces the index's binding of its contact only when registered at the same
  time or later (this node may hold a newer REGISTER its writer has not committed yet);
- a tombstone (an unregister) removes a binding registered at its time or earlier, and so
  does a deleted row (an expiry, a reload's drop), as the table's retire does;
- the binding carries the fingerprint of the credentials its REGISTER passed, and the
  index judges it against *this* node's configuration (``registrar.credentials``): one
  made under a password this node does not have (not reloaded yet, or already rotated) is
  indexed but routes no call, authorises none and trusts no source.

This node's own notices come back too; they carry the same binding or an older one, so
applying them changes nothing and they are not told apart.

The notice carries the binding, fingerprint included, so a burst of them costs one query
(the check below) rather than one per change. A notice that would not fit in ``NOTIFY``'s
8000 bytes says "read everything" instead.

A notice is not trusted on its own word: any role that may connect to the database may
``NOTIFY``, so each batch of notices is checked against the table in one query
(``NodeSync._backed``) and only the changes the table bears out, fingerprint and all, are
applied; forging one takes writing the table, as before there were notices. The fingerprint
is a SHA-256 of the account's credentials (``registrar.credentials``), readable by any role
that may ``LISTEN`` on the database or read the table: grant access to that database as you
would read access to the SIP passwords' digests.

A lost connection loses the notices sent meanwhile. The thread reconnects with backoff
(:data:`RECONNECT_DELAYS`), ``LISTEN``\\s, then reads the whole table (after ``LISTEN``, so a
commit after the read is notified) and reconciles: a row registered later than the index's
binding replaces it, or removes it when the row is a tombstone or expired. Rows carry their
fingerprint (schema migration 3; an older row's is "" and counts as made under the
credentials in force). The same read runs when the listener starts. The event loop never
waits: the thread reads and decodes, the loop applies (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from softswitch.store.postgres_connect import connect as connect_postgres

from .bindings import Binding, Registrations
from .store import CHANNEL, SELECT_BINDINGS, binding_of, binding_of_notice

__all__ = ["POLL_INTERVAL", "RECONNECT_DELAYS", "NodeSync"]

logger = logging.getLogger("softswitch.registrar")

#: Seconds between the thread's looks at whether it should stop (notices wake it at once).
POLL_INTERVAL = 0.25
#: Seconds between reconnection attempts, the last one repeated while the database is away.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
#: Notices read in one go at most (a burst is checked and applied in slices), and table rows
#: handed to the loop at once.
_BATCH = 1000
#: Seconds at least between two reads of the whole table asked for by notices.
READ_GAP = 5.0
#: Seconds a removal's time may be ahead of this node's clock (clocks differ a little).
_SKEW = 60.0
#: Seconds between two WARNINGs of ignored notices (the count in between is in the next).
_WARN_GAP = 60.0


class _Throttled:
    """One WARNING per kind per ``_WARN_GAP`` seconds, with how many it stands for: a
    flood of forged notices must not become a flood of log lines on every node."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def note(self, what: str, count: int) -> None:
        now = time.monotonic()
        held = self._held.get(what, 0) + count
        if now < self._next.get(what, 0.0):
            self._held[what] = held
            return
        self._held[what] = 0
        self._next[what] = now + _WARN_GAP
        logger.warning("registrations: %s (%d since the last report)", what, held)


#: The rows of the (account, contact) pairs given as two arrays.
_SELECT_KEYS = (
    SELECT_BINDINGS
    + " WHERE (account_id, contact) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
)

#: A notice decoded: a binding put (a tombstone too), or a row deleted (account, contact,
#: registered at or before).
Change = Binding | tuple[str, str, float]


class NodeSync:
    """Applies the other nodes' registration changes to ``bindings`` (module docstring).

    ``learned`` is called with each binding another node registered that this node's
    configuration accepts (the guard trusts its source address, as the node that checked its
    digest does). ``connect`` opens the listening connection (tests stand in an outage).
    """

    def __init__(
        self,
        database: str,
        bindings: Registrations,
        *,
        learned: Callable[[Binding], None] | None = None,
        connect: Callable[[], Any] | None = None,
        delays: Sequence[float] = RECONNECT_DELAYS,
    ) -> None:
        self.database = database
        self.bindings = bindings
        self.learned = learned
        self._connect = connect or (
            lambda: connect_postgres(database, application="softswitch registrar listener")
        )
        self._delays = tuple(delays)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Whole-table reads applied (at start, after each reconnection, on a notice too big).
        self.reads = 0
        #: Notices applied.
        self.applied = 0
        #: Notices the table did not bear out (forged, or the table lost the row), ignored.
        self.unbacked = 0
        #: Notices that did not decode (no writer sends such), ignored.
        self.undecoded = 0
        self._warn = _Throttled()
        self._read_asked = False
        self._read_after = 0.0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Listen from now on (``loop``: the one the index lives on; the running one)."""
        if self._thread is not None:
            return
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="registrar-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop listening and close the connection; blocks until the thread ended: a poll
        (``POLL_INTERVAL``) or a connection attempt under way, normally. A query stuck on a
        connection whose peer vanished ends with the connection's TCP bound (a minute,
        ``store.postgres_connect``); after ``timeout`` the thread (a daemon) is left to it,
        with a WARNING. Idempotent."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "registrations: the listener did not stop within %.0f s (its database"
                    " connection is stuck); left to end on its own",
                    timeout,
                )

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = self._connect()
                conn.execute(f"LISTEN {CHANNEL}")
                self._read_all(conn)  # after LISTEN: a commit after this read is notified
                if failures:
                    logger.warning(
                        "registrations: listening to the other nodes' changes again"
                        " (the table read again)"
                    )
                failures = 0
                self._listen(conn)
            except Exception as e:
                if failures == 0:
                    detail = str(e) if isinstance(e, psycopg.Error) else repr(e)
                    logger.error(
                        "registrations: not listening to the other nodes' changes (%s);"
                        " retrying, and reading the table again once back",
                        detail,
                    )
                delay = self._delays[min(failures, len(self._delays) - 1)]
                failures += 1
                self._stopping.wait(delay)
            finally:
                if conn is not None:
                    conn.close()

    def _listen(self, conn: Any) -> None:
        while not self._stopping.is_set():
            payloads = [n.payload for n in conn.notifies(timeout=POLL_INTERVAL, stop_after=1)]
            while payloads and len(payloads) < _BATCH:  # and what arrived with it
                more = [
                    n.payload for n in conn.notifies(timeout=0, stop_after=_BATCH - len(payloads))
                ]
                if not more:
                    break
                payloads += more
            if payloads:
                changes, read_all, bad = _decode(payloads, time.time())
                if bad:
                    self.undecoded += bad
                    self._warn.note("a notice that does not decode was ignored", bad)
                if changes:
                    changes = self._backed(conn, changes)
                if changes:
                    self._post(self._apply_changes, changes)
                self._read_asked = self._read_asked or read_all
            # A change too big for a notice asks for the table; at most every READ_GAP
            # seconds, so a flood of such notices costs one read per gap, not one each.
            if self._read_asked and (now := time.monotonic()) >= self._read_after:
                self._read_asked = False
                self._read_after = now + READ_GAP
                self._read_all(conn)

    def _backed(self, conn: Any, changes: list[Change]) -> list[Change]:
        """The changes the table bears out, in order; the others are dropped (logged).

        Any role that may connect to the database may ``NOTIFY`` on any channel, so a notice
        alone would let it point an account's calls at a host of its choosing (and have the
        guard trust that host). A put is applied only if the table holds that very row now,
        a deleted row only if the table no longer holds it (or holds a later one): forging a
        change then takes writing the table, as it did before notices. A change the table
        has moved past meanwhile is dropped too, harmlessly: the later change's own notice
        follows it.
        """
        keys = sorted({_key(change) for change in changes})
        rows = conn.execute(_SELECT_KEYS, ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
        table = {(r[0], r[1]): binding_of(r) for r in rows}
        backed: list[Change] = []
        for change in changes:
            row = table.get(_key(change))
            if isinstance(change, Binding):
                ok = row is not None and row == change  # the fingerprint too
            else:
                ok = row is None or row.registered_at > change[2]
            if ok:
                backed.append(change)
            elif row is None or row.registered_at <= _registered_at(change):
                self.unbacked += 1
                self._warn.note("a notice the table does not bear out was ignored", 1)
        return backed

    def _read_all(self, conn: Any) -> None:
        rows = [binding_of(r) for r in conn.execute(SELECT_BINDINGS).fetchall()]
        # In slices, so that a big table does not hold the loop up in one go.
        for start in range(0, max(1, len(rows)), _BATCH):
            self._post(self._apply_rows, rows[start : start + _BATCH], start + _BATCH >= len(rows))

    def _post(self, apply: Callable[..., None], *args: object) -> None:
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(apply, *args)
        except RuntimeError:  # the loop closed under us: nothing left to keep in step
            self._stopping.set()

    # -- the event loop ------------------------------------------------------------------

    def _apply_changes(self, changes: list[Change]) -> None:
        """Notices, in commit order, onto the index (after the other workers' changes, so
        that an older one from the journal does not land on a newer one from here)."""
        bindings = self.bindings
        bindings.refresh()
        now = time.time()
        for change in changes:
            if isinstance(change, Binding):
                if change.tombstone:
                    self._drop(change.account_id, change.contact, change.registered_at)
                else:
                    self._put(change, now)
            else:
                self._drop(*change)
        self.applied += len(changes)

    def _apply_rows(self, rows: list[Binding], last: bool) -> None:
        """The whole table (a slice of it: ``last`` for the last) onto the index: each row
        registered later than the index's binding wins; a binding no row names is left (a
        REGISTER not committed yet, or a row deleted as expired, which the sweep drops here
        too)."""
        bindings = self.bindings
        bindings.refresh()
        now = time.time()
        for row in rows:
            if not row.live(now) or row.tombstone:
                self._drop(row.account_id, row.contact, row.registered_at)
                continue
            current = bindings.indexed(row.account_id, row.contact)
            if current is None or current.registered_at < row.registered_at:
                self._put(row, now)  # the same registration as ours keeps our fingerprint
        if last:
            self.reads += 1

    def _put(self, binding: Binding, now: float) -> None:
        bindings = self.bindings
        if not bindings.put_if_newer(binding):  # this process's index only: every worker listens
            return
        if self.learned is not None and binding.live(now):
            put = bindings.indexed(binding.account_id, binding.contact)
            if put is not None and bindings.accepts(put):
                self.learned(put)

    def _drop(self, account_id: str, contact: str, registered_at: float) -> None:
        self.bindings.forget_if_older(account_id, contact, registered_at)


def _key(change: Change) -> tuple[str, str]:
    return change.key if isinstance(change, Binding) else (change[0], change[1])


def _registered_at(change: Change) -> float:
    return change.registered_at if isinstance(change, Binding) else change[2]


def _decode(payloads: list[str], now: float) -> tuple[list[Change], bool, int]:
    """The notices' changes, whether one asks for the whole table (a change too big for a
    notice), and how many did not decode. One that does not decode is skipped alone: it is
    no writer's (``store`` writes only what decodes), so it is someone else's noise, and
    neither the changes beside it nor the listening connection pay for it. A removal is
    taken only up to ``now`` and a minute: a forged one far in the future would drop any
    binding of its contact, however late."""
    changes: list[Change] = []
    read_all = False
    bad = 0
    for payload in payloads:
        try:
            notice = json.loads(payload)
            if not isinstance(notice, list) or not notice:
                raise ValueError("not a notice")
            if notice == ["all"]:
                read_all = True
            elif notice[0] == "put" and len(notice) == 2:
                changes.append(binding_of_notice(notice[1]))
            elif notice[0] == "gone" and len(notice) == 4:
                account_id, contact, at = notice[1:]
                if (
                    not isinstance(account_id, str)
                    or not isinstance(contact, str)
                    or isinstance(at, bool)
                    or not isinstance(at, int | float)
                    or not at <= now + _SKEW
                ):
                    raise ValueError("not a removal")
                changes.append((account_id, contact, float(at)))
            else:
                raise ValueError("not a notice")
        except ValueError:  # json's errors are ValueErrors too
            bad += 1
    return changes, read_all, bad
