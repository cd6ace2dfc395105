"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), sans-I/O.

The switch authenticates carriers and customers that register or send INVITEs. Everything
here is a pure function of its inputs: the time is passed in as ``now`` (seconds, any epoch
the caller keeps consistent), the nonce secret is injected, and nothing reads a clock.

Decisions where the RFCs leave room (see also the module tests):

* **Nonces are stateless.** A nonce is ``base64url(timestamp || salt || HMAC(secret, ...))``;
  the server needs no table to know that it issued a nonce and when. Only nonce *counts*
  need memory, and that memory is bounded (:class:`NonceCountStore`).
* **Algorithms.** MD5 and SHA-256 are offered and verified. The ``-sess`` variants are not
  offered, so credentials using them are refused (RFC 7616 3.4: the response must use the
  algorithm of the challenge). The client helper does compute ``-sess`` responses, because a
  carrier we register to may challenge with them.
* **qop.** Only ``qop="auth"`` is offered; ``auth-int`` credentials are refused by the server
  (a proxy must not depend on bodies it may not have), but the client helper supports it.
* **RFC 2069 (no qop).** Refused unless ``allow_rfc2069=True``. When allowed, such a nonce is
  single-use: without ``nc`` there is no other replay protection, so a second use is
  answered ``stale=true`` and a compliant client retries with the fresh nonce silently.
* **Replays** (an ``nc`` already seen for a nonce) are answered ``stale=true``: it costs an
  attacker nothing new and lets a confused legitimate client recover without a prompt.
* **opaque** must be echoed unchanged when present; its absence is tolerated.
* ``userhash=true`` (RFC 7616 3.4.4) is refused; we do not keep hashed user names.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "DigestAuthenticator",
    "DigestChallenge",
    "DigestCredentials",
    "DigestParseError",
    "NonceCountStore",
    "build_authorization",
    "compute_response",
    "format_auth_params",
    "parse_auth_header",
    "parse_challenge",
    "parse_credentials",
]


class DigestParseError(ValueError):
    """A peer sent an authentication header we cannot read; fit for a 400 reason phrase."""


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),  # mandated by RFC 2617
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}


def _hash_for(algorithm: str) -> Callable[[bytes], str]:
    base = algorithm.upper().removesuffix("-SESS")
    try:
        return _HASHES[base]
    except KeyError:
        raise DigestParseError(f"unsupported digest algorithm {algorithm!r}") from None


