"""Fixtures for the lcr tests: every API test runs against both implementations."""

from __future__ import annotations

from types import ModuleType

import pytest

import lcr
import lcr.reference


@pytest.fixture(params=[lcr, lcr.reference], ids=["rust", "reference"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module
