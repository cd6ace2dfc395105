"""Numbered schema migrations for the SQLite file and the PostgreSQL database.

Each dialect has an ordered list of migrations; a database records the ones applied in its
``schema_version`` table (version, description, when). ``migrate(database)`` applies what is
missing, in order, in one transaction under the database's write lock (``BEGIN IMMEDIATE``
on SQLite, an advisory lock on PostgreSQL), so two processes migrating at once apply each
migration once. Version 1 is the schema the switch wrote before migrations existed:

* SQLite: exactly the file that ``CdrStore`` made at ``PRAGMA user_version`` 3. Migration 1
  creates what is missing (``IF NOT EXISTS``), adds the columns a file of ``user_version``
  1 or 2 lacks, and so adopts a file of any earlier switch as version 1 (a new file too).
* PostgreSQL: the same tables in PostgreSQL's types (``store.postgres_schema``).

Version 2 adds ``cdrs.caller_id`` (the caller-ID the switch routed on), NULL in older rows.
Version 3 adds ``registrations.credentials`` (the fingerprint of the credentials a binding's
REGISTER passed), "" in older rows. Version 4 adds the index ``registrations_expires_at``
(the keepers' purge of the rows expired long ago reads those only). Version 5 adds
``registrations.path`` (the Path, RFC 3327, a binding's REGISTER came with), "" in older rows.

Who runs them: the SQLite store migrates its own file when it opens it (the embedded default
needs no setup). Against PostgreSQL the switch never changes the schema: a database shared by
several nodes is migrated deliberately by an operator (``softswitch migrate``), and a switch
whose code is newer than the schema refuses to start, naming that command
(``require_current``). A database newer than the code is refused everywhere.

A new migration is appended to both lists (same number, same meaning), never edited once
released.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softswitch.registrar.store import (
    EXPIRY_INDEX,
    add_credentials_column,
    add_expiry_index,
    add_path_column,
)

from . import postgres_schema, sqlite_schema
from .errors import StoreError
from .postgres_connect import connect as connect_postgres
from .postgres_connect import is_postgres_url, redacted

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Migration",
    "SchemaError",
    "current_version",
    "latest_version",
    "migrate",
    "pending",
    "require_current",
]


class SchemaError(StoreError):
    """The database's schema does not fit this switch (too old on PostgreSQL, or newer)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: ``apply(conn)`` runs inside the migration's transaction."""

    version: int
    description: str
    apply: Callable[[Any], None]


#: Migration 2, both dialects: ``cdrs.caller_id``, the caller-ID the switch routed on
#: (``store.records.CdrRecord``); NULL in the rows written before it.
_CALLER_ID = "cdrs.caller_id: the caller-ID the switch routed on"
#: Migration 3, both dialects: ``registrations.credentials``, the fingerprint of the
#: credentials a binding's REGISTER passed (``registrar.credentials``), so that a binding read
#: back, by another node above all, is judged by the credentials it was made under; "" in
#: the rows written before it (judged as made under the credentials in force).
_CREDENTIALS = "registrations.credentials: the fingerprint a binding's REGISTER passed"
#: Migration 4, both dialects: ``registrations_expires_at``, the rows by expiry
#: (``registrar.store.EXPIRY_INDEX``), so that each node's keeper's purge, once a minute,
#: and the read at a start find the rows expired long ago without reading the whole table.
_EXPIRY_INDEX = "registrations_expires_at: an index on registrations.expires_at (the purge)"
#: Migration 5, both dialects: ``registrations.path``, the Path (RFC 3327) a binding's
#: REGISTER came with, the Route set of the calls to it (a balancer in front of the nodes);
#: "" in the rows written before it.
_PATH = "registrations.path: the Path a binding's REGISTER came with (RFC 3327)"

# -- SQLite ----------------------------------------------------------------------------

_SQLITE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT    NOT NULL,
    applied_at  TEXT    NOT NULL
)"""


