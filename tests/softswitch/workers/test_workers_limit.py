"""At most 256 workers (``MAX_WORKERS``): a worker says it listens with one byte, its index,
so a 257th could never be seen ready and the start would time out. ``[server] workers``
is capped at 256 by the configuration; ``--workers`` above it is refused, naming the limit,
and the default (one per core) is capped."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from softswitch import cli
from softswitch.config import demo_config
from softswitch.workers import MAX_WORKERS
from softswitch.workers.supervisor import Supervisor


def test_the_limit_is_256() -> None:
    assert MAX_WORKERS == 256


def test_workers_above_the_limit_are_refused_naming_it() -> None:
    assert cli._workers_option("256") == 256
    with pytest.raises(argparse.ArgumentTypeError, match="at most 256"):
        cli._workers_option("257")


def test_the_command_line_refuses_more_workers_than_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--workers", "300", "--config", "/nonexistent/switch.toml"])
    assert stopped.value.code == 2
    assert "at most 256" in capsys.readouterr().err


def test_one_worker_per_core_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = demo_config(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 1000)
    assert cli.worker_count(config, None) == MAX_WORKERS
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cli.worker_count(config, None) == 8


def test_a_supervisor_of_more_workers_is_refused(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    with pytest.raises(ValueError, match="at most 256"):
        Supervisor(config, workers=257, run=lambda *a: 0)
