"""The store tests' PostgreSQL: one real server for the session (``postgres_tool``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import Backend

from postgres_tool import Postgres, postgres

__all__ = ["backend", "pg_url", "postgres"]


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh database on the session's server, migrated to this code's schema."""
    from softswitch.store.migrations import migrate

    url = postgres.database()
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each store test once per database kind."""
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "cdr.sqlite")
    return Backend("postgres", request.getfixturevalue("pg_url"))
