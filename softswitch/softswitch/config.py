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

The sections are pydantic (v2) dataclasses, frozen, ``extra="forbid"``: the same classes
that check the file will check and serve what a management API receives
(``Config.model_validate``, ``model_dump``, ``model_json_schema``, defined on every section).
They are pydantic *dataclasses* rather than ``BaseModel``s so that what their consumers do
with them keeps working: ``dataclasses.replace`` (which validates again), positional
construction, equality and hashing by field. (Not ``slots=True``: pydantic's validators
would then see the class from before the slots copy, which its instances are not.)

Each key's check is a small ``_Check`` in its type, in the operator's words rather than
pydantic's; the checks across the keys of one table and the references between tables run
in the classes' wrap validator (``_Section._validate``), and the problems of one run are
gathered into one ``ConfigError``.

A section reads two forms of input:

* the *file form* (``load_config``, ``parse_config``): the TOML keys; relative paths resolve
  against the file's folder and a gateway's ``address`` becomes its ``host`` and ``port``;
* the *model form* (constructors, ``dataclasses.replace``, ``model_validate`` without a
  context): the field names, as ``model_dump`` writes them.

The configuration reference for operators is ``docs/configuration.md``; keep them in step.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import difflib
import functools
import hashlib
import importlib.resources
import ipaddress
import math
import os
import re
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeAlias, cast

import pydantic.dataclasses
from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import (
    ArgsKwargs,
    CoreSchema,
    ErrorDetails,
    InitErrorDetails,
    PydanticCustomError,
    core_schema,
)

from lcr import windows as lcr_windows
from lcr.errors import LcrError
from softswitch.media.codecs import canonical_codec

__all__ = [
    "ALARM_METRICS",
    "DEFAULT_FAILOVER_CODES",
    "DEFAULT_GC_THRESHOLD",
    "DEFAULT_NO_ANSWER_TIMEOUT",
    "DEMO_DIR",
    "NEVER_FAILOVER",
    "REGISTERED_HOST",
    "STATS_WINDOWS",
    "Account",
    "AlarmRule",
    "CliRule",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DeckSpec",
    "Defaults",
    "Gateway",
    "IpRule",
    "ManagementConfig",
    "MediaConfig",
    "MediaRelay",
    "RewriteRule",
    "Route",
    "RouteQuality",
    "RouteTime",
    "SecurityConfig",
    "ServerConfig",
    "demo_config",
    "demo_state_dir",
    "fails_over_on_no_answer",
    "is_loopback",
    "load_config",
    "media_timeout",
    "no_answer_timeout",
    "parse_config",
    "parse_http_listen",
    "parse_listen",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
RewriteKind = Literal["regex", "prefix"]
CliKind = Literal["regex", "prefix", "set"]
CliRequirement = Literal["any", "required", "absent"]

#: 408 and every 5xx: the gateway could not take the call, another one may.
DEFAULT_FAILOVER_CODES: frozenset[int] = frozenset({408, *range(500, 600)})
#: Codes that are the callee's (or the caller's) answer, not a gateway failure: hunting on
#: after them would ring a second phone or resurrect a cancelled call.
NEVER_FAILOVER: frozenset[int] = frozenset({486, 487, 600})

DEMO_DIR = Path(__file__).with_name("demo")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
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
#: ``[defaults] no_answer_timeout``: seconds a ringing branch may ring unanswered.
DEFAULT_NO_ANSWER_TIMEOUT = 180.0


# --------------------------------------------------------------------------------------
# How a validation reads its input, and problems as pydantic errors
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Reading:
    """How to read the input, passed as pydantic's ``context={"reading": ...}``.

    ``base_dir`` set: the file form (TOML keys; relative paths resolve against it). None:
    the model form (field names; paths as given). ``partial``: build what can be built,
    leaving out (or putting a default in place of) whatever is wrong, and report nothing:
    the configuration a ``ConfigError`` carries, and what the cross-references are checked on
    when some key is wrong, so that one run still reports everything.
    """

    source: str = ""
    base_dir: Path | None = None
    partial: bool = False


_MODEL_FORM = _Reading()


def _reading(info: ValidationInfo) -> _Reading:
    context = info.context
    if isinstance(context, dict):
        reading = context.get("reading")
        if isinstance(reading, _Reading):
            return reading
    return _MODEL_FORM


def _problem(reason: str) -> PydanticCustomError:
    """A problem in the operator's words (the template only carries it, whatever its braces)."""
    return PydanticCustomError("config", "{reason}", {"reason": reason})


def _line(loc: tuple[str | int, ...], reason: str, value: object = None) -> InitErrorDetails:
    return {"type": _problem(reason), "loc": loc, "input": value}


def _reason(error: ErrorDetails) -> str:
    """The operator's reason for one pydantic error (ours carry it; a few of pydantic's own
    can still occur, for a key that is missing or one that a constructor does not take)."""
    kind = error["type"]
    if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
        return "is required"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    return error["msg"]


def _lines(error: ValidationError) -> list[InitErrorDetails]:
    return [_line(e["loc"], _reason(e), e.get("input")) for e in error.errors()]


def _fail_items(title: str, lines: list[InitErrorDetails]) -> None:
    """Raise the problems of a list's items (``lines`` located by index), if any."""
    if lines:
        raise ValidationError.from_exception_data(title, lines)


def _key_path(loc: tuple[str | int, ...]) -> str:
    """``('gateways', 1, 'address')`` as the operator writes it: ``gateways[1].address``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float | Decimal):
        return f"a number ({value})"
    return type(value).__name__


def _closest(name: str, known: frozenset[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    with contextlib.suppress(RuntimeError):  # ``~nosuchuser/x``: as written, then "no such file"
        path = path.expanduser()
    return path if path.is_absolute() else base / path


# --------------------------------------------------------------------------------------
# The checks of one key, as ``Annotated`` metadata
# --------------------------------------------------------------------------------------


class _Check:
    """Checks (and converts) a key's raw value in the operator's words, before the type's own
    validation (which then always passes); ``schema`` adds to the JSON schema.
    ``uses_reading``: the check depends on how the input is read (else it is not told)."""

    __slots__ = ()
    uses_reading: ClassVar[bool] = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        return {}

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        if not self.uses_reading:
            return core_schema.no_info_before_validator_function(self.check, handler(source))
        check = self.check

        def run(value: Any, info: ValidationInfo) -> Any:
            return check(value, _reading(info))

        return core_schema.with_info_before_validator_function(run, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.update(self.schema())
        return out


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TECH_PREFIX_RE = re.compile(r"^[0-9*#]+$")
_CODE_CLASS_RE = re.compile(r"[3-6]xx")


@dataclasses.dataclass(frozen=True, slots=True)
class _Text(_Check):
    """A string; ``required``: not empty; ``optional``: None allowed (the model form's way
    of leaving it out)."""

    required: bool = False
    optional: bool = False

    uses_reading: ClassVar[bool] = True

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if self.required and not value and not reading.partial:
            raise _problem("must not be empty")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Ident(_Check):
    """An ``id``: letters, digits, ``_ . -``, starting with a letter or digit."""

    uses_reading: ClassVar[bool] = True

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if reading.partial:  # kept as written, so references to it are not reported again
            return value
        if not value:
            raise _problem("must not be empty")
        if not _ID_RE.match(value):
            raise _problem(f"{value!r}: use letters, digits, '_', '.', '-'")
        return value

    def schema(self) -> dict[str, Any]:
        return {"pattern": _ID_RE.pattern}


@dataclasses.dataclass(frozen=True, slots=True)
class _Realm(_Check):
    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if not value or '"' in value or "\\" in value:
            raise _problem("must be a non-empty string without quotes or backslashes")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class _TechPrefix(_Check):
    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if value and not _TECH_PREFIX_RE.match(value):
            raise _problem(f"must be digits, '*' or '#', got {value!r}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"pattern": "^[0-9*#]*$"}


@dataclasses.dataclass(frozen=True, slots=True)
class _Bool(_Check):
    optional: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, bool):
            raise _problem(f"must be true or false, got {_type_name(value)}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Int(_Check):
    """An integer from ``minimum`` to ``maximum``; ``limit``: 0 (or None) means no limit
    and reads as None; ``optional``: None allowed."""

    minimum: int = 0
    maximum: int | None = None
    limit: bool = False
    optional: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None and (self.optional or self.limit):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _problem(f"must be an integer, got {_type_name(value)}")
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            if self.maximum is None:
                raise _problem(f"must be >= {self.minimum}, got {value}")
            raise _problem(f"must be between {self.minimum} and {self.maximum}, got {value}")
        return None if self.limit and value == 0 else value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"minimum": self.minimum}
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Seconds(_Check):
    """A finite number of seconds, ``>= 0`` (``> 0`` when ``positive``), read as float."""

    positive: bool = False
    optional: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise _problem(f"must be a number of seconds, got {_type_name(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _problem(f"must be a finite number of seconds, got {value}")
        if number < 0 or (self.positive and number == 0):
            raise _problem(f"must be {'> 0' if self.positive else '>= 0'}, got {value}")
        return number

    def schema(self) -> dict[str, Any]:
        return {"exclusiveMinimum": 0} if self.positive else {"minimum": 0}


@dataclasses.dataclass(frozen=True, slots=True)
class _Real(_Check):
    """A finite number from ``minimum`` to ``maximum`` (a threshold: a ratio, seconds, a
    count), read as float; ``optional``: None allowed."""

    minimum: float = 0.0
    maximum: float | None = None
    optional: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise _problem(f"must be a number, got {_type_name(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _problem(f"must be a finite number, got {value}")
        if number < self.minimum or (self.maximum is not None and number > self.maximum):
            if self.maximum is None:
                raise _problem(f"must be >= {self.minimum:g}, got {value}")
            raise _problem(f"must be between {self.minimum:g} and {self.maximum:g}, got {value}")
        return number

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"minimum": self.minimum}
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Money(_Check):
    """An exact amount: an integer, a TOML decimal (read as ``Decimal``) or a string of one;
    never a binary float."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            raise _problem(f"must be a decimal amount, got {_type_name(value)}")
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            raise _problem(f"is not a decimal amount: {value!r}") from None
        if not amount.is_finite():
            raise _problem(f"must be finite, got {value!r}")
        return amount


@dataclasses.dataclass(frozen=True, slots=True)
class _Digits(_Check):
    """A string of ASCII digits (empty allowed unless ``nonempty``)."""

    nonempty: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string of digits, got {_type_name(value)}")
        if not value and not self.nonempty:
            return value
        if not (value.isascii() and value.isdigit()):
            raise _problem(f"must be digits only, got {value!r}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"pattern": "^[0-9]+$" if self.nonempty else "^[0-9]*$"}


@dataclasses.dataclass(frozen=True, slots=True)
class _Choice(_Check):
    """One of ``choices``. ``listed``: the message lists them (``must be one of 'a', 'b'``);
    otherwise the value must be a string, compared in lower case when ``lower``."""

    choices: tuple[str, ...]
    listed: bool = False
    lower: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if self.listed:
            if value not in self.choices:
                shown = ", ".join(map(repr, self.choices))
                raise _problem(f"must be one of {shown}, got {value!r}")
            return value
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if self.lower:
            value = value.lower()
        if value not in self.choices:
            *first, last = map(repr, self.choices)
            raise _problem(f"must be {', '.join(first)} or {last}, got {value!r}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class _File(_Check):
    """A path: relative to the configuration file's folder in the file form."""

    required: bool = False

    uses_reading: ClassVar[bool] = True

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if not value:
            if self.required and not reading.partial:
                raise _problem("must not be empty")
            if self.required:
                return Path()
        return value if reading.base_dir is None else _resolve(reading.base_dir, value)


@dataclasses.dataclass(frozen=True, slots=True)
class _Database(_Check):
    """``[server] database``: a ``postgresql://`` (or ``postgres://``) URL, kept as text, or a
    SQLite file, as ``_File`` reads it."""

    uses_reading: ClassVar[bool] = True

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if isinstance(value, str) and value.lower().startswith(("postgresql:", "postgres:")):
            parts = urllib.parse.urlsplit(value)
            if not value.lower().startswith(("postgresql://", "postgres://")) or not (
                parts.hostname or "host=" in parts.query
            ):
                raise _problem(
                    f"a PostgreSQL URL is postgresql://USER@HOST:PORT/DATABASE, got {value!r}"
                )
            try:
                parts.port  # noqa: B018 (a bad port raises here)
            except ValueError:
                raise _problem(f"the port of {value!r} is not a number from 0 to 65535") from None
            return value
        if isinstance(value, str) and not value and not reading.partial:
            raise _problem("must be a file path or a postgresql:// URL, got an empty string")
        return _File().check(value, reading)


@dataclasses.dataclass(frozen=True, slots=True)
class _SharedState(_Check):
    """``[server] shared_state``: a ``redis://``, ``rediss://`` or ``unix://`` URL that
    redis-py connects with (``softswitch.cluster.config``); the password is never shown."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None:
            return None
        # Here, not at the top: the cluster package imports redis, which a switch without
        # shared state never needs to load.
        from softswitch.cluster.config import check_url
        from softswitch.cluster.errors import SharedStateConfigError

        try:
            return check_url(value, key="shared_state")
        except SharedStateConfigError as e:
            raise _problem(str(e).removeprefix("shared_state: ")) from None

    def schema(self) -> dict[str, Any]:
        return {"pattern": "^(redis|rediss|unix)://"}


@dataclasses.dataclass(frozen=True, slots=True)
class _NodeId(_Check):
    """``[server] node_id``: this node's name among those sharing ``shared_state``."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if not value or len(value) > 200 or any(c.isspace() or c == "#" for c in value):
            raise _problem(f"must be 1 to 200 characters without spaces or '#', got {value!r}")
        return value


def _database_value(value: Path | str) -> Path | str:
    """After validation: text that is no PostgreSQL URL is a path (the model form and JSON
    carry a path as text)."""
    if isinstance(value, str) and not value.lower().startswith(("postgresql:", "postgres:")):
        return Path(value)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Host(_Check):
    """A gateway's host as written in a SIP URI: an IP address (IPv6 in brackets) or a name."""

    uses_reading: ClassVar[bool] = True

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if reading.partial and not value:
            return value
        if value.startswith("[") and value.endswith("]"):
            try:
                ipaddress.IPv6Address(value[1:-1])
            except ValueError:
                raise _problem(f"{value[1:-1]!r} is not a valid IPv6 address") from None
        elif ":" in value or "[" in value or "]" in value:
            raise _problem(f"write an IPv6 address in brackets, e.g. [2001:db8::1], got {value!r}")
        else:
            try:
                _check_host(value)
            except _HostError as e:
                raise _problem(f"{value!r} is {e}") from None
        return value


# -- lists ------------------------------------------------------------------------------


def _is_list(value: object) -> bool:
    """A TOML array (a tuple too: the model form, and ``model_dump``, write tuples)."""
    return isinstance(value, list | tuple)


@dataclasses.dataclass(frozen=True, slots=True)
class _Tables(_Check):
    """An array of tables: ``[[name]]`` at the top, an inline array (``rewrite``) inside."""

    name: str | None = None

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value):
            shown = f" ([[{self.name}]])" if self.name else ""
            raise _problem(f"must be an array of tables{shown}, got {_type_name(value)}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class _Listen(_Check):
    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value) or not value:
            raise _problem("must be a non-empty list like ['udp:127.0.0.1:5060']")
        lines: list[InitErrorDetails] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                lines.append(_line((i,), f"must be a string, got {_type_name(item)}", item))
                continue
            try:
                parse_listen(item)
            except ValueError as e:
                lines.append(_line((i,), str(e), item))
        _fail_items("listen", lines)
        return tuple(value)


_ALGORITHMS = ("MD5", "SHA-256")


@dataclasses.dataclass(frozen=True, slots=True)
class _Algorithms(_Check):
    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value) or not value:
            raise _problem("must be a non-empty list such as ['MD5'] or ['SHA-256', 'MD5']")
        out: list[str] = []
        lines: list[InitErrorDetails] = []
        for i, alg in enumerate(value):
            if not isinstance(alg, str) or alg.upper() not in _ALGORITHMS:
                lines.append(_line((i,), f"must be 'MD5' or 'SHA-256', got {alg!r}", alg))
            elif alg.upper() in out:
                lines.append(_line((i,), f"{alg!r} listed twice", alg))
            else:
                out.append(alg.upper())
        _fail_items("digest_algorithms", lines)
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        return {"items": {"enum": list(_ALGORITHMS)}, "minItems": 1, "uniqueItems": True}


@dataclasses.dataclass(frozen=True, slots=True)
class _Agents(_Check):
    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value):
            raise _problem(f"must be a list of strings, got {_type_name(value)}")
        out: list[str] = []
        lines: list[InitErrorDetails] = []
        for i, agent in enumerate(value):
            if not isinstance(agent, str) or not agent.strip():
                lines.append(_line((i,), f"must be a non-empty string, got {agent!r}", agent))
            else:
                out.append(agent.strip().lower())
        _fail_items("drop_user_agents", lines)
        return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class _Ips(_Check):
    """An account's ``ips``: one string or a list; each item is read by ``IpRule``."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if isinstance(value, str):
            return [value]
        if not _is_list(value):
            raise _problem(f"must be a list of addresses or CIDRs, got {_type_name(value)}")
        return value


_PREFIX = _Digits(nonempty=True)


@dataclasses.dataclass(frozen=True, slots=True)
class _Prefixes(_Check):
    """``allow``/``deny``: a list of non-empty digit strings."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value):
            raise _problem(f"must be a list of prefixes, got {_type_name(value)}")
        lines: list[InitErrorDetails] = []
        for i, item in enumerate(value):
            try:
                _PREFIX.check(item, reading)
            except PydanticCustomError as e:
                lines.append(_line((i,), e.message(), item))
        _fail_items("prefixes", lines)
        return tuple(value)

    def schema(self) -> dict[str, Any]:
        return {"items": {"type": "string", "pattern": "^[0-9]+$"}}


