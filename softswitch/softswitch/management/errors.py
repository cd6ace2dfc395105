"""What the API answers when something is wrong: always JSON ``{"error": "..."}``, never a
traceback.

Three kinds of wrong, reported differently (DESIGN.md: "errors say whose fault"):

* the client's request: a handler raises :class:`ApiError` (400 bad input, 404 no such
  thing, 409 the switch's state does not allow it), answered as it says;
* aiohttp's own refusals (no such path, a method the path does not take): the same JSON
  shape with aiohttp's status (and its ``Allow`` header for a 405);
* a bug of ours: logged with its traceback on the switch's side, answered 500 with a line
  that says so and nothing of the code (a traceback can show paths, tokens, SQL).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["ApiError", "Handler", "error_middleware", "json_response", "jsonable"]

logger = logging.getLogger("softswitch.management")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx) and a message for the client. ``extra``
    adds fields to the JSON body (a refused reload's ``problems``)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def jsonable(value: Any) -> Any:
    """``value`` with what JSON lacks made plain: money (``Decimal``) as its exact text,
    never a float; times as ISO 8601; enums as their values; tuples as lists."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_response(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(jsonable(data), ensure_ascii=False, indent=1)
    return web.Response(text=body + "\n", status=status, content_type="application/json")


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    response = json_response({"error": message}, status)
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost layer: every way a request can fail becomes a JSON answer."""
    try:
        return await handler(request)
    except ApiError as e:
        response = json_response({"error": e.message, **e.extra}, e.status)
        if e.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="softswitch"'
        return response
    except web.HTTPException as e:
        if e.status < 400:  # a redirect or a plain answer raised by aiohttp: as it is
            raise
        message = e.reason
        if e.status == 404:
            message = f"no such endpoint: {request.method} {request.path} (see /api/openapi.json)"
        elif e.status == 405:
            allowed = e.headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.path} (allowed: {allowed})"
        headers = {k: v for k, v in e.headers.items() if k == "Allow"}
        return _error(e.status, message, headers)
    except Exception:
        logger.exception("management API: %s %s failed", request.method, request.path)
        return _error(500, "internal error in the switch; the switch's log has the details")
