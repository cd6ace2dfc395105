"""The CDR writer thread and its queue, shared by the SQLite and the PostgreSQL stores.

The event loop never waits for a database: ``write`` / ``enqueue`` / ``open_call`` /
``reserve`` only put the item on a queue. One writer thread takes whatever has queued up
(at most ``batch_max`` items) and commits it in one transaction (group commit): under load
many CDRs share one commit and its fsync, at low load each is committed within a millisecond
or so. Commits are at least :attr:`GroupCommitStore.commit_gap` apart: under load the writer
waits out the rest of the gap before it takes what has queued, because a commit's fixed
cost (the pages it rewrites, its fsync) is the same for one item as for fifty.

``write``'s future completes only once the transaction has committed: that is the durable
acknowledgement. One bad record must not cost the others theirs: when a batch fails, the
items are committed one by one and only the bad one fails (logged in full).

The thread also refreshes the run's heartbeat every ``heartbeat_interval`` seconds (one
UPDATE per process, not per call) and marks the run stopped at a clean close. What a backend
provides is its connection, one transaction of inserts (``_insert``), the heartbeat and the
exception types that mean "this write failed".
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from softswitch.billing.ledger import Booking

from .records import CallStart, CdrRecord, Reservation
from .recovery import LIVE_RUNS

__all__ = ["GroupCommitStore"]

logger = logging.getLogger("softswitch.cdr")

Conn = TypeVar("Conn")


class _Flush:
    """A queue marker: completes its future once everything queued before it is committed
    (or failed); with ``debits``, its result is the debits whose write failed since the
    previous such marker (``flush_debits``)."""

    __slots__ = ("debits", "future")

    def __init__(self, *, debits: bool = False) -> None:
        self.debits = debits
        self.future: Future[list[Booking]] = Future()


_STOP = object()
_Write = tuple[CdrRecord, "Future[None] | None", Booking | None]
_Item = _Write | CallStart | Reservation | _Flush | object


class GroupCommitStore(Generic[Conn]):
    """Queue, writer thread and group commit; a backend subclasses it (see the module).

    The subclass registers its run (``run_id``), then calls ``_start_writer``.
    """

    #: Exceptions that mean one write failed (the database's, and bad values).
    _write_errors: tuple[type[Exception], ...] = (ValueError, TypeError)
    #: A short name for messages ("CdrStore is closed").
    _name = "CdrStore"
    #: Seconds between the starts of two commits at least. A commit of a busy switch waits
    #: for up to this long, so one commit carries what several would have; an idle
    #: switch's first write after a pause is committed at once.
    commit_gap = 0.01

    def __init__(self, *, batch_max: int, heartbeat_interval: float, run_id: str) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        self._batch_max = batch_max
        self.heartbeat_interval = heartbeat_interval
        self.run_id = run_id
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = False
        #: Debits whose write failed, for the next ``flush_debits`` (the writer's only).
        self._failed_debits: list[Booking] = []
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)

    def _start_writer(self) -> None:
        LIVE_RUNS.add(self.run_id)
        self._thread.start()

    @property
    def writer_thread_id(self) -> int | None:
        """The writer thread's ident (``benches/cdr_write.py`` reads its CPU clock)."""
        return self._thread.ident

    # -- what a backend provides --------------------------------------------------------

    def _writer_connection(self) -> Conn:
        """The writer's connection (opened, or reopened after a failure, as needed)."""
        raise NotImplementedError

    def _close_writer_connection(self) -> None:
        raise NotImplementedError

    def _insert(
        self,
        conn: Conn,
        starts: Sequence[CallStart],
        records: Sequence[tuple[CdrRecord, Booking | None]],
        slices: Sequence[Reservation] = (),
        *,
        escape: bool = False,
    ) -> None:
        """One committed transaction: the call starts, then the CDRs, each answered CDR
        closing its call's start, the reservations, then the CDRs' debits to the ledger.
        ``escape``: store undecodable text escaped (``store.escaping``)."""
        raise NotImplementedError

    def _heartbeat(self, conn: Conn, *, stopped: bool) -> None:
        """This run's ``heartbeat_at`` (and ``stopped_at`` at a clean close) set to now."""
        raise NotImplementedError

    def _needs_escape(self, error: Exception) -> bool:
        """Whether ``error`` is text the database cannot store (retried escaped)."""
        return isinstance(error, UnicodeEncodeError)

    # -- writing -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")

    def write(self, record: CdrRecord) -> Future[None]:
        """Queue ``record``; the returned future completes when it is committed.

        Never blocks. The future fails (and the record is logged in full) if the commit
        fails, e.g. the disk is full. A record with an answer time also closes its call's
        ``CallStart`` (same Call-ID and answer time, this run) in the same transaction.
        """
        self._check_open()
        future: Future[None] = Future()
        self._queue.put((record, future, None))
        return future

    def enqueue(self, record: CdrRecord, debit: Booking | None = None) -> None:
        """``write`` without a future to wait on: the switch's path, one record per call.

        ``debit`` (a billed call's sell cost) is appended to the ledger in the transaction
        that inserts the CDR: both or neither. Never blocks; a failed commit logs the record
        in full, as for ``write``. (A future costs a lock and a condition to make, a
        measurable share of a call at full load.)
        """
        self._check_open()
        self._queue.put((record, None, debit))

    def reserve(self, reservation: Reservation) -> None:
        """Queue a billed call's new reservation (committed with the next group commit)."""
        self._check_open()
        self._queue.put(reservation)

    def open_call(self, start: CallStart) -> None:
        """Queue an answered call's durable mark (the switch's path at the 2xx).

        Never blocks: committed with the writer's next group commit. The call's CDR, when it
        is written, deletes the mark in the same transaction; if the process dies first,
        ``recover`` in a later run turns the mark into the call's CDR.
        """
        self._check_open()
        self._queue.put(start)

    async def write_async(self, record: CdrRecord) -> None:
        """``write`` and wait, without blocking the event loop, until it is durable."""
        await asyncio.wrap_future(self.write(record))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything written before this call is committed; False on timeout."""
        marker = _Flush()
        self._queue.put(marker)
        try:
            marker.future.result(timeout)
        except TimeoutError:
            return False
        return True

    def flush_debits(self, timeout: float | None = None) -> list[Booking] | None:
        """``flush``, and the debits whose write failed (their records logged, not in the
        ledger) since the previous call: queued before this one, or after it but failed
        before its turn. None on timeout (they are reported by the next call). The meter's
        question before letting a debit's credit go (``billing.meter``); one caller."""
        marker = _Flush(debits=True)
        self._queue.put(marker)
        try:
            return marker.future.result(timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        """Commit everything queued, mark the run stopped, stop the writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread.ident is not None:
            self._thread.join()
        LIVE_RUNS.discard(self.run_id)

    def _run(self) -> None:
        try:
            next_beat = time.monotonic() + self.heartbeat_interval
            last_commit = -self.commit_gap
            stop = False
            while not stop:
                batch: list[_Item] = []
                try:
                    wait = max(0.0, next_beat - time.monotonic())
                    batch.append(self._queue.get(timeout=wait))
                except queue.Empty:
                    pass
                if batch:
                    rest = last_commit + self.commit_gap - time.monotonic()
                    if rest > 0:
                        time.sleep(rest)  # what queues meanwhile joins this commit
                    last_commit = time.monotonic()
                while batch and len(batch) < self._batch_max:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                if batch:
                    self._commit(batch)
                if stop or time.monotonic() >= next_beat:
                    self._beat(stopped=stop)
                    next_beat = time.monotonic() + self.heartbeat_interval
        finally:
            self._close_writer_connection()

    def _beat(self, *, stopped: bool) -> None:
        try:
            self._heartbeat(self._writer_connection(), stopped=stopped)
        except Exception as e:  # the writer must outlive a failed heartbeat
            logger.error("cdr store heartbeat failed: %s", e)

    def _commit(self, batch: Sequence[_Item]) -> None:
        starts = [item for item in batch if isinstance(item, CallStart)]
        writes: list[_Write] = [item for item in batch if isinstance(item, tuple)]
        slices = [item for item in batch if isinstance(item, Reservation)]
        if starts or writes or slices:
            errors: list[Exception | None]
            try:
                conn = self._writer_connection()
                self._insert(conn, starts, [(r, d) for r, _, d in writes], slices)
                errors = [None] * len(writes)
            except self._write_errors:
                # One bad record must not cost the others theirs: retry one by one, the call
                # starts first (a call's start is always queued before its CDR).
                for start in starts:
                    self._insert_alone(start)
                for reservation in slices:
                    self._insert_alone(reservation)
                errors = [self._insert_alone((r, d)) for r, _, d in writes]
                self._failed_debits += [
                    d for (_, _, d), e in zip(writes, errors, strict=True) if d and e
                ]
            for (_, future, _), error in zip(writes, errors, strict=True):
                if future is None:
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        for item in batch:
            if isinstance(item, _Flush):
                if item.debits:
                    failed, self._failed_debits = self._failed_debits, []
                    item.future.set_result(failed)
                else:
                    item.future.set_result([])

    def _insert_alone(
        self, item: tuple[CdrRecord, Booking | None] | CallStart | Reservation
    ) -> Exception | None:
        """Commit one record and its debit (or a call start, or a reservation), or log it in
        full and return why it could not be."""
        starts = [item] if isinstance(item, CallStart) else []
        slices = [item] if isinstance(item, Reservation) else []
        records = [item] if isinstance(item, tuple) else []
        try:
            conn = self._writer_connection()
            try:
                self._insert(conn, starts, records, slices)
            except self._write_errors as e:
                if not self._needs_escape(e):
                    raise
                # A peer's undecodable bytes (kept as surrogates by the SIP parser) are not
                # valid UTF-8 text: store them escaped rather than lose the record.
                self._insert(conn, starts, records, slices, escape=True)
        except self._write_errors as e:
            if isinstance(item, Reservation):
                logger.error("reservation write failed (%s): %s", e, item)
                return e
            record = item.cdr if isinstance(item, CallStart) else item[0]
            debit = item[1] if isinstance(item, tuple) else None
            logger.error(
                "%s write failed (%s); record=%s debit=%s",
                "call start" if isinstance(item, CallStart) else "cdr",
                e,
                json.dumps(_loggable(record), default=str),
                debit,
                extra={"call_id": record.call_id},
            )
            return e
        return None


def _loggable(record: CdrRecord) -> dict[str, Any]:
    """The record's row for a log line (its own fields if even that fails)."""
    try:
        return record.to_row()
    except Exception:
        return {"call_id": repr(record.call_id), "record": repr(record)}
