"""The route table: each endpoint once, with what the OpenAPI description says of it.

Every resource module lists its endpoints as :class:`Endpoint` values; ``app`` registers
them with aiohttp and ``openapi`` describes them, both from the same list, so the
description cannot fall out of step with what is served. An endpoint also declares its
query parameters, and a request with one it does not declare is refused (400, with the
closest known name): a misspelt ``acount=`` must not silently mean "every account".
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from softswitch.commands import parse_time

from .errors import ApiError, Handler

if TYPE_CHECKING:
    from softswitch.proxy.server import Switch

__all__ = [
    "SWITCH",
    "Endpoint",
    "Param",
    "query_int",
    "query_text",
    "query_time",
    "read_json",
    "switch_of",
]

#: The running switch, kept in the application (``app[SWITCH]``).
SWITCH = web.AppKey["Switch"]("switch")

#: JSON Schema shorthands for the descriptions.
STRING: Mapping[str, Any] = {"type": "string"}
INTEGER: Mapping[str, Any] = {"type": "integer"}
NUMBER: Mapping[str, Any] = {"type": "number"}
BOOLEAN: Mapping[str, Any] = {"type": "boolean"}
MONEY: Mapping[str, Any] = {"type": "string", "description": "an exact decimal, never a float"}
TIME: Mapping[str, Any] = {"type": "string", "format": "date-time"}


def nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def obj(properties: Mapping[str, Any], description: str = "") -> dict[str, Any]:
    """An object schema whose every property is present (null where it has no value)."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
    }
    if description:
        out["description"] = description
    return out


def array(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": dict(items)}


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: dict(STRING))
    required: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One method on one path: its handler and its description.

    ``response`` is the JSON Schema of a 200 answer (``content_type`` JSON), or None when
    the answer is not JSON (``/metrics``, the CSV export). ``errors`` are the 4xx statuses
    it may answer besides 401, each with why. ``public``: served without the token (the
    dashboard's own files, which hold no data); GET only.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    description: str = ""
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    content_type: str = "application/json"
    errors: Mapping[int, str] = field(default_factory=dict)
    public: bool = False

    def checked(self) -> Handler:
        """The handler, behind the check of the query's parameter names."""
        known = frozenset(p.name for p in self.query)
        handler = self.handler

        async def run(request: web.Request) -> web.StreamResponse:
            for name in request.query:
                if name not in known:
                    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    listed = ", ".join(sorted(known)) or "none"
                    raise ApiError(
                        400, f"unknown query parameter {name!r}{hint}; it takes: {listed}"
                    )
            return await handler(request)

        return run


def switch_of(request: web.Request) -> Switch:
    return request.app[SWITCH]


def query_text(request: web.Request, name: str, *, required: bool = False) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"query parameter {name!r} is required")
        return None
    return value


def query_int(
    request: web.Request, name: str, default: int | None, *, low: int, high: int
) -> int | None:
    text = query_text(request, name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def query_time(request: web.Request, name: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time (UTC when it has no offset), as ``softswitch cdr``."""
    text = query_text(request, name)
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise ApiError(
            400, f"{name} must be an ISO 8601 date or time (e.g. 2026-12-04T10:00), got {text!r}"
        ) from None


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is ``{}``)."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data
