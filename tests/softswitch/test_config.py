"""Loading the TOML configuration: types, defaults, references, and errors that say where."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path

import pytest

from softswitch.config import (
    DEFAULT_FAILOVER_CODES,
    ConfigError,
    IpRule,
    SecurityConfig,
    demo_config,
    load_config,
)
from softswitch.proxy.server import transport_limits

MINIMAL = """
[[rate_decks]]
id = "d"
file = "d.csv"

[[accounts]]
id = "acc"
ips = ["192.0.2.10"]
routing_plan = "p"

[[gateways]]
id = "gw"
address = "198.51.100.1:5060"

[[routes]]
plan = "p"
prefix = ""
gateways = ["gw"]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "d.csv").write_text("prefix,rate\n44,0.01\n")
    path = tmp_path / "switch.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    return [f"{p.key}: {p.reason}" for p in e.value.problems]


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.server.listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    assert cfg.server.database == tmp_path / "cdr.sqlite"  # relative to the file
    assert cfg.server.gc_threshold == 2_000_000
    assert cfg.defaults.failover_codes == DEFAULT_FAILOVER_CODES
    assert 408 in DEFAULT_FAILOVER_CODES
    assert 503 in DEFAULT_FAILOVER_CODES
    assert 486 not in DEFAULT_FAILOVER_CODES
    assert 487 not in DEFAULT_FAILOVER_CODES
    account = cfg.account("acc")
    assert account.ips == (IpRule(ipaddress.ip_network("192.0.2.10/32")),)
    assert account.enabled
    assert account.max_calls is None
    gw = cfg.gateway("gw")
    assert (gw.host, gw.port, gw.transport, gw.enabled) == ("198.51.100.1", 5060, "udp", True)
    assert gw.setup_timeout == cfg.defaults.setup_timeout
    assert cfg.rate_decks[0].file == tmp_path / "d.csv"
    assert cfg.plans == ("p",)


def test_demo_config_is_loopback_with_two_gateways(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "state")
    assert cfg.server.listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    assert cfg.server.database == tmp_path / "state" / "cdr.sqlite"
    assert [g.address for g in cfg.gateways] == [("127.0.0.1", 5070), ("127.0.0.1", 5080)]
    assert [str(r) for r in cfg.accounts[0].ips] == ["127.0.0.1/32"]
    assert all(d.file.is_file() for d in cfg.rate_decks)


def test_money_is_decimal_and_codes_expand(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'gateways = ["gw"]', 'gateways = ["gw"]\nmax_rate = 0.1\nmin_margin = 0.005'
    ).replace(
        'address = "198.51.100.1:5060"',
        'address = "198.51.100.1:5060"\nfailover_codes = [404, "6xx"]\nsetup_timeout = 2.5',
    )
    cfg = load_config(write(tmp_path, text))
    route = cfg.routes[0]
    assert route.max_rate == Decimal("0.1")
    assert isinstance(route.max_rate, Decimal)
    assert route.min_margin == Decimal("0.005")
    gw = cfg.gateway("gw")
    assert 404 in gw.failover_codes
    assert 603 in gw.failover_codes
    assert 600 not in gw.failover_codes  # busy everywhere is never failed over
    assert 503 not in gw.failover_codes  # the gateway's list replaces the default
    assert gw.setup_timeout == 2.5


def test_ips_cidr_ports_and_ipv6(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'ips = ["192.0.2.10"]',
        'ips = ["192.0.2.0/24", "192.0.2.10:5070", "2001:db8::/32", "[2001:db8::1]:5062"]',
    )
    rules = load_config(write(tmp_path, text)).account("acc").ips
    assert [str(r) for r in rules] == [
        "192.0.2.0/24",
        "192.0.2.10/32:5070",
        "2001:db8::/32",
        "[2001:db8::1/128]:5062",
    ]
    assert rules[1].matches(ipaddress.ip_address("192.0.2.10"), 5070)
    assert not rules[1].matches(ipaddress.ip_address("192.0.2.10"), 5060)