# --------------------------------------------------------------------------------------
# Header parameter lists (RFC 7235 2.1 auth-param, RFC 3261 25.1 digest-response)
# --------------------------------------------------------------------------------------

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~/:@[]?=;&$#^|{}"
)
_WS = " \t\r\n"


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest k=v, k="v"`` into the scheme and its parameters.

    Written by hand rather than with a regular expression so that quoted strings with
    backslash escapes and commas, folded whitespace and empty list elements (all legal and
    all seen from real phones) are handled in one predictable pass. Parameter names are
    case-insensitive (RFC 7616 3.4), so they are returned lowercased; a duplicated name is
    an error because it makes the credentials ambiguous.
    """
    text = value.strip(_WS)
    i = 0
    n = len(text)
    while i < n and text[i] not in _WS:
        i += 1
    scheme = text[:i]
    if not scheme or any(c not in _TOKEN_CHARS for c in scheme):
        raise DigestParseError("missing authentication scheme")
    params: dict[str, str] = {}
    while True:
        while i < n and (text[i] in _WS or text[i] == ","):
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] in _TOKEN_CHARS and text[i] != "=":
            i += 1
        name = text[start:i].lower()
        if not name:
            raise DigestParseError(f"bad character {text[i]!r} in auth parameter list")
        while i < n and text[i] in _WS:
            i += 1
        if i >= n or text[i] != "=":
            raise DigestParseError(f"auth parameter {name!r} has no value")
        i += 1
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise DigestParseError(f"unterminated quoted string for {name!r}")
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise DigestParseError(f"dangling escape in {name!r}")
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            param_value = "".join(chars)
        else:
            start = i
            while i < n and text[i] in _TOKEN_CHARS:
                i += 1
            param_value = text[start:i]
            if not param_value:
                raise DigestParseError(f"auth parameter {name!r} has an empty token value")
        if name in params:
            raise DigestParseError(f"auth parameter {name!r} appears twice")
        params[name] = param_value
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] != ",":
            raise DigestParseError(f"expected ',' after auth parameter {name!r}")
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# RFC 7616 3.4 lists which parameters are sent unquoted; everything else is quoted.
_UNQUOTED = frozenset({"algorithm", "nc", "stale", "userhash", "charset"})


def format_auth_params(scheme: str, params: Iterable[tuple[str, str]]) -> str:
    """Render a header value, quoting exactly the parameters the RFCs say to quote.

    ``qop`` is a quoted list in a challenge but a bare token in credentials; the caller
    says which by passing it under the key ``qop`` (challenge) or ``qop-token``.
    """
    parts = []
    for name, value in params:
        if name == "qop-token":
            parts.append(f"qop={value}")
        elif name in _UNQUOTED:
            parts.append(f"{name}={value}")
        else:
            parts.append(f"{name}={_quote(value)}")
    return f"{scheme} " + ", ".join(parts)


# --------------------------------------------------------------------------------------
# The response computation (RFC 2617 3.2.2, RFC 7616 3.4.1-3.4.3)
# --------------------------------------------------------------------------------------


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str | None = None,
    ha1: str | None = None,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value both sides compute; one function so they cannot disagree.

    ``ha1`` lets a user database store ``H(user:realm:password)`` instead of passwords; for
    ``-sess`` algorithms it is the base HA1 and the session key is derived here.
    """
    h = _hash_for(algorithm)
    if ha1 is None:
        if password is None:
            raise TypeError("compute_response needs a password or an ha1")
        ha1 = h(f"{username}:{realm}:{password}".encode())
    if algorithm.upper().endswith("-SESS"):
        if cnonce is None:
            raise DigestParseError("-sess algorithms need a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    if nc is None or cnonce is None:
        raise DigestParseError("qop needs nc and cnonce")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


# --------------------------------------------------------------------------------------
# Parsed forms
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def to_header(self) -> str:
        params = [("realm", self.realm), ("nonce", self.nonce)]
        if self.opaque is not None:
            params.append(("opaque", self.opaque))
        params.append(("algorithm", self.algorithm))
        if self.qop:
            params.append(("qop", ",".join(self.qop)))
        if self.stale:
            params.append(("stale", "true"))
        return format_auth_params("Digest", params)


def parse_challenge(value: str) -> DigestChallenge:
    scheme, p = parse_auth_header(value)
    if scheme.lower() != "digest":
        raise DigestParseError(f"not a Digest challenge: {scheme!r}")
    if "realm" not in p or "nonce" not in p:
        raise DigestParseError("challenge lacks realm or nonce")
    qop = tuple(q.strip().lower() for q in p.get("qop", "").split(",") if q.strip())
    return DigestChallenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=p.get("algorithm", "MD5"),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
    )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """An ``Authorization``/``Proxy-Authorization`` Digest header, parsed."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False


_NC_LEN = 8


def parse_credentials(value: str) -> DigestCredentials:
    """Read credentials, refusing shapes that would make the verification ambiguous."""
    scheme, p = parse_auth_header(value)
    if scheme.lower() != "digest":
        raise DigestParseError(f"not Digest credentials: {scheme!r}")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestParseError(f"credentials lack {', '.join(missing)}")
    qop = p.get("qop")
    if qop is not None:
        qop = qop.lower()
        nc = p.get("nc")
        if "cnonce" not in p or nc is None:
            raise DigestParseError("qop given without nc and cnonce")
        if len(nc) != _NC_LEN or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise DigestParseError(f"nc must be 8 hex digits, got {nc!r}")
    return DigestCredentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=p.get("algorithm", "MD5"),
        qop=qop,
        nc=p.get("nc"),
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
        userhash=p.get("userhash", "false").lower() == "true",
    )


# --------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------


def build_authorization(
    challenge: str | DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The header value a UAC sends back after a 401/407.

    ``cnonce`` is random unless given (tests pass one to reproduce the RFC examples). The
    caller keeps ``nc`` per nonce and increments it for each request reusing the nonce.
    """
    ch = parse_challenge(challenge) if isinstance(challenge, str) else challenge
    qop: str | None = None
    if "auth" in ch.qop:
        qop = "auth"
    elif "auth-int" in ch.qop:
        qop = "auth-int"
    elif ch.qop:
        raise DigestParseError(f"no supported qop in {ch.qop!r}")
    needs_cnonce = qop is not None or ch.algorithm.upper().endswith("-SESS")
    if needs_cnonce and cnonce is None:
        cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm=ch.algorithm,
        username=username,
        realm=ch.realm,
        password=password,
        nonce=ch.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text if qop else None,
        cnonce=cnonce,
        body=body,
    )
    params: list[tuple[str, str]] = [
        ("username", username),
        ("realm", ch.realm),
        ("nonce", ch.nonce),
        ("uri", uri),
        ("response", response),
        ("algorithm", ch.algorithm),
    ]
    if ch.opaque is not None:
        params.append(("opaque", ch.opaque))
    if qop is not None:
        assert cnonce is not None
        params += [("qop-token", qop), ("nc", nc_text), ("cnonce", cnonce)]
    elif cnonce is not None:
        params.append(("cnonce", cnonce))
    return format_auth_params("Digest", params)


