"""The media keys of the configuration: what they mean once loaded, and the one line each
bad value gets (file, key, reason)."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.config import DEMO_DIR, Config, ConfigError, load_config
from softswitch.media.codecs import canonical_codec
from softswitch.media.policy import DIRECT, MediaPolicy, media_policy

MINIMAL = """
[[rate_decks]]
id = "d"
file = "d.csv"

[[accounts]]
id = "acc"
ips = ["192.0.2.10"]
routing_plan = "p"
{account}

[[gateways]]
id = "gw"
address = "198.51.100.1:5060"
{gateway}

[[routes]]
plan = "p"
prefix = ""
gateways = ["gw"]
{tail}
"""

RELAY = '[[media_relays]]\nid = "rtp1"\naddress = "127.0.0.1:2223"\n'


def load(tmp_path: Path, account: str = "", gateway: str = "", tail: str = "") -> Config:
    (tmp_path / "d.csv").write_text("prefix,rate\n44,0.01\n")
    path = tmp_path / "switch.toml"
    path.write_text(MINIMAL.format(account=account, gateway=gateway, tail=tail))
    return load_config(path)


def problems(tmp_path: Path, **parts: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, **parts)
    return [f"{p.key}: {p.reason}" for p in e.value.problems]


def test_defaults_are_direct_media_with_any_codec(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.media_relays == ()
    account, gateway = cfg.account("acc"), cfg.gateway("gw")
    assert (account.media, account.codecs, account.media_timeout) == ("direct", (), None)
    assert (gateway.media, gateway.codecs, gateway.media_timeout) == ("direct", (), 60.0)
    assert media_policy(account, gateway) is DIRECT


def test_relay_codecs_and_timeouts_resolve_per_leg(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        account='media = "relay"\ncodecs = ["g729a", "g711a", "G711u"]\nmedia_timeout = 20',
        gateway='codecs = ["PCMU", "PCMA"]\nmedia_timeout = 30',
        tail=RELAY + "[defaults]\nmedia_timeout = 45\n[media]\npoll_interval = 2\n",
    )
    account, gateway = cfg.account("acc"), cfg.gateway("gw")
    assert account.codecs == ("G729", "PCMA", "PCMU")  # operators' names, SDP's spelling
    # Allowed by both, in the gateway's order; the shortest timeout that is set.
    assert media_policy(account, gateway) == MediaPolicy(True, ("PCMU", "PCMA"), 20.0)
    assert cfg.media.poll_interval == 2.0
    assert cfg.media_relays[0].host_port == ("127.0.0.1", 2223)


def test_a_gateway_inherits_the_default_media_timeout_and_zero_is_never(tmp_path: Path) -> None:
    cfg = load(tmp_path, gateway='media = "relay"', tail=RELAY + "[defaults]\nmedia_timeout = 0\n")
    policy = media_policy(cfg.account("acc"), cfg.gateway("gw"))
    assert policy == MediaPolicy(relay=True, codecs=(), timeout=0.0)


def test_bad_media_values_are_named(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        account='media = "proxy"\ncodecs = ["PCMA", "g711a", "speex2"]',
        gateway='codecs = "PCMA"\nmedia_timeout = -1',
        tail='[[media_relays]]\nid = "r"\naddress = "nowhere"\nweight = -2\n',
    ) == [
        "media_relays[0].address: 'nowhere': needs the port rtpengine's listen-ng uses (host:port)",
        "media_relays[0].weight: must be between 0 and 2147483647, got -2",
        "accounts[0].media: must be one of 'direct', 'relay', got 'proxy'",
        "accounts[0].codecs[1]: 'g711a' is listed twice",
        "accounts[0].codecs[2]: " + _unknown("speex2"),
        "gateways[0].codecs: must be a list of codec names, got a string ('PCMA')",
        "gateways[0].media_timeout: must be >= 0, got -1",
    ]


def _unknown(name: str) -> str:
    with pytest.raises(ValueError, match="unknown codec") as e:
        canonical_codec(name)
    return str(e.value)


def test_relay_without_any_relay_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, gateway='media = "relay"') == [
        "gateways[0].media: 'relay' needs at least one [[media_relays]]"
    ]


def test_transcode_needs_relay_and_codecs(tmp_path: Path) -> None:
    assert problems(tmp_path, gateway="transcode = true", tail=RELAY) == [
        'gateways[0].transcode: needs media = "relay": the relay transcodes',
        "gateways[0].transcode: needs codecs: the ones to offer the gateway",
    ]
    cfg = load(tmp_path, gateway='media = "relay"\ncodecs = ["G729"]\ntranscode = true', tail=RELAY)
    policy = media_policy(cfg.account("acc"), cfg.gateway("gw"))
    assert policy.transcode
    assert policy.codecs == ("G729",)


def test_the_demos_commented_relay_loads_once_uncommented(tmp_path: Path) -> None:
    """The demo shows a relayed gateway commented out (rtpengine is not installed by the
    quick start): uncommented as its comment says, it is a valid relayed configuration."""
    text = (DEMO_DIR / "demo.toml").read_text()
    keys = ("media = ", "codecs = ", "media_timeout = ", "[[media_relays]]", "id = ", "address = ")
    lines = [
        line[2:] if line.startswith("# ") and line[2:].startswith(keys) else line
        for line in text.splitlines()
    ]
    for deck in DEMO_DIR.glob("*.csv"):
        (tmp_path / deck.name).write_text(deck.read_text())
    path = tmp_path / "demo.toml"
    path.write_text("\n".join(lines) + "\n")
    cfg = load_config(path)
    assert [r.address for r in cfg.media_relays] == ["127.0.0.1:2223"]
    policy = media_policy(cfg.account("demo"), cfg.gateway("carrier_b"))
    assert policy == MediaPolicy(relay=True, codecs=("PCMA", "PCMU"), timeout=30.0)
    assert media_policy(cfg.account("demo"), cfg.gateway("carrier_a")) is DIRECT