@dataclasses.dataclass(frozen=True, slots=True)
class _Codes(_Check):
    """A failover list: integers 300-699 and class patterns such as ``"5xx"``."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if isinstance(value, set | frozenset):  # the model form: already expanded
            value = sorted(value, key=str)
        if not _is_list(value):
            raise _problem(f"must be a list of SIP codes, got {_type_name(value)}")
        out: set[int] = set()
        lines: list[InitErrorDetails] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and _CODE_CLASS_RE.fullmatch(item.lower()):
                base = int(item[0]) * 100
                out.update(c for c in range(base, base + 100) if c not in NEVER_FAILOVER)
            elif isinstance(item, bool) or not isinstance(item, int):
                why = f"must be a SIP code (e.g. 503) or a class ('5xx'), got {item!r}"
                lines.append(_line((i,), why, item))
            elif not 300 <= item <= 699:
                lines.append(_line((i,), f"{item} is not a final failure code (300-699)", item))
            elif item in NEVER_FAILOVER:
                why = f"{item} is an answer from the callee or caller, never failed over"
                lines.append(_line((i,), why, item))
            else:
                out.add(item)
        _fail_items("failover_codes", lines)
        return frozenset(out)


@dataclasses.dataclass(frozen=True, slots=True)
class _Codecs(_Check):
    """``codecs``: the allowed codecs in order of preference, each a name operators write
    (``"g711a"``, ``"G729"`` ...), kept as SDP's encoding name (``softswitch.media.codecs``)."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:

        if not _is_list(value):
            raise _problem(f"must be a list of codec names, got {_type_name(value)}")
        out: list[str] = []
        lines: list[InitErrorDetails] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                lines.append(_line((i,), f"must be a codec name, got {_type_name(item)}", item))
                continue
            try:
                name = canonical_codec(item)
            except ValueError as e:
                lines.append(_line((i,), str(e), item))
                continue
            if name in out:
                lines.append(_line((i,), f"{item!r} is listed twice", item))
            else:
                out.append(name)
        _fail_items("codecs", lines)
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        return {"items": {"type": "string"}}


@dataclasses.dataclass(frozen=True, slots=True)
class _RelayAddress(_Check):
    """A media relay's NG control address: ``host:port`` (IPv6 in brackets)."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        try:
            _parse_hostport(value)
        except ValueError as e:
            raise _problem(f"{value!r}: {e} (expected host:port)") from None
        if not re.search(r":[0-9]+$", value):
            raise _problem(f"{value!r}: needs the port rtpengine's listen-ng uses (host:port)")
        return value


#: The keys of a route's gateway entry written as a table (``{ id = "a", weight = 70 }``).
_GATEWAY_ENTRY_KEYS = frozenset({"id", "priority", "weight"})


def _gateway_entry(entry: Mapping[str, Any], lines: list[InitErrorDetails], i: int) -> Any:
    """A route's gateway written as a table: its id (what ``_GatewayIds`` keeps; the
    ``priority`` and ``weight`` go to ``Route.gateway_settings``), its problems in
    ``lines``."""
    for key in entry:
        if key not in _GATEWAY_ENTRY_KEYS:
            hint = _closest(str(key), _GATEWAY_ENTRY_KEYS)
            reason = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
            lines.append(_line((i, str(key)), reason + "; an entry takes id, priority, weight"))
    for key in ("priority", "weight"):
        if key in entry:
            try:
                _Int(0).check(entry[key])
            except PydanticCustomError as e:
                lines.append(_line((i, key), e.message(), entry[key]))
    gid = entry.get("id")
    if not isinstance(gid, str) or not gid:
        shown = "is required" if gid is None else f"must be a gateway id, got {_type_name(gid)}"
        lines.append(_line((i, "id"), shown, gid))
        return None
    return gid


@dataclasses.dataclass(frozen=True, slots=True)
class _GatewayIds(_Check):
    """A route's ``gateways``: a non-empty list of ids, none twice. An entry may be a table
    ``{ id = "a", priority = 1, weight = 70 }`` overriding the gateway's own priority and
    weight on this route (``Route.gateway_settings`` keeps those)."""

    uses_reading: ClassVar[bool] = True

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value) or (not value and not reading.partial):
            raise _problem("must be a non-empty list of gateway ids")
        out: list[str] = []
        lines: list[InitErrorDetails] = []
        for i, gw in enumerate(value):
            if isinstance(gw, Mapping):
                gw = _gateway_entry(gw, lines, i)
                if gw is None:
                    continue
            if not isinstance(gw, str):
                lines.append(_line((i,), f"must be a gateway id, got {_type_name(gw)}", gw))
            elif gw in out:
                lines.append(_line((i,), f"gateway {gw!r} listed twice", gw))
            else:
                out.append(gw)
        _fail_items("gateways", lines)
        return tuple(out)


_DECK_COLUMNS = frozenset(
    {
        "prefix",
        "destination",
        "rate",
        "connect_fee",
        "initial_increment",
        "subsequent_increment",
        "effective_from",
        "effective_to",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Columns(_Check):
    """A deck's ``columns``: a table from deck field to header name or 0-based index, kept
    as a tuple of pairs (hashable); the model form may give the pairs."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if _is_list(value):
            try:
                value = dict(value)
            except (TypeError, ValueError):
                raise _problem("must be a table of column names") from None
        if not isinstance(value, dict):
            raise _problem(f"must be a table, got {_type_name(value)}")
        out: list[tuple[str, str | int]] = []
        lines: list[InitErrorDetails] = []
        for name, column in value.items():
            if name not in _DECK_COLUMNS:
                known = ", ".join(sorted(_DECK_COLUMNS))
                lines.append(_line((name,), f"unknown deck column (known: {known})", column))
            elif isinstance(column, bool) or not isinstance(column, str | int):
                why = f"must be a header name or a 0-based index, got {_type_name(column)}"
                lines.append(_line((name,), why, column))
            else:
                out.append((name, column))
        _fail_items("columns", lines)
        return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class _Delimiter(_Check):
    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if len(value) != 1:
            raise _problem(f"must be one character, got {value!r}")
        return value


