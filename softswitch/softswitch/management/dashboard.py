"""The web dashboard's files: ``/`` (the page) and ``/static/{name}`` (its script and style).

The dashboard is three files of our own in ``static/`` (plain HTML, JavaScript and CSS; the
charts are drawn by our own code on ``<canvas>``): no framework, no CDN, nothing fetched
from elsewhere, so it works on a switch with no Internet. The page reads the JSON API from
the same origin, like any client.

These routes are *public*: a browser cannot add ``Authorization`` to a page it navigates
to, and the files hold no data, only code. Every API call the page makes carries the token
(the page asks for it once when the API answers 401). The files are read once, when the
application is built (a few tens of kilobytes), so serving them never touches the disk.

Answers forbid framing (a hang-up button in someone else's frame is a click-jacking
target) and carry a Content-Security-Policy that allows only this origin: the page cannot
load anything from elsewhere even by mistake.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

from aiohttp import web

from .errors import ApiError
from .table import Endpoint

__all__ = ["ENDPOINTS", "FILES"]

#: The files served, and their content types. Anything else under /static/ is a 404.
FILES: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}

_HEADERS: Final = {
    # Revalidate every load: a switch upgraded in place serves its new page at once.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def _contents() -> dict[str, bytes]:
    folder = resources.files(__package__ or "softswitch.management") / "static"
    return {name: (folder / name).read_bytes() for name in FILES}


def _answer(name: str) -> web.Response:
    response = web.Response(body=_contents()[name], content_type=FILES[name], charset="utf-8")
    response.headers.update(_HEADERS)
    return response


async def page(request: web.Request) -> web.StreamResponse:
    return _answer("index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise ApiError(404, f"no dashboard file {name!r}")
    return _answer(name)


def load() -> None:
    """Read the files now (``build_app``), so a missing one fails the start, not a request."""
    _contents()


ENDPOINTS = (
    Endpoint(
        "GET",
        "/",
        page,
        "The web dashboard",
        "dashboard",
        description=(
            "An HTML page (no token needed to load it: it holds no data; the API calls it"
            " makes send the token). Overview, gateways, accounts, live calls, CDR search."
        ),
        content_type="text/html",
        public=True,
    ),
    Endpoint(
        "GET",
        "/static/{name}",
        static_file,
        "The dashboard's script and style",
        "dashboard",
        path_params={"name": "app.js or app.css"},
        content_type="text/javascript",
        errors={404: "no such file"},
        public=True,
    ),
)
