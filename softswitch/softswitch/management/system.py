"""The switch as a whole: reloading its configuration.

``POST /api/reload`` is SIGHUP's reload (``Switch.reload``): the file and every deck read
off the event loop, swapped in at once when all is valid, refused whole (with every problem)
when not. One reload at a time: the answer is the verdict of the first reload that starts
after the ask (``Switch.request_reload``), so it always reflects the file as it was when
asked, whatever reload (a SIGHUP's) was running. With several workers it is a SIGHUP to
the supervisor (``Switch.reload_everywhere``), which every worker gets as an operator's,
and the answer is this worker's verdict.
Operators' run-time overrides (disabled gateways and accounts) survive it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .errors import ApiError, json_response
from .table import BOOLEAN, STRING, Endpoint, array, obj, switch_of

__all__ = ["ENDPOINTS"]

logger = logging.getLogger("softswitch.management")


async def reload(request: web.Request) -> web.StreamResponse:
    switch = switch_of(request)
    if switch.config_path is None:
        raise ApiError(409, "the embedded demo has no configuration file to reload")
    logger.warning("reload asked by an operator (management API, from %s)", request.remote)
    ok = await asyncio.shield(switch.reload_everywhere())
    if not ok:
        problems = (switch.reload_error or "see the switch's log").splitlines()
        raise ApiError(409, "reload refused: the running configuration is kept", problems=problems)
    live = switch.live
    snapshot = switch.pipeline.snapshot
    return json_response(
        {
            "reloaded": True,
            "source": str(switch.config_path),
            "disabled_by_operator": {
                "gateways": [g for g in snapshot.gateways if live.gateway_disabled(g)],
                "accounts": [a for a in snapshot.accounts if live.account_disabled(a)],
            },
        }
    )


ENDPOINTS = (
    Endpoint(
        "POST",
        "/api/reload",
        reload,
        "Reload the configuration",
        "switch",
        description=(
            "As SIGHUP: the file and every deck, swapped in when all is valid. Calls in progress"
            " keep their rules; run-time overrides are kept. Listen addresses and the database"
            " are not changed by a reload."
        ),
        response=obj(
            {
                "reloaded": BOOLEAN,
                "source": STRING,
                "disabled_by_operator": obj(
                    {"gateways": array(STRING), "accounts": array(STRING)},
                    "run-time overrides still in force",
                ),
            }
        ),
        errors={409: "the file (or a deck) has problems, listed in `problems`; or no file"},
    ),
)