# The keys' types, by what they mean. ``Annotated[T, check]``: the check reads the raw value.
_Str = Annotated[str, _Text()]
_RequiredStr = Annotated[str, _Text(required=True)]
_OptStr = Annotated[str | None, _Text(optional=True)]
_Id = Annotated[str, _Ident()]
_Flag = Annotated[bool, _Bool()]
_OptFlag = Annotated[bool | None, _Bool(optional=True)]
_Count = Annotated[int, _Int(0)]
_AtLeastOne = Annotated[int, _Int(1)]
_Limit = Annotated[int | None, _Int(0, limit=True)]
_OptCount = Annotated[int | None, _Int(0, optional=True)]
_Port = Annotated[int, _Int(1, 65535)]
_Secs = Annotated[float, _Seconds()]
_PositiveSecs = Annotated[float, _Seconds(positive=True)]
_OptPositiveSecs = Annotated[float | None, _Seconds(positive=True, optional=True)]
_Amount = Annotated[Decimal | None, _Money()]
_DigitStr = Annotated[str, _Digits()]
_PrefixList = Annotated[tuple[str, ...], _Prefixes()]
_CodeSet = Annotated[frozenset[int], _Codes()]
_CodecList = Annotated[tuple[str, ...], _Codecs()]
_OptSecs = Annotated[float | None, _Seconds(optional=True)]
_MediaMode = Annotated[Literal["direct", "relay"], _Choice(("direct", "relay"), listed=True)]


# --------------------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------------------

_MODEL_CONFIG = ConfigDict(extra="forbid")
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}
_INIT_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


def _init_fields(cls: type[Any]) -> tuple[str, ...]:
    """The fields a section's constructor takes, in order."""
    names = _INIT_FIELDS.get(cls)
    if names is None:
        names = _INIT_FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return names


def _partial(cls: type[Any], data: dict[str, Any], handler: ModelWrapValidatorHandler[Any]) -> Any:
    """As much of the section as can be read: every key that is wrong is left out (a bad
    item of a list only that item), and a required one is replaced by its placeholder."""
    placeholders: Mapping[str, object] = getattr(cls, "_PLACEHOLDERS", {})
    for _ in range(8):
        for name, value in placeholders.items():
            data.setdefault(name, value)
        try:
            return handler(data)
        except ValidationError as e:
            bad_items: dict[str, set[int]] = {}
            changed = False
            for error in e.errors():
                loc = error["loc"]
                if not loc or not isinstance(loc[0], str) or loc[0] not in data:
                    continue
                name = loc[0]
                if len(loc) > 1 and isinstance(loc[1], int) and _is_list(data[name]):
                    bad_items.setdefault(name, set()).add(loc[1])
                else:
                    del data[name]
                    changed = True
            for name, bad in bad_items.items():
                if name in data:
                    data[name] = [v for i, v in enumerate(data[name]) if i not in bad]
                    changed = True
            if not changed:
                raise
    return handler(data)