# --------------------------------------------------------------------------------------
# Server side
# --------------------------------------------------------------------------------------


class AuthOutcome(enum.Enum):
    OK = "ok"
    #: Credentials were right but the nonce is expired, spent, or signed with another
    #: secret (another worker's or node's, or from before a restart): challenge with
    #: stale=true.
    STALE = "stale"
    #: Wrong password (whatever the nonce), wrong realm, refused algorithm...: challenge
    #: again (or 403 after retries).
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    reason: str
    username: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK

    @property
    def stale(self) -> bool:
        return self.outcome is AuthOutcome.STALE


class NonceCountStore:
    """Bounded memory of the nonce counts seen, so a captured request cannot be replayed.

    For each nonce we remember the highest ``nc`` and the counts seen inside a window below
    it (requests may arrive out of order). Nonces are evicted least-recently-used. Eviction
    must not reopen a replay hole, so the store keeps a watermark: the newest issue time of
    any evicted nonce. A nonce that is unknown yet not newer than the watermark may have
    been evicted, and is treated as spent (the client gets ``stale=true`` and a new nonce).
    """

    def __init__(self, max_nonces: int = 10_000, window: int = 64) -> None:
        if max_nonces < 1 or window < 1:
            raise ValueError("max_nonces and window must be positive")
        self._max = max_nonces
        self._window = window
        self._seen: OrderedDict[str, tuple[int, frozenset[int]]] = OrderedDict()
        self._watermark = -1

    def __len__(self) -> int:
        return len(self._seen)

    def is_fresh(self, nonce: str, issued_ms: int, nc: int) -> bool:
        entry = self._seen.get(nonce)
        if entry is None:
            return issued_ms > self._watermark
        highest, recent = entry
        return nc not in recent and nc > highest - self._window

    def record(self, nonce: str, issued_ms: int, nc: int) -> None:
        highest, recent = self._seen.pop(nonce, (nc, frozenset()))
        highest = max(highest, nc)
        floor = highest - self._window
        self._seen[nonce] = (highest, frozenset({x for x in recent if x > floor} | {nc}))
        while len(self._seen) > self._max:
            evicted, _ = self._seen.popitem(last=False)
            self._watermark = max(self._watermark, _issued_ms(evicted))


_TS = struct.Struct(">Q")
_SALT_LEN = 8
_MAC_LEN = 16


def _issued_ms(nonce: str) -> int:
    raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    return int(_TS.unpack_from(raw)[0])


