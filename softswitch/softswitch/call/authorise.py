"""The authorise stage: who is calling? Source address, digest credentials, or both, and a
tech prefix.

VOS3000 calls these customers "mapping gateways". The rules, in order:

1. Accounts whose ``ips`` match the source (IP/CIDR, optional port) are candidates. Among
   them, one whose ``tech_prefix`` starts the dialed number wins (the longest such prefix);
   else one without a tech prefix. Ties go to the most specific address rule (longer network,
   then a port), then file order. An account with ``ips`` only is then authorised; one with
   ``ips`` *and* ``username`` must also pass digest.
2. A source a registering account's live contact REGISTERed from (same address *and*
   port: behind a NAT the port tells devices apart) is that account's, authorised by the
   registration (``registered``, from ``softswitch.registrar``), as long as the account
   still has ``register = true``. Like an IP account's, such a call does not need digest;
   from anywhere else the account authenticates by digest as any digest account does.
3. A source blocked for repeated failures is refused (403). IP-only accounts are checked
   before the block on purpose: their address *is* their credential, and a block must not let
   anyone who can spoof a customer's UDP source address cut that customer off.
4. No IP account: if any account can authenticate by digest alone, the request must carry
   ``Proxy-Authorization`` for our realm, else it is challenged (407). Credentials name the
   account by user name.
5. Otherwise 403.

Failures never say which accounts exist: every refusal is the same 403, Q.850 cause 21 (the
``detail`` saying why is for logs and the CDR), an unknown user name is verified against a
dummy password so it takes the same time as a wrong one, and a 407 is offered to any source
once digest accounts exist. Every failed verification (and every call from an address no
account knows when digest is not possible) counts towards blocking the IP
(``[defaults] auth_fail_limit`` within ``auth_fail_window`` blocks for ``auth_block_time``).
A challenge is not a failure: it is the normal first step of digest.

The digest ``uri`` must equal the Request-URI (RFC 3261 22.4 lets the server check it; it
stops a captured INVITE's credentials being reused for another number). SIPp needs
``-auth_uri`` for that.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..config import Account, Config
from ..sip.digest import DigestAuthenticator, DigestCredentials, DigestParseError, parse_credentials
from ..sip.message import Request
from ..sip.uri import SipURI, TelURI, unescape
from .live import LiveState
from .refusal import EndReason, Refusal, refuse
from .snapshot import Snapshot

__all__ = [
    "AuthMethod",
    "Authorised",
    "Challenge",
    "SharedFailures",
    "authorise",
    "dialed_number",
    "has_credentials",
    "make_authenticator",
]

AuthMethod = Literal["ip", "digest", "ip+digest", "registration"]

# A password no account has, to verify unknown users in the same time as known ones.
_DUMMY_PASSWORD = secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Authorised:
    """The call belongs to ``account``; ``number`` is ``dialed`` without the tech prefix."""

    account: Account
    dialed: str
    number: str
    method: AuthMethod
    username: str | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 407 with one ``Proxy-Authenticate`` per offered algorithm (strongest first).

    Not a call attempt: the caller retries with credentials, so no CDR is written for it.
    """

    values: tuple[str, ...]
    stale: bool = False
    status: int = 407
    header: str = "Proxy-Authenticate"

    def headers(self) -> list[tuple[str, str]]:
        return [(self.header, v) for v in self.values]


class SharedFailures(Protocol):
    """The failures across nodes (``cluster.block_mirror.SharedBlocks``): fire and forget."""

    def note_failure(self, ip: str, limit: int, window: float, block_for: float) -> None: ...

    def note_success(self, ip: str) -> None: ...


def make_authenticator(config: Config, secret: bytes) -> DigestAuthenticator:
    """The engine's long-lived authenticator (it keeps nonce counts across reloads).

    ``secret`` (at least 16 bytes) signs nonces: one per process, never shared, since the
    nonces' use counts live in the authenticator (``DigestAuthenticator``).
    """
    return DigestAuthenticator(
        realm=config.server.realm, secret=secret, algorithms=config.server.digest_algorithms
    )


def dialed_number(request: Request) -> str:
    """The user part of the Request-URI, unescaped (``1234%2344...`` is ``1234#44...``)."""
    uri = request.uri
    if isinstance(uri, SipURI):
        return unescape(uri.user or "")
    if isinstance(uri, TelURI):
        return uri.number
    return ""


def _by_tech_prefix(accounts: list[Account], dialed: str) -> Account | None:
    best: Account | None = None
    for account in accounts:
        if account.tech_prefix:
            if dialed.startswith(account.tech_prefix) and (
                best is None or len(account.tech_prefix) > len(best.tech_prefix)
            ):
                best = account
        elif best is None:
            best = account
    return best


