"""The switch's TOML configuration: read once, validated whole, frozen.

An operator's mistake must be found when the file is loaded (``softswitch check-config``, a
start, a SIGHUP reload), never in the middle of a call. So every key is checked here: its
type, its range, and every reference between sections (an account's ``rate_deck`` and
``routing_plan``, a gateway's ``rate_deck``, a route's ``gateways``). Unknown keys are errors
too: a misspelt ``max_cals`` silently meaning "unlimited" is how switches get abused.

Errors are collected, not raised at the first one, so one run of ``check-config`` shows the
operator everything to fix. Each names the file, the key path as the operator would find it
(``gateways[1].address``: 0-based, in file order) and the reason.

Money (``max_rate``, ``min_margin``) is read as ``Decimal`` (``parse_float=Decimal``), never
float. Rate decks are only *named* here; they are loaded (and their rows checked) by
``softswitch.call.snapshot.build_snapshot``, which reports deck errors as ``ConfigError`` too.

The configuration reference for operators is ``docs/configuration.md``; keep them in step.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeAlias

__all__ = [
    "DEFAULT_FAILOVER_CODES",
    "DEFAULT_GC_THRESHOLD",
    "DEMO_DIR",
    "NEVER_FAILOVER",
    "Account",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DeckSpec",
    "Defaults",
    "Gateway",
    "IpRule",
    "RewriteRule",
    "Route",
    "SecurityConfig",
    "ServerConfig",
    "demo_config",
    "load_config",
    "parse_config",
    "parse_listen",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
RewriteKind = Literal["regex", "prefix"]

#: 408 and every 5xx: the gateway could not take the call, another one may.
DEFAULT_FAILOVER_CODES: frozenset[int] = frozenset({408, *range(500, 600)})
#: Codes that are the callee's (or the caller's) answer, not a gateway failure: hunting on
#: after them would ring a second phone or resurrect a cancelled call.
NEVER_FAILOVER: frozenset[int] = frozenset({486, 487, 600})

DEMO_DIR = Path(__file__).with_name("demo")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong: where (file, key path, optional line/column) and why."""

    file: str
    key: str
    reason: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.key:
            parts.append(self.key)
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        parts.append(self.reason)
        return ": ".join(parts)


class ConfigError(Exception):
    """The configuration (or a deck it names) is wrong; ``problems`` lists every fault.

    ``str()`` is one line per problem, each ``FILE[:LINE]: KEY: REASON``, fit to print to an
    operator as is. ``file``/``key``/``reason`` are the first problem's, for callers that
    only want one.
    """

    def __init__(self, problems: list[ConfigProblem], *, config: Config | None = None) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)
        first = problems[0]
        self.file = first.file
        self.key = first.key
        self.reason = first.reason
        self.line = first.line
        #: The configuration as far as it could be read (defaults in place of bad values),
        #: when the file was valid TOML: for tools that go on checking (``check-config``
        #: reads its decks too), never to run a switch on.
        self.config = config


#: ``[server] gc_threshold``'s default; why this value: ``softswitch.proxy.collector``.
DEFAULT_GC_THRESHOLD = 2_000_000


# --------------------------------------------------------------------------------------
# The frozen configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where to listen, where CDRs go, and the digest realm."""

    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    #: SQLite file for CDRs (relative paths are relative to the config file).
    database: Path = Path("cdr.sqlite")
    #: Digest realm offered in 407 challenges.
    realm: str = "softswitch"
    #: Seconds a SIGTERM waits for calls in progress before stopping.
    drain_timeout: float = 30.0
    #: Digest algorithms offered in a 407, one challenge each, preferred first (RFC 8760).
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    #: Net growth in live objects that triggers a reference-cycle pass (``proxy.collector``).
    gc_threshold: int = DEFAULT_GC_THRESHOLD
    #: Open TCP connections, all peers together; more are refused at accept.
    tcp_max_connections: int = 1024
    #: Open TCP connections from one source IP.
    tcp_max_per_ip: int = 64
    #: Seconds a TCP connection may carry no complete message before it is closed.
    tcp_idle_timeout: float = 600.0
    #: Seconds from the first byte of a message to the end of its header section: a peer
    #: that trickles a header byte by byte is cut off here, whatever the idle timeout says.
    tcp_header_timeout: float = 5.0


#: User-Agent fragments of the SIP scanners that sweep the internet (sipvicious and its
#: forks, sipcli, sundayddr, iWar, ...); matched case-insensitively as substrings.
DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "friendly-request",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "sundayddr",
    "iwar",
    "sivus",
    "vaxsipuseragent",
    "vaxipuseragent",
    "siparmyknife",
    "smap",
    "pplsip",
)


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """``[security]``: what a public SIP port does with strangers (``softswitch.security``).

    Sources that match an account's ``ips`` or a gateway's address are *known*: pike never
    counts them and scanner User-Agents from them are not dropped.
    """

    #: Requests from one unknown source within ``pike_window`` seconds that block it
    #: (Kamailio's pike); 0 turns the limit off.
    pike_rate: int = 400
    pike_window: float = 1.0
    #: Seconds a source blocked by pike or a scanner User-Agent stays blocked.
    block_time: float = 300.0
    #: Requests whose User-Agent contains one of these (case-insensitive) are dropped and
    #: their source blocked.
    drop_user_agents: tuple[str, ...] = DEFAULT_SCANNER_AGENTS
    #: A request from a blocked source: ``drop`` silently, or ``reply`` with one stateless 403.
    blocked_source: Literal["drop", "reply"] = "drop"
    #: A request from a source no account matches (and without credentials for our realm):
    #: ``reply`` with one stateless 403 (or 407 when digest accounts exist), or ``drop``.
    unknown_source: Literal["reply", "drop"] = "reply"
    #: Seconds between two log lines about one source's refused requests.
    log_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Defaults:
    """``[defaults]``: what applies when an account or gateway does not say."""

    failover_codes: frozenset[int] = DEFAULT_FAILOVER_CODES
    #: Seconds to wait for a provisional (1xx) response before trying the next gateway.
    setup_timeout: float = 5.0
    #: Longest answered call in seconds before the switch hangs up both sides; 0 = no limit.
    max_duration: int = 7200
    #: Most gateways tried for one call.
    max_attempts: int = 5
    #: Seconds from the INVITE after which no new gateway is tried (whole-call budget).
    call_budget: float = 30.0
    #: Failed authentications from one IP within ``auth_fail_window`` that block it.
    auth_fail_limit: int = 5
    auth_fail_window: float = 60.0
    #: Seconds an IP stays blocked.
    auth_block_time: float = 300.0