class DigestAuthenticator:
    """Issues challenges and checks credentials for one realm.

    ``secret`` signs nonces. The uses of each nonce are counted here, in this object, so a
    secret must not be shared with another process that verifies too: that one would accept
    a request this one has counted (a replay). Credentials with a right response to a nonce
    signed with another secret (another worker's or node's, each drawing its own; this
    switch's before a restart) are answered ``stale``, as for an expired nonce: the client
    retries with a fresh one of ours silently (RFC 7616 3.3: stale when "the nonce is invalid
    but with a valid digest for that nonce"), where a plain rejection would make it ask its
    user for a password that was right, and count as a failure towards a block. A wrong
    response is rejected whatever the nonce.
    """

    def __init__(
        self,
        *,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        allow_rfc2069: bool = False,
        store: NonceCountStore | None = None,
        salt: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        for alg in algorithms:
            if alg.upper().endswith("-SESS") or alg.upper() not in _HASHES:
                raise ValueError(f"cannot offer digest algorithm {alg!r}")
        self.realm = realm
        self._secret = secret
        self._ttl_ms = int(nonce_ttl * 1000)
        self.algorithms = algorithms
        self.allow_rfc2069 = allow_rfc2069
        self._store = store if store is not None else NonceCountStore()
        self._salt = salt
        self.opaque = self._b64(self._mac(b"opaque")[:12])

    # -- nonces ---------------------------------------------------------------------

    @staticmethod
    def _b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, self.realm.encode() + b"\0" + data, "sha256").digest()

    def make_nonce(self, now: float) -> str:
        head = _TS.pack(max(0, int(now * 1000))) + self._salt(_SALT_LEN)
        return self._b64(head + self._mac(head)[:_MAC_LEN])

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """The issue time if we signed this nonce, else None."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != _TS.size + _SALT_LEN + _MAC_LEN:
            return None
        head, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(head)[:_MAC_LEN]):
            return None
        return int(_TS.unpack_from(head)[0])

    # -- challenges -----------------------------------------------------------------

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One header value per offered algorithm, strongest first (RFC 8760 section 3).

        All share one nonce so a client that picks any of them spends the same nonce.
        """
        nonce = self.make_nonce(now)
        return [
            DigestChallenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=alg,
                qop=("auth",),
                opaque=self.opaque,
                stale=stale,
            ).to_header()
            for alg in self.algorithms
        ]

    # -- verification ---------------------------------------------------------------

    def verify(
        self,
        credentials: str | DigestCredentials,
        *,
        method: str,
        now: float,
        password: str | None = None,
        ha1: str | None = None,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check credentials against the user's password (or stored HA1).

        The caller looks the user up first (``parse_credentials(...).username``); when the
        user is unknown it should still call this with a dummy password so that unknown and
        wrong-password users take the same time. ``request_uri``, when given, must equal the
        digest ``uri`` (RFC 3261 22.4 leaves the comparison to the server; SIPp needs
        ``-auth_uri`` for that to hold).
        """
        try:
            cred = parse_credentials(credentials) if isinstance(credentials, str) else credentials
        except DigestParseError as exc:
            return AuthResult(AuthOutcome.REJECTED, str(exc))
        user = cred.username

        def reject(reason: str) -> AuthResult:
            return AuthResult(AuthOutcome.REJECTED, reason, user)

        if cred.realm != self.realm:
            return reject("realm mismatch")
        offered = {a.upper() for a in self.algorithms}
        if cred.algorithm.upper() not in offered:
            return reject(f"algorithm {cred.algorithm!r} was not offered")
        if cred.userhash:
            return reject("userhash is not supported")
        if cred.qop is None and not self.allow_rfc2069:
            return reject("qop is required")
        if cred.qop is not None and cred.qop != "auth":
            return reject(f"qop {cred.qop!r} was not offered")
        if request_uri is not None and cred.uri != request_uri:
            return reject("digest uri does not match the Request-URI")
        # A nonce (or opaque) signed with another secret is another node's or an earlier
        # run's: with a right response it is answered stale, as an expired one is, so the
        # client retries with ours without asking its user, and nothing counts as a failure.
        foreign = None
        if cred.opaque is not None and not hmac.compare_digest(cred.opaque, self.opaque):
            foreign = "opaque mismatch"
        issued = self._nonce_issued_ms(cred.nonce)
        if issued is None:
            foreign = "nonce was not issued by us"
        try:
            expected = compute_response(
                algorithm=cred.algorithm,
                username=user,
                realm=self.realm,
                password=password,
                ha1=ha1,
                nonce=cred.nonce,
                method=method,
                uri=cred.uri,
                qop=cred.qop,
                nc=cred.nc,
                cnonce=cred.cnonce,
            )
        except DigestParseError as exc:
            return reject(str(exc))
        if not hmac.compare_digest(expected.encode(), cred.response.encode()):
            return reject(foreign or "wrong response")
        if foreign is not None or issued is None:
            why = f"{foreign}, the response right: another node's or an earlier run's"
            return AuthResult(AuthOutcome.STALE, why, user)
        now_ms = int(now * 1000)
        if now_ms - issued > self._ttl_ms or issued > now_ms + 1000:
            return AuthResult(AuthOutcome.STALE, "nonce expired", user)
        # Without qop the response does not cover an ``nc``: one added to a captured request
        # must not make it fresh again, so such a nonce is counted as used once (nc 0).
        nc = int(cred.nc, 16) if cred.qop is not None and cred.nc is not None else 0
        if not self._store.is_fresh(cred.nonce, issued, nc):
            return AuthResult(AuthOutcome.STALE, "nonce count replayed", user)
        self._store.record(cred.nonce, issued, nc)
        return AuthResult(AuthOutcome.OK, "ok", user)
