"""Bearer-token authentication for every endpoint, ``/metrics`` included.

``[management] token`` set: each request must carry ``Authorization: Bearer TOKEN``, or it
gets 401 before any handler runs. Not set: no authentication, which the configuration allows
only on a loopback address (``ManagementConfig._check``), where only this host's users reach
the port. The token is read per request from a callable, so a SIGHUP reload that changes it
takes effect at the next request. Compared in constant time: the API books money.

Without a token, a web page open in a browser on the same host could still send a "simple"
cross-site POST to ``127.0.0.1:8080`` (no preflight, no token to lack). Browsers mark such
requests with an ``Origin`` header, so a request that changes something and comes from
another origin than the API's own is refused (403), token or not. Tools (curl, scripts,
Prometheus) send no ``Origin`` and are unaffected.

The dashboard's own files (``/``, ``/static/...``) are served without the token: a browser
cannot add a header to a page it navigates to, and they hold no data. The page then sends
the token with every API call.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from softswitch.config import is_loopback

from .errors import ApiError, Handler

__all__ = ["auth_middleware"]

#: Methods that change nothing (a browser's cross-origin GET cannot read the answer anyway).
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def auth_middleware(token: Callable[[], str | None], public: Collection[str] = ()) -> Middleware:
    """The middleware checking requests against ``token()`` (None: none required).
    ``public``: the paths (as routed, e.g. ``/static/{name}``) a GET needs no token for."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and request.method not in _SAFE:
            url, own = URL(origin), request.url
            if (url.host, url.port) != (own.host, own.port):
                raise ApiError(403, f"cross-origin request from {origin} refused")
        resource = request.match_info.route.resource
        if request.method == "GET" and resource is not None and resource.canonical in public:
            return await handler(request)
        expected = token()
        if expected is None and not is_loopback(request.url.host or ""):
            # Without a token the API trusts loopback only, and a page whose name an attacker
            # re-points at 127.0.0.1 (DNS rebinding) sends its own name as Host: refuse it.
            raise ApiError(403, "without a token only http://127.0.0.1, [::1] or localhost")
        if expected is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                raise ApiError(401, "missing token: send 'Authorization: Bearer TOKEN'")
            if not hmac.compare_digest(given.strip().encode(), expected.encode()):
                raise ApiError(401, "wrong token")
        return await handler(request)

    return authenticate