@dataclass(frozen=True, slots=True)
class IpRule:
    """One entry of an account's ``ips``: an address or CIDR, optionally one source port."""

    network: IPNetwork
    port: int | None = None

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return ip in self.network and (self.port is None or self.port == port)

    def __str__(self) -> str:
        net = str(self.network)
        if self.port is None:
            return net
        return f"[{net}]:{self.port}" if self.network.version == 6 else f"{net}:{self.port}"


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """One number rewrite rule of an account (see ``softswitch.call.normalise``).

    ``kind="regex"``: ``re.sub(match, replace, number, count=1)``.
    ``kind="prefix"``: if the number starts with ``prefix``, drop ``strip`` leading digits
    and put ``add`` in front.
    """

    kind: RewriteKind
    match: str = ""
    replace: str = ""
    prefix: str = ""
    strip: int = 0
    add: str = ""
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Account:
    """``[[accounts]]``: a customer ("mapping gateway" in VOS3000 terms).

    How it authenticates follows from what is set: ``ips`` only = by source address,
    ``username`` only = by digest, both = both are required.
    """

    id: str
    routing_plan: str
    ips: tuple[IpRule, ...] = ()
    username: str | None = None
    password: str | None = None
    tech_prefix: str = ""
    rate_deck: str | None = None
    #: Concurrent calls; None = unlimited.
    max_calls: int | None = None
    #: New calls per second; None = unlimited.
    max_cps: int | None = None
    #: Longest answered call in seconds; None = the default, 0 = no limit.
    max_duration: int | None = None
    enabled: bool = True
    rewrite: tuple[RewriteRule, ...] = ()
    #: Destination prefixes allowed (empty = all) and denied (checked first).
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @property
    def uses_ip(self) -> bool:
        return bool(self.ips)

    @property
    def uses_digest(self) -> bool:
        return self.username is not None


@dataclass(frozen=True, slots=True)
class Gateway:
    """``[[gateways]]``: a carrier's termination point ("routing gateway").

    ``host`` is as written in a SIP URI (an IPv6 address keeps its brackets); ``address``
    is the socket form.
    """

    id: str
    host: str
    port: int = 5060
    transport: Literal["udp", "tcp"] = "udp"
    rate_deck: str | None = None
    #: Concurrent calls; None = unlimited.
    capacity: int | None = None
    max_cps: int | None = None
    strip_digits: int = 0
    add_prefix: str = ""
    priority: int = 0
    weight: int = 1
    #: Resolved at load: the gateway's own list, else ``[defaults] failover_codes``.
    failover_codes: frozenset[int] = DEFAULT_FAILOVER_CODES
    #: Resolved at load: seconds to wait for a 1xx before failing over.
    setup_timeout: float = 5.0
    #: OPTIONS probe interval in seconds; 0 = not probed (always considered up).
    probe: float = 0.0
    enabled: bool = True

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) for a socket: an IPv6 host without its brackets."""
        return (self.host.strip("[]"), self.port)


@dataclass(frozen=True, slots=True)
class DeckSpec:
    """``[[rate_decks]]``: a CSV deck and how to read it (``lcr.RateDeck.from_csv`` args)."""

    id: str
    file: Path
    columns: tuple[tuple[str, str | int], ...] = ()
    precision: int = 6
    rounding: Literal["up", "down", "half_up"] = "up"
    delimiter: str = ","
    has_header: bool = True

    def from_csv_kwargs(self) -> dict[str, Any]:
        return {
            "columns": dict(self.columns) or None,
            "precision": self.precision,
            "rounding": self.rounding,
            "delimiter": self.delimiter,
            "has_header": self.has_header,
        }


@dataclass(frozen=True, slots=True)
class Route:
    """``[[routes]]``: in routing plan ``plan``, numbers starting ``prefix`` use ``gateways``."""

    plan: str
    prefix: str
    gateways: tuple[str, ...]
    strategy: Literal["lcr", "priority", "weight"] = "lcr"
    carry_through: bool = False
    max_rate: Decimal | None = None
    min_margin: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file, validated. ``source`` is the file it came from (for messages)."""

    source: str
    server: ServerConfig
    defaults: Defaults
    accounts: tuple[Account, ...]
    gateways: tuple[Gateway, ...]
    rate_decks: tuple[DeckSpec, ...]
    routes: tuple[Route, ...]
    security: SecurityConfig = SecurityConfig()

    @property
    def plans(self) -> tuple[str, ...]:
        """Routing plan names, in order of first appearance."""
        return tuple(dict.fromkeys(r.plan for r in self.routes))

    def account(self, account_id: str) -> Account:
        for a in self.accounts:
            if a.id == account_id:
                return a
        raise KeyError(account_id)

    def gateway(self, gateway_id: str) -> Gateway:
        for g in self.gateways:
            if g.id == gateway_id:
                return g
        raise KeyError(gateway_id)

    def warnings(self) -> list[ConfigProblem]:
        """What is valid but almost certainly not meant: shown by ``check-config`` and at
        start, never a reason to refuse the file."""
        if not self.accounts:
            return [ConfigProblem(self.source, "", "no accounts: every call will be refused")]
        return []


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TECH_PREFIX_RE = re.compile(r"^[0-9*#]+$")


