"""Typed header field values: Via, name-addr, CSeq, auth challenges/credentials, Reason.

Each parser takes one (already unfolded, comma-split where the field is a list) value and
raises SipParseError with a reason fit for ``400 <reason>``.  Each class prints back with
``str()`` in a normalised form: only fields a proxy adds or rewrites are printed, the
others travel as their received bytes (see ``headers.Headers``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import grammar as g
from .errors import SipParseError
from .uri import URI, SipURI, parse_uri

_PLAIN_PARAMS_RE: Final = g.PLAIN_PARAMS_RE
_VIA_COMMON_RE: Final = g.VIA_COMMON_RE

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "AuthHeader",
    "CSeq",
    "NameAddr",
    "Reason",
    "Via",
    "make_branch",
    "make_tag",
    "parse_auth",
    "parse_cseq",
    "parse_name_addr",
    "parse_params",
    "parse_reason",
    "parse_via",
]

# RFC 3261 8.1.1.7: "The branch ID inserted by an element compliant with this
# specification MUST always begin with the characters "z9hG4bK"".
BRANCH_MAGIC_COOKIE: Final = "z9hG4bK"


class _RandomHex:
    """64 bits of the OS's CSPRNG as 16 hex digits, read 4 KiB at a time.

    A proxy makes several branches and tags per call; one ``getrandom`` system call each
    (``secrets.token_hex``) was a measurable share of a call's CPU. The bytes are the same
    kernel randomness, only fetched in bulk. The pool is emptied in a forked child, so
    worker processes never hand out the same values.
    """

    _CHUNK: Final = 4096

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._hex, self._at = "", 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex, at = os.urandom(self._CHUNK).hex(), 0
        self._at = at + 16
        return self._hex[at : at + 16]


_random_hex = _RandomHex()


def make_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits (unique over space/time)."""
    return BRANCH_MAGIC_COOKIE + _random_hex()


def make_tag() -> str:
    """A From/To tag with the 32 bits of randomness RFC 3261 19.3 asks for (we give 64)."""
    return _random_hex()


