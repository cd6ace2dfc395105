"""Loading the TOML configuration: types, defaults, references, and errors that say where."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from softswitch.call.authorise import Authorised, Challenge, authorise
from softswitch.call.live import LiveState
from softswitch.call.snapshot import build_snapshot
from softswitch.config import (
    DEFAULT_FAILOVER_CODES,
    Account,
    Config,
    ConfigError,
    DeckSpec,
    Defaults,
    Gateway,
    IpRule,
    RewriteRule,
    Route,
    SecurityConfig,
    ServerConfig,
    demo_config,
    fails_over_on_no_answer,
    load_config,
    no_answer_timeout,
)
from softswitch.proxy.server import Switch, transport_limits
from softswitch.sip import Request, parse_message
from softswitch.sip.digest import build_authorization, parse_challenge

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
    # In file order of the sections; in each table its unknown keys, then its keys in the
    # order of the reference (docs/configuration.md).
    assert problems(tmp_path, text) == [
        "server.tcp_header_timeout: must be > 0, got 0",
        "security.pike_rat: unknown key (did you mean 'pike_rate'?)",
        "security.pike_rate: must be >= 0, got -1",
        "security.pike_window: must be > 0, got 0",
        "security.drop_user_agents[0]: must be a non-empty string, got ''",
        "security.drop_user_agents[1]: must be a non-empty string, got 3",
        "security.blocked_source: must be one of 'drop', 'reply', got 'ignore'",
    ]


def test_a_gateways_dialog_target_is_contact_or_address(tmp_path: Path) -> None:
    """Where a call's later requests go (``proxy.dialog_target``): the callee's Contact or
    Record-Route by default, the gateway's address when asked; anything else is named."""
    assert load_config(write(tmp_path, MINIMAL)).gateway("gw").dialog_target == "contact"
    gateway = 'address = "198.51.100.1:5060"'
    chosen = MINIMAL.replace(gateway, gateway + '\ndialog_target = "address"')
    assert load_config(write(tmp_path, chosen)).gateway("gw").dialog_target == "address"
    bad = chosen.replace('"address"', '"route"')
    assert problems(tmp_path, bad) == [
        "gateways[0].dialog_target: must be one of 'contact', 'address', got 'route'"
    ]


# -- the sections as pydantic models ------------------------------------------------------


def test_model_dump_of_the_demo_round_trips_through_validation(tmp_path: Path) -> None:
    """What the management API will serve (``model_dump``) validates back to the same
    configuration, in Python and in JSON, and every section has a JSON schema."""
    cfg = demo_config(tmp_path)
    assert Config.model_validate(cfg.model_dump()) == cfg
    assert Config.model_validate_json(cfg.model_dump_json()) == cfg
    dumped = cfg.model_dump(mode="json")
    assert dumped["accounts"][0]["ips"] == [{"network": "127.0.0.1/32", "port": None}]
    assert Config.model_validate(json.loads(json.dumps(dumped))) == cfg
    for section in (Config, ServerConfig, Defaults, SecurityConfig, Account, Gateway):
        schema = section.model_json_schema()
        assert schema["additionalProperties"] is False
        json.dumps(schema)
    for section in (DeckSpec, Route, IpRule, RewriteRule):
        json.dumps(section.model_json_schema())


def test_rewrite_rules_round_trip_with_their_compiled_pattern(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'routing_plan = "p"',
        'routing_plan = "p"\n'
        'rewrite = [{ match = "^00", replace = "" }, { prefix = "0", add = "44" }]',
    )
    account = load_config(write(tmp_path, text)).account("acc")
    regex, prefix = account.rewrite
    assert (regex.kind, prefix.kind) == ("regex", "prefix")
    assert regex.pattern is not None
    assert regex.pattern.sub("", "0044") == "44"
    assert prefix.pattern is None
    assert "pattern" not in regex.model_dump()
    assert Account.model_validate(account.model_dump()) == account
    assert Account.model_validate(account.model_dump()).rewrite[0].pattern == regex.pattern


