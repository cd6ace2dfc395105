"""SIP, SIPS, tel and other URIs: parsing, printing and RFC 3261 19.1.4 comparison.

Fields hold the text *as written on the wire* (percent-escapes kept, IPv6 hosts with their
brackets), so ``str(parse_uri(s)) == s`` for any URI the parser accepts, and a URI copied
from one message to another is never re-encoded.  Comparison (``==``) follows RFC 3261
19.1.4 instead: escapes are decoded before comparing, host, scheme and parameter names
compare case-insensitively, and the user part case-sensitively.

One liberty beyond RFC 3261: an unescaped ``#`` is accepted in the user part, where
customer equipment puts tech prefixes (``sip:1234#44...@switch``); it is kept as written,
so headers forwarded untouched and a digest ``uri`` still match what the peer sent, and
it equals ``%23`` under comparison. URIs the switch builds are escaped with ``escape``,
which writes ``#`` as ``%23`` and leaves ``*`` alone (a mark: legal unescaped).

A URI whose scheme is not sip, sips or tel is an ``AbsoluteURI``: RFC 3261 allows any
absoluteURI as a Request-URI, and RFC 4475 unkscm/novelsc are well-formed requests that a
proxy answers with 416 (see ``softswitch.sip.validate``), not malformed ones.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from . import grammar as g
from .errors import SipParseError

__all__ = [
    "URI",
    "AbsoluteURI",
    "SipURI",
    "TelURI",
    "escape",
    "parse_uri",
    "unescape",
]

_ESCAPE_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Decode %HH escapes (to code points 0-255, so %00 survives; RFC 4475 escnull)."""
    if "%" not in text:
        return text
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


_USER_SAFE: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)


def escape(text: str, safe: frozenset[str] = _USER_SAFE) -> str:
    """Percent-encode (as UTF-8) every character outside ``safe``; defaults to the user part."""
    if all(c in safe for c in text):
        return text
    out = []
    for c in text:
        if c in safe:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _norm_host(host: str) -> str:
    """Host comparison key: case-folded, IPv6 references compared as addresses."""
    if host.startswith("["):
        try:
            return "[" + str(ipaddress.IPv6Address(host[1:-1])) + "]"
        except ValueError:
            return host.lower()
    return host.lower()


# RFC 3261 19.1.4: "A URI omitting any component with a default value will not match a
# URI explicitly containing that component with its default value" -- except these
# parameters, which must be present in both or neither.
_MUST_MATCH_PARAMS: Final = frozenset({"user", "ttl", "method", "maddr", "transport"})


@dataclass(frozen=True, slots=True, eq=False)
class SipURI:
    """A sip: or sips: URI (RFC 3261 19.1).

    ``user``/``password``/params/headers are in wire (escaped) form; use ``unescape`` for
    their meaning.  ``host`` keeps IPv6 brackets.  ``params`` maps each parameter name as
    written to its value, or None for a flag such as ``lr``; look-ups by the helpers below
    are case-insensitive, as RFC 3261 19.1.4 says names are.

    Frozen, and so are its mappings by contract: a URI prints itself once and keeps the
    text, and parsed URIs are shared through the parse cache, so a ``params`` or
    ``headers`` dict changed in place would go unprinted (and change every message sharing
    it). Make a changed URI with ``with_`` / ``dataclasses.replace``.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    # The printed form, made on first use: a URI is printed in every request sent to it
    # (the Request-URI of each ACK and BYE) and parsed URIs are shared through the parse
    # cache.  Not a field anyone gives: a copy (``with_``, ``replace``) prints itself anew.
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._print()
            object.__setattr__(self, "_text", text)
        return text

    def _print(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":" + self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        for k, v in self.params.items():
            parts.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` (case-insensitive); '' for a flag, None if absent."""
        name = name.lower()
        for k, v in self.params.items():
            if k.lower() == name:
                return "" if v is None else v
        return None

    def has_param(self, name: str) -> bool:
        return self.param(name) is not None

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.lower() if t else None

    @property
    def lr(self) -> bool:
        """Whether the URI names a loose router (RFC 3261 16.12)."""
        return self.has_param("lr")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr") or None

    def with_(self, **changes: Any) -> SipURI:
        """A copy with some fields replaced (``dataclasses.replace`` under a shorter name)."""
        return dataclasses.replace(self, **changes)

    def with_params(self, **params: str | None) -> SipURI:
        """A copy with parameters set (value None for a flag such as lr)."""
        new = dict(self.params)
        new.update(params)
        return dataclasses.replace(self, params=new)

    def without_params(self, *names: str) -> SipURI:
        drop = {n.lower() for n in names}
        return dataclasses.replace(
            self, params={k: v for k, v in self.params.items() if k.lower() not in drop}
        )

    def _params_key(self) -> dict[str, str | None]:
        return {
            unescape(k).lower(): (None if v is None else unescape(v).lower())
            for k, v in self.params.items()
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        if self.scheme.lower() != other.scheme.lower():
            return False
        if (self.user is None) != (other.user is None):
            return False
        if self.user is not None and other.user is not None:
            if unescape(self.user) != unescape(other.user):
                return False
            if unescape(self.password or "") != unescape(other.password or ""):
                return False
        if _norm_host(self.host) != _norm_host(other.host) or self.port != other.port:
            return False
        mine, theirs = self._params_key(), other._params_key()
        for name in mine.keys() | theirs.keys():
            if name in mine and name in theirs:
                if mine[name] != theirs[name]:
                    return False
            elif name in _MUST_MATCH_PARAMS:
                return False
        mine_h = {unescape(k).lower(): unescape(v) for k, v in self.headers.items()}
        theirs_h = {unescape(k).lower(): unescape(v) for k, v in other.headers.items()}
        return mine_h == theirs_h

    def __hash__(self) -> int:
        user = None if self.user is None else unescape(self.user)
        return hash((self.scheme.lower(), user, _norm_host(self.host), self.port))


@dataclass(frozen=True, slots=True, eq=False)
class TelURI:
    """A tel: URI (RFC 3966): ``number`` as written (with '+' for a global number)."""

    number: str
    params: Mapping[str, str | None] = field(default_factory=dict)
    scheme: str = "tel"

    def __str__(self) -> str:
        p = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.scheme}:{self.number}{p}"

    def __repr__(self) -> str:
        return f"TelURI({str(self)!r})"

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 5.1.1), used for comparison."""
        return "".join(c for c in self.number if c not in "-.()").lower()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        mine = {k.lower(): v for k, v in self.params.items()}
        theirs = {k.lower(): v for k, v in other.params.items()}
        return self.digits == other.digits and mine == theirs

    def __hash__(self) -> int:
        return hash(self.digits)


@dataclass(frozen=True, slots=True)
class AbsoluteURI:
    """A URI of any other scheme, kept opaque (RFC 3261 25.1 absoluteURI)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


