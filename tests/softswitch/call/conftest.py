"""Fixtures for the call stage tests (the configuration itself is in ``call_support``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from call_support import write_config

from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.config import load_config


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def snapshot(config_path: Path) -> Snapshot:
    return build_snapshot(load_config(config_path))


@pytest.fixture
def make_snapshot(tmp_path: Path) -> Callable[..., Snapshot]:
    def make(replace: dict[str, str] | None = None) -> Snapshot:
        return build_snapshot(load_config(write_config(tmp_path, replace)))

    return make