def test_errors_name_the_key_and_the_reason_and_are_all_reported(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('routing_plan = "p"', 'routing_plan = "p"\nmax_cals = 3\nmax_cps = 1.5')
        .replace('address = "198.51.100.1:5060"', 'address = "198.51.100.1:70000"')
        .replace('ips = ["192.0.2.10"]', 'ips = ["192.0.2.10/24"]')
    )
    found = problems(tmp_path, text)
    assert "accounts[0].max_cals: unknown key (did you mean 'max_calls'?)" in found
    assert any(p.startswith("accounts[0].max_cps: must be an integer") for p in found)
    assert any(p.startswith("accounts[0].ips[0]: '192.0.2.10/24'") for p in found)
    assert any(p.startswith("gateways[0].address:") and "port" in p for p in found)
    assert len(found) == 4


def test_message_names_file_key_and_reason(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[gateways]]\nid = "gw2"\naddress = "a:b:c"\n'
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'switch.toml'}: gateways[1].address: ")
    assert e.value.key == "gateways[1].address"


def test_every_reference_is_checked(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('routing_plan = "p"', 'routing_plan = "nope"\nrate_deck = "missing"')
        .replace('address = "198.51.100.1:5060"', 'address = "198.51.100.1"\nrate_deck = "x"')
        .replace('gateways = ["gw"]', 'gateways = ["gw", "ghost"]')
    )
    found = problems(tmp_path, text)
    assert "accounts[0].rate_deck: no [[rate_decks]] with id 'missing'" in found
    assert "accounts[0].routing_plan: no [[routes]] with plan 'nope'" in found
    assert "gateways[0].rate_deck: no [[rate_decks]] with id 'x'" in found
    assert "routes[0].gateways[1]: no [[gateways]] with id 'ghost'" in found