def small_int(text: str, max_digits: int = 10) -> int | None:
    """``1*DIGIT`` as an int, or None if not ASCII digits or absurdly long.

    The length cap keeps a hostile 5,000-digit value from reaching ``int()`` (which
    refuses more than 4,300 digits) or from costing quadratic time.
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _lookup(params: Mapping[str, str | None], name: str) -> str | None:
    """Case-insensitive parameter look-up: '' for a flag, None if absent."""
    v = params.get(name, "\0")
    if v != "\0":
        return "" if v is None else v
    for k, val in params.items():
        if k.lower() == name:
            return "" if val is None else val
    return None


def _format_params(params: Mapping[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_params(text: str, pos: int, what: str) -> dict[str, str | None]:
    """``*( SEMI generic-param )`` from ``pos`` to the end of ``text``.

    Values are kept as written (quoted strings with their quotes) so that printing the
    parameters back gives the same meaning.
    """
    if pos < len(text) and _PLAIN_PARAMS_RE.fullmatch(text, pos) is not None:
        # No blanks, no quoted or bracketed values: split, as GENERIC_PARAM_RE would read.
        params: dict[str, str | None] = {}
        for piece in text[pos + 1 :].split(";"):
            name, eq, value = piece.partition("=")
            params[name] = value if eq else None
        return params
    return _parse_params_general(text, pos, what)


def _parse_params_general(text: str, pos: int, what: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    n = len(text)
    while pos < n:
        m = g.GENERIC_PARAM_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise SipParseError(f"Bad {what} parameter")
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return params


# ---------------------------------------------------------------------------------------
# Via


@dataclass(frozen=True, slots=True, eq=True)
class Via:
    """One via-parm (RFC 3261 20.42, 25.1).

    ``params`` holds every parameter as written; ``branch``, ``received``, ``rport``,
    ``maddr`` and ``ttl`` read it (so a Via printed back keeps parameter order).
    ``rport`` is None when absent, True when present without a value (a client asking
    for symmetric response routing, RFC 3581), else the port number.
    """

    transport: str
    host: str
    port: int | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def new(
        cls,
        transport: str,
        host: str,
        port: int | None = None,
        *,
        branch: str | None = None,
        rport: bool = False,
        **params: str | None,
    ) -> Via:
        """A Via for a request we send: fresh branch unless given, bare ``rport`` if asked."""
        p: dict[str, str | None] = {"branch": branch or make_branch()}
        if rport:
            p["rport"] = None
        p.update(params)
        return cls(transport.upper(), host, port, p)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{_format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return _lookup(self.params, name.lower())

    @property
    def branch(self) -> str | None:
        return _lookup(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _lookup(self.params, "received")

    @property
    def maddr(self) -> str | None:
        return _lookup(self.params, "maddr")

    @property
    def ttl(self) -> int | None:
        t = self.param("ttl")
        return int(t) if t else None

    @property
    def rport(self) -> int | bool | None:
        r = _lookup(self.params, "rport")
        if r is None:
            return None
        return int(r) if r else True

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def is_rfc3261_branch(self) -> bool:
        """Whether the branch carries the magic cookie *and* something after it.

        RFC 4475 badbranch (``branch=z9hG4bK``) fails this: fall back to RFC 2543 matching.
        """
        b = self.branch
        return b is not None and b.startswith(BRANCH_MAGIC_COOKIE) and len(b) > 7

    def with_params(self, **params: str | None) -> Via:
        new = dict(self.params)
        new.update(params)
        return dataclasses.replace(self, params=new)

    def with_(self, **changes: Any) -> Via:
        return dataclasses.replace(self, **changes)


def _slot_setters(cls: type, names: str) -> tuple[Any, ...]:
    return tuple(vars(cls)[name].__set__ for name in names.split())


_new_object: Final = object.__new__
_VIA_SLOTS: Final = _slot_setters(Via, "transport host port params protocol")


def _new_via(
    transport: str, host: str, port: int | None, params: dict[str, str | None], protocol: str
) -> Via:
    """``Via(transport, host, port, params, protocol)`` for the parsers, made by filling
    the slots: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, which was a measurable share of parsing a Via."""
    via = _new_object(Via)
    s_transport, s_host, s_port, s_params, s_protocol = _VIA_SLOTS
    s_transport(via, transport)
    s_host(via, host)
    s_port(via, port)
    s_params(via, params)
    s_protocol(via, protocol)
    return via


#: Parsed values by their exact text. A call carries the same From, To, Contact, Route and
#: Via values in many messages (the request, its provisional and final responses, the ACK
#: and BYE on both legs), so each is parsed once instead of once per message. The values
#: are frozen dataclasses; only well-formed values are kept (a malformed one raises every
#: time), and the caches are emptied when full, which bounds what a peer can make us hold.
#: A parsed value is therefore shared: treat its ``params`` as read-only and change a value
#: with ``with_params``/``with_``, which copy.
PARSE_CACHE_SIZE: Final = 8192
#: The longest text a cache keeps (characters). Real values are far shorter; without the
#: limit a peer could fill every cache with 64 KiB values (gigabytes held).
CACHED_TEXT_MAX: Final = 512
_via_cache: dict[str, Via] = {}
_name_addr_cache: dict[str, NameAddr] = {}


def parse_via(value: str) -> Via:
    """One via-parm; LWS around '/', ':', ';' and '=' allowed (RFC 4475 wsinv)."""
    via = _via_cache.get(value)
    if via is None:
        via = _parse_via(value)
        if len(value) > CACHED_TEXT_MAX:
            return via
        if len(_via_cache) >= PARSE_CACHE_SIZE:
            _via_cache.clear()
        _via_cache[value] = via
    return via


def _parse_via(value: str) -> Via:
    m = _VIA_COMMON_RE.fullmatch(value)
    if m is not None:
        # ``SIP/2.0/UDP host:port;branch=...``: what SENT_PROTOCOL_RE and parse_params
        # would read, found by one pattern.
        transport, host, port, ptext = m.groups()
        params: dict[str, str | None] = {}
        if ptext:
            for piece in ptext[1:].split(";"):
                name, eq, v = piece.partition("=")
                params[name] = v if eq else None
        return _checked_via(transport, host, port, params, "SIP/2.0")
    return _parse_via_general(value)


def _parse_via_general(value: str) -> Via:
    m = g.SENT_PROTOCOL_RE.match(value)
    if m is None:
        raise SipParseError("Bad Via header")
    name, version, transport, host, port = m.groups()
    params = parse_params(value, m.end(), "Via")
    return _checked_via(transport, host, port, params, f"{name}/{version}")


def _checked_via(
    transport: str, host: str, port: str | None, params: dict[str, str | None], protocol: str
) -> Via:
    p = None
    if port is not None:
        p = int(port)
        if p > 65535:
            raise SipParseError("Bad Via port")
    if params:
        # Names as written are usually lower-case already (then the dict is its own
        # lower-cased copy); tokens are ASCII, so ``islower`` of them all says so.
        low = params if "".join(params).islower() else {k.lower(): v for k, v in params.items()}
        ttl = low.get("ttl", "")
        if ttl != "" and (ttl is None or (t := small_int(ttl, 3)) is None or t > 255):
            raise SipParseError("Bad Via ttl")
        rport = low.get("rport")
        if rport is not None and ((r := small_int(rport, 5)) is None or r > 65535):
            raise SipParseError("Bad Via rport")
        if "branch" in low and not low["branch"]:
            raise SipParseError("Bad Via branch")
    return _new_via(transport.upper(), host, p, params, protocol)


def parse_via_list(values: list[str]) -> tuple[Via, ...]:
    cache = _via_cache
    if len(values) == 1:
        via = cache.get(values[0])
        return (parse_via(values[0]) if via is None else via,)
    return tuple([parse_via(v) for v in values])


# ---------------------------------------------------------------------------------------
# name-addr / addr-spec (From, To, Contact, Route, Record-Route, ...)


def _unquote(q: str) -> str:
    """Body of a quoted-string with quoted-pairs resolved."""
    body = q[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            i += 1
            c = body[i]
        out.append(c)
        i += 1
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True, eq=True)
class NameAddr:
    """``[display-name] <URI> *(;param)`` or addr-spec (RFC 3261 20.10, 20.20, 20.39).

    ``display`` is the display name's text (quotes removed, quoted-pairs resolved), None
    when there is none.  ``params`` are the header parameters after the URI (tag, expires,
    q ...), never the URI's own parameters: RFC 4475 cparam01/cparam02.
    """

    uri: URI
    display: str | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        disp = "" if self.display is None else _quote(self.display) + " "
        return f"{disp}<{self.uri}>{_format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return _lookup(self.params, name.lower())

    @property
    def tag(self) -> str | None:
        return _lookup(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        new = {k: v for k, v in self.params.items() if k.lower() != "tag"}
        new["tag"] = tag
        return dataclasses.replace(self, params=new)

    def with_(self, **changes: Any) -> NameAddr:
        return dataclasses.replace(self, **changes)


#: ``[display] <URI>`` texts (through the ``>``) with their URI and display name: the tag
#: after them is new in every call, the rest of a From or To is not.  Kept only where that
#: ``>`` is the value's first, so the text up to the first ``>`` of another value finds it
#: exactly when the general parse would read that text the same way.
_bracketed_cache: dict[str, tuple[URI, str | None]] = {}


def parse_name_addr(value: str) -> NameAddr:
    """One ``(name-addr / addr-spec) *(SEMI param)`` element."""
    na = _name_addr_cache.get(value)
    if na is None:
        gt = value.find(">")
        known = _bracketed_cache.get(value[: gt + 1]) if gt > 0 else None
        if known is not None:
            na = NameAddr(known[0], known[1], parse_params(value, gt + 1, "header"))
        else:
            uri, display, pos = _parse_name_addr_head(value)
            na = NameAddr(uri, display, parse_params(value, pos, "header"))
            if pos == gt + 1 and 0 < gt < CACHED_TEXT_MAX and isinstance(uri, SipURI):
                if len(_bracketed_cache) >= PARSE_CACHE_SIZE:
                    _bracketed_cache.clear()
                _bracketed_cache[value[:pos]] = (uri, display)
        # Only the URI types whose == compares by value.
        if isinstance(na.uri, SipURI) and len(value) <= CACHED_TEXT_MAX:
            if len(_name_addr_cache) >= PARSE_CACHE_SIZE:
                _name_addr_cache.clear()
            _name_addr_cache[value] = na
    return na


def _parse_name_addr(value: str) -> NameAddr:
    uri, display, pos = _parse_name_addr_head(value)
    return NameAddr(uri, display, parse_params(value, pos, "header"))


def _parse_name_addr_head(value: str) -> tuple[URI, str | None, int]:
    """The URI, the display name and where the header parameters start."""
    v = value
    display: str | None = None
    if v.startswith('"'):
        m = g.QUOTED_STRING_RE.match(v)
        if m is None:
            raise SipParseError("Unbalanced quotes in display name")
        display = _unquote(m.group(0))
        rest = v[m.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError("Bad name-addr")
        lt = m.end() + (len(v) - m.end() - len(rest))
    else:
        lt = v.find("<")
    if lt >= 0:
        if display is None:
            d = v[:lt].rstrip(" \t")
            if d:
                if g.DISPLAY_TOKENS_RE.fullmatch(d) is None:
                    raise SipParseError("Bad display name")
                display = d
        gt = v.find(">", lt)
        if gt < 0:
            raise SipParseError("Missing '>' in name-addr")
        # No LWS inside the brackets: RFC 4475 badaspec.
        uri = parse_uri(v[lt + 1 : gt])
        pos = gt + 1
    else:
        # addr-spec: RFC 3261 20.10: "if the URI contains a comma, question mark or
        # semicolon, the URI MUST be enclosed in angle brackets" -- the ';' starts the
        # header parameters, and a '?' is an error (RFC 4475 regbadct).
        semi = v.find(";")
        text = v if semi < 0 else v[:semi]
        text = text.rstrip(" \t")
        if not text or "?" in text or " " in text or "\t" in text or '"' in text:
            raise SipParseError("Bad addr-spec")
        uri = parse_uri(text)
        pos = len(v) if semi < 0 else semi
    return uri, display, pos


def parse_name_addr_list(values: list[str]) -> tuple[NameAddr, ...]:
    return tuple([parse_name_addr(v) for v in values])


# ---------------------------------------------------------------------------------------
# CSeq


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq (RFC 3261 20.16): sequence number and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


#: CSeq values by their exact text: ``1 INVITE``, ``2 BYE`` ... recur in every call.
_cseq_cache: dict[str, CSeq] = {}


def parse_cseq(value: str) -> CSeq:
    cseq = _cseq_cache.get(value)
    if cseq is None:
        cseq = _parse_cseq(value)
        if len(value) > CACHED_TEXT_MAX:
            return cseq
        if len(_cseq_cache) >= PARSE_CACHE_SIZE:
            _cseq_cache.clear()
        _cseq_cache[value] = cseq
    return cseq


def _parse_cseq(value: str) -> CSeq:
    m = g.CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError("Bad CSeq header")
    if len(m.group(1)) > 12 or int(m.group(1)) > g.CSEQ_MAX:
        raise SipParseError("CSeq number too large")
    return CSeq(int(m.group(1)), m.group(2))


# ---------------------------------------------------------------------------------------
# Authorization / Proxy-Authorization / WWW-Authenticate / Proxy-Authenticate


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """A challenge or credentials (RFC 3261 20.7, 20.27, 20.28, 20.44, 25.1).

    ``params`` maps lower-cased parameter names to their values with quotes removed;
    ``quoted`` remembers which ones were quoted, since digest needs that to print them.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    quoted: frozenset[str] = frozenset()

    def __str__(self) -> str:
        parts = [f"{k}={_quote(v) if k in self.quoted else v}" for k, v in self.params.items()]
        return f"{self.scheme} {', '.join(parts)}"