class _Section:
    """What every section shares: the wrap validator that reads a table in either form and
    gathers its problems, and the model API (``model_validate``, ``model_dump``,
    ``model_json_schema``: ``BaseModel``'s names, for the management API)."""

    __slots__ = ()

    #: The TOML keys of the file form, where they are not the field names.
    _FILE_KEYS: ClassVar[frozenset[str] | None] = None
    #: What a partial read puts in place of a required key that is missing or wrong.
    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {}

    @classmethod
    def _keys(cls, raw: Mapping[str, Any], reading: _Reading) -> frozenset[str]:
        if reading.base_dir is not None and cls._FILE_KEYS is not None:
            return cls._FILE_KEYS
        return frozenset(_init_fields(cls))

    @classmethod
    def _from_value(cls, value: Any, reading: _Reading) -> dict[str, Any]:
        """The table for a value that is not one: a problem (an empty table when partial)."""
        if reading.partial:
            return {}
        raise _problem(f"must be a table, got {_type_name(value)}")

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        """Turn the keys read into the fields' input (in place), noting what is wrong."""

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        """Problems across the keys of ``raw``; ``obj`` is None when a key is wrong."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _validate(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        if isinstance(data, cls):
            return handler(data)
        reading = _reading(info)
        if isinstance(data, ArgsKwargs):  # a constructor call, or ``dataclasses.replace``
            names = _init_fields(cls)
            if len(data.args) > len(names):
                raise _problem(f"takes at most {len(names)} positional arguments")
            data = {**dict(zip(names, data.args, strict=False)), **(data.kwargs or {})}
        elif not isinstance(data, Mapping):
            data = cls._from_value(data, reading)
        raw: dict[str, Any] = dict(data)
        problems: list[InitErrorDetails] = []
        known = cls._keys(raw, reading)
        if known.issuperset(raw):
            data = dict(raw)
        else:
            data = {}
            for name, value in raw.items():
                if name in known:
                    data[name] = value
                    continue
                hint = _closest(str(name), known)
                reason = "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                problems.append(_line((str(name),), reason, value))
        cls._prepare(data, reading, problems)
        if reading.partial:
            return _partial(cls, data, handler)
        obj = None
        try:
            obj = handler(data)
        except ValidationError as e:
            problems.extend(_lines(e))
        problems.extend(cls._check(raw, obj, reading, info.context))
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return obj

    # -- the model API ------------------------------------------------------------------

    @classmethod
    def model_validate(cls, data: Any, *, context: dict[str, Any] | None = None) -> Self:
        """Validate the model form (field names, as ``model_dump`` writes them)."""
        return cast(Self, _adapter(cls).validate_python(data, context=context))

    @classmethod
    def model_validate_json(cls, data: str | bytes) -> Self:
        return cast(Self, _adapter(cls).validate_json(data))

    def model_dump(
        self, *, mode: Literal["python", "json"] = "python", exclude_defaults: bool = False
    ) -> dict[str, Any]:
        out = _adapter(type(self)).dump_python(self, mode=mode, exclude_defaults=exclude_defaults)
        return cast(dict[str, Any], out)

    def model_dump_json(self, *, indent: int | None = None) -> str:
        return _adapter(type(self)).dump_json(self, indent=indent).decode()

    @classmethod
    def model_json_schema(
        cls, mode: Literal["validation", "serialization"] = "validation"
    ) -> dict[str, Any]:
        return _adapter(cls).json_schema(mode=mode)


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class ServerConfig(_Section):
    """``[server]``: where to listen, where CDRs go, and the digest realm."""

    listen: Annotated[tuple[str, ...], _Listen()] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    #: Where CDRs, open calls, the ledger and registrations live: a SQLite file (relative
    #: paths are relative to the config file) or a ``postgresql://user@host:port/db`` URL
    #: (kept as text; see ``softswitch.store``).
    database: Annotated[str | Path, _Database(), pydantic.AfterValidator(_database_value)] = Path(
        "cdr.sqlite"
    )
    #: Digest realm offered in 407 challenges.
    realm: Annotated[str, _Realm()] = "softswitch"
    #: Seconds a SIGTERM waits for calls in progress before stopping.
    drain_timeout: _Secs = 30.0
    #: Digest algorithms offered in a 407, one challenge each, preferred first (RFC 8760).
    #: MD5 only by default: many phones and SIPp 3.6 read only the first challenge and
    #: know only MD5, so offering SHA-256 first locks them out.
    digest_algorithms: Annotated[tuple[str, ...], _Algorithms()] = ("MD5",)
    #: Net growth in live objects that triggers a reference-cycle pass (``proxy.collector``).
    gc_threshold: Annotated[int, _Int(10_000)] = DEFAULT_GC_THRESHOLD
    #: Open TCP connections, all peers together; more are refused at accept.
    tcp_max_connections: _AtLeastOne = 1024
    #: Open TCP connections from one source IP.
    tcp_max_per_ip: _AtLeastOne = 64
    #: Seconds a TCP connection may carry no complete message before it is closed.
    tcp_idle_timeout: _PositiveSecs = 600.0
    #: Seconds from the first byte of a message to the end of its header section: a peer
    #: that trickles a header byte by byte is cut off here, whatever the idle timeout says.
    tcp_header_timeout: _PositiveSecs = 5.0
    #: Shortest registration accepted, in seconds: a shorter non-zero one gets 423 with
    #: ``Min-Expires`` (RFC 3261 10.3 step 7; ``softswitch.registrar``).
    registrar_min_expires: Annotated[int, _Int(1, 86400)] = 60
    #: Longest registration granted, in seconds (a longer one is shortened), and what a
    #: REGISTER that names no expiry gets.
    registrar_max_expires: Annotated[int, _Int(1, 86400)] = 3600
    #: Worker processes (``softswitch.workers``; ``softswitch run --workers`` wins). Unset:
    #: one per core (``os.cpu_count()``); 1: a single process, no supervisor.
    workers: Annotated[int | None, _Int(1, 256, optional=True)] = None
    #: With several workers, worker i's own port (its Via and Record-Route) is this + i on
    #: every listen host. Unset: ports the kernel picks at start.
    worker_port_base: Annotated[int | None, _Int(1, 65535, optional=True)] = None
    #: With several workers, the kernel picks the worker of a UDP request by its Call-ID
    #: (``workers.steering``); false: by its 4-tuple, and every worker hands the requests
    #: another worker owns to it (``workers.handoff``, always on). Read at start only.
    steer_by_call_id: _Flag = True
    #: Redis the nodes of a cluster share (``softswitch.cluster``): an account's
    #: ``max_calls`` and ``max_cps`` then hold across all of them. Unset: per node. Read at
    #: start only.
    shared_state: Annotated[str | None, _SharedState()] = None
    #: This node's name in ``shared_state``, unique among the live nodes (a second live
    #: process with the same one is refused at start). Unset: ``<hostname>:<first listen
    #: port>``; each worker of ``--workers N`` adds ``/<index>``.
    node_id: Annotated[str | None, _NodeId()] = None
    #: SIP proxies in front of the switch (a balancer such as Kamailio's dispatcher) that
    #: forward customers' requests from their own address: addresses or CIDRs, as an
    #: account's ``ips``. A request from one is taken as coming from the client the proxy
    #: names in ``X-AUTH-IP``/``X-AUTH-PORT`` (``security.proxies``): accounts' ``ips``,
    #: blocks, pike and the CDR's source see the client, not the proxy. Empty: none.
    trusted_proxies: Annotated[tuple[IpRule, ...], _Ips()] = ()

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if reading.base_dir is not None:  # the default is relative to the file too
            data.setdefault("database", "cdr.sqlite")

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        if obj is None:
            return []
        lines = [
            _line(
                ("trusted_proxies", i),
                f"{rule} is wider than an IPv4 /8 or an IPv6 /32: it trusts strangers, and"
                " any of them could name any account's address",
                str(rule),
            )
            for i, rule in enumerate(obj.trusted_proxies)
            if _too_wide(rule.network)
        ]
        if obj.registrar_min_expires > obj.registrar_max_expires:
            reason = (
                f"must be at least registrar_min_expires ({obj.registrar_min_expires}),"
                f" got {obj.registrar_max_expires}"
            )
            lines.append(_line(("registrar_max_expires",), reason, obj.registrar_max_expires))
        return lines


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


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class SecurityConfig(_Section):
    """``[security]``: what a public SIP port does with strangers (``softswitch.security``).

    Sources that match an account's ``ips`` or a gateway's address are *known*: pike never
    counts them and scanner User-Agents from them are not dropped.
    """

    #: Requests from one unknown source within ``pike_window`` seconds that block it
    #: (Kamailio's pike); 0 turns the limit off.
    pike_rate: _Count = 400
    pike_window: _PositiveSecs = 1.0
    #: Seconds a source blocked by pike or a scanner User-Agent stays blocked.
    block_time: _Secs = 300.0
    #: Requests whose User-Agent contains one of these (case-insensitive) are dropped and
    #: their source blocked.
    drop_user_agents: Annotated[tuple[str, ...], _Agents()] = DEFAULT_SCANNER_AGENTS
    #: A request from a blocked source: ``drop`` silently, or ``reply`` with one stateless 403.
    blocked_source: Annotated[Literal["drop", "reply"], _Choice(("drop", "reply"), listed=True)] = (
        "drop"
    )
    #: A request from a source no account matches (and without credentials for our realm):
    #: ``reply`` with one stateless 403 (or 407 when digest accounts exist), or ``drop``.
    unknown_source: Annotated[Literal["reply", "drop"], _Choice(("reply", "drop"), listed=True)] = (
        "reply"
    )
    #: Seconds between two log lines about one source's refused requests.
    log_interval: _PositiveSecs = 60.0


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class Defaults(_Section):
    """``[defaults]``: what applies when an account or gateway does not say."""

    failover_codes: _CodeSet = DEFAULT_FAILOVER_CODES
    #: Seconds to wait for a provisional (1xx) response before trying the next gateway.
    setup_timeout: _PositiveSecs = 5.0
    #: Longest answered call in seconds before the switch hangs up both sides; 0 = no limit.
    max_duration: _Count = 7200
    #: Most gateways tried for one call.
    max_attempts: _AtLeastOne = 5
    #: Seconds from the INVITE after which no new gateway is tried (whole-call budget).
    call_budget: _PositiveSecs = 30.0
    #: Failed authentications from one IP within ``auth_fail_window`` that block it.
    auth_fail_limit: _AtLeastOne = 5
    auth_fail_window: _PositiveSecs = 60.0
    #: Seconds an IP stays blocked.
    auth_block_time: _Secs = 300.0
    #: Seconds a ringing branch (from its first 18x) may ring unanswered before it is
    #: cancelled; gateways inherit it, an account may shorten it (``no_answer_timeout()``).
    no_answer_timeout: _PositiveSecs = DEFAULT_NO_ANSWER_TIMEOUT
    #: Whether a branch that rang unanswered fails over to the next gateway (rather than
    #: ending the call 480); true here, on the gateway or on the account: it does.
    failover_on_no_answer: _Flag = False
    #: Seconds an answered call waits for the caller's ACK before the switch hangs up both
    #: sides with end reason ``no_ack`` (RFC 3261 13.3.1.4: 64*T1).
    ack_timeout: _PositiveSecs = 32.0
    #: Seconds a relayed call's RTP may stop in both directions before the switch hangs up
    #: both sides (end reason ``media_timeout``); 0 = never. Gateways inherit it, an account
    #: may shorten it (``media_timeout()``).
    media_timeout: _Secs = 60.0


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class MediaConfig(_Section):
    """``[media]``: how the switch talks to its media relays (docs/media.md)."""

    #: Seconds to wait for a relay's answer before sending the request again.
    ng_timeout: _PositiveSecs = 0.5
    #: Times a request is sent again before the relay counts as not answering.
    ng_retries: Annotated[int, _Int(0, 10)] = 2
    #: Seconds between two pings of each relay (a relay that misses one is skipped).
    ping_interval: _PositiveSecs = 5.0
    #: Seconds between two reads of a relayed call's RTP counters (``query``), for the
    #: media timeout.
    poll_interval: _PositiveSecs = 5.0


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class MediaRelay(_Section):
    """``[[media_relays]]``: an rtpengine the switch relays media through (NG protocol)."""

    id: _Id
    #: Its NG control socket, ``host:port`` (rtpengine's ``listen-ng``).
    address: Annotated[str, _RelayAddress()]
    #: Share of new relayed calls; 0 = none (a relay being drained).
    weight: Annotated[int, _Int(0, 2**31 - 1)] = 1

    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {"id": "", "address": ""}

    @property
    def host_port(self) -> tuple[str, int]:
        """(host, port) for a socket: an IPv6 host without its brackets."""
        host, port = _parse_hostport(self.address)
        return (host.strip("[]"), port)


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class BillingConfig(_Section):
    """``[billing]``: how the switch meters prepaid and postpaid accounts (docs/billing.md)."""

    #: Seconds of call each reservation takes from the account's credit (rounded up to the
    #: deck's increments): smaller slices share a thin balance more evenly, larger ones
    #: mean fewer reservations.
    slice: Annotated[int, _Int(1, 86400)] = 60
    #: Seconds between two reads of the ledger for top-ups and adjustments booked while the
    #: switch runs (a call refused for credit also reads it first).
    sync_interval: _PositiveSecs = 1.0


#: ``[management] listen``'s default: the API on this host only (no token needed there).
DEFAULT_MANAGEMENT_LISTEN = "127.0.0.1:8080"


@dataclasses.dataclass(frozen=True, slots=True)
class _HttpListen(_Check):
    """``"off"`` or ``HOST:PORT`` (IPv6 in brackets); port 0 lets the system pick one."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        if value.strip().lower() == "off":
            return "off"
        try:
            parse_http_listen(value)
        except ValueError as e:
            raise _problem(str(e)) from None
        return value.strip()


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class ManagementConfig(_Section):
    """``[management]``: the HTTP API and ``/metrics``, served in the switch's own process
    (``softswitch.management``). Off the loopback interface it needs a ``token``: the API
    hangs up calls and books money."""

    #: ``HOST:PORT`` to serve on, or ``"off"``. Read at start only.
    listen: Annotated[str, _HttpListen()] = DEFAULT_MANAGEMENT_LISTEN
    #: The bearer token every request must carry (``Authorization: Bearer TOKEN``); None =
    #: no authentication, allowed on a loopback address only. Changes on SIGHUP.
    token: Annotated[str | None, _Text(required=True, optional=True)] = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, None when off."""
        return None if self.listen == "off" else parse_http_listen(self.listen)

    @property
    def loopback(self) -> bool:
        """Whether only this host can reach the API (so it may go without a token)."""
        address = self.address
        return address is None or is_loopback(address[0])

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        # Only a listen that is written can be off the loopback (the default is on it).
        if obj is None or "listen" not in raw or obj.token is not None or obj.loopback:
            return []
        reason = (
            f"required when listen ({obj.listen!r}) is not a loopback address: anyone who"
            " reaches the port could hang up calls and book money"
        )
        return [_line(("token",), reason)]


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class IpRule(_Section):
    """One entry of an account's ``ips``: an address or CIDR, optionally one source port.

    The file form is a string (``"192.0.2.0/24"``, ``"[2001:db8::1]:5060"``).
    """

    network: IPNetwork
    port: Annotated[int | None, _Int(1, 65535, optional=True)] = None

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return ip in self.network and (self.port is None or self.port == port)

    def __str__(self) -> str:
        net = str(self.network)
        if self.port is None:
            return net
        return f"[{net}]:{self.port}" if self.network.version == 6 else f"{net}:{self.port}"

    @classmethod
    def _from_value(cls, value: Any, reading: _Reading) -> dict[str, Any]:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        try:
            network, port = _parse_ip_rule(value)
        except ValueError as e:
            raise _problem(f"{value!r}: {e}") from None
        return {"network": network, "port": port}


_REGEX_KEYS = frozenset({"match", "replace"})
_PREFIX_KEYS = frozenset({"prefix", "strip", "add"})


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class RewriteRule(_Section):
    """One number rewrite rule of an account (see ``softswitch.call.normalise``).

    ``kind="regex"``: ``re.sub(match, replace, number, count=1)``.
    ``kind="prefix"``: if the number starts with ``prefix``, drop ``strip`` leading digits
    and put ``add`` in front. The file form has no ``kind``: ``match`` makes a regex rule,
    ``prefix``/``strip``/``add`` a prefix rule.
    """

    kind: Annotated[RewriteKind, _Choice(("regex", "prefix"))]
    match: _Str = ""
    replace: _Str = ""
    prefix: _DigitStr = ""
    strip: _Count = 0
    add: _DigitStr = ""
    #: ``match`` compiled (regex rules), at construction.
    pattern: Annotated[SkipJsonSchema[re.Pattern[str] | None], Field(exclude=True)] = (
        dataclasses.field(default=None, init=False, compare=False, repr=False)
    )

    def __post_init__(self) -> None:
        compiled = re.compile(self.match) if self.kind == "regex" else None
        object.__setattr__(self, "pattern", compiled)

    @classmethod
    def _keys(cls, raw: Mapping[str, Any], reading: _Reading) -> frozenset[str]:
        if reading.base_dir is None:
            return frozenset(_init_fields(cls))
        if "match" in raw:
            return _REGEX_KEYS
        if raw.keys() & _PREFIX_KEYS:
            return _PREFIX_KEYS
        return frozenset(raw)  # neither form: that is the problem, not its keys

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if "kind" not in data:
            if "match" in data:
                data["kind"] = "regex"
            elif data.keys() & _PREFIX_KEYS:
                data["kind"] = "prefix"
            elif reading.partial:
                raise _problem("needs either match/replace or prefix/strip/add")
            else:
                problems.append(_line((), "needs either match/replace or prefix/strip/add"))
                data.clear()
                data["kind"] = "prefix"
        match, replace = data.get("match", ""), data.get("replace", "")
        if data["kind"] == "regex" and isinstance(match, str) and isinstance(replace, str):
            try:
                re.compile(match).sub(replace, "0")  # a bad back-reference only shows when used
            except re.error as e:
                reason = f"bad regular expression or replacement: {e}"
                if reading.partial:
                    raise _problem(reason) from None
                problems.append(_line(("match",), reason, match))
                data["match"] = ""  # the rule is refused; this only keeps it constructible


_CLI_NUMBER_RE = re.compile(r"^\+?[0-9]*$")


@dataclasses.dataclass(frozen=True, slots=True)
class _CliDigits(_Check):
    """A caller-ID number or a piece of one: digits, optionally after one ``+`` (E.164 as
    ``P-Asserted-Identity`` often writes it); ``nonempty``: at least one digit."""

    nonempty: bool = False

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string of digits, got {_type_name(value)}")
        if not _CLI_NUMBER_RE.match(value) or (self.nonempty and not value.strip("+")):
            what = "digits, optionally after one '+'"
            raise _problem(f"must be {what}, got {value!r}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"pattern": r"^\+?[0-9]+$" if self.nonempty else _CLI_NUMBER_RE.pattern}


_CLI_FORMS = (
    (frozenset({"set"}), "set"),
    (_REGEX_KEYS, "regex"),
    (_PREFIX_KEYS, "prefix"),
)


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class CliRule(_Section):
    """One caller-ID rule of an account or a gateway (``softswitch.call.cli``): rewrites the
    user part of ``From`` and of each ``P-Asserted-Identity``.

    ``kind="regex"``: ``re.sub(match, replace, user, count=1)``. ``kind="prefix"``: if the
    user starts with ``prefix``, drop ``strip`` leading characters and put ``add`` in front.
    ``kind="set"``: the user becomes ``set`` (a fixed CLI). The file form has no ``kind``:
    ``set``, ``match`` or ``prefix``/``strip``/``add`` says which it is.
    """

    kind: Annotated[CliKind, _Choice(("regex", "prefix", "set"))]
    match: _Str = ""
    replace: _Str = ""
    prefix: Annotated[str, _CliDigits()] = ""
    strip: Annotated[int, _Int(0, 32)] = 0
    add: Annotated[str, _CliDigits()] = ""
    set: Annotated[str, _CliDigits()] = ""
    #: ``match`` compiled (regex rules), at construction.
    pattern: Annotated[SkipJsonSchema[re.Pattern[str] | None], Field(exclude=True)] = (
        dataclasses.field(default=None, init=False, compare=False, repr=False)
    )

    def __post_init__(self) -> None:
        compiled = re.compile(self.match) if self.kind == "regex" else None
        object.__setattr__(self, "pattern", compiled)

    @classmethod
    def _keys(cls, raw: Mapping[str, Any], reading: _Reading) -> frozenset[str]:
        if reading.base_dir is None:
            return frozenset(_init_fields(cls))
        for keys, _ in _CLI_FORMS:
            if raw.keys() & keys:
                return keys
        return frozenset(raw)  # no form: that is the problem, not its keys

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if "kind" not in data:
            kind = next((k for keys, k in _CLI_FORMS if data.keys() & keys), None)
            if kind is not None:
                data["kind"] = kind
            else:
                reason = "needs one of set, match/replace or prefix/strip/add"
                if reading.partial:
                    raise _problem(reason)
                problems.append(_line((), reason))
                data.clear()
                data["kind"] = "prefix"
        if data["kind"] == "set" and not data.get("set") and not reading.partial:
            problems.append(_line(("set",), "must be the caller-ID to send, not empty"))
        match, replace = data.get("match", ""), data.get("replace", "")
        if data["kind"] == "regex" and isinstance(match, str) and isinstance(replace, str):
            try:
                re.compile(match).sub(replace, "0")  # a bad back-reference only shows when used
            except re.error as e:
                reason = f"bad regular expression or replacement: {e}"
                if reading.partial:
                    raise _problem(reason) from None
                problems.append(_line(("match",), reason, match))
                data["match"] = ""  # the rule is refused; this only keeps it constructible


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class Account(_Section):
    """``[[accounts]]``: a customer ("mapping gateway" in VOS3000 terms).

    How it authenticates follows from what is set: ``ips`` only = by source address,
    ``username`` only = by digest, both = both are required.
    """

    id: _Id
    routing_plan: _RequiredStr
    ips: Annotated[tuple[IpRule, ...], _Ips()] = ()
    username: Annotated[str | None, _Text(required=True, optional=True)] = None
    password: _OptStr = None
    tech_prefix: Annotated[str, _TechPrefix()] = ""
    rate_deck: _OptStr = None
    #: Concurrent calls; None = unlimited.
    max_calls: _Limit = None
    #: New calls per second; None = unlimited.
    max_cps: _Limit = None
    #: Longest answered call in seconds; None = the default, 0 = no limit.
    max_duration: _OptCount = None
    enabled: _Flag = True
    rewrite: Annotated[tuple[RewriteRule, ...], _Tables()] = ()
    #: Caller-ID rules for its calls' From/P-Asserted-Identity users, applied as a call
    #: arrives, before routing (``softswitch.call.cli``).
    cli: Annotated[tuple[CliRule, ...], _Tables()] = ()
    #: Destination prefixes allowed (empty = all) and denied (checked first).
    allow: _PrefixList = ()
    deny: _PrefixList = ()
    #: Seconds its calls may ring unanswered on a branch; None = not set. The shortest of
    #: this and the gateway's applies (``no_answer_timeout()``).
    no_answer_timeout: _OptPositiveSecs = None
    #: None = not set; true = its calls fail over when a branch rings unanswered.
    failover_on_no_answer: _OptFlag = None
    #: ``prepaid`` (calls stop at a zero balance), ``postpaid`` (at -credit_limit) or
    #: ``none`` (not metered: today's behaviour). Balances live in the ledger, not here.
    billing: Annotated[
        Literal["none", "prepaid", "postpaid"], _Choice(("none", "prepaid", "postpaid"))
    ] = "none"
    #: How far below zero a postpaid account's balance may go (prepaid: 0).
    credit_limit: _Amount = None
    #: A balance below this logs a ``low_balance`` warning (once each time it falls below).
    low_balance: _Amount = None
    #: ``relay``: its calls' media goes through a media relay (either side saying so is enough).
    media: _MediaMode = "direct"
    #: Allowed codecs in order of preference; empty = any (``media.sdp.merge_policies``).
    codecs: _CodecList = ()
    #: Seconds of dead RTP that end its relayed calls; None = the gateway's (shortest wins).
    media_timeout: _OptSecs = None
    #: It may REGISTER with its digest credentials (``softswitch.registrar``): calls reach
    #: it through a ``registered:ID`` gateway, and its calls from a registered contact's
    #: source address are authorised by the registration.
    register: _Flag = False

    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {"id": "", "routing_plan": ""}

    @property
    def billed(self) -> bool:
        """Whether the switch meters this account's calls against its balance."""
        return self.billing != "none"

    @property
    def uses_ip(self) -> bool:
        return bool(self.ips)

    @property
    def uses_digest(self) -> bool:
        return self.username is not None

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        lines: list[InitErrorDetails] = []
        username, password = raw.get("username"), raw.get("password")
        if (username is None) != (password is None):
            lines.append(_line(("password",) if username else ("username",), "set both or neither"))
        if not raw.get("ips") and username is None:
            reason = "needs ips, username/password, or both, to authenticate its calls"
            lines.append(_line((), reason))
        if raw.get("register") is True and (username is None or password is None):
            lines.append(_line(("register",), "needs username and password: REGISTER uses digest"))
        if obj is not None:
            lines += _billing_problems(obj)
        return lines


