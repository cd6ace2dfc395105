"""The cluster tests' Redis: one real server for the session (``redis_tool``), keys kept
apart per test by a prefix of their own."""

from __future__ import annotations

import uuid

import pytest

from redis_tool import Redis, redis_server

__all__ = ["prefix", "redis_server", "url"]


@pytest.fixture
def url(redis_server: Redis) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"
