"""Gateways: their state and health, and enabling or disabling one at run time.

State is read where the switch keeps it: the running snapshot's configuration, the live
counters (concurrent calls, calls in the last second), the prober's verdict and the
operator's override (``overrides``). A disabled gateway is skipped by the select stage with
the reason ``disabled (operator)``, shown in routing traces and ``/api/route``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from softswitch.call.live import LiveState
from softswitch.config import Gateway

from .errors import ApiError, json_response
from .overrides import OVERRIDE, toggle
from .table import BOOLEAN, INTEGER, NUMBER, STRING, Endpoint, array, nullable, obj, switch_of

__all__ = ["ENDPOINTS", "gateway_view"]

GATEWAY = obj(
    {
        "id": STRING,
        "address": {**STRING, "description": "host:port"},
        "transport": {"type": "string", "enum": ["udp", "tcp"]},
        "enabled": {**BOOLEAN, "description": "takes new calls now (file, operator, alarms)"},
        "enabled_in_file": BOOLEAN,
        "disabled_by_operator": BOOLEAN,
        "disabled_by_alarm": nullable(
            {**STRING, "description": "the raised alarm (rule id) that takes it out, if any"}
        ),
        "health": {
            "type": "string",
            "enum": ["up", "down", "not probed"],
            "description": "the OPTIONS prober's verdict",
        },
        "probe": {**NUMBER, "description": "seconds between OPTIONS probes; 0: not probed"},
        "calls": {**INTEGER, "description": "attempts in progress on it"},
        "capacity": nullable(INTEGER),
        "cps": {**INTEGER, "description": "attempts started in the last second"},
        "max_cps": nullable(INTEGER),
        "rate_deck": nullable(STRING),
        "priority": INTEGER,
        "weight": INTEGER,
    }
)


def gateway_view(gateway: Gateway, live: LiveState, now: float) -> dict[str, Any]:
    """One gateway's state; ``now`` on the live state's monotonic clock."""
    host = gateway.host
    probed = gateway.enabled and gateway.probe > 0
    health = "not probed" if not probed else "up" if live.gateway_is_up(gateway.id) else "down"
    operator = live.gateway_disabled(gateway.id)
    alarm = live.gateway_alarm(gateway.id)
    return {
        "id": gateway.id,
        "address": f"{host}:{gateway.port}",
        "transport": gateway.transport,
        "enabled": gateway.enabled and not operator and alarm is None,
        "enabled_in_file": gateway.enabled,
        "disabled_by_operator": operator,
        "disabled_by_alarm": alarm,
        "health": health,
        "probe": gateway.probe,
        "calls": live.gateway_calls(gateway.id),
        "capacity": gateway.capacity,
        "cps": live.gateway_rate(gateway.id, now),
        "max_cps": gateway.max_cps,
        "rate_deck": gateway.rate_deck,
        "priority": gateway.priority,
        "weight": gateway.weight,
    }


def _gateway(request: web.Request) -> Gateway:
    gateway_id = request.match_info["gateway_id"]
    gateway = switch_of(request).pipeline.snapshot.gateways.get(gateway_id)
    if gateway is None:
        raise ApiError(404, f"no gateway with id {gateway_id!r}")
    return gateway


async def list_gateways(request: web.Request) -> web.StreamResponse:
    switch = switch_of(request)
    now = time.monotonic()
    gateways = switch.pipeline.snapshot.config.gateways
    return json_response({"gateways": [gateway_view(g, switch.live, now) for g in gateways]})


async def get_gateway(request: web.Request) -> web.StreamResponse:
    return json_response(gateway_view(_gateway(request), switch_of(request).live, time.monotonic()))


async def _set(request: web.Request, disable: bool) -> web.StreamResponse:
    gateway = _gateway(request)
    live = switch_of(request).live
    answer = toggle(
        request,
        "gateway",
        gateway.id,
        disable=disable,
        in_file=gateway.enabled,
        set_disabled=live.set_gateway_disabled,
    )
    return json_response(answer)


async def disable_gateway(request: web.Request) -> web.StreamResponse:
    return await _set(request, True)


async def enable_gateway(request: web.Request) -> web.StreamResponse:
    return await _set(request, False)


_ID = {"gateway_id": "the gateway's id"}
_UNKNOWN = {404: "no gateway with that id"}

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/gateways",
        list_gateways,
        "Gateways",
        "gateways",
        description="Every gateway of the running configuration, in file order.",
        response=obj({"gateways": array(GATEWAY)}),
    ),
    Endpoint(
        "GET",
        "/api/gateways/{gateway_id}",
        get_gateway,
        "One gateway",
        "gateways",
        path_params=_ID,
        response=GATEWAY,
        errors=_UNKNOWN,
    ),
    Endpoint(
        "POST",
        "/api/gateways/{gateway_id}/disable",
        disable_gateway,
        "Disable a gateway at run time",
        "gateways",
        description=(
            "New calls skip it (`disabled (operator)`); calls on it go on. Lasts until enabled"
            " again or the switch restarts; a SIGHUP reload keeps it."
        ),
        path_params=_ID,
        response=OVERRIDE,
        errors=_UNKNOWN,
    ),
    Endpoint(
        "POST",
        "/api/gateways/{gateway_id}/enable",
        enable_gateway,
        "Enable a gateway an operator disabled",
        "gateways",
        path_params=_ID,
        response=OVERRIDE,
        errors={**_UNKNOWN, 409: "disabled in the configuration file: only the file enables it"},
    ),
)