#: Balances are kept in nano-units in 64-bit integers (``billing.money``): about 9.2e9
#: currency units at most. A billion leaves room for what calls and top-ups add.
_MAX_BALANCE = 10**9


def _billing_problems(account: Account) -> list[InitErrorDetails]:
    lines: list[InitErrorDetails] = []
    if account.billed and account.rate_deck is None:
        reason = f"billing = {account.billing!r} needs a rate_deck to price its calls"
        lines.append(_line(("rate_deck",), reason))
    for key in ("credit_limit", "low_balance"):
        amount = getattr(account, key)
        if amount is not None and abs(amount) >= _MAX_BALANCE:
            reason = f"must be less than {_MAX_BALANCE:,} in absolute value, got {amount}"
            lines.append(_line((key,), reason, str(amount)))
    limit = account.credit_limit
    if limit is not None and limit < 0:
        lines.append(_line(("credit_limit",), f"must be 0 or more, got {limit}", str(limit)))
    elif limit and account.billing != "postpaid":
        reason = f"only a postpaid account has a credit limit (billing = {account.billing!r})"
        lines.append(_line(("credit_limit",), reason, str(limit)))
    return lines


#: A gateway address that names a registering account: ``registered:ACCOUNT``.
_REGISTERED = "registered:"
#: The host of a ``registered:`` gateway (RFC 2606's reserved ``.invalid``): a placeholder
#: that is never resolved or sent to, since its calls go to the account's contacts.
REGISTERED_HOST = "registered.invalid"


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class Gateway(_Section):
    """``[[gateways]]``: a carrier's termination point ("routing gateway").

    ``host`` is as written in a SIP URI (an IPv6 address keeps its brackets); ``address``
    is the socket form. The file form has ``address = "host:port"`` instead of the two.
    """

    id: _Id
    host: Annotated[str, _Host()]
    port: _Port = 5060
    transport: Annotated[Literal["udp", "tcp"], _Choice(("udp", "tcp"), lower=True)] = "udp"
    rate_deck: _OptStr = None
    #: Concurrent calls; None = unlimited.
    capacity: _Limit = None
    max_cps: _Limit = None
    strip_digits: Annotated[int, _Int(0, 32)] = 0
    #: Put in front of the number sent; a carrier's own routing prefix may hold '*' or '#'.
    add_prefix: Annotated[str, _TechPrefix()] = ""
    priority: Annotated[int, _Int(-(2**31), 2**31 - 1)] = 0
    weight: Annotated[int, _Int(0, 2**31 - 1)] = 1
    #: Resolved at load: the gateway's own list, else ``[defaults] failover_codes``.
    failover_codes: _CodeSet = DEFAULT_FAILOVER_CODES
    #: Resolved at load: seconds to wait for a 1xx before failing over.
    setup_timeout: _PositiveSecs = 5.0
    #: OPTIONS probe interval in seconds; 0 = not probed (always considered up).
    probe: _Secs = 0.0
    enabled: _Flag = True
    #: Resolved at load: seconds a branch may ring unanswered (its own, else the default).
    no_answer_timeout: _PositiveSecs = DEFAULT_NO_ANSWER_TIMEOUT
    #: None = not set; true = a branch here that rings unanswered fails over.
    failover_on_no_answer: _OptFlag = None
    #: ``relay``: calls through it have their media relayed (either side saying so is enough).
    media: _MediaMode = "direct"
    #: Allowed codecs in order of preference; empty = any (``media.sdp.merge_policies``).
    codecs: _CodecList = ()
    #: Resolved at load: seconds of dead RTP that end a relayed call (its own, else the
    #: default); 0 = never.
    media_timeout: _Secs = 60.0
    #: The relay offers the gateway its ``codecs`` only, transcoding the caller's when they
    #: differ (needs ``media = "relay"`` and ``codecs``).
    transcode: _Flag = False
    #: Caller-ID rules applied to what this gateway receives, after the account's.
    cli: Annotated[tuple[CliRule, ...], _Tables()] = ()
    #: Where a call's later requests (ACK, BYE, re-INVITE ...) go: ``contact``, the
    #: callee's Record-Route or Contact where safe (``proxy.dialog_target``); ``address``,
    #: the gateway's address, always.
    dialog_target: Annotated[
        Literal["contact", "address"], _Choice(("contact", "address"), listed=True)
    ] = "contact"

    _FILE_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {
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
            "no_answer_timeout",
            "failover_on_no_answer",
            "media",
            "codecs",
            "media_timeout",
            "transcode",
            "cli",
            "dialog_target",
        }
    )
    #: ``address = "registered:ACCOUNT"``: the account whose registered contacts the calls
    #: go to (``softswitch.registrar``); ``host`` is then ``REGISTERED_HOST``, never used.
    registered: _OptStr = None

    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {"id": "", "host": ""}

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) for a socket: an IPv6 host without its brackets."""
        return (self.host.strip("[]"), self.port)

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        lines: list[InitErrorDetails] = []
        if obj is not None and obj.registered is not None:
            # The registration says how a contact is reached, and a contact is not probed.
            if "transport" in raw and reading.base_dir is not None:
                reason = "not used with a registered: address (the REGISTER's transport is)"
                lines.append(_line(("transport",), reason, raw["transport"]))
            if obj.probe:
                reason = "a registered: gateway is not probed (its contacts come and go)"
                lines.append(_line(("probe",), reason, obj.probe))
            if "dialog_target" in raw and reading.base_dir is not None:
                reason = (
                    "not used with a registered: address (a contact's calls always go where"
                    " it registered from)"
                )
                lines.append(_line(("dialog_target",), reason, raw["dialog_target"]))
        if obj is None or not obj.transcode:
            return lines
        if obj.media != "relay":
            lines.append(_line(("transcode",), 'needs media = "relay": the relay transcodes'))
        if not obj.codecs:
            lines.append(_line(("transcode",), "needs codecs: the ones to offer the gateway"))
        return lines

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if reading.base_dir is None:
            return
        # A host that passes its own check, only while the address has a problem (so the
        # gateway is refused anyway, and the problem is not named twice).
        host, port = "" if reading.partial else "invalid.", 5060
        if "address" not in data:
            problems.append(_line(("address",), "is required"))
        else:
            address = data.pop("address")
            if isinstance(address, str) and address.startswith(_REGISTERED):
                account = address[len(_REGISTERED) :]
                if account:
                    data["registered"], host = account, REGISTERED_HOST
                else:
                    reason = f"{address!r}: name the account after 'registered:'"
                    problems.append(_line(("address",), reason, address))
            elif not isinstance(address, str):
                reason = f"must be a string, got {_type_name(address)}"
                problems.append(_line(("address",), reason, address))
            elif not address:
                problems.append(_line(("address",), "must not be empty", address))
            else:
                try:
                    host, port = _parse_hostport(address)
                except _HostError as e:
                    problems.append(_line(("address",), f"{address!r}: {e}", address))
                except ValueError as e:
                    reason = f"{address!r}: {e} (expected host:port)"
                    problems.append(_line(("address",), reason, address))
        data["host"], data["port"] = host, port


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class DeckSpec(_Section):
    """``[[rate_decks]]``: a CSV deck and how to read it (``lcr.RateDeck.from_csv`` args)."""

    id: _Id
    file: Annotated[Path, _File(required=True)]
    columns: Annotated[tuple[tuple[str, str | int], ...], _Columns()] = ()
    precision: Annotated[int, _Int(0, 9)] = 6
    rounding: Annotated[Literal["up", "down", "half_up"], _Choice(("up", "down", "half_up"))] = "up"
    delimiter: Annotated[str, _Delimiter()] = ","
    has_header: _Flag = True

    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {"id": "", "file": ""}

    def from_csv_kwargs(self) -> dict[str, Any]:
        return {
            "columns": dict(self.columns) or None,
            "precision": self.precision,
            "rounding": self.rounding,
            "delimiter": self.delimiter,
            "has_header": self.has_header,
        }


_ROUTE_CLI = _Choice(("any", "required", "absent"), listed=True)


@dataclasses.dataclass(frozen=True, slots=True)
class _WindowPart(_Check):
    """One key of a route's ``time`` window, read by ``lcr.windows`` (whose messages name
    what is wrong): ``days``, a clock time (``from``/``to``) or ``tz``."""

    part: Literal["days", "start", "end", "tz"]

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not isinstance(value, str):
            raise _problem(f"must be a string, got {_type_name(value)}")
        try:
            if self.part == "days":
                lcr_windows.parse_days(value)
            elif self.part == "tz":
                lcr_windows.parse_zone(value)
            else:
                what = "from" if self.part == "start" else "to"
                lcr_windows.parse_clock(value, what, allow_24=self.part == "end")
        except LcrError as e:
            # "TimeWindow tz: unknown time zone 'X'": the location already names the key.
            text = str(e)
            head, sep, rest = text.partition(": ")
            raise _problem(rest if sep and head.startswith("TimeWindow") else text) from None
        return value


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class RouteTime(_Section):
    """One of a route's ``time`` windows: ``{ days = "mon-fri", from = "08:00", to = "18:00",
    tz = "Europe/London" }``: the route applies on those days, from ``from`` to ``to`` local
    time in ``tz`` (``lcr.TimeWindow``; ``from`` after ``to`` crosses midnight, ``to =
    "24:00"`` is the end of the day)."""

    days: Annotated[str, _WindowPart("days")] = "mon-sun"
    #: ``from`` in the file (a Python keyword: ``start`` here, as ``lcr.TimeWindow``).
    start: Annotated[str, _WindowPart("start")] = "00:00"
    #: ``to`` in the file.
    end: Annotated[str, _WindowPart("end")] = "24:00"
    tz: Annotated[str, _WindowPart("tz")] = "UTC"

    _FILE_KEYS: ClassVar[frozenset[str] | None] = frozenset({"days", "from", "to", "tz"})

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if reading.base_dir is not None:
            # Checked here, so that a problem is located at the file's key, not the field's.
            for key, part in (("from", _WindowPart("start")), ("to", _WindowPart("end"))):
                if key in data:
                    value = data.pop(key)
                    try:
                        data[part.part] = part.check(value)
                    except PydanticCustomError as e:
                        problems.append(_line((key,), e.message(), value))

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        if obj is not None and obj.start == obj.end:
            key = "to" if reading.base_dir is not None else "end"
            reason = "equals from: a window needs from < to, or from > to to cross midnight"
            return [_line((key,), reason, obj.end)]
        return []

    @property
    def window(self) -> lcr_windows.TimeWindow:
        return lcr_windows.TimeWindow(self.days, self.start, self.end, self.tz)

    @property
    def meaning(self) -> tuple[int, int, int, str]:
        """What the window means, for telling routes apart: days as a mask, minutes, and the
        zone by its tz data (``_zone_identity``), so that aliases of one zone (``UTC`` and
        ``Etc/UTC``, ``GB`` and ``Europe/London``) are the same window."""
        mask, start, end, _ = self.window.key
        return mask, start, end, _zone_identity(self.tz)


@functools.lru_cache(maxsize=256)
def _zone_identity(name: str) -> str:
    """A zone by what it means: a digest of its TZif data where ``zoneinfo`` would read it
    (``zoneinfo.TZPATH``, then the ``tzdata`` package), else its name.

    IANA aliases are links to one file, so they get one identity; zones whose data differ
    (``Etc/GMT`` and ``UTC`` name their abbreviation differently) stay distinct. Identical
    data means identical local times at every instant, so no two distinct identities are
    merged wrongly. ``zoneinfo`` has no canonical-name look-up to do this with.
    """
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return name  # not a key zoneinfo reads from a file (it refuses these anyway)
    data: bytes | None = None
    for root in zoneinfo.TZPATH:
        candidate = Path(root, *parts)
        if candidate.is_file():
            with contextlib.suppress(OSError):
                data = candidate.read_bytes()
                break
    if data is None:
        with contextlib.suppress(ImportError, OSError, ValueError):
            data = importlib.resources.files("tzdata.zoneinfo").joinpath(*parts).read_bytes()
    if data is None:
        return name
    return "tzif:" + hashlib.sha256(data).hexdigest()


#: The longest call a ``margin_duration`` may name (``lcr``'s bound), in seconds.
MAX_MARGIN_DURATION = 86_400


@dataclasses.dataclass(frozen=True, slots=True)
class _MarginDurations(_Check):
    """A route's ``margin_duration``: call lengths in whole seconds, or ``"acd"`` (the
    route prefix's live ACD, which ``lcr`` adds to the fixed lengths: so not alone)."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value):
            raise _problem(
                f'must be a list of seconds such as [60, "acd"], got {_type_name(value)}'
            )
        out: list[int | str] = []
        lines: list[InitErrorDetails] = []
        for i, item in enumerate(value):
            if item == "acd":
                out.append("acd")
                continue
            try:
                out.append(_Int(1, MAX_MARGIN_DURATION).check(item))
            except PydanticCustomError as e:
                lines.append(_line((i,), f'{e.message()} (seconds, or "acd")', item))
        _fail_items("margin_duration", lines)
        if "acd" in out and all(d == "acd" for d in out):
            raise _problem('"acd" is added to the fixed lengths: list one too, e.g. [60, "acd"]')
        return tuple(dict.fromkeys(out))