class _Checker:
    """Collects problems while converting the raw TOML tables into the dataclasses."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []

    def fail(self, key: str, reason: str) -> None:
        self.problems.append(ConfigProblem(self.file, key, reason))

    def table(self, raw: object, key: str) -> dict[str, Any]:
        if isinstance(raw, dict):
            return raw
        self.fail(key, f"must be a table, got {_type_name(raw)}")
        return {}

    def array_of_tables(self, raw: dict[str, Any], name: str) -> list[dict[str, Any]]:
        value = raw.get(name, [])
        if not isinstance(value, list):
            self.fail(name, f"must be an array of tables ([[{name}]]), got {_type_name(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            out.append(self.table(item, f"{name}[{i}]"))
        return out

    def unknown(self, raw: Mapping[str, Any], known: set[str], key: str) -> None:
        for name in raw:
            if name not in known:
                where = f"{key}.{name}" if key else name
                hint = _closest(name, known)
                self.fail(where, "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))

    # -- scalar readers: return the default (and record a problem) when the value is bad --

    def string(self, raw: Mapping[str, Any], name: str, key: str, default: str) -> str:
        value = raw.get(name, default)
        if not isinstance(value, str):
            self.fail(f"{key}.{name}", f"must be a string, got {_type_name(value)}")
            return default
        return value

    def opt_string(self, raw: Mapping[str, Any], name: str, key: str) -> str | None:
        if name not in raw:
            return None
        return self.string(raw, name, key, "")

    def required_string(self, raw: Mapping[str, Any], name: str, key: str) -> str:
        if name not in raw:
            self.fail(f"{key}.{name}", "is required")
            return ""
        value = self.string(raw, name, key, "")
        if not value:
            self.fail(f"{key}.{name}", "must not be empty")
        return value

    def boolean(self, raw: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
        value = raw.get(name, default)
        if not isinstance(value, bool):
            self.fail(f"{key}.{name}", f"must be true or false, got {_type_name(value)}")
            return default
        return value

    def integer(
        self,
        raw: Mapping[str, Any],
        name: str,
        key: str,
        default: int,
        *,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        value = raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{key}.{name}", f"must be an integer, got {_type_name(value)}")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.fail(f"{key}.{name}", f"must be {bound}, got {value}")
            return default
        return value

    def choice(
        self, raw: Mapping[str, Any], name: str, key: str, default: Any, choices: tuple[str, ...]
    ) -> Any:
        """One of ``choices`` (a ``Literal`` field); the default when absent or bad."""
        value = raw.get(name, default)
        if value not in choices:
            self.fail(
                f"{key}.{name}", f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
            return default
        return value

    def opt_limit(self, raw: Mapping[str, Any], name: str, key: str) -> int | None:
        """A limit where absent (or 0) means unlimited."""
        if name not in raw:
            return None
        value = self.integer(raw, name, key, 0)
        return value or None

    def seconds(
        self, raw: Mapping[str, Any], name: str, key: str, default: float, *, positive: bool
    ) -> float:
        value = raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            self.fail(f"{key}.{name}", f"must be a number of seconds, got {_type_name(value)}")
            return default
        number = float(value)
        if not math.isfinite(number):
            self.fail(f"{key}.{name}", f"must be a finite number of seconds, got {value}")
            return default
        if number < 0 or (positive and number == 0):
            self.fail(f"{key}.{name}", f"must be {'> 0' if positive else '>= 0'}, got {value}")
            return default
        return number

    def money(self, raw: Mapping[str, Any], name: str, key: str) -> Decimal | None:
        if name not in raw:
            return None
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            self.fail(f"{key}.{name}", f"must be a decimal amount, got {_type_name(value)}")
            return None
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            self.fail(f"{key}.{name}", f"is not a decimal amount: {value!r}")
            return None
        if not amount.is_finite():
            self.fail(f"{key}.{name}", f"must be finite, got {value!r}")
            return None
        return amount

    def ident(self, raw: Mapping[str, Any], key: str) -> str:
        value = self.required_string(raw, "id", key)
        if value and not _ID_RE.match(value):
            self.fail(f"{key}.id", f"{value!r}: use letters, digits, '_', '.', '-'")
        return value

    def digits(self, value: object, key: str, *, allow_empty: bool = True) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string of digits, got {_type_name(value)}")
            return ""
        if not value and allow_empty:
            return value
        if not (value.isascii() and value.isdigit()):
            self.fail(key, f"must be digits only, got {value!r}")
            return ""
        return value

    def digit_list(self, raw: Mapping[str, Any], name: str, key: str) -> tuple[str, ...]:
        value = raw.get(name, [])
        if not isinstance(value, list):
            self.fail(f"{key}.{name}", f"must be a list of prefixes, got {_type_name(value)}")
            return ()
        return tuple(
            self.digits(v, f"{key}.{name}[{i}]", allow_empty=False) for i, v in enumerate(value)
        )

    def codes(self, raw: Mapping[str, Any], name: str, key: str) -> frozenset[int] | None:
        """A failover list: integers 300-699 and class patterns such as ``"5xx"``."""
        if name not in raw:
            return None
        value = raw[name]
        if not isinstance(value, list):
            self.fail(f"{key}.{name}", f"must be a list of SIP codes, got {_type_name(value)}")
            return None
        out: set[int] = set()
        for i, item in enumerate(value):
            where = f"{key}.{name}[{i}]"
            if isinstance(item, str) and re.fullmatch(r"[3-6]xx", item.lower()):
                base = int(item[0]) * 100
                out.update(c for c in range(base, base + 100) if c not in NEVER_FAILOVER)
                continue
            if isinstance(item, bool) or not isinstance(item, int):
                self.fail(where, f"must be a SIP code (e.g. 503) or a class ('5xx'), got {item!r}")
                continue
            if not 300 <= item <= 699:
                self.fail(where, f"{item} is not a final failure code (300-699)")
            elif item in NEVER_FAILOVER:
                self.fail(
                    where, f"{item} is an answer from the callee or caller, never failed over"
                )
            else:
                out.add(item)
        return frozenset(out)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float | Decimal):
        return f"a number ({value})"
    return type(value).__name__


def _closest(name: str, known: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    with contextlib.suppress(RuntimeError):  # ``~nosuchuser/x``: as written, then "no such file"
        path = path.expanduser()
    return path if path.is_absolute() else base / path


_DOTTED_RE = re.compile(r"[0-9.]+")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


class _HostError(ValueError):
    """A host that is not an address or a name; the message reads after "HOST is"."""


def _check_host(host: str) -> None:
    """``_HostError`` unless ``host`` (no brackets) is an IPv4 or IPv6 address or a DNS name.

    Digits and dots only is an IPv4 address, never a name: ``999.1.1.1`` is refused here
    rather than sent to the resolver at the first call.
    """
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _HostError("not a valid IPv6 address") from None
    elif _DOTTED_RE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _HostError(
                "not a valid IPv4 address (four numbers 0-255 separated by dots)"
            ) from None
    else:
        name = host.removesuffix(".")
        if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in name.split(".")):
            raise _HostError("neither an IP address nor a valid host name")


def parse_listen(text: str) -> tuple[str, str, int]:
    """``udp:127.0.0.1:5060`` / ``tcp:[::1]:5070`` into (proto, host, port); ValueError if bad.

    The message says what is wrong and ends with the text as given.
    """
    proto, sep, rest = text.partition(":")
    host, colon, port = rest.rpartition(":")
    if not sep or not colon or not host or proto.lower() not in ("udp", "tcp"):
        raise ValueError(f"must look like udp:127.0.0.1:5060 or tcp:[::1]:5060, got {text!r}")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, got {text!r}")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"write an IPv6 address in brackets, e.g. udp:[::1]:5060, got {text!r}")
    try:
        _check_host(host.strip("[]"))
    except _HostError as e:
        raise ValueError(f"{host.strip('[]')!r} is {e}, got {text!r}") from None
    return proto.lower(), host.strip("[]"), int(port)


def _parse_hostport(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; the port defaults to 5060."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '[' in IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        ipaddress.IPv6Address(host)
        host = f"[{host}]"
        if not rest:
            return host, 5060
        if not rest.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        port_text = rest[1:]
    else:
        if text.count(":") > 1:
            raise ValueError("write an IPv6 address in brackets, e.g. [2001:db8::1]:5060")
        host, _, port_text = text.partition(":")
        if not host:
            raise ValueError("missing host")
        if not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
            raise ValueError(f"bad host {host!r}")
        try:
            _check_host(host)
        except _HostError as e:
            raise _HostError(f"{host!r} is {e}") from None
        if not _:
            return host, 5060
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


def _parse_ip_rule(text: str) -> IpRule:
    """``10.0.0.1``, ``10.0.0.0/24``, ``10.0.0.1:5060``, ``[2001:db8::/32]:5060``, ``::1``."""
    port: int | None = None
    addr = text.strip()
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ValueError("unclosed '['")
        rest = addr[end + 1 :]
        addr = addr[1:end]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError("expected ':port' after ']'")
            port = int(rest[1:])
    elif addr.count(":") == 1:
        addr, port_text = addr.split(":")
        if not port_text.isdigit():
            raise ValueError(f"bad port {port_text!r}")
        port = int(port_text)
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return IpRule(ipaddress.ip_network(addr, strict=True), port)


_SERVER_KEYS = {
    "listen",
    "database",
    "realm",
    "drain_timeout",
    "digest_algorithms",
    "gc_threshold",
    "tcp_max_connections",
    "tcp_max_per_ip",
    "tcp_idle_timeout",
    "tcp_header_timeout",
}
_SECURITY_KEYS = {
    "pike_rate",
    "pike_window",
    "block_time",
    "drop_user_agents",
    "blocked_source",
    "unknown_source",
    "log_interval",
}
_DEFAULT_KEYS = {
    "failover_codes",
    "setup_timeout",
    "max_duration",
    "max_attempts",
    "call_budget",
    "auth_fail_limit",
    "auth_fail_window",
    "auth_block_time",
}
_ACCOUNT_KEYS = {
    "id",
    "ips",
    "username",
    "password",
    "tech_prefix",
    "rate_deck",
    "routing_plan",
    "max_calls",
    "max_cps",
    "max_duration",
    "enabled",
    "rewrite",
    "allow",
    "deny",
}
_GATEWAY_KEYS = {
    "id",
    "address",
    "transport",
    "rate_deck",
    "capacity",
    "max_cps",
    "strip_digits",
    "add_prefix",
    "priority",
    "weight",
    "failover_codes",
    "setup_timeout",
    "probe",
    "enabled",
}
_DECK_KEYS = {"id", "file", "columns", "precision", "rounding", "delimiter", "has_header"}
_ROUTE_KEYS = {
    "plan",
    "prefix",
    "gateways",
    "strategy",
    "carry_through",
    "max_rate",
    "min_margin",
}
_DECK_COLUMNS = {
    "prefix",
    "destination",
    "rate",
    "connect_fee",
    "initial_increment",
    "subsequent_increment",
    "effective_from",
    "effective_to",
}


def _server(c: _Checker, raw: dict[str, Any], base: Path) -> ServerConfig:
    c.unknown(raw, _SERVER_KEYS, "server")
    default = ServerConfig()
    listen = raw.get("listen", list(default.listen))
    items: list[str] = []
    if not isinstance(listen, list) or not listen:
        c.fail("server.listen", "must be a non-empty list like ['udp:127.0.0.1:5060']")
    else:
        for i, item in enumerate(listen):
            if not isinstance(item, str):
                c.fail(f"server.listen[{i}]", f"must be a string, got {_type_name(item)}")
                continue
            try:
                parse_listen(item)
            except ValueError as e:
                c.fail(f"server.listen[{i}]", str(e))
                continue
            items.append(item)
    database = c.string(raw, "database", "server", str(default.database))
    realm = c.string(raw, "realm", "server", default.realm)
    if not realm or '"' in realm or "\\" in realm:
        c.fail("server.realm", "must be a non-empty string without quotes or backslashes")
    algorithms_raw = raw.get("digest_algorithms", list(default.digest_algorithms))
    algorithms: list[str] = []
    if not isinstance(algorithms_raw, list) or not algorithms_raw:
        c.fail("server.digest_algorithms", "must be a non-empty list such as ['SHA-256', 'MD5']")
    else:
        for i, alg in enumerate(algorithms_raw):
            if not isinstance(alg, str) or alg.upper() not in ("MD5", "SHA-256"):
                c.fail(f"server.digest_algorithms[{i}]", f"must be 'MD5' or 'SHA-256', got {alg!r}")
            elif alg.upper() in algorithms:
                c.fail(f"server.digest_algorithms[{i}]", f"{alg!r} listed twice")
            else:
                algorithms.append(alg.upper())
    return ServerConfig(
        digest_algorithms=tuple(algorithms) or default.digest_algorithms,
        listen=tuple(items),
        database=_resolve(base, database),
        realm=realm,
        drain_timeout=c.seconds(raw, "drain_timeout", "server", 30.0, positive=False),
        gc_threshold=c.integer(raw, "gc_threshold", "server", default.gc_threshold, minimum=10_000),
        tcp_max_connections=c.integer(
            raw, "tcp_max_connections", "server", default.tcp_max_connections, minimum=1
        ),
        tcp_max_per_ip=c.integer(
            raw, "tcp_max_per_ip", "server", default.tcp_max_per_ip, minimum=1
        ),
        tcp_idle_timeout=c.seconds(
            raw, "tcp_idle_timeout", "server", default.tcp_idle_timeout, positive=True
        ),
        tcp_header_timeout=c.seconds(
            raw, "tcp_header_timeout", "server", default.tcp_header_timeout, positive=True
        ),
    )


def _security(c: _Checker, raw: dict[str, Any]) -> SecurityConfig:
    c.unknown(raw, _SECURITY_KEYS, "security")
    d = SecurityConfig()
    agents_raw = raw.get("drop_user_agents", list(d.drop_user_agents))
    agents: list[str] = []
    if not isinstance(agents_raw, list):
        c.fail(
            "security.drop_user_agents", f"must be a list of strings, got {_type_name(agents_raw)}"
        )
    else:
        for i, agent in enumerate(agents_raw):
            if not isinstance(agent, str) or not agent.strip():
                c.fail(
                    f"security.drop_user_agents[{i}]", f"must be a non-empty string, got {agent!r}"
                )
            else:
                agents.append(agent.strip().lower())
    return SecurityConfig(
        pike_rate=c.integer(raw, "pike_rate", "security", d.pike_rate),
        pike_window=c.seconds(raw, "pike_window", "security", d.pike_window, positive=True),
        block_time=c.seconds(raw, "block_time", "security", d.block_time, positive=False),
        drop_user_agents=tuple(agents),
        blocked_source=c.choice(
            raw, "blocked_source", "security", d.blocked_source, ("drop", "reply")
        ),
        unknown_source=c.choice(
            raw, "unknown_source", "security", d.unknown_source, ("reply", "drop")
        ),
        log_interval=c.seconds(raw, "log_interval", "security", d.log_interval, positive=True),
    )


def _defaults(c: _Checker, raw: dict[str, Any]) -> Defaults:
    c.unknown(raw, _DEFAULT_KEYS, "defaults")
    d = Defaults()
    codes = c.codes(raw, "failover_codes", "defaults")
    return Defaults(
        failover_codes=d.failover_codes if codes is None else codes,
        setup_timeout=c.seconds(raw, "setup_timeout", "defaults", d.setup_timeout, positive=True),
        max_duration=c.integer(raw, "max_duration", "defaults", d.max_duration),
        max_attempts=c.integer(raw, "max_attempts", "defaults", d.max_attempts, minimum=1),
        call_budget=c.seconds(raw, "call_budget", "defaults", d.call_budget, positive=True),
        auth_fail_limit=c.integer(raw, "auth_fail_limit", "defaults", d.auth_fail_limit, minimum=1),
        auth_fail_window=c.seconds(
            raw, "auth_fail_window", "defaults", d.auth_fail_window, positive=True
        ),
        auth_block_time=c.seconds(
            raw, "auth_block_time", "defaults", d.auth_block_time, positive=False
        ),
    )


def _rewrite_rules(c: _Checker, raw: Mapping[str, Any], key: str) -> tuple[RewriteRule, ...]:
    value = raw.get("rewrite", [])
    if not isinstance(value, list):
        c.fail(f"{key}.rewrite", f"must be an array of tables, got {_type_name(value)}")
        return ()
    rules: list[RewriteRule] = []
    for i, item in enumerate(value):
        where = f"{key}.rewrite[{i}]"
        rule = c.table(item, where)
        if "match" in rule:
            c.unknown(rule, {"match", "replace"}, where)
            pattern_text = c.string(rule, "match", where, "")
            replace = c.string(rule, "replace", where, "")
            try:
                pattern = re.compile(pattern_text)
                pattern.sub(replace, "0")  # a bad back-reference only shows when applied
            except re.error as e:
                c.fail(f"{where}.match", f"bad regular expression or replacement: {e}")
                continue
            rules.append(RewriteRule("regex", match=pattern_text, replace=replace, pattern=pattern))
        elif rule.keys() & {"prefix", "strip", "add"}:
            c.unknown(rule, {"prefix", "strip", "add"}, where)
            prefix = c.digits(rule.get("prefix", ""), f"{where}.prefix")
            add = c.digits(rule.get("add", ""), f"{where}.add")
            strip = c.integer(rule, "strip", where, 0)
            rules.append(RewriteRule("prefix", prefix=prefix, strip=strip, add=add))
        else:
            c.fail(where, "needs either match/replace or prefix/strip/add")
    return tuple(rules)


def _account(c: _Checker, raw: dict[str, Any], key: str) -> Account:
    c.unknown(raw, _ACCOUNT_KEYS, key)
    ips_raw = raw.get("ips", [])
    ips: list[IpRule] = []
    if isinstance(ips_raw, str):
        ips_raw = [ips_raw]
    if not isinstance(ips_raw, list):
        c.fail(f"{key}.ips", f"must be a list of addresses or CIDRs, got {_type_name(ips_raw)}")
        ips_raw = []
    for i, item in enumerate(ips_raw):
        if not isinstance(item, str):
            c.fail(f"{key}.ips[{i}]", f"must be a string, got {_type_name(item)}")
            continue
        try:
            ips.append(_parse_ip_rule(item))
        except ValueError as e:
            c.fail(f"{key}.ips[{i}]", f"{item!r}: {e}")
    username = c.opt_string(raw, "username", key)
    password = c.opt_string(raw, "password", key)
    if username is not None and not username:
        c.fail(f"{key}.username", "must not be empty")
    if (username is None) != (password is None):
        c.fail(f"{key}.password" if username else f"{key}.username", "set both or neither")
    if not ips_raw and username is None:
        c.fail(key, "needs ips, username/password, or both, to authenticate its calls")
    tech_prefix = c.string(raw, "tech_prefix", key, "")
    if tech_prefix and not _TECH_PREFIX_RE.match(tech_prefix):
        c.fail(f"{key}.tech_prefix", f"must be digits, '*' or '#', got {tech_prefix!r}")
    return Account(
        id=c.ident(raw, key),
        routing_plan=c.required_string(raw, "routing_plan", key),
        ips=tuple(ips),
        username=username,
        password=password,
        tech_prefix=tech_prefix,
        rate_deck=c.opt_string(raw, "rate_deck", key),
        max_calls=c.opt_limit(raw, "max_calls", key),
        max_cps=c.opt_limit(raw, "max_cps", key),
        max_duration=c.integer(raw, "max_duration", key, 0) if "max_duration" in raw else None,
        enabled=c.boolean(raw, "enabled", key, True),
        rewrite=_rewrite_rules(c, raw, key),
        allow=c.digit_list(raw, "allow", key),
        deny=c.digit_list(raw, "deny", key),
    )


def _gateway(c: _Checker, raw: dict[str, Any], key: str, defaults: Defaults) -> Gateway:
    c.unknown(raw, _GATEWAY_KEYS, key)
    host, port = "", 5060
    address = c.required_string(raw, "address", key)
    if address:
        try:
            host, port = _parse_hostport(address)
        except _HostError as e:
            c.fail(f"{key}.address", f"{address!r}: {e}")
        except ValueError as e:
            c.fail(f"{key}.address", f"{address!r}: {e} (expected host:port)")
    transport = c.string(raw, "transport", key, "udp").lower()
    if transport not in ("udp", "tcp"):
        c.fail(f"{key}.transport", f"must be 'udp' or 'tcp', got {transport!r}")
        transport = "udp"
    codes = c.codes(raw, "failover_codes", key)
    add_prefix = c.digits(raw.get("add_prefix", ""), f"{key}.add_prefix")
    return Gateway(
        id=c.ident(raw, key),
        host=host,
        port=port,
        transport="tcp" if transport == "tcp" else "udp",
        rate_deck=c.opt_string(raw, "rate_deck", key),
        capacity=c.opt_limit(raw, "capacity", key),
        max_cps=c.opt_limit(raw, "max_cps", key),
        strip_digits=c.integer(raw, "strip_digits", key, 0, maximum=32),
        add_prefix=add_prefix,
        priority=c.integer(raw, "priority", key, 0, minimum=-(2**31), maximum=2**31 - 1),
        weight=c.integer(raw, "weight", key, 1, maximum=2**31 - 1),
        failover_codes=defaults.failover_codes if codes is None else codes,
        setup_timeout=c.seconds(raw, "setup_timeout", key, defaults.setup_timeout, positive=True),
        probe=c.seconds(raw, "probe", key, 0.0, positive=False),
        enabled=c.boolean(raw, "enabled", key, True),
    )


def _deck(c: _Checker, raw: dict[str, Any], key: str, base: Path) -> DeckSpec:
    c.unknown(raw, _DECK_KEYS, key)
    file = c.required_string(raw, "file", key)
    columns_raw = c.table(raw.get("columns", {}), f"{key}.columns")
    columns: list[tuple[str, str | int]] = []
    for name, value in columns_raw.items():
        where = f"{key}.columns.{name}"
        if name not in _DECK_COLUMNS:
            c.fail(where, f"unknown deck column (known: {', '.join(sorted(_DECK_COLUMNS))})")
        elif isinstance(value, bool) or not isinstance(value, str | int):
            c.fail(where, f"must be a header name or a 0-based index, got {_type_name(value)}")
        else:
            columns.append((name, value))
    rounding = c.string(raw, "rounding", key, "up")
    if rounding not in ("up", "down", "half_up"):
        c.fail(f"{key}.rounding", f"must be 'up', 'down' or 'half_up', got {rounding!r}")
        rounding = "up"
    delimiter = c.string(raw, "delimiter", key, ",")
    if len(delimiter) != 1:
        c.fail(f"{key}.delimiter", f"must be one character, got {delimiter!r}")
        delimiter = ","
    return DeckSpec(
        id=c.ident(raw, key),
        file=_resolve(base, file) if file else Path(),
        columns=tuple(columns),
        precision=c.integer(raw, "precision", key, 6, maximum=9),
        rounding="down" if rounding == "down" else "half_up" if rounding == "half_up" else "up",
        delimiter=delimiter,
        has_header=c.boolean(raw, "has_header", key, True),
    )


def _route(c: _Checker, raw: dict[str, Any], key: str) -> Route:
    c.unknown(raw, _ROUTE_KEYS, key)
    prefix = c.digits(raw.get("prefix", ""), f"{key}.prefix")
    gws_raw = raw.get("gateways")
    gateways: list[str] = []
    if not isinstance(gws_raw, list) or not gws_raw:
        c.fail(f"{key}.gateways", "must be a non-empty list of gateway ids")
    else:
        for i, g in enumerate(gws_raw):
            if not isinstance(g, str):
                c.fail(f"{key}.gateways[{i}]", f"must be a gateway id, got {_type_name(g)}")
            elif g in gateways:
                c.fail(f"{key}.gateways[{i}]", f"gateway {g!r} listed twice")
            else:
                gateways.append(g)
    strategy = c.string(raw, "strategy", key, "lcr")
    if strategy not in ("lcr", "priority", "weight"):
        c.fail(f"{key}.strategy", f"must be 'lcr', 'priority' or 'weight', got {strategy!r}")
        strategy = "lcr"
    return Route(
        plan=c.required_string(raw, "plan", key),
        prefix=prefix,
        gateways=tuple(gateways),
        strategy="priority"
        if strategy == "priority"
        else "weight"
        if strategy == "weight"
        else "lcr",
        carry_through=c.boolean(raw, "carry_through", key, False),
        max_rate=c.money(raw, "max_rate", key),
        min_margin=c.money(raw, "min_margin", key),
    )


def _unique(c: _Checker, items: list[Any], section: str, attr: str = "id") -> None:
    seen: dict[object, int] = {}
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if not value:
            continue
        if value in seen:
            c.fail(f"{section}[{i}].{attr}", f"{value!r} already used by {section}[{seen[value]}]")
        else:
            seen[value] = i


def _check_references(c: _Checker, cfg: Config) -> None:
    decks = {d.id for d in cfg.rate_decks}
    gateways = {g.id for g in cfg.gateways}
    plans = set(cfg.plans)
    for i, a in enumerate(cfg.accounts):
        if a.rate_deck is not None and a.rate_deck not in decks:
            c.fail(f"accounts[{i}].rate_deck", f"no [[rate_decks]] with id {a.rate_deck!r}")
        if a.routing_plan and a.routing_plan not in plans:
            c.fail(
                f"accounts[{i}].routing_plan",
                f"no [[routes]] with plan {a.routing_plan!r}",
            )
    for i, g in enumerate(cfg.gateways):
        if g.rate_deck is not None and g.rate_deck not in decks:
            c.fail(f"gateways[{i}].rate_deck", f"no [[rate_decks]] with id {g.rate_deck!r}")
    seen_routes: dict[tuple[str, str], int] = {}
    for i, r in enumerate(cfg.routes):
        for j, gw in enumerate(r.gateways):
            if gw not in gateways:
                c.fail(f"routes[{i}].gateways[{j}]", f"no [[gateways]] with id {gw!r}")
        where = (r.plan, r.prefix)
        if where in seen_routes:
            c.fail(
                f"routes[{i}].prefix",
                f"plan {r.plan!r} already has prefix {r.prefix!r} (routes[{seen_routes[where]}])",
            )
        else:
            seen_routes[where] = i
    users: dict[str, int] = {}
    for i, a in enumerate(cfg.accounts):
        if a.username:
            if a.username in users:
                c.fail(
                    f"accounts[{i}].username",
                    f"{a.username!r} already used by accounts[{users[a.username]}]",
                )
            users[a.username] = i
    # Two IP-authenticated accounts reachable from the same address rule need tech prefixes
    # to tell them apart; identical rules without them would make the choice arbitrary.
    by_rule: dict[tuple[IpRule, str], int] = {}
    for i, a in enumerate(cfg.accounts):
        for rule in a.ips:
            k = (rule, a.tech_prefix)
            if k in by_rule and by_rule[k] != i:
                c.fail(
                    f"accounts[{i}].ips",
                    f"{rule} with tech_prefix {a.tech_prefix!r} is also accounts[{by_rule[k]}]'s;"
                    " give one of them a different tech_prefix",
                )
            by_rule.setdefault(k, i)


def parse_config(data: Mapping[str, Any], *, source: str, base_dir: Path) -> Config:
    """Validate an already-parsed TOML document (money as ``Decimal``) into a ``Config``.

    ``source`` names the file in messages; relative paths resolve against ``base_dir``.
    Raises ``ConfigError`` listing every problem found.
    """
    cfg, problems = _parse(data, source, base_dir)
    if problems:
        raise ConfigError(problems, config=cfg)
    return cfg


def _parse(
    data: Mapping[str, Any], source: str, base_dir: Path
) -> tuple[Config, list[ConfigProblem]]:
    """The configuration (defaults in place of bad values) and every problem found."""
    c = _Checker(source)
    c.unknown(
        data,
        {"server", "defaults", "security", "accounts", "gateways", "rate_decks", "routes"},
        "",
    )
    raw = dict(data)
    server = _server(c, c.table(raw.get("server", {}), "server"), base_dir)
    defaults = _defaults(c, c.table(raw.get("defaults", {}), "defaults"))
    security = _security(c, c.table(raw.get("security", {}), "security"))
    accounts = [
        _account(c, t, f"accounts[{i}]") for i, t in enumerate(c.array_of_tables(raw, "accounts"))
    ]
    gateways = [
        _gateway(c, t, f"gateways[{i}]", defaults)
        for i, t in enumerate(c.array_of_tables(raw, "gateways"))
    ]
    decks = [
        _deck(c, t, f"rate_decks[{i}]", base_dir)
        for i, t in enumerate(c.array_of_tables(raw, "rate_decks"))
    ]
    routes = [_route(c, t, f"routes[{i}]") for i, t in enumerate(c.array_of_tables(raw, "routes"))]
    _unique(c, accounts, "accounts")
    _unique(c, gateways, "gateways")
    _unique(c, decks, "rate_decks")
    cfg = Config(
        source=source,
        server=server,
        defaults=defaults,
        accounts=tuple(accounts),
        gateways=tuple(gateways),
        rate_decks=tuple(decks),
        routes=tuple(routes),
        security=security,
    )
    _check_references(c, cfg)
    return cfg, c.problems


def _read_toml(p: Path) -> dict[str, Any]:
    """The parsed document; ``ConfigError`` (one line, naming the file) when it is unreadable.

    A UTF-8 byte order mark (Windows Notepad writes one) is skipped: TOML forbids it, but
    the file means the same without it. Any other encoding is refused with the line of the
    first byte that is not UTF-8.
    """
    source = str(p)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([ConfigProblem(source, "", f"cannot read: {e.strerror or e}")]) from e
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        reason = "is UTF-16 text (Windows 'Unicode'); save it as UTF-8"
        raise ConfigError([ConfigProblem(source, "", reason)])
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        column = len(raw[line_start : e.start].decode("utf-8")) + 1
        reason = (
            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {column}; save the file as UTF-8"
        )
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError([ConfigProblem(source, "", reason, line=line)]) from None
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigProblem(source, "", f"not valid TOML: {e}")]) from None


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML file at ``path``; raises ``ConfigError`` naming what is wrong.

    Deck files are checked to exist here but their rows are read by ``build_snapshot``.
    """
    p = Path(path)
    data = _read_toml(p)
    cfg, problems = _parse(data, str(p), p.resolve().parent)
    for i, d in enumerate(cfg.rate_decks):
        key = f"rate_decks[{i}]"
        if not d.file.is_file() and not _has_problem(problems, f"{key}.file"):
            problems.append(ConfigProblem(str(p), f"{key}.file", f"no such file: {d.file}"))
    if problems:
        raise ConfigError(problems, config=cfg)
    return cfg


def _has_problem(problems: list[ConfigProblem], key: str) -> bool:
    """Whether a problem is about ``key`` or a key under it (``rate_decks[1]``, ``...file``)."""
    return any(p.key == key or p.key.startswith((f"{key}.", f"{key}[")) for p in problems)


def demo_state_dir() -> Path:
    """Where the demo keeps its CDRs: ``$XDG_STATE_HOME/softswitch``, else ``./var/softswitch``."""
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "softswitch" if xdg else Path("var") / "softswitch"


def demo_config(state_dir: Path) -> Config:
    """The embedded demo: ``demo/demo.toml`` shipped with the package, CDRs in ``state_dir``.

    Loopback only (udp+tcp 127.0.0.1:5060), account ``demo`` authorised by IP 127.0.0.1,
    gateways ``carrier_a`` (127.0.0.1:5070) and ``carrier_b`` (127.0.0.1:5080).
    """
    cfg = load_config(DEMO_DIR / "demo.toml")
    server = dataclasses.replace(cfg.server, database=Path(state_dir) / "cdr.sqlite")
    return dataclasses.replace(cfg, server=server)
