"""The OpenAPI 3 description, generated from the route table (``table.Endpoint``).

Generated rather than written beside the code, so it cannot list an endpoint that is not
served or miss one that is (a test checks both ways against aiohttp's router). Served at
``/api/openapi.json``; paste it into any OpenAPI viewer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from softswitch import __version__

from .table import STRING, Endpoint, array

__all__ = ["describe"]

_ERROR = {
    "type": "object",
    "properties": {
        "error": {**STRING, "description": "what is wrong, for a person to read"},
        "problems": {**array(STRING), "description": "a refused reload's problems"},
    },
    "required": ["error"],
}


def _response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": text, "schema": {**STRING}}
        for name, text in endpoint.path_params.items()
    ]
    parameters += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": dict(p.schema),
        }
        for p in endpoint.query
    ]
    if endpoint.response is not None:
        content = {endpoint.content_type: {"schema": dict(endpoint.response)}}
    else:
        content = {endpoint.content_type: {"schema": {**STRING}}}
    responses: dict[str, Any] = {"200": {"description": endpoint.summary, "content": content}}
    for status, why in sorted(endpoint.errors.items()):
        responses[str(status)] = _response(why)
    if not endpoint.public:
        responses["401"] = _response(
            "a token is configured and the request lacks it, or it is wrong"
        )
    if endpoint.method not in ("GET", "HEAD"):
        responses["403"] = _response("a browser's request from another origin (CSRF)")
    responses["500"] = _response("a bug in the switch (logged there; no details here)")
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if endpoint.public:
        operation["security"] = []  # no token: the dashboard's files hold no data
    if endpoint.description:
        operation["description"] = endpoint.description
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": dict(endpoint.body)}},
        }
    return operation


def path_names(path: str) -> list[str]:
    """The ``{name}`` parameters of a path, in order."""
    return re.findall(r"{([^}]+)}", path)


def describe(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.0 document for ``endpoints``."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        if sorted(path_names(endpoint.path)) != sorted(endpoint.path_params):
            raise ValueError(f"{endpoint.path}: path parameters not described")
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "softswitch management API",
            "version": __version__,
            "description": (
                "The running switch's live calls, gateways, accounts, balances, statistics,"
                ' routing and CDRs. JSON throughout; errors are {"error": "..."}. With'
                " [management] token set, every request needs 'Authorization: Bearer TOKEN'."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