def _times_valid(value: object) -> bool:
    """Whether a route's raw ``time`` reads as windows (the file form)."""
    if not _is_list(value):
        return False
    reading = {"reading": _Reading(base_dir=Path("."))}
    try:
        for item in cast(list[Any], value):
            _adapter(RouteTime).validate_python(item, context=reading)
    except ValidationError:
        return False
    return True


def _unsure_routes(raw: Mapping[str, Any]) -> frozenset[int]:
    """The routes whose ``prefix``, ``cli``, ``caller_prefix`` or ``time`` is wrong
    (reported on its own): the partial configuration has a default in its place, which must
    not be reported as a clash."""
    routes = raw.get("routes")
    if not isinstance(routes, list | tuple):
        return frozenset()
    out = set()
    for i, route in enumerate(routes):
        if not isinstance(route, Mapping):
            continue
        for key, check in (
            ("prefix", _Digits()),
            ("cli", _ROUTE_CLI),
            ("caller_prefix", _Digits()),
        ):
            if key in route:
                try:
                    check.check(route[key])
                except PydanticCustomError:
                    out.add(i)
        if "time" in route and not _times_valid(route["time"]):
            out.add(i)
    return frozenset(out)


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class Route(_Section):
    """``[[routes]]``: in routing plan ``plan``, numbers starting ``prefix`` use ``gateways``."""

    plan: _RequiredStr
    prefix: _DigitStr
    gateways: Annotated[tuple[str, ...], _GatewayIds()]
    strategy: Annotated[
        Literal["lcr", "priority", "weight"], _Choice(("lcr", "priority", "weight"))
    ] = "lcr"
    carry_through: _Flag = False
    max_rate: _Amount = None
    min_margin: _Amount = None
    #: Demote gateways of poor live ASR to the end of the candidates; None = no demotion.
    quality: RouteQuality | None = None
    #: Which calls the route is for: ``any``; ``required``: calls with a caller-ID only;
    #: ``absent``: calls without one (``softswitch.call.cli``: what counts as one).
    cli: Annotated[CliRequirement, _ROUTE_CLI] = "any"
    #: Only for callers whose number (after the account's cli rules) starts with these
    #: digits; "" = any caller.
    caller_prefix: _DigitStr = ""
    #: Only at the instants inside one of these windows; none = always.
    time: Annotated[tuple[RouteTime, ...], _Tables()] = ()
    #: Call lengths (seconds) at which the true cost (increments, connect fees) must leave
    #: ``min_margin`` per minute; ``"acd"``: also the route prefix's live ACD.
    margin_duration: Annotated[tuple[int | str, ...], _MarginDurations()] = ()
    #: (gateway id, priority, weight) of the entries of ``gateways`` written as tables:
    #: this route's own priority and weight for them (None: the gateway's).
    gateway_settings: tuple[tuple[str, int | None, int | None], ...] = ()

    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {"plan": "", "prefix": "", "gateways": ()}
    #: ``gateway_settings`` is written inside ``gateways`` in the file.
    _FILE_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {
            "plan",
            "prefix",
            "gateways",
            "strategy",
            "carry_through",
            "max_rate",
            "min_margin",
            "quality",
            "cli",
            "caller_prefix",
            "time",
            "margin_duration",
        }
    )

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if reading.base_dir is not None:
            data.setdefault("prefix", "")  # the file form's default: every number
        gateways: Any = data.get("gateways")
        if _is_list(gateways) and any(isinstance(g, Mapping) for g in gateways):
            # ``_GatewayIds`` checks the entries and keeps their ids; the overrides here.
            data["gateway_settings"] = tuple(
                (g["id"], _setting(g.get("priority")), _setting(g.get("weight")))
                for g in gateways
                if isinstance(g, Mapping) and isinstance(g.get("id"), str)
            )

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        if obj is not None and obj.cli == "absent" and obj.caller_prefix:
            reason = (
                f'{obj.caller_prefix!r} can never match: cli = "absent" is for calls without'
                " a caller-ID, and caller_prefix matches a caller-ID (drop one of the two)"
            )
            return [_line(("caller_prefix",), reason, obj.caller_prefix)]
        return []

    def target_setting(self, gateway: str) -> tuple[int | None, int | None]:
        """This route's (priority, weight) for ``gateway``; None: the gateway's own."""
        for gid, priority, weight in self.gateway_settings:
            if gid == gateway:
                return priority, weight
        return None, None

    @property
    def windows(self) -> tuple[lcr_windows.TimeWindow, ...]:
        return tuple(t.window for t in self.time)

    @property
    def fixed_durations(self) -> tuple[int, ...]:
        """``margin_duration`` without ``"acd"``."""
        return tuple(d for d in self.margin_duration if isinstance(d, int))

    @property
    def uses_acd(self) -> bool:
        return "acd" in self.margin_duration

    @property
    def condition(self) -> tuple[str, tuple[tuple[int, int, int, str], ...]]:
        """What, besides its prefix and ``cli``, decides when the route applies: its
        ``caller_prefix`` and its windows (by meaning). Two routes of a plan with the same
        prefix and condition serve the same calls."""
        return self.caller_prefix, tuple(sorted({t.meaning for t in self.time}))


