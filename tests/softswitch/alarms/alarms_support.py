"""Test support for alarms and quality routing: a configuration with three gateways, and
gateway attempts fed to a ``Statistics`` by hand (a module with a unique name, so tests can
import it whatever other ``conftest`` modules pytest has loaded)."""

from __future__ import annotations

from pathlib import Path

from softswitch.config import Config, load_config
from softswitch.stats import CallEnded, GatewayAttempt, Statistics

BASE = """
[[rate_decks]]
id = "d"
file = "d.csv"

[[accounts]]
id = "acme"
ips = ["192.0.2.10"]
routing_plan = "p"

[[accounts]]
id = "beta"
ips = ["192.0.2.11"]
routing_plan = "p"

[[gateways]]
id = "gw1"
address = "198.51.100.1:5060"
rate_deck = "d"
priority = 1

[[gateways]]
id = "gw2"
address = "198.51.100.2:5060"
rate_deck = "d"
priority = 2

[[gateways]]
id = "gw3"
address = "198.51.100.3:5060"
rate_deck = "d"
priority = 3

[[routes]]
plan = "p"
prefix = "44"
gateways = ["gw1", "gw2", "gw3"]
strategy = "priority"
"""


def write(tmp_path: Path, extra: str = "", *, route: str = "") -> Path:
    """The configuration with ``extra`` appended and ``route`` added to the route."""
    (tmp_path / "d.csv").write_text("prefix,rate\n44,0.01\n")
    text = BASE.replace('strategy = "priority"\n', f'strategy = "priority"\n{route}\n')
    path = tmp_path / "switch.toml"
    path.write_text(text + extra)
    return path


def config(tmp_path: Path, extra: str = "", *, route: str = "") -> Config:
    return load_config(write(tmp_path, extra, route=route))


def attempts(
    stats: Statistics, gateway: str, t: float, *, answered: int = 0, failed: int = 0
) -> None:
    """``answered`` and ``failed`` calls, each one seizure of ``gateway``, ending at ``t``."""
    for ok in [True] * answered + [False] * failed:
        status = 200 if ok else 503
        seizure = GatewayAttempt(gateway, status, "answered" if ok else "failed", ok, 500)
        reason = "normal_clearing" if ok else "all_gateways_failed"
        ended = CallEnded("acme", None, None, status, reason, ok, ok, 0, 500, (seizure,))
        stats.gateway_seized(gateway, t)
        stats.gateway_released(gateway, t)
        stats.call_ended(ended, t)