URI: TypeAlias = SipURI | TelURI | AbsoluteURI


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for piece in text.split(";"):
        m = g.URI_PARAM_RE.fullmatch(piece)
        if m is None:
            raise SipParseError(f"Bad {what} parameter")
        params[m.group(1)] = m.group(2)
    return params


def _parse_sip(scheme: str, rest: str) -> SipURI:
    m = g.SIP_URI_COMMON_RE.fullmatch(rest)
    if m is not None:
        user, password, host, port_text, ptext = m.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise SipParseError("Bad URI port")
        params: dict[str, str | None] = {}
        if ptext:
            for piece in ptext[1:].split(";"):
                name, eq, value = piece.partition("=")
                params[name] = value if eq else None
        return SipURI(scheme, user, password, host, port, params, {})
    return _parse_sip_general(scheme, rest)


def _parse_sip_general(scheme: str, rest: str) -> SipURI:
    headers: dict[str, str] = {}
    q = rest.find("?")
    at = rest.rfind("@")
    if q >= 0 and q < at:
        # '?' may occur in the user part (user-unreserved); headers start after the '@'.
        q = rest.find("?", at)
    if q >= 0:
        for piece in rest[q + 1 :].split("&"):
            hm = g.URI_HEADER_RE.fullmatch(piece)
            if hm is None:
                raise SipParseError("Bad URI header")
            headers[hm.group(1)] = hm.group(2)
        rest = rest[:q]
    user = password = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        colon = userinfo.find(":")
        if colon >= 0:
            user, password = userinfo[:colon], userinfo[colon + 1 :]
            if g.PASSWORD_RE.fullmatch(password) is None:
                raise SipParseError("Bad URI password")
        else:
            user = userinfo
        if g.USER_RE.fullmatch(user) is None:
            raise SipParseError("Bad URI user part")
    semi = rest.find(";")
    hostport, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi + 1 :])
    hm2 = g.HOSTPORT_RE.fullmatch(hostport)
    if hm2 is None:
        raise SipParseError("Bad URI host")
    port = None
    if hm2.group(2) is not None:
        port = int(hm2.group(2))
        if port > 65535:
            raise SipParseError("Bad URI port")
    if semi >= 0 and not ptext:
        raise SipParseError("Bad URI parameter")
    return SipURI(scheme, user, password, hm2.group(1), port, _parse_params(ptext, "URI"), headers)


#: Parsed sip/sips URIs by their exact text (frozen, compared by value): Request-URIs and
#: Route/Contact URIs repeat across messages and calls. Only well-formed ones are kept; the
#: cache is emptied when full.
_SIP_CACHE_SIZE: Final = 8192
#: The longest URI text the cache keeps (``fields.CACHED_TEXT_MAX``, which imports this
#: module, says why).
_CACHED_TEXT_MAX: Final = 512
_sip_cache: dict[str, SipURI] = {}


def parse_uri(text: str) -> URI:
    """Parse a URI as it appears in a Request-URI or inside ``<>``.

    Raises SipParseError (status 400) for a malformed sip/sips/tel URI or text that is not
    a URI at all; any other well-formed scheme gives an AbsoluteURI.
    """
    cached = _sip_cache.get(text)
    if cached is not None:
        return cached
    m = g.SCHEME_RE.match(text)
    if m is None:
        raise SipParseError("Bad URI")
    scheme = m.group(1)
    rest = text[m.end() :]
    low = scheme.lower()
    if low in ("sip", "sips"):
        uri = _parse_sip(scheme, rest)
        if len(text) > _CACHED_TEXT_MAX:  # a peer's 64 KiB URIs are not kept
            return uri
        if len(_sip_cache) >= _SIP_CACHE_SIZE:
            _sip_cache.clear()
        _sip_cache[text] = uri
        return uri
    if low == "tel":
        number, _, ptext = rest.partition(";")
        if g.TEL_NUMBER_RE.fullmatch(number) is None:
            raise SipParseError("Bad tel URI")
        if _ and not ptext:
            raise SipParseError("Bad tel URI parameter")
        return TelURI(number, _parse_params(ptext, "tel URI"), scheme)
    if g.URIC_RE.fullmatch(rest) is None:
        raise SipParseError("Bad URI")
    return AbsoluteURI(scheme, rest)
