"""The attack harness's switch is one process: its callers measure that process's CPU and
memory by the pid they started (``attack.process_cpu``), which with several workers would be
the supervisor's, a process that handles no SIP."""

from __future__ import annotations

from pathlib import Path

from attack import switch_config

from softswitch.config import load_config


def test_the_attack_switch_runs_one_worker(tmp_path: Path) -> None:
    config = load_config(switch_config(tmp_path, 5060, 5070))
    assert config.server.workers == 1