def _strip_tech_prefix(account: Account, dialed: str) -> str:
    if account.tech_prefix and dialed.startswith(account.tech_prefix):
        return dialed[len(account.tech_prefix) :]
    return dialed


def _credentials(request: Request, realm: str) -> DigestCredentials | None:
    """Our realm's Digest credentials, or None (other realms are for other proxies).

    Raises DigestParseError for malformed credentials addressed to us.
    """
    for value in request.headers.get_all("Proxy-Authorization"):
        try:
            cred = parse_credentials(value)
        except DigestParseError:
            if f'realm="{realm}"' in value or f"realm={realm}" in value:
                raise
            continue
        if cred.realm == realm:
            return cred
    return None


def has_credentials(request: Request, realm: str) -> bool:
    """Whether ``request`` carries credentials addressed to our realm (even malformed ones).

    The stateless screen lets such a request from an unknown address go on to
    :func:`authorise`, which verifies it and counts a failure towards blocking the address.
    """
    try:
        return _credentials(request, realm) is not None
    except DigestParseError:
        return True


def authorise(
    snapshot: Snapshot,
    request: Request,
    source: tuple[str, int],
    live: LiveState,
    now: float,
    nonces: DigestAuthenticator,
    *,
    clock: float | None = None,
    registered: Callable[[str, int], str | None] | None = None,
    shared: SharedFailures | None = None,
) -> Authorised | Refusal | Challenge:
    """Decide which account an INVITE belongs to, challenge it, or refuse it.

    ``now`` is wall-clock time in seconds: it ages nonces (a nonce carries the wall-clock
    time it was issued at). ``clock`` is monotonic seconds for the failure window and IP
    blocks, so a clock step cannot lift or stretch a block (None: ``now``, for tests that
    drive one fake clock). ``registered`` names the account whose live registration came
    from a source (ip, port), if any. ``shared`` (``[server] shared_state``) is told of
    each failure and success too, for the blocks across nodes (it never waits for Redis).
    """
    mono = now if clock is None else clock
    ip, port = source
    ip = ip.strip("[]")
    defaults = snapshot.config.defaults

    def fail(detail: str) -> Refusal:
        live.note_auth_failure(
            ip,
            mono,
            limit=defaults.auth_fail_limit,
            window=defaults.auth_fail_window,
            block_for=defaults.auth_block_time,
        )
        if shared is not None:
            shared.note_failure(
                ip, defaults.auth_fail_limit, defaults.auth_fail_window, defaults.auth_block_time
            )
        return refuse(EndReason.AUTH_FAILED, detail)

    dialed = dialed_number(request)
    by_ip = snapshot.accounts_for_source(ip, port)
    account = _by_tech_prefix(by_ip, dialed)
    if account is not None and not account.uses_digest:
        return Authorised(account, dialed, _strip_tech_prefix(account, dialed), "ip")
    if registered is not None:
        holder = snapshot.accounts.get(registered(ip, port) or "")
        if holder is not None and holder.register and (not holder.uses_ip or holder in by_ip):
            number = _strip_tech_prefix(holder, dialed)
            return Authorised(holder, dialed, number, "registration", username=holder.username)
    if live.is_blocked(ip, mono):
        return refuse(EndReason.AUTH_FAILED, f"source {ip} is blocked after repeated failures")
    if account is None and not snapshot.digest_only:
        if by_ip:  # a known customer dialing without (or with a wrong) tech prefix
            return refuse(EndReason.AUTH_FAILED, f"no account at {ip}:{port} for this tech prefix")
        return fail(f"unknown source {ip}:{port}")

    realm = snapshot.config.server.realm
    try:
        cred = _credentials(request, realm)
    except DigestParseError as e:
        return fail(f"malformed credentials: {e}")
    if cred is None:
        return Challenge(tuple(nonces.challenges(now)))

    if account is not None:  # ips and digest both required
        expected: Account | None = account if cred.username == account.username else None
        method: AuthMethod = "ip+digest"
    else:
        user = snapshot.users.get(cred.username)
        # An account that also needs its IP cannot be used from an address it does not list.
        expected = user if user is not None and not user.uses_ip else None
        method = "digest"
    password = expected.password if expected is not None else None
    result = nonces.verify(
        cred,
        method=request.method,
        now=now,
        password=password if password is not None else _DUMMY_PASSWORD,
        request_uri=str(request.uri),
    )
    if result.stale and expected is not None:
        return Challenge(tuple(nonces.challenges(now, stale=True)), stale=True)
    if not result.ok or expected is None:
        why = result.reason if expected is not None else "unknown user or wrong address"
        return fail(f"digest user {cred.username!r}: {why}")
    live.note_auth_success(ip)
    if shared is not None:
        shared.note_success(ip)
    return Authorised(
        expected, dialed, _strip_tech_prefix(expected, dialed), method, username=cred.username
    )
