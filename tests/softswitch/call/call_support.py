"""Test support for the call stages: a small but complete configuration, real decks.

A module with a unique name (not ``conftest``) so tests can import it directly whatever
other ``conftest`` modules pytest has loaded.
"""

from __future__ import annotations

from pathlib import Path

from softswitch.sip import Request

BASE_TOML = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"
realm = "test"
digest_algorithms = ["MD5", "SHA-256"]

[defaults]
auth_fail_limit = 3
auth_fail_window = 60
auth_block_time = 300

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "a"
file = "a.csv"

[[rate_decks]]
id = "b"
file = "b.csv"
columns = { prefix = "Code", rate = "Price" }
delimiter = ";"

[[accounts]]
id = "ipcust"
ips = ["10.0.0.0/24"]
rate_deck = "sell"
routing_plan = "main"
max_calls = 2
max_cps = 10
deny = ["4490"]
rewrite = [{ match = "^00", replace = "" }, { prefix = "0", strip = 1, add = "44" }]

[[accounts]]
id = "tech1"
ips = ["10.0.1.5"]
tech_prefix = "1234#"
routing_plan = "main"

[[accounts]]
id = "tech2"
ips = ["10.0.1.5"]
tech_prefix = "99#"
routing_plan = "main"

[[accounts]]
id = "digest"
username = "alice"
password = "secret"
rate_deck = "sell"
routing_plan = "main"
allow = ["44"]

[[accounts]]
id = "both"
ips = ["10.0.2.1:5062"]
username = "bob"
password = "pw"
routing_plan = "main"

[[accounts]]
id = "off"
ips = ["10.0.3.1"]
enabled = false
routing_plan = "main"

[[gateways]]
id = "gwa"
address = "192.0.2.1:5060"
rate_deck = "a"
capacity = 1

[[gateways]]
id = "gwb"
address = "192.0.2.2"
rate_deck = "b"
strip_digits = 2
add_prefix = "777"
transport = "tcp"
max_cps = 1

[[gateways]]
id = "gwc"
address = "192.0.2.3:5070"
rate_deck = "a"
enabled = false

[[routes]]
plan = "main"
prefix = "44"
gateways = ["gwa", "gwb", "gwc"]

[[routes]]
plan = "main"
prefix = "4420"
gateways = ["gwa", "gwb"]
max_rate = 0.045

[[routes]]
plan = "main"
prefix = "1"
gateways = ["gwb", "gwa"]
strategy = "priority"
"""

DECKS = {
    "sell.csv": "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
    "44,UK,0.10,0,60,1\n447,UK Mobile,0.20,0,60,1\n1,USA,0.01,0.05,6,6\n",
    "a.csv": "prefix,destination,rate,initial_increment,subsequent_increment\n"
    "44,UK,0.05,1,1\n447,UK Mobile,0.15,1,1\n1,USA,0.004,1,1\n",
    "b.csv": "Code;Price\n44;0.04\n447;0.25\n",
}


def write_config(
    folder: Path, replace: dict[str, str] | None = None, decks: dict[str, str] | None = None
) -> Path:
    text = BASE_TOML
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    for name, body in (decks or DECKS).items():
        (folder / name).write_text(body)
    path = folder / "switch.toml"
    path.write_text(text)
    return path


def invite(uri: str = "sip:447911123456@switch.example", *headers: tuple[str, str]) -> Request:
    return Request(
        "INVITE",
        uri,
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1"),
            ("From", "<sip:alice@10.0.0.1>;tag=a"),
            ("To", f"<{uri}>"),
            ("Call-ID", "call-1@test"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
            *headers,
        ],
    )
