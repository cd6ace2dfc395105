"""CDR search and CSV export: the store's own reader (``query``) in a worker thread.

The switch's store answers, whichever database it is (a SQLite file or PostgreSQL, see
``softswitch.store``). Reading can wait for the database and a big export takes a while:
neither may stall the event loop that carries the calls. Only committed CDRs are seen (the
writer commits in groups, a fraction of a second after a call ends; on PostgreSQL those of
every node sharing the database). The CSV is ``softswitch cdr --csv``'s, column for column
(``cdr.write_csv``).
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from aiohttp import web

from softswitch.cdr import CSV_COLUMNS, CdrRecord, write_csv
from softswitch.store.opening import CdrStoreLike

from .errors import ApiError, json_response
from .table import INTEGER, Endpoint, Param, array, query_int, query_text, query_time, switch_of

__all__ = ["ENDPOINTS"]

#: Rows one search returns at most (a page); the export has no cap of its own.
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 100

_FILTERS = (
    Param("since", "invite_at at or after this ISO 8601 time (UTC without an offset)"),
    Param("until", "invite_at before this time"),
    Param("account", "the account's id"),
    Param("call_id", "one call's Call-ID"),
)


def _search(request: web.Request, default_limit: int | None) -> dict[str, Any]:
    since, until = query_time(request, "since"), query_time(request, "until")
    if since is not None and until is not None and until <= since:
        raise ApiError(400, f"until ({until.isoformat()}) is not after since ({since.isoformat()})")
    return {
        "since": since,
        "until": until,
        "account_id": query_text(request, "account"),
        "call_id": query_text(request, "call_id"),
        "limit": query_int(request, "limit", default_limit, low=1, high=MAX_LIMIT),
    }


def _store(request: web.Request) -> CdrStoreLike:
    return switch_of(request).cdrs


def _row(record: CdrRecord) -> dict[str, Any]:
    row = record.to_row()
    row["attempts"] = json.loads(row["attempts"])
    return row


def _query(store: CdrStoreLike, search: dict[str, Any]) -> list[dict[str, Any]]:
    return [_row(r) for r in store.query(**search)]


def _csv(store: CdrStoreLike, search: dict[str, Any]) -> str:
    out = io.StringIO()
    write_csv(store.query(**search), out)
    return out.getvalue()


async def search_cdrs(request: web.Request) -> web.StreamResponse:
    search = _search(request, DEFAULT_LIMIT)
    rows = await asyncio.to_thread(_query, _store(request), search)
    return json_response({"cdrs": rows, "count": len(rows), "limit": search["limit"]})


async def export_cdrs(request: web.Request) -> web.StreamResponse:
    search = _search(request, None)
    text = await asyncio.to_thread(_csv, _store(request), search)
    return web.Response(
        text=text,
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="cdrs.csv"'},
    )


_CDR = {
    "type": "object",
    "description": "a CDR: the columns of docs/cdr.md, attempts as an array",
    "properties": {c: {} for c in CSV_COLUMNS},
}

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/cdrs",
        search_cdrs,
        "Search CDRs",
        "cdrs",
        description="Committed CDRs, oldest first (by invite_at), at most `limit` of them.",
        query=(
            *_FILTERS,
            Param(
                "limit",
                f"most rows returned (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
                {**INTEGER, "minimum": 1, "maximum": MAX_LIMIT},
            ),
        ),
        response={
            "type": "object",
            "properties": {"cdrs": array(_CDR), "count": INTEGER, "limit": INTEGER},
            "required": ["cdrs", "count", "limit"],
        },
        errors={400: "a bad time, limit or period"},
    ),
    Endpoint(
        "GET",
        "/api/cdrs.csv",
        export_cdrs,
        "Export CDRs as CSV",
        "cdrs",
        description="As `softswitch cdr --csv`: a header row, then the CDRs oldest first.",
        query=(
            *_FILTERS,
            Param(
                "limit",
                f"most rows (default: all; at most {MAX_LIMIT} when given)",
                {**INTEGER, "minimum": 1, "maximum": MAX_LIMIT},
            ),
        ),
        content_type="text/csv",
        errors={400: "a bad time, limit or period"},
    ),
)