def test_duplicates(tmp_path: Path) -> None:
    text = MINIMAL + MINIMAL.split("[[accounts]]")[0].replace("[[rate_decks]]", "[[rate_decks]]")
    text += '\n[[routes]]\nplan = "p"\nprefix = ""\ngateways = ["gw"]\n'
    found = problems(tmp_path, text)
    assert "rate_decks[1].id: 'd' already used by rate_decks[0]" in found
    assert any(p.startswith("routes[1].prefix: plan 'p' already has prefix ''") for p in found)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('ips = ["192.0.2.10"]', "ips = []", "accounts[0]: needs ips, username/password"),
        ('ips = ["192.0.2.10"]', 'username = "u"', "accounts[0].password: set both or neither"),
        ('routing_plan = "p"', 'routing_plan = "p"\ntech_prefix = "12a#"', "tech_prefix"),
        ('routing_plan = "p"', 'routing_plan = "p"\nallow = ["44x"]', "accounts[0].allow[0]"),
        (
            'routing_plan = "p"',
            'routing_plan = "p"\nrewrite = [{ match = "(" }]',
            "accounts[0].rewrite[0].match",
        ),
        ('routing_plan = "p"', 'routing_plan = "p"\nrewrite = [{}]', "accounts[0].rewrite[0]"),
        ('prefix = ""', 'prefix = "+44"', "routes[0].prefix: must be digits only"),
        ('gateways = ["gw"]', 'gateways = ["gw"]\nstrategy = "cheap"', "routes[0].strategy"),
        ('address = "198.51.100.1:5060"', 'address = "h:1"\ntransport = "tls"', "transport"),
        (
            'address = "198.51.100.1:5060"',
            'address = "h:1"\nfailover_codes = [486]',
            "gateways[0].failover_codes[0]: 486 is an answer",
        ),
        ("[[rate_decks]]", '[server]\nlisten = ["sctp:1.2.3.4:5"]\n\n[[rate_decks]]', "listen"),
        ('file = "d.csv"', 'file = "d.csv"\nrounding = "sideways"', "rate_decks[0].rounding"),
        ('file = "d.csv"', 'file = "d.csv"\ncolumns = { cost = "X" }', "columns.cost"),
        ('id = "acc"', 'id = "a c"', "accounts[0].id"),
        ("[[rate_decks]]", "[defaults]\nsetup_timeout = inf\n\n[[rate_decks]]", "finite"),
        ("[[rate_decks]]", "[defaults]\nsetup_timeout = 0\n\n[[rate_decks]]", "must be > 0"),
        ("[[rate_decks]]", "[server]\ngc_threshold = 10\n\n[[rate_decks]]", "server.gc_threshold"),
    ],
)
def test_bad_values(tmp_path: Path, old: str, new: str, expected: str) -> None:
    found = problems(tmp_path, MINIMAL.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_accounts_sharing_an_address_need_distinct_tech_prefixes(tmp_path: Path) -> None:
    second = '\n[[accounts]]\nid = "acc2"\nips = ["192.0.2.10"]\nrouting_plan = "p"\n'
    found = problems(tmp_path, MINIMAL + second)
    assert any(p.startswith("accounts[1].ips: 192.0.2.10/32 with tech_prefix ''") for p in found)
    ok = MINIMAL + second.replace('routing_plan = "p"', 'routing_plan = "p"\ntech_prefix = "9#"')
    assert len(load_config(write(tmp_path, ok)).accounts) == 2


def test_missing_deck_file_and_bad_toml(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace('"d.csv"', '"gone.csv"'))
    assert found == [f"rate_decks[0].file: no such file: {tmp_path / 'gone.csv'}"]
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        load_config(write(tmp_path, "[server]\nlisten = @\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


# -- operator-proof errors: one line naming the file, never a traceback ---------------------


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    path.write_bytes(b'[server]\nrealm = "caf\xe9"\n')  # Latin-1, as an old editor saves it
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (
        f"{path}:2: not UTF-8 text: byte 0xe9 at column 13; save the file as UTF-8"
    )
    assert e.value.line == 2
    assert e.value.config is None


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    path.write_bytes(MINIMAL.encode("utf-16"))  # Notepad's "Unicode": a BOM, then UTF-16
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: is UTF-16 text (Windows 'Unicode'); save it as UTF-8"


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Notepad's "UTF-8 with BOM": TOML forbids the mark, but the file means the same."""
    path = write(tmp_path, MINIMAL)
    plain = load_config(path)
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.replace("\n", "\r\n").encode())
    assert load_config(path) == plain
    # Only the mark is skipped: a bad line after it still names its line.
    path.write_bytes(b"\xef\xbb\xbf[server]\nlisten = @\n")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        load_config(path)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (
            "999.1.1.1",
            "gateways[0].address: '999.1.1.1': '999.1.1.1' is not a valid IPv4 address"
            " (four numbers 0-255 separated by dots)",
        ),
        ("10.0.0.256:5060", "'10.0.0.256' is not a valid IPv4 address"),
        ("10.0.1:5060", "'10.0.1' is not a valid IPv4 address"),
        ("carrier..example", "'carrier..example' is neither an IP address nor a valid host name"),
        ("-carrier.example:5060", "is neither an IP address nor a valid host name"),
    ],
)
def test_a_gateway_host_must_be_an_address_or_a_name(
    tmp_path: Path, address: str, expected: str
) -> None:
    found = problems(tmp_path, MINIMAL.replace("198.51.100.1:5060", address))
    assert len(found) == 1, found
    assert expected in found[0]


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("sip.carrier-b.example:5070", "sip.carrier-b.example"),
        ("carrier.example.", "carrier.example."),
        ("gw1", "gw1"),
        ("1e100.net", "1e100.net"),
        ("[2001:db8::1]:5060", "[2001:db8::1]"),
    ],
)
def test_gateway_host_names_are_still_allowed(tmp_path: Path, address: str, host: str) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.replace("198.51.100.1:5060", address)))
    assert cfg.gateway("gw").host == host


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        (
            "udp:127.0.0.1:70000",
            "server.listen[0]: port must be a number from 1 to 65535, got 'udp:127.0.0.1:70000'",
        ),
        ("udp:127.0.0.1:0", "port must be a number from 1 to 65535"),
        ("tcp:999.0.0.1:5060", "'999.0.0.1' is not a valid IPv4 address"),
        ("tcp:::1:5060", "write an IPv6 address in brackets"),
    ],
)
def test_server_listen_port_and_host_are_checked(
    tmp_path: Path, listen: str, expected: str
) -> None:
    text = f'[server]\nlisten = ["{listen}"]\n' + MINIMAL
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert expected in found[0]


