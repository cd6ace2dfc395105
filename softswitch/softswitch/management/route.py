"""Route explanation: what ``softswitch route`` prints, asked of the running switch.

The same code (``commands.explain_route``) on the running snapshot, with the switch's live
state: gateways marked down by probing, full, over their CPS, disabled by an operator or by
an alarm are excluded here with that reason, and a route's ``quality`` demotes gateways by
their live ASR (``demoted`` says which and why), where the offline command (which has no
live state) takes every gateway as up and idle and only names the route's ``quality``.
``text`` is the command's output, line for line.
"""

from __future__ import annotations

import time

from aiohttp import web

from softswitch.commands import explain_route

from .errors import ApiError, json_response
from .table import (
    BOOLEAN,
    INTEGER,
    MONEY,
    STRING,
    TIME,
    Endpoint,
    Param,
    array,
    nullable,
    obj,
    query_text,
    query_time,
    switch_of,
)

__all__ = ["ENDPOINTS"]

EXPLANATION = obj(
    {
        "account": STRING,
        "plan": STRING,
        "dialed": STRING,
        "number": nullable({**STRING, "description": "normalised; null when refused there"}),
        "at": TIME,
        "routed": {**BOOLEAN, "description": "whether the call would go to a gateway"},
        "sell_rate": nullable(MONEY),
        "sell_deck": nullable(STRING),
        "gateways": array(
            obj(
                {
                    "gateway": STRING,
                    "rate": nullable(MONEY),
                    "transport": STRING,
                    "request_uri": STRING,
                }
            )
        ),
        "excluded": array(obj({"gateway": STRING, "reason": STRING})),
        "quality": nullable({**STRING, "description": "the route's quality rule, in words"}),
        "demoted": array(
            obj(
                {"gateway": STRING, "reason": STRING},
                "moved to the end by the route's quality (live ASR), with the figures",
            )
        ),
        "refusal": nullable(
            obj({"status": INTEGER, "end_reason": STRING, "q850": INTEGER, "detail": STRING})
        ),
        "explain": {**STRING, "description": "lcr's explanation"},
        "text": {**STRING, "description": "the output of `softswitch route`"},
    }
)


async def get_route(request: web.Request) -> web.StreamResponse:
    account_id = query_text(request, "account", required=True)
    number = query_text(request, "number", required=True)
    assert account_id is not None
    assert number is not None
    at = query_time(request, "at")
    seed = query_text(request, "seed") or "softswitch-route"
    switch = switch_of(request)
    snapshot = switch.pipeline.snapshot
    account = snapshot.accounts.get(account_id)
    if account is None:
        raise ApiError(404, f"no account with id {account_id!r}")
    found = explain_route(
        snapshot,
        account,
        number,
        at=at,
        seed=seed,
        live=switch.live,
        now=time.monotonic(),
        stats=switch.stats,
    )
    refusal = found.refusal
    return json_response(
        {
            "account": found.account,
            "plan": found.plan,
            "dialed": found.dialed,
            "number": found.number,
            "at": found.at,
            "routed": found.routed,
            "sell_rate": found.sell_rate,
            "sell_deck": found.sell_deck,
            "gateways": [
                {
                    "gateway": g.gateway,
                    "rate": g.rate,
                    "transport": g.transport,
                    "request_uri": g.request_uri,
                }
                for g in found.gateways
            ],
            "excluded": [{"gateway": g, "reason": why} for g, why in found.excluded],
            "quality": found.quality,
            "demoted": [{"gateway": g, "reason": why} for g, why in found.demoted],
            "refusal": None
            if refusal is None
            else {
                "status": refusal.status,
                "end_reason": refusal.end_reason,
                "q850": refusal.q850,
                "detail": refusal.detail,
            },
            "explain": found.explain,
            "text": "\n".join(found.lines()) + "\n",
        }
    )


ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/route",
        get_route,
        "Explain the routing of a number",
        "routing",
        description=(
            "The decision the switch makes now for the account dialing the number, as"
            " `softswitch route` prints it, with the running switch's live state."
        ),
        query=(
            Param("account", "the account's id", required=True),
            Param("number", "the number as dialed (tech prefix included)", required=True),
            Param("at", "ISO 8601 time to route at (default now; UTC without an offset)"),
            Param("seed", "the Call-ID weight routing uses (default softswitch-route)"),
        ),
        response=EXPLANATION,
        errors={400: "account or number missing, or a bad time", 404: "no account with that id"},
    ),
)
