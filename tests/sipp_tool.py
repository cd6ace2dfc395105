"""SIPp for the tests: where the binary is, and what one run left behind.

Shared by the end-to-end harness and the aiosip tests (the root ``conftest.py`` puts
``tests/`` on the path), so the rule for a missing SIPp (fail under CI, skip elsewhere) and
the reading of a run live in one place.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

__all__ = ["SippResult", "sipp_binary"]


def sipp_binary() -> str:
    """The ``sipp`` on PATH; under CI its absence fails the test (the test command installs
    it), elsewhere it skips it."""
    path = shutil.which("sipp")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("sipp is not on PATH and CI is set: install the Debian package sip-tester")
        pytest.skip("sipp is not on PATH (Debian package sip-tester)")
    return path


@dataclass(frozen=True)
class SippResult:
    """A finished SIPp run: its exit code, its last statistics row and what it printed."""

    returncode: int
    stats: dict[str, str]
    output: str

    def count(self, column: str) -> int:
        return int(self.stats.get(column, "-1"))

    def explain(self) -> str:
        return f"sipp exited {self.returncode}\n{self.output[-4000:]}"