def _check_legacy(conn: sqlite3.Connection) -> None:
    """Refuse a file whose ``user_version`` no switch of ours wrote (a newer one's)."""
    legacy = conn.execute("PRAGMA user_version").fetchone()[0]
    if legacy not in sqlite_schema.LEGACY_READABLE:
        raise SchemaError(
            f"CDR schema version {legacy} (PRAGMA user_version), this switch writes"
            f" {sqlite_schema.LEGACY_VERSION}: a newer switch made this file"
        )


def _sqlite_baseline(conn: sqlite3.Connection) -> None:
    _check_legacy(conn)
    for statement in sqlite_schema.statements(sqlite_schema.SCHEMA):
        conn.execute(statement)
    have = {row[1] for row in conn.execute("PRAGMA table_info(open_calls)")}
    for column, kind in sqlite_schema.OPEN_CALLS_V3:
        if column not in have:
            conn.execute(f"ALTER TABLE open_calls ADD COLUMN {column} {kind}")
    conn.execute(f"PRAGMA user_version = {sqlite_schema.LEGACY_VERSION}")


def _sqlite_caller_id(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(cdrs)")}
    if "caller_id" not in have:
        conn.execute("ALTER TABLE cdrs ADD COLUMN caller_id TEXT")


def _sqlite_credentials(conn: sqlite3.Connection) -> None:
    add_credentials_column(conn)


def _sqlite_expiry_index(conn: sqlite3.Connection) -> None:
    add_expiry_index(conn)


def _sqlite_path(conn: sqlite3.Connection) -> None:
    add_path_column(conn)


SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "baseline: cdrs, switch_runs, open_calls, ledger, registrations"
        " (adopts a file of any earlier switch)",
        _sqlite_baseline,
    ),
    Migration(2, _CALLER_ID, _sqlite_caller_id),
    Migration(3, _CREDENTIALS, _sqlite_credentials),
    Migration(4, _EXPIRY_INDEX, _sqlite_expiry_index),
    Migration(5, _PATH, _sqlite_path),
)


# -- PostgreSQL ------------------------------------------------------------------------

_POSTGRES_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer     PRIMARY KEY,
    description text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""

#: ``pg_advisory_xact_lock`` key of a migration: one migrator at a time per database.
_MIGRATION_LOCK = 0x50F75717C4


def _postgres_baseline(conn: Any) -> None:
    for statement in sqlite_schema.statements(postgres_schema.SCHEMA_V1):
        conn.execute(statement)


def _postgres_caller_id(conn: Any) -> None:
    conn.execute("ALTER TABLE cdrs ADD COLUMN IF NOT EXISTS caller_id text")


def _postgres_credentials(conn: Any) -> None:
    conn.execute(
        "ALTER TABLE registrations ADD COLUMN IF NOT EXISTS credentials text NOT NULL DEFAULT ''"
    )


def _postgres_expiry_index(conn: Any) -> None:
    # Not CONCURRENTLY (that cannot run in the migration's transaction): writes to the table
    # wait while it is built, a moment for the rows of a registrar's clients.
    conn.execute(EXPIRY_INDEX)


def _postgres_path(conn: Any) -> None:
    conn.execute("ALTER TABLE registrations ADD COLUMN IF NOT EXISTS path text NOT NULL DEFAULT ''")


POSTGRES: tuple[Migration, ...] = (
    Migration(
        1, "baseline: cdrs, switch_runs, open_calls, ledger, registrations", _postgres_baseline
    ),
    Migration(2, _CALLER_ID, _postgres_caller_id),
    Migration(3, _CREDENTIALS, _postgres_credentials),
    Migration(4, _EXPIRY_INDEX, _postgres_expiry_index),
    Migration(5, _PATH, _postgres_path),
)


def latest_version(database: str | Path) -> int:
    """The version this code writes for ``database``'s dialect."""
    return _migrations(database)[-1].version


def _migrations(database: str | Path) -> tuple[Migration, ...]:
    return POSTGRES if is_postgres_url(database) else SQLITE


def _describe(database: str | Path) -> str:
    return redacted(database) if isinstance(database, str) else str(database)


# -- reading and applying --------------------------------------------------------------


