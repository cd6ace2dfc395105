"""Statistics by dimension, key and window, and the Prometheus exposition (``/metrics``).

Both read the switch's one ``Statistics`` object (``softswitch.stats``: windowed counters
fed by call events) and its Prometheus ``Metrics``, never a copy. ``Statistics.query``
answers JSON-ready summaries; an unknown dimension or window is its ``ValueError``,
answered 400 here. A switch built without statistics answers 503, which says "not here",
not "you asked wrong".
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from .errors import ApiError, json_response
from .table import STRING, Endpoint, Param, obj, query_text, switch_of

__all__ = ["ENDPOINTS"]

DEFAULT_WINDOW = "5m"


class _Statistics(Protocol):
    def query(self, dimension: str, key: str, window: str, now: float) -> Any: ...

    def keys(self, dimension: str) -> list[str]: ...


class _Metrics(Protocol):
    def exposition(self, accept: str | None = None) -> tuple[bytes, str]: ...


def _statistics(request: web.Request) -> _Statistics:
    stats: _Statistics | None = getattr(switch_of(request), "stats", None)
    if stats is None:
        raise ApiError(503, "this switch keeps no statistics")
    return stats


def _query(request: web.Request, keys: list[str] | None) -> dict[str, Any]:
    stats = _statistics(request)
    dimension = request.match_info["dimension"]
    window = query_text(request, "window") or DEFAULT_WINDOW
    now = time.monotonic()
    try:
        if keys is None:
            keys = stats.keys(dimension)
        series = {key: stats.query(dimension, key, window, now) for key in keys}
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    return {"dimension": dimension, "window": window, "series": series}


async def by_dimension(request: web.Request) -> web.StreamResponse:
    return json_response(_query(request, None))


async def by_key(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    answer = _query(request, [key])
    series = answer.pop("series")
    return json_response({**answer, "key": key, "summary": series[key]})


async def metrics(request: web.Request) -> web.StreamResponse:
    stats = getattr(switch_of(request), "stats", None)
    exporter: _Metrics | None = getattr(stats, "metrics", None)
    if exporter is None:
        raise ApiError(503, "this switch exports no Prometheus metrics")
    body, content_type = exporter.exposition(request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


_WINDOW = Param("window", f"the sliding window: 5m, 15m, 1h or 24h (default {DEFAULT_WINDOW})")
_SUMMARY = {
    "type": "object",
    "description": "attempts, answered, ASR, NER, ACD, PDD (avg, p95, max), failures by"
    " status and reason, concurrent calls and CPS (now and peak): docs/statistics.md",
}
_DIMENSION = {"dimension": "switch, account, gateway, destination or prefix"}
_ERRORS = {400: "an unknown dimension or window", 503: "the switch keeps no statistics"}

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/stats/{dimension}",
        by_dimension,
        "Statistics of every key of a dimension",
        "statistics",
        description="One summary per key with counters (the switch dimension's key is `all`).",
        path_params=_DIMENSION,
        query=(_WINDOW,),
        response=obj(
            {
                "dimension": STRING,
                "window": STRING,
                "series": {"type": "object", "additionalProperties": _SUMMARY},
            }
        ),
        errors=_ERRORS,
    ),
    Endpoint(
        "GET",
        "/api/stats/{dimension}/{key}",
        by_key,
        "Statistics of one key",
        "statistics",
        description="A key never seen answers zeros.",
        path_params={**_DIMENSION, "key": "an account or gateway id, a destination, a prefix"},
        query=(_WINDOW,),
        response=obj({"dimension": STRING, "window": STRING, "key": STRING, "summary": _SUMMARY}),
        errors=_ERRORS,
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "statistics",
        description=(
            "The text exposition format (OpenMetrics when the Accept header asks for it)."
            " Needs the token like every endpoint when one is configured."
        ),
        content_type="text/plain",
        errors={503: "the switch exports no metrics"},
    ),
)
