"""Connections to PostgreSQL as every store part opens them (psycopg 3).

Why psycopg 3 and not asyncpg: the stores write from threads of their own (the CDR writer's
group commit, the registrar's writer), never from the event loop, so a synchronous driver
fits where an asyncio one would need a second loop; a group commit's CDRs go in by ``COPY``
and its other statements by ``executemany``, which psycopg pipelines (one round trip for a
batch); and it keeps the DB-API shape the SQLite code already has.

Every connection is in autocommit mode (each transaction is an explicit
``conn.transaction()``), on UTC, with ``synchronous_commit = on`` whatever the server's
default: a CDR is acknowledged only when its COMMIT is durable. Rows can be read by column
name or position, as ``sqlite3.Row``, so code that reads both databases reads them alike.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import RowMaker

__all__ = ["POSTGRES_SCHEMES", "Row", "connect", "is_postgres_url", "redacted"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: object) -> bool:
    """Whether ``[server] database`` names a PostgreSQL database rather than a file."""
    return isinstance(database, str) and database.lower().startswith(POSTGRES_SCHEMES)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Row(Sequence[Any]):
    """A row readable by position and by column name (like ``sqlite3.Row``)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(index, values)


def connect(url: str, *, application: str = "softswitch") -> psycopg.Connection[Row]:
    """A connection to ``url`` (see the module docstring)."""
    return psycopg.connect(
        url,
        autocommit=True,
        row_factory=_row_factory,
        application_name=application,
        # Floats as exact text whatever the server's default (a binding's times are compared
        # as they come back); and a dead peer noticed in about a minute, not the kernel's
        # quarter of an hour: keep-alive probes while idle, a bound on unacknowledged sends.
        options="-c TimeZone=UTC -c synchronous_commit=on -c extra_float_digits=3",
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        tcp_user_timeout=60_000,
    )