def _setting(value: object) -> int | None:
    """A gateway entry's priority or weight, None when absent (or wrong: reported by
    ``_GatewayIds``)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


#: The live statistics' windows (``softswitch.stats.windows.WINDOWS``, which a test keeps in
#: step: not imported, since the stats package imports the call stages, which import this).
STATS_WINDOWS: tuple[str, ...] = ("5m", "15m", "1h", "24h")
_Window = Annotated[str, _Choice(STATS_WINDOWS, listed=True)]


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class RouteQuality(_Section):
    """A route's ``quality = { min_asr = 0.3, window = "15m", min_attempts = 20 }``: its
    gateways whose ASR over ``window`` is below ``min_asr``, over at least ``min_attempts``
    seizures, go to the end of the candidate list (``softswitch.call.quality``); never out."""

    min_asr: Annotated[float, _Real(0.0, 1.0)]
    window: _Window = "15m"
    #: Fewer seizures in the window are no evidence: the gateway keeps its place.
    min_attempts: Annotated[int, _Int(1)] = 20


#: What an alarm can measure (``softswitch.alarms.rules``: how each is read off the stats).
ALARM_METRICS: tuple[str, ...] = (
    "asr",
    "ner",
    "acd",
    "pdd_avg",
    "pdd_p95",
    "attempts",
    "concurrent_calls",
    "cps",
)
#: Metrics that are ratios: their thresholds lie between 0 and 1.
_RATIO_METRICS = frozenset({"asr", "ner"})
ALARM_SCOPES: tuple[str, ...] = ("gateway", "account", "switch")
ALARM_ACTIONS: tuple[str, ...] = ("log", "disable")


@dataclasses.dataclass(frozen=True, slots=True)
class _Actions(_Check):
    """An alarm's ``actions``: a non-empty list of ``log`` and ``disable``, none twice."""

    def check(self, value: Any, reading: _Reading = _MODEL_FORM) -> Any:
        if not _is_list(value) or not value:
            raise _problem('must be a non-empty list such as ["log"] or ["log", "disable"]')
        out: list[str] = []
        lines: list[InitErrorDetails] = []
        for i, action in enumerate(value):
            if action not in ALARM_ACTIONS:
                lines.append(_line((i,), f"must be 'log' or 'disable', got {action!r}", action))
            elif action in out:
                lines.append(_line((i,), f"{action!r} listed twice", action))
            else:
                out.append(action)
        _fail_items("actions", lines)
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        return {"items": {"enum": list(ALARM_ACTIONS)}, "minItems": 1, "uniqueItems": True}


_Threshold = Annotated[float | None, _Real(optional=True)]


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class AlarmRule(_Section):
    """``[[alarms]]``: raise an alarm when ``metric`` of a ``scope`` (each of its keys, or
    ``key`` alone) over ``window`` goes ``below`` or ``above`` a threshold, with at least
    ``min_attempts`` attempts in the window; clear it when the metric is back past ``clear``
    (hysteresis). ``softswitch.alarms`` evaluates the rules; docs/operations.md explains."""

    id: _Id
    metric: Annotated[str, _Choice(ALARM_METRICS, listed=True)]
    scope: Annotated[Literal["gateway", "account", "switch"], _Choice(ALARM_SCOPES, listed=True)]
    #: One gateway or account id; None = every one of the scope (the switch's is "all").
    key: Annotated[str | None, _Text(required=True, optional=True)] = None
    window: _Window = "15m"
    below: _Threshold = None
    above: _Threshold = None
    #: The metric must be back past this for the alarm to clear; None = the threshold.
    clear: _Threshold = None
    #: Attempts the window must hold for the metric to be judged at all.
    min_attempts: _Count = 0
    actions: Annotated[tuple[str, ...], _Actions()] = ("log",)
    #: Seconds between two evaluations of the rule.
    interval: _PositiveSecs = 5.0

    _PLACEHOLDERS: ClassVar[Mapping[str, object]] = {
        "id": "",
        "metric": "asr",
        "scope": "switch",
    }

    @property
    def threshold(self) -> float:
        """The value past which the alarm is raised (``below`` or ``above``)."""
        value = self.below if self.below is not None else self.above
        return 0.0 if value is None else value

    @property
    def clear_at(self) -> float:
        """The value the metric must be back past to clear (``clear``, else the threshold)."""
        return self.threshold if self.clear is None else self.clear

    @property
    def disables(self) -> bool:
        """Whether the alarm takes its gateway out of selection while it is active."""
        return "disable" in self.actions

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        """The checks across keys, on the raw values (so they run, and one run reports
        everything, even when some other key is wrong); a value that is itself wrong is
        reported by its own check and skipped here."""
        lines: list[InitErrorDetails] = []
        if (raw.get("below") is None) == (raw.get("above") is None):
            lines.append(_line((), "set exactly one of below and above"))
        side = "below" if raw.get("below") is not None else "above"
        threshold, clear = _number(raw.get(side)), _number(raw.get("clear"))
        if raw.get("metric") in _RATIO_METRICS:
            for name, value in ((side, threshold), ("clear", clear)):
                if value is not None and value > 1:
                    reason = f"{raw['metric']} is a ratio from 0 to 1, got {value:g}"
                    lines.append(_line((name,), reason, value))
        if threshold is not None and clear is not None:
            if side == "below" and clear < threshold:
                reason = f"must be >= below ({threshold:g}): the alarm clears above it"
                lines.append(_line(("clear",), reason, clear))
            if side == "above" and clear > threshold:
                reason = f"must be <= above ({threshold:g}): the alarm clears below it"
                lines.append(_line(("clear",), reason, clear))
        scope, actions = raw.get("scope"), raw.get("actions")
        if isinstance(scope, str) and scope != "gateway":
            if isinstance(actions, list | tuple) and "disable" in actions:
                reason = f"'disable' takes a gateway out of routing; scope is {scope!r}"
                lines.append(_line(("actions",), reason))
            if scope == "switch" and raw.get("key") not in (None, "all"):
                reason = f"the switch scope has one key, 'all', got {raw.get('key')!r}"
                lines.append(_line(("key",), reason, raw.get("key")))
        return lines