def parse_auth(value: str) -> AuthHeader:
    m = g.TOKEN_RE.match(value)
    if m is None:
        raise SipParseError("Bad authentication header")
    scheme = m.group(0)
    pos = m.end()
    params: dict[str, str] = {}
    quoted: set[str] = set()
    rest = value[pos:]
    if rest and rest[0] not in " \t":
        raise SipParseError("Bad authentication header")
    n = len(value)
    while pos < n:
        pm = g.AUTH_PARAM_RE.match(value, pos)
        if pm is None or pm.end() == pos:
            raise SipParseError("Bad authentication parameter")
        name, v = pm.group(1).lower(), pm.group(2)
        if v.startswith('"'):
            v = _unquote(v)
            quoted.add(name)
        params[name] = v
        pos = pm.end()
        if value[pos - 1] == "," and pos >= n:
            raise SipParseError("Bad authentication parameter")
    return AuthHeader(scheme, params, frozenset(quoted))


def parse_auth_list(values: list[str]) -> tuple[AuthHeader, ...]:
    return tuple(parse_auth(v) for v in values)


# ---------------------------------------------------------------------------------------
# Reason (RFC 3326)


@dataclass(frozen=True, slots=True)
class Reason:
    """``protocol ;cause=N ;text="..."`` (RFC 3326), e.g. ``Q.850;cause=16``."""

    protocol: str
    cause: int | None = None
    text: str | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.protocol + _format_params(self.params)


def parse_reason(value: str) -> Reason:
    m = g.TOKEN_RE.match(value)
    if m is None:
        raise SipParseError("Bad Reason header")
    params = parse_params(value, m.end(), "Reason")
    cause = _lookup(params, "cause")
    cause_n = None if cause is None else small_int(cause, 5)
    if cause is not None and cause_n is None:
        raise SipParseError("Bad Reason cause")
    text = _lookup(params, "text")
    if text and text.startswith('"') and len(text) >= 2:
        text = _unquote(text)
    return Reason(m.group(0), cause_n, text, params)


def parse_reason_list(values: list[str]) -> tuple[Reason, ...]:
    return tuple(parse_reason(v) for v in values)
