"""The management application and its server: aiohttp in the switch's own event loop.

Why aiohttp: it is an asyncio HTTP stack that runs *inside* a loop someone else owns (an
``AppRunner`` and a ``TCPSite`` are started and stopped like the switch's SIP listeners,
with no thread and no second loop), it works on uvloop as on asyncio, it is maintained and
typed, and it is one dependency (FastAPI would add Starlette, uvicorn and its own server
lifecycle, built to own the process; its generated OpenAPI is the one thing we would miss,
and ``openapi`` generates ours from the route table instead).

Handlers run on the loop that carries the calls, so anything that may block (SQLite reads
and writes, CSV export) goes to a worker thread; everything else reads the switch's live
objects directly, which is safe because they are only ever touched from this loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from softswitch.config import ManagementConfig

from . import (
    accounts,
    alarms,
    billing,
    calls,
    cdrs,
    dashboard,
    gateways,
    history,
    route,
    stats,
    system,
)
from .auth import auth_middleware
from .errors import error_middleware, json_response
from .history import HISTORY, History
from .openapi import describe
from .table import SWITCH, Endpoint

if TYPE_CHECKING:
    from softswitch.proxy.server import Switch

__all__ = ["DESCRIPTION", "ENDPOINTS", "ManagementServer", "build_app"]

logger = logging.getLogger("softswitch.management")


async def openapi_json(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[DESCRIPTION])


#: Every endpoint, in the order the description lists them.
ENDPOINTS: tuple[Endpoint, ...] = (
    *calls.ENDPOINTS,
    *gateways.ENDPOINTS,
    *accounts.ENDPOINTS,
    *billing.ENDPOINTS,
    *stats.ENDPOINTS,
    *history.ENDPOINTS,
    *alarms.ENDPOINTS,
    *route.ENDPOINTS,
    *cdrs.ENDPOINTS,
    *system.ENDPOINTS,
    Endpoint(
        "GET",
        "/api/openapi.json",
        openapi_json,
        "This description (OpenAPI 3)",
        "switch",
        response={"type": "object"},
    ),
    *dashboard.ENDPOINTS,
)

#: The OpenAPI description the application serves (``app[DESCRIPTION]``).
DESCRIPTION = web.AppKey("description", dict)


def build_app(
    switch: Switch,
    endpoints: Iterable[Endpoint] = ENDPOINTS,
    history: History | None = None,
) -> web.Application:
    """The application serving ``endpoints`` on ``switch``: errors as JSON (outermost, so a
    refused token is JSON too), then the token check, then the handlers. ``history``: the
    dashboard's time series (``/api/history`` answers 503 without one)."""
    endpoints = tuple(endpoints)

    def token() -> str | None:
        return switch.config.management.token

    public = {e.path for e in endpoints if e.public}
    dashboard.load()
    app = web.Application(middlewares=[error_middleware, auth_middleware(token, public)])
    app[SWITCH] = switch
    if history is not None:
        app[HISTORY] = history
    app[DESCRIPTION] = describe(endpoints)
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.checked())
    return app


class ManagementServer:
    """Starts and stops the API for one switch (``Switch.start``/``stop``)."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self._runner: web.AppRunner | None = None
        #: The dashboard's time series, sampled while the API serves (None: no statistics).
        self.history: History | None = None
        #: (host, port) actually bound (port 0 asks for a free one); None when not serving.
        self.address: tuple[str, int] | None = None

    async def start(self, config: ManagementConfig) -> None:
        """Serve on ``config.listen`` (nothing when ``"off"``).

        A port that cannot be bound raises ``OSError`` naming it, e.g. ``cannot listen on
        [management] 127.0.0.1:8080: address already in use``, like the SIP listeners.
        """
        address = config.address
        if address is None:
            return
        host, port = address
        stats = getattr(self.switch, "stats", None)
        history = History(stats) if stats is not None else None
        runner = web.AppRunner(
            build_app(self.switch, history=history),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            from softswitch.proxy.server import os_reason  # the SIP listeners' wording

            shown = f"[{host}]" if ":" in host else host
            raise OSError(
                f"cannot listen on [management] {shown}:{port}: {os_reason(exc)}"
            ) from exc
        self._runner = runner
        self.history = history
        if history is not None:
            history.start()
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        guard = "bearer token required" if config.token else "no token: loopback only"
        print(f"softswitch: management API on http://{shown}:{bound[1]} ({guard})", flush=True)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self.address = None
        history, self.history = self.history, None
        if history is not None:
            await history.stop()
        if runner is not None:
            await runner.cleanup()
