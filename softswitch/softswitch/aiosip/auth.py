"""Digest authentication for aiosip programs: answering challenges, and making them.

Client side: a request answered ``401``/``407`` is sent again with credentials computed
from ``password=`` (``softswitch.sip.digest.build_authorization``), the way aiosip's
``peer.register(..., password=...)`` did, but for every method and for ``407`` too.

Server side: aiosip's ``dialog.unauthorized(message)`` and ``dialog.validate_auth(message,
password)``. The nonces are the stack's stateless HMAC nonces with nonce-count replay
protection (``DigestAuthenticator``), one authenticator per realm and application, so a
registrar written on the aiosip API gets the same checks as the switch.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

from softswitch.sip import Request, Response
from softswitch.sip.digest import (
    DigestAuthenticator,
    DigestParseError,
    build_authorization,
    parse_challenge,
    parse_credentials,
)

__all__ = ["MAX_AUTH_ATTEMPTS", "Challenger", "credentials_for"]

#: Requests sent with credentials before giving up: aiosip sent two (its ``attempts=3``
#: counted the unauthenticated first one).
MAX_AUTH_ATTEMPTS: Final = 2

_ALGORITHMS: Final = {"md5": "MD5", "sha-256": "SHA-256", "sha256": "SHA-256"}


def credentials_for(
    request: Request, response: Response, *, password: str, username: str | None = None
) -> tuple[str, str] | None:
    """The header that answers the challenge in ``response``, or None when there is none
    we can answer (no Digest challenge, an unsupported algorithm or qop).

    The user name defaults to aiosip's choice: the To user for REGISTER (the address being
    registered), the From user otherwise.
    """
    if response.status == 401:
        field, answer = "WWW-Authenticate", "Authorization"
    elif response.status == 407:
        field, answer = "Proxy-Authenticate", "Proxy-Authorization"
    else:
        return None
    if username is None:
        party = request.to if request.method == "REGISTER" else request.from_
        user = getattr(party.uri, "user", None) if party is not None else None
        username = user or ""
    for value in response.headers.get_all(field):
        try:
            challenge = parse_challenge(value)
            header = build_authorization(
                challenge,
                method=request.method,
                uri=str(request.uri),
                username=username,
                password=password,
                body=request.body,
            )
        except DigestParseError:
            continue
        return answer, header
    return None


class Challenger:
    """The server side of ``unauthorized``/``validate_auth`` for one application.

    One :class:`DigestAuthenticator` per realm, all signing nonces with one random secret
    made when the application starts (nonces do not survive a restart; clients simply
    authenticate again).
    """

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._realms: dict[tuple[str, str], DigestAuthenticator] = {}

    def _authenticator(self, realm: str, algorithm: str) -> DigestAuthenticator:
        key = (realm, algorithm)
        found = self._realms.get(key)
        if found is None:
            found = DigestAuthenticator(realm=realm, secret=self._secret, algorithms=(algorithm,))
            self._realms[key] = found
        return found

    def challenge(self, realm: str = "sip", algorithm: str = "md5") -> str:
        """A fresh ``WWW-Authenticate`` value (qop=auth, with an opaque)."""
        name = _ALGORITHMS.get(algorithm.lower())
        if name is None:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        return self._authenticator(realm, name).challenges(time.time())[0]

    def verify(self, request: Request, password: str) -> bool:
        """Whether the request's Authorization is good for ``password`` and one of our
        nonces (not expired, not replayed). Unreadable credentials are simply not good."""
        for value in request.headers.get_all("Authorization"):
            try:
                credentials = parse_credentials(value)
            except DigestParseError:
                continue
            authenticator = self._realms.get((credentials.realm, credentials.algorithm.upper()))
            if authenticator is None:
                continue
            result = authenticator.verify(
                credentials, method=request.method, now=time.time(), password=password
            )
            if result.ok:
                return True
        return False
