"""Open the store ``[server] database`` names: a SQLite file or a PostgreSQL URL.

The SQLite store migrates its file as it opens it. The PostgreSQL store refuses a database
whose schema is older than the code (``store.migrations.require_current``), naming
``softswitch migrate``: a shared database is migrated deliberately, not by whichever node
starts first.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol

from .errors import StoreError
from .postgres_connect import is_postgres_url, redacted
from .records import CdrRecord, CdrSink, Rater, RecoveredRun

__all__ = ["CdrStoreLike", "StoreError", "describe_database", "is_postgres_url", "open_cdr_store"]


class CdrStoreLike(CdrSink, Protocol):
    """What the switch holds: a ``CdrSink`` that also recovers dead runs and has a run."""

    run_id: str
    #: Seconds between heartbeats (three missed: the run is dead).
    heartbeat_interval: float

    @property
    def path(self) -> Path:
        """The SQLite file. The PostgreSQL store has none and raises ``StoreError``: a
        reader should use ``query`` (``management.cdrs`` still reads the file)."""
        ...

    @property
    def writer_thread_id(self) -> int | None: ...

    def recover(self, rate: Rater | None = None) -> list[RecoveredRun]: ...

    def pending_recovery(self) -> bool: ...

    def query(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        *,
        call_id: str | None = None,
        account_id: str | None = None,
        limit: int | None = None,
    ) -> list[CdrRecord]: ...


def open_cdr_store(
    database: str | Path, *, batch_max: int = 1000, heartbeat_interval: float = 5.0
) -> CdrStoreLike:
    """The CDR store for ``database`` (a path, or a ``postgresql://`` URL)."""
    if is_postgres_url(database):
        import psycopg

        from .postgres import PostgresCdrStore

        try:
            return PostgresCdrStore(
                str(database), batch_max=batch_max, heartbeat_interval=heartbeat_interval
            )
        except psycopg.Error as e:
            raise StoreError(f"[server] database {redacted(str(database))}: {e}") from None
    from softswitch.cdr import CdrStore

    return CdrStore(database, batch_max=batch_max, heartbeat_interval=heartbeat_interval)


def describe_database(database: str | Path) -> str:
    """``[server] database`` for a log line or a message (a URL without its password)."""
    return redacted(database) if isinstance(database, str) else str(database)