def test_sections_stay_frozen_hashable_and_replaceable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    gw = cfg.gateway("gw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        gw.port = 5070  # type: ignore[misc]
    assert len({cfg, cfg.account("acc"), gw, *cfg.account("acc").ips}) == 4
    moved = dataclasses.replace(gw, host="[2001:db8::1]", port=5070)
    assert moved.address == ("2001:db8::1", 5070)
    with pytest.raises(ValidationError, match="must be between 1 and 65535, got 0"):
        dataclasses.replace(gw, port=0)  # a replacement is validated too
    assert IpRule(ipaddress.ip_network("10.0.0.0/8"), 5060).port == 5060  # positional


def test_money_is_never_a_float_in_the_model_form_either() -> None:
    route = {"plan": "p", "prefix": "", "gateways": ["gw"]}
    with pytest.raises(ValidationError) as e:
        Route.model_validate({**route, "max_rate": 0.1})
    assert e.value.errors()[0]["loc"] == ("max_rate",)
    assert e.value.errors()[0]["msg"] == "must be a decimal amount, got a number (0.1)"
    exact = Route.model_validate({**route, "max_rate": "0.10"})
    assert exact.max_rate == Decimal("0.10")
    assert isinstance(exact.max_rate, Decimal)
    assert exact.model_dump(mode="json")["max_rate"] == "0.10"
    assert Route.model_validate_json(exact.model_dump_json()) == exact


def test_the_model_form_names_the_key_and_its_unknown_keys() -> None:
    """The model form (field names) reports like the file form: where, and why."""
    with pytest.raises(ValidationError) as e:
        Config.model_validate(
            {
                "source": "api",
                "gateways": [{"id": "gw", "host": "10.0.0.1", "prot": 5070, "weight": -1}],
                "routes": [{"plan": "p", "prefix": "", "gateways": ["gw", "ghost"]}],
            }
        )
    found = [(".".join(map(str, err["loc"])), err["msg"]) for err in e.value.errors()]
    assert found == [
        ("gateways.0.prot", "unknown key (did you mean 'port'?)"),
        ("gateways.0.weight", "must be between 0 and 2147483647, got -1"),
        ("routes.0.gateways.1", "no [[gateways]] with id 'ghost'"),
    ]


def test_the_file_form_keeps_its_own_keys(tmp_path: Path) -> None:
    """``host``/``port`` are the model's fields, ``address`` the file's key; a regex rule
    takes no ``kind``."""
    text = MINIMAL.replace(
        'address = "198.51.100.1:5060"', 'address = "198.51.100.1"\nhost = "x"'
    ).replace('routing_plan = "p"', 'routing_plan = "p"\nrewrite = [{ match = "1", kind = "x" }]')
    assert problems(tmp_path, text) == [
        "accounts[0].rewrite[0].kind: unknown key",
        "gateways[0].host: unknown key",
    ]


def test_references_are_checked_alongside_bad_keys(tmp_path: Path) -> None:
    """A wrong key does not hide a wrong reference: one run reports both."""
    text = MINIMAL.replace('routing_plan = "p"', 'routing_plan = "p"\nmax_cps = 1.5').replace(
        'gateways = ["gw"]', 'gateways = ["gw", "ghost"]'
    )
    assert problems(tmp_path, text) == [
        "accounts[0].max_cps: must be an integer, got a number (1.5)",
        "routes[0].gateways[1]: no [[gateways]] with id 'ghost'",
    ]


# -- no answer, digest defaults ------------------------------------------------------------


def test_no_answer_timeout_and_failover_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    account, gw = cfg.account("acc"), cfg.gateway("gw")
    assert (cfg.defaults.no_answer_timeout, cfg.defaults.failover_on_no_answer) == (180.0, False)
    assert (gw.no_answer_timeout, gw.failover_on_no_answer) == (180.0, None)
    assert (account.no_answer_timeout, account.failover_on_no_answer) == (None, None)
    assert no_answer_timeout(account, gw) == 180.0
    assert not fails_over_on_no_answer(cfg.defaults, account, gw)


@pytest.mark.parametrize(
    ("defaults", "gateway", "account", "seconds", "fails_over"),
    [
        ("no_answer_timeout = 60", "", "", 60.0, False),  # the gateway inherits it
        ("no_answer_timeout = 60", "no_answer_timeout = 90", "", 90.0, False),  # its own
        ("", "no_answer_timeout = 90", "no_answer_timeout = 30.5", 30.5, False),  # shortest
        ("", "no_answer_timeout = 20", "no_answer_timeout = 30", 20.0, False),
        ("failover_on_no_answer = true", "failover_on_no_answer = false", "", 180.0, True),
        ("", "failover_on_no_answer = true", "failover_on_no_answer = false", 180.0, True),
        ("", "", "failover_on_no_answer = true", 180.0, True),
    ],
)
def test_no_answer_rules(
    tmp_path: Path, defaults: str, gateway: str, account: str, seconds: float, fails_over: bool
) -> None:
    text = f"[defaults]\n{defaults}\n" + MINIMAL.replace(
        'routing_plan = "p"', f'routing_plan = "p"\n{account}'
    ).replace('address = "198.51.100.1:5060"', f'address = "198.51.100.1:5060"\n{gateway}')
    cfg = load_config(write(tmp_path, text))
    acc, gw = cfg.account("acc"), cfg.gateway("gw")
    assert no_answer_timeout(acc, gw) == seconds
    assert fails_over_on_no_answer(cfg.defaults, acc, gw) is fails_over
    assert Config.model_validate(cfg.model_dump()) == cfg  # resolved values round-trip


def test_bad_no_answer_keys_are_named(tmp_path: Path) -> None:
    text = "[defaults]\nno_answer_timeout = 0\nfailover_on_no_answer = 1\n" + MINIMAL.replace(
        'routing_plan = "p"', 'routing_plan = "p"\nno_answer_timeout = -5'
    ).replace(
        'address = "198.51.100.1:5060"',
        'address = "198.51.100.1:5060"\nno_answer_timeout = "3"\nfailover_on_no_answer = "yes"',
    )
    assert problems(tmp_path, text) == [
        "defaults.no_answer_timeout: must be > 0, got 0",
        "defaults.failover_on_no_answer: must be true or false, got a number (1)",
        "accounts[0].no_answer_timeout: must be > 0, got -5",
        "gateways[0].no_answer_timeout: must be a number of seconds, got a string ('3')",
        "gateways[0].failover_on_no_answer: must be true or false, got a string ('yes')",
    ]


def test_digest_offers_md5_only_by_default_and_keeps_the_order_given(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).server.digest_algorithms == ("MD5",)
    text = '[server]\ndigest_algorithms = ["sha-256", "MD5"]\n' + MINIMAL
    assert load_config(write(tmp_path, text)).server.digest_algorithms == ("SHA-256", "MD5")


def test_a_gateway_prefix_may_hold_star_and_hash(tmp_path: Path) -> None:
    text = MINIMAL.replace('"198.51.100.1:5060"', '"198.51.100.1:5060"\nadd_prefix = "*0011#"')
    assert load_config(write(tmp_path, text)).gateway("gw").add_prefix == "*0011#"
    bad = MINIMAL.replace('"198.51.100.1:5060"', '"198.51.100.1:5060"\nadd_prefix = "+1"')
    assert problems(tmp_path, bad) == [
        "gateways[0].add_prefix: must be digits, '*' or '#', got '+1'"
    ]


# -- SIGHUP: realm and digest algorithms ----------------------------------------------------

DIGEST = """
[[accounts]]
id = "alice"
username = "alice"
password = "secret"
routing_plan = "p"

[[gateways]]
id = "gw"
address = "198.51.100.1:5060"

[[routes]]
plan = "p"
gateways = ["gw"]
"""


def test_a_reload_changes_the_realm_and_the_algorithms_offered(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    server = f'[server]\ndatabase = "{tmp_path / "cdr.sqlite"}"\n'
    path.write_text(server + 'realm = "old"\n' + DIGEST)
    config = load_config(path)
    switch = Switch(config, build_snapshot(config), path)
    before = [parse_challenge(v) for v in switch.pipeline.nonces.challenges(time.time())]
    assert [(c.realm, c.algorithm) for c in before] == [("old", "MD5")]

    path.write_text(server + 'realm = "new"\ndigest_algorithms = ["SHA-256", "MD5"]\n' + DIGEST)

    async def reload() -> bool:
        try:
            return await switch.reload()
        finally:
            await switch.stop(0)

    assert asyncio.run(reload()) is True
    after = [parse_challenge(v) for v in switch.pipeline.nonces.challenges(time.time())]
    assert [(c.realm, c.algorithm) for c in after] == [("new", "SHA-256"), ("new", "MD5")]
    # An answer to the new challenge is accepted; one to the old realm's is challenged again.
    snapshot, live, source = switch.pipeline.snapshot, LiveState(), ("203.0.113.9", 5060)
    uri = "sip:447911123456@switch"
    for challenge, expected in ((after[1], Authorised), (before[0], Challenge)):
        answer = build_authorization(
            challenge, method="INVITE", uri=uri, username="alice", password="secret"
        )
        request = _invite(uri, answer)
        now = time.time()
        out = authorise(snapshot, request, source, live, now, switch.pipeline.nonces)
        assert isinstance(out, expected), out


def _invite(uri: str, authorization: str) -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKreload\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@203.0.113.9>;tag=a\r\nTo: <" + uri + ">\r\n"
        "Call-ID: reload@test\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@203.0.113.9>\r\n"
        f"Proxy-Authorization: {authorization}\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message