def _sqlite_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def _postgres_version(conn: Any) -> int:
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def current_version(database: str | Path) -> int:
    """The newest migration applied to ``database`` (0: none; a missing SQLite file is 0
    and is not created)."""
    if is_postgres_url(database):
        with connect_postgres(str(database)) as conn:
            return _postgres_version(conn)
    path = Path(database)
    if not path.exists():
        return 0
    uri = f"{path.resolve().as_uri()}?mode=ro"
    reader = sqlite3.connect(uri, uri=True, timeout=30.0)
    try:
        _check_legacy(reader)
        return _sqlite_version(reader)
    finally:
        reader.close()


def pending(database: str | Path) -> list[Migration]:
    """The migrations ``migrate`` would apply now, in order (refused: a newer database)."""
    return _unapplied(database, current_version(database))


def _unapplied(database: str | Path, version: int) -> list[Migration]:
    migrations = _migrations(database)
    latest = migrations[-1].version
    if version > latest:
        raise SchemaError(
            f"{_describe(database)}: schema version {version} is newer than this switch's"
            f" {latest}: run the switch that migrated it (or a newer one)"
        )
    return [m for m in migrations if m.version > version]


def migrate(database: str | Path, *, dry_run: bool = False) -> list[int]:
    """Apply the missing migrations to ``database`` (an SQLite path, created if missing,
    or a ``postgresql://`` URL); the versions applied (or, with ``dry_run``, that would be:
    nothing is written then)."""
    if dry_run:
        return [m.version for m in pending(database)]
    if is_postgres_url(database):
        return _migrate_postgres(str(database))
    return _migrate_sqlite(Path(database))


def _migrate_sqlite(path: Path) -> list[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        _enter_wal(conn, path)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")  # one migrator at a time
        try:
            _check_legacy(conn)
            applied = _apply(conn, path, _sqlite_version(conn), _SQLITE_VERSION_TABLE, "?")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return applied


#: Seconds ``_enter_wal`` keeps retrying a locked file (the connections' busy timeout).
WAL_RETRY_FOR = 30.0


def _enter_wal(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another process holds the file.

    Turning a new file to WAL takes SQLite's exclusive lock, and when two connections both
    hold the read lock and want it SQLite fails one at once ("database is locked") rather
    than call its busy handler (waiting could deadlock). The workers of a switch open a
    fresh file together, so the one that loses waits a moment and asks again (once the file
    is WAL the pragma changes nothing and takes no lock): bounded by ``WAL_RETRY_FOR``.
    """
    deadline = time.monotonic() + WAL_RETRY_FOR
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() + pause > deadline:
                raise StoreError(
                    f"{path}: cannot switch the file to WAL mode: still locked after"
                    f" {WAL_RETRY_FOR:.0f} s ({exc})"
                ) from exc
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _migrate_postgres(url: str) -> list[int]:
    with connect_postgres(url, application="softswitch migrate") as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        return _apply(conn, url, _postgres_version(conn), _POSTGRES_VERSION_TABLE, "%s")


def _apply(conn: Any, database: str | Path, version: int, table: str, mark: str) -> list[int]:
    todo = _unapplied(database, version)
    if not todo:
        return []
    conn.execute(table)
    applied: list[int] = []
    for migration in todo:
        migration.apply(conn)
        conn.execute(
            f"INSERT INTO schema_version (version, description, applied_at)"
            f" VALUES ({mark}, {mark}, {mark})",
            (migration.version, migration.description, _now_text()),
        )
        applied.append(migration.version)
    return applied


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def require_current(database: str) -> None:
    """Refuse (``SchemaError``) a PostgreSQL database whose schema is not this code's: the
    switch does not migrate a shared database by itself."""
    version = current_version(database)
    latest = latest_version(database)
    if version < latest:
        raise SchemaError(
            f"[server] database {redacted(database)}: schema version {version}, this switch"
            f" needs {latest}; run `softswitch migrate --config FILE` (or"
            f" `softswitch migrate --database URL`) first"
        )
    _unapplied(database, version)  # newer than the code: refused with its own message


def describe(migrations: Sequence[Migration]) -> list[str]:
    """One line per migration, as ``softswitch migrate`` prints them."""
    return [f"{m.version}: {m.description}" for m in migrations]