def test_problems_come_together_with_the_partial_config(tmp_path: Path) -> None:
    """A missing deck file is listed with the other problems, and the error carries what
    could be read, for ``check-config`` to go on and read the decks."""
    text = MINIMAL.replace('"d.csv"', '"gone.csv"').replace('routing_plan = "p"', "")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert [f"{p.key}: {p.reason}" for p in e.value.problems] == [
        "accounts[0].routing_plan: is required",
        f"rate_decks[0].file: no such file: {tmp_path / 'gone.csv'}",
    ]
    assert e.value.config is not None
    assert [d.id for d in e.value.config.rate_decks] == ["d"]


def test_no_accounts_is_a_warning_not_an_error(tmp_path: Path) -> None:
    empty = load_config(write(tmp_path, ""))
    assert [str(w) for w in empty.warnings()] == [
        f"{tmp_path / 'switch.toml'}: no accounts: every call will be refused"
    ]
    assert load_config(write(tmp_path, MINIMAL)).warnings() == []


def test_security_and_tcp_limits_have_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.security == SecurityConfig()
    assert (cfg.security.pike_rate, cfg.security.pike_window) == (400, 1.0)
    assert (cfg.security.blocked_source, cfg.security.unknown_source) == ("drop", "reply")
    assert "friendly-scanner" in cfg.security.drop_user_agents
    server = cfg.server
    assert (server.tcp_max_connections, server.tcp_max_per_ip) == (1024, 64)
    assert (server.tcp_idle_timeout, server.tcp_header_timeout) == (600.0, 5.0)


def test_security_and_tcp_keys_are_read_and_reach_the_transport(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "[[accounts]]",
        "[server]\ntcp_max_connections = 10\ntcp_max_per_ip = 2\ntcp_idle_timeout = 30\n"
        "tcp_header_timeout = 1.5\n"
        '[security]\npike_rate = 0\nblocked_source = "reply"\nunknown_source = "drop"\n'
        'drop_user_agents = ["EvilScan"]\nblock_time = 60\nlog_interval = 5\n'
        "[[accounts]]",
        1,
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.security == SecurityConfig(
        pike_rate=0,
        block_time=60.0,
        drop_user_agents=("evilscan",),
        blocked_source="reply",
        unknown_source="drop",
        log_interval=5.0,
    )
    limits = transport_limits(cfg)
    assert (limits.max_connections, limits.max_connections_per_ip) == (10, 2)
    assert (limits.idle_timeout, limits.header_timeout) == (30.0, 1.5)


def test_bad_security_values_are_named(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "[[accounts]]",
        '[security]\npike_rate = -1\npike_window = 0\nblocked_source = "ignore"\n'
        'drop_user_agents = ["", 3]\npike_rat = 3\n[server]\ntcp_header_timeout = 0\n'
        "[[accounts]]",
        1,
    )
    assert problems(tmp_path, text) == [
        "server.tcp_header_timeout: must be > 0, got 0",
        "security.pike_rat: unknown key (did you mean 'pike_rate'?)",
        "security.drop_user_agents[0]: must be a non-empty string, got ''",
        "security.drop_user_agents[1]: must be a non-empty string, got 3",
        "security.pike_rate: must be >= 0, got -1",
        "security.pike_window: must be > 0, got 0",
        "security.blocked_source: must be one of 'drop', 'reply', got 'ignore'",
    ]