def _number(value: object) -> float | None:
    """A raw threshold as a float, None when it is not a finite number (its own check says
    what is wrong with it)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


_SECTIONS = frozenset(
    {
        "server",
        "defaults",
        "security",
        "billing",
        "management",
        "media",
        "media_relays",
        "accounts",
        "gateways",
        "rate_decks",
        "routes",
        "alarms",
    }
)


@pydantic.dataclasses.dataclass(frozen=True, config=_MODEL_CONFIG)
class Config(_Section):
    """The whole file, validated. ``source`` is the file it came from (for messages)."""

    source: _Str
    server: ServerConfig = ServerConfig()
    defaults: Defaults = Defaults()
    security: SecurityConfig = SecurityConfig()
    billing: BillingConfig = BillingConfig()
    management: ManagementConfig = ManagementConfig()
    media: MediaConfig = MediaConfig()
    media_relays: Annotated[tuple[MediaRelay, ...], _Tables("media_relays")] = ()
    accounts: Annotated[tuple[Account, ...], _Tables("accounts")] = ()
    gateways: Annotated[tuple[Gateway, ...], _Tables("gateways")] = ()
    rate_decks: Annotated[tuple[DeckSpec, ...], _Tables("rate_decks")] = ()
    routes: Annotated[tuple[Route, ...], _Tables("routes")] = ()
    alarms: Annotated[tuple[AlarmRule, ...], _Tables("alarms")] = ()

    _FILE_KEYS: ClassVar[frozenset[str] | None] = _SECTIONS

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

    @classmethod
    def _prepare(
        cls, data: dict[str, Any], reading: _Reading, problems: list[InitErrorDetails]
    ) -> None:
        if reading.base_dir is not None:
            data["source"] = reading.source
            data.setdefault("server", {})  # for its defaults that are relative to the file
        # A gateway's failover_codes, setup_timeout and no_answer_timeout default to
        # [defaults]' (as far as they are valid: their own problems are reported there).
        raw_defaults = data.get("defaults", {})
        defaults = raw_defaults if isinstance(raw_defaults, Defaults) else Defaults()
        if not isinstance(raw_defaults, Defaults):
            partial = {"reading": dataclasses.replace(reading, partial=True)}
            with contextlib.suppress(ValidationError):
                defaults = _adapter(Defaults).validate_python(raw_defaults, context=partial)
        gateways = data.get("gateways")
        if isinstance(gateways, list | tuple):
            inherited = {
                "failover_codes": defaults.failover_codes,
                "setup_timeout": defaults.setup_timeout,
                "no_answer_timeout": defaults.no_answer_timeout,
                "media_timeout": defaults.media_timeout,
            }
            data["gateways"] = [
                {**inherited, **g} if isinstance(g, Mapping) else g for g in gateways
            ]

    @classmethod
    def _check(
        cls, raw: dict[str, Any], obj: Any, reading: _Reading, context: Any
    ) -> list[InitErrorDetails]:
        """The references between sections, checked on the partial configuration when some
        key is wrong (so that one run reports everything), which is kept in ``context``."""
        unsure: frozenset[int] = frozenset()
        if obj is None:
            try:
                partial = {"reading": dataclasses.replace(reading, partial=True)}
                obj = _adapter(Config).validate_python(raw, context=partial)
            except ValidationError:
                return []
            unsure = _unsure_routes(raw)
        if isinstance(context, dict):
            context["config"] = obj
        return _cross_references(obj, unsure)


def _cross_references(
    cfg: Config, unsure_routes: frozenset[int] = frozenset()
) -> list[InitErrorDetails]:
    lines: list[InitErrorDetails] = []

    def fail(loc: tuple[str | int, ...], reason: str) -> None:
        lines.append(_line(loc, reason))

    sections: tuple[tuple[str, tuple[Account | Gateway | DeckSpec | MediaRelay, ...]], ...] = (
        ("accounts", cfg.accounts),
        ("gateways", cfg.gateways),
        ("rate_decks", cfg.rate_decks),
        ("media_relays", cfg.media_relays),
    )
    for section, items in sections:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if not item.id:
                continue
            if item.id in seen:
                fail((section, i, "id"), f"{item.id!r} already used by {section}[{seen[item.id]}]")
            else:
                seen[item.id] = i
    decks = {d.id for d in cfg.rate_decks}
    gateways = {g.id for g in cfg.gateways}
    plans = set(cfg.plans)
    precision = {d.id: d.precision for d in cfg.rate_decks}
    for i, a in enumerate(cfg.accounts):
        if a.rate_deck is not None and a.rate_deck not in decks:
            fail(("accounts", i, "rate_deck"), f"no [[rate_decks]] with id {a.rate_deck!r}")
        for key in ("credit_limit", "low_balance"):
            amount = getattr(a, key)
            places = precision.get(a.rate_deck or "")
            if amount is None or places is None:
                continue
            exponent = amount.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > places:
                fail(
                    ("accounts", i, key),
                    f"{amount} has more decimal places than deck {a.rate_deck!r} ({places})",
                )
        if a.routing_plan and a.routing_plan not in plans:
            fail(("accounts", i, "routing_plan"), f"no [[routes]] with plan {a.routing_plan!r}")
    by_id = {a.id: a for a in cfg.accounts}
    for i, g in enumerate(cfg.gateways):
        if g.rate_deck is not None and g.rate_deck not in decks:
            fail(("gateways", i, "rate_deck"), f"no [[rate_decks]] with id {g.rate_deck!r}")
        if g.registered is not None:
            owner = by_id.get(g.registered)
            if owner is None:
                fail(("gateways", i, "address"), f"no [[accounts]] with id {g.registered!r}")
            elif not owner.register or owner.username is None or owner.password is None:
                fail(
                    ("gateways", i, "address"),
                    f"account {g.registered!r} does not register: set register = true"
                    " and its username/password",
                )
    seen_routes: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(cfg.routes):
        for j, gw in enumerate(r.gateways):
            if gw not in gateways:
                fail(("routes", i, "gateways", j), f"no [[gateways]] with id {gw!r}")
        if i not in unsure_routes:
            _route_clash(cfg.routes, i, seen_routes.setdefault((r.plan, r.prefix), []), fail)
    if not cfg.media_relays:
        relayed: tuple[tuple[str, tuple[Account | Gateway, ...]], ...] = (
            ("accounts", cfg.accounts),
            ("gateways", cfg.gateways),
        )
        for section, items in relayed:
            for i, item in enumerate(items):
                if item.media == "relay":
                    fail((section, i, "media"), "'relay' needs at least one [[media_relays]]")
    accounts = {a.id for a in cfg.accounts}
    alarm_ids: dict[str, int] = {}
    for i, alarm in enumerate(cfg.alarms):
        if alarm.id in alarm_ids:
            fail(("alarms", i, "id"), f"{alarm.id!r} already used by alarms[{alarm_ids[alarm.id]}]")
        alarm_ids.setdefault(alarm.id, i)
        if alarm.key is not None and alarm.scope == "gateway" and alarm.key not in gateways:
            fail(("alarms", i, "key"), f"no [[gateways]] with id {alarm.key!r}")
        if alarm.key is not None and alarm.scope == "account" and alarm.key not in accounts:
            fail(("alarms", i, "key"), f"no [[accounts]] with id {alarm.key!r}")
    users: dict[str, int] = {}
    for i, a in enumerate(cfg.accounts):
        if a.username:
            if a.username in users:
                fail(
                    ("accounts", i, "username"),
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
                fail(
                    ("accounts", i, "ips"),
                    f"{rule} with tech_prefix {a.tech_prefix!r} is also accounts[{by_rule[k]}]'s;"
                    " give one of them a different tech_prefix",
                )
            by_rule.setdefault(k, i)
    # Every address of such an account is a trusted proxy's, so every request from it
    # would be taken as forwarded for someone else: the account could never call.
    proxies = cfg.server.trusted_proxies
    for i, a in enumerate(cfg.accounts):
        for rule in a.ips:
            inside = next((p for p in proxies if _rule_within(rule, p)), None)
            if inside is not None:
                fail(
                    ("accounts", i, "ips"),
                    f"{rule} is within [server] trusted_proxies {inside}: requests from it"
                    " are taken as a proxy's, forwarded for the client it names",
                )
    return lines


#: IPv4 addresses written as IPv6 (``::ffff:192.0.2.1``): judged by their IPv4 width.
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _too_wide(network: IPNetwork) -> bool:
    """Wider than any pool of balancers: an IPv4 /8, an IPv6 /32 (mapped IPv4 as IPv4)."""
    if network.version == 4:
        return network.prefixlen < 8
    if network.subnet_of(_MAPPED) or _MAPPED.subnet_of(network):  # type: ignore[arg-type]
        return network.prefixlen < 96 + 8
    return network.prefixlen < 32


def _rule_within(inner: IpRule, outer: IpRule) -> bool:
    """Whether every (address, port) ``inner`` matches, ``outer`` matches too."""
    if inner.network.version != outer.network.version:
        return False
    if outer.port is not None and inner.port != outer.port:
        return False
    return inner.network.subnet_of(outer.network)  # type: ignore[arg-type]


def _route_clash(
    routes: tuple[Route, ...],
    i: int,
    same: list[int],
    fail: Callable[[tuple[str | int, ...], str], None],
) -> None:
    """Whether ``routes[i]`` may join ``same`` (the earlier routes of its plan and prefix).

    One plan may hold a prefix several times when the routes serve different calls: another
    ``caller_prefix`` or other ``time`` windows (``Route.condition``: ``lcr`` then picks the
    one that applies), or, with the same condition, one route for calls with a caller-ID
    (``cli = "required"``) and one for calls without (``"absent"``): ``"any"`` serves both,
    so it clashes with either. All take the same ``quality``, which is kept per plan and
    prefix (``softswitch.call.quality``).
    """
    r = routes[i]
    for j in same:
        other = routes[j]
        if r.condition != other.condition:
            if r.quality != other.quality:
                fail(
                    ("routes", i, "quality"),
                    f"must be the same as routes[{j}]'s (same plan and prefix):"
                    " quality is kept per plan and prefix",
                )
                return
            continue
        if "any" in (r.cli, other.cli) or r.cli == other.cli:
            if r.cli == other.cli == "any":
                fail(
                    ("routes", i, "prefix"),
                    f"plan {r.plan!r} already has prefix {r.prefix!r} (routes[{j}])"
                    + (
                        " with the same caller_prefix and time" if r.caller_prefix or r.time else ""
                    ),
                )
            else:
                fail(
                    ("routes", i, "cli"),
                    f"plan {r.plan!r} already has prefix {r.prefix!r} for these calls"
                    f" (routes[{j}], cli = {other.cli!r}); two routes of one prefix must be"
                    " cli = 'required' and cli = 'absent'",
                )
            return
        if r.quality != other.quality:
            fail(
                ("routes", i, "quality"),
                f"must be the same as routes[{j}]'s (same plan and prefix, cli ="
                f" {other.cli!r}): quality is kept per plan and prefix",
            )
            return
    same.append(i)


def no_answer_timeout(account: Account, gateway: Gateway) -> float:
    """Seconds a branch to ``gateway`` may ring unanswered on ``account``'s call.

    The shortest that applies: the gateway's (its own, else ``[defaults]``'s, resolved at
    load) and the account's when it sets one.
    """
    if account.no_answer_timeout is None:
        return gateway.no_answer_timeout
    return min(account.no_answer_timeout, gateway.no_answer_timeout)


def media_timeout(account: Account, gateway: Gateway) -> float:
    """Seconds of dead RTP after which a relayed call through ``gateway`` for ``account``
    is hung up; 0 = never. The shortest that is set and not 0: the gateway's (its own, else
    ``[defaults]``'s, resolved at load) and the account's."""
    set_ = [t for t in (account.media_timeout, gateway.media_timeout) if t]
    return min(set_) if set_ else 0.0


def fails_over_on_no_answer(defaults: Defaults, account: Account, gateway: Gateway) -> bool:
    """Whether a branch that rang unanswered goes on to the next gateway (else the call ends
    480 ``no_answer``): when any of ``[defaults]``, the gateway and the account says so."""
    return bool(
        defaults.failover_on_no_answer
        or gateway.failover_on_no_answer
        or account.failover_on_no_answer
    )


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any], *, source: str, base_dir: Path) -> Config:
    """Validate an already-parsed TOML document (money as ``Decimal``) into a ``Config``.

    ``source`` names the file in messages; relative paths resolve against ``base_dir``.
    Raises ``ConfigError`` listing every problem found.
    """
    cfg, problems = _parse(data, source, base_dir)
    if cfg is None or problems:
        raise ConfigError(problems, config=cfg)
    return cfg


def _parse(
    data: Mapping[str, Any], source: str, base_dir: Path
) -> tuple[Config | None, list[ConfigProblem]]:
    """The configuration and no problem; or every problem, with the configuration as far as
    it could be read (None only if not even that could be built)."""
    context: dict[str, Any] = {"reading": _Reading(source, base_dir)}
    try:
        cfg = _adapter(Config).validate_python(data, context=context)
    except ValidationError as e:
        partial = context.get("config")
        problems = [
            ConfigProblem(source, _key_path(err["loc"]), _reason(err)) for err in e.errors()
        ]
        return (partial if isinstance(partial, Config) else None), problems
    return cast(Config, cfg), []


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
    for i, d in enumerate(cfg.rate_decks if cfg is not None else ()):
        key = f"rate_decks[{i}]"
        if not d.file.is_file() and not any(q.key in (key, f"{key}.file") for q in problems):
            problems.append(ConfigProblem(str(p), f"{key}.file", f"no such file: {d.file}"))
    if cfg is None or problems:
        raise ConfigError(problems, config=cfg)
    return cfg


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


# -- addresses -------------------------------------------------------------------------


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


def parse_http_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8080`` / ``[::1]:8080`` / ``localhost:8080`` into (host, port); port 0
    asks the system for a free one. ValueError saying what is wrong, ending with the text."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host:
        raise ValueError(f"must look like 127.0.0.1:8080, [::1]:8080 or 'off', got {text!r}")
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ValueError(f"port must be a number from 0 to 65535, got {text!r}")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:8080, got {text!r}")
    try:
        _check_host(host.strip("[]"))
    except _HostError as e:
        raise ValueError(f"{host.strip('[]')!r} is {e}, got {text!r}") from None
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address without brackets, or a name) is this machine only."""
    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


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


def _parse_ip_rule(text: str) -> tuple[IPNetwork, int | None]:
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
    return ipaddress.ip_network(addr, strict=True), port
