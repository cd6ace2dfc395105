"""Live calls: the list, one call, and hanging one up.

Read straight from the engine (``Engine.calls``), never a copy kept elsewhere: what the API
shows is what the switch holds. Hanging up is the engine's own ``hang_up`` with end reason
``operator_hangup``: an answered call gets a BYE on both sides, a ringing one a final
response (480) to the caller and a CANCEL to its gateway, and either way its CDR says
``operator_hangup``.

With several workers (``softswitch.workers``) the API runs in the primary and a call lives in
the worker that took it: the list and the hang-up ask the other workers too
(``Switch.peers``), which answer with :func:`answer_peer`; a worker that does not answer in
time is left out of the list (logged).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from softswitch.call.refusal import EndReason
from softswitch.proxy.calls import Call, Phase
from softswitch.proxy.media import relayed_through

from .errors import ApiError, json_response
from .table import (
    INTEGER,
    NUMBER,
    STRING,
    TIME,
    Endpoint,
    array,
    nullable,
    obj,
    switch_of,
)

if TYPE_CHECKING:
    from softswitch.proxy.engine import Engine

__all__ = ["ENDPOINTS", "answer_peer", "call_view"]

logger = logging.getLogger("softswitch.management")

CALL = obj(
    {
        "id": {**STRING, "description": "the caller's Call-ID"},
        "account": STRING,
        "gateway": nullable({**STRING, "description": "answered, else being tried"}),
        "number": {**STRING, "description": "normalised, as routed"},
        "dialed": {**STRING, "description": "as the caller sent it"},
        "state": {"type": "string", "enum": ["hunting", "answered"]},
        "source": {**STRING, "description": "the caller's address, ip:port"},
        "started_at": TIME,
        "answered_at": nullable(TIME),
        "duration": {**NUMBER, "description": "seconds since the answer (0 while hunting)"},
        "elapsed": {**NUMBER, "description": "seconds since the INVITE"},
        "attempts": {**INTEGER, "description": "gateways tried so far"},
        "media_relay": nullable(
            {**STRING, "description": "the media relay its RTP goes through; null: direct"}
        ),
    }
)


def call_view(call: Call, now: float) -> dict[str, Any]:
    """One live call as JSON. ``now``: wall-clock seconds (the call's times are)."""
    branch = call.branch
    gateway = call.answered_gateway or (branch.target.gateway_id if branch is not None else None)
    ip, port = call.caller_flow.origin[:2]
    return {
        "id": call.call_id,
        "account": call.admission.account_id,
        "gateway": gateway,
        "number": call.admission.number,
        "dialed": call.admission.number_dialed,
        "state": call.phase.value,
        "source": f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}",
        "started_at": _iso(call.invite_at),
        "answered_at": _iso(call.answer_at) if call.answer_at is not None else None,
        "duration": round(max(0.0, now - call.answer_at), 3) if call.answer_at else 0.0,
        "elapsed": round(max(0.0, now - call.invite_at), 3),
        "attempts": len(call.attempts),
        "media_relay": relayed_through(call),
    }


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def _live(engine: Engine) -> list[Call]:
    return [c for c in engine.calls() if c.phase is not Phase.ENDED]


def _views(engine: Engine) -> list[dict[str, Any]]:
    now = time.time()
    return [call_view(c, now) for c in sorted(_live(engine), key=lambda c: c.invite_at)]


def _hang_up_here(engine: Engine, call_id: str, remote: str | None) -> tuple[int, list[str]]:
    """Hang up this process's calls with ``call_id``: (how many ended, their states)."""
    calls = [c for c in _live(engine) if c.call_id == call_id]
    states = [c.phase.value for c in calls]
    ended = 0
    for call in calls:
        if engine.hang_up(call, EndReason.OPERATOR_HANGUP):
            ended += 1
            logger.warning(
                "call_id=%s account=%s hung up by an operator (management API, from %s)",
                call.call_id,
                call.admission.account_id,
                remote,
                extra={"call_id": call.call_id},
            )
    return ended, states


def answer_peer(engine: Engine) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A non-primary worker's answers to the primary's questions (``workers.peers``)."""

    def answer(question: dict[str, Any]) -> dict[str, Any]:
        if question.get("op") == "calls":
            return {"calls": _views(engine)}
        if question.get("op") == "hang_up":
            ended, states = _hang_up_here(engine, str(question.get("call_id")), "the primary")
            return {"hung_up": ended, "states": states}
        return {"error": f"unknown question {question.get('op')!r}"}

    return answer


async def _all_views(request: web.Request) -> list[dict[str, Any]]:
    switch = switch_of(request)
    views = _views(switch.engine)
    if switch.peers is not None:
        answers, _ = await switch.peers.ask_all({"op": "calls"})
        for answer in answers:
            views += answer.get("calls", [])
        views.sort(key=lambda v: (v["started_at"], -v["elapsed"]))
    return views


async def list_calls(request: web.Request) -> web.StreamResponse:
    return json_response({"calls": await _all_views(request)})


async def get_call(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    for view in await _all_views(request):
        if view["id"] == call_id:
            return json_response(view)
    raise ApiError(404, f"no call in progress with Call-ID {call_id!r}")


async def hang_up(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    switch = switch_of(request)
    ended, states = _hang_up_here(switch.engine, call_id, request.remote)
    if switch.peers is not None:
        answers, _ = await switch.peers.ask_all({"op": "hang_up", "call_id": call_id})
        for answer in answers:
            ended += int(answer.get("hung_up", 0))
            states += answer.get("states", [])
    if not states:
        raise ApiError(404, f"no call in progress with Call-ID {call_id!r}")
    return json_response(
        {
            "id": call_id,
            "hung_up": ended,
            "states": states,
            "end_reason": str(EndReason.OPERATOR_HANGUP),
        }
    )


_CALL_ID = {"call_id": "the caller's Call-ID (percent-encoded in the path)"}

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/calls",
        list_calls,
        "Calls in progress",
        "calls",
        description="Every call the switch holds now, hunting or answered, oldest first.",
        response=obj({"calls": array(CALL)}),
    ),
    Endpoint(
        "GET",
        "/api/calls/{call_id}",
        get_call,
        "One call in progress",
        "calls",
        path_params=_CALL_ID,
        response=CALL,
        errors={404: "no call in progress with that Call-ID"},
    ),
    Endpoint(
        "DELETE",
        "/api/calls/{call_id}",
        hang_up,
        "Hang a call up",
        "calls",
        description=(
            "End reason `operator_hangup`. An answered call: BYE to both sides. A call still"
            " hunting: 480 to the caller, CANCEL to the gateway being tried."
        ),
        path_params=_CALL_ID,
        response=obj(
            {
                "id": STRING,
                "hung_up": {**INTEGER, "description": "calls ended (one, normally)"},
                "states": array({"type": "string", "enum": ["hunting", "answered"]}),
                "end_reason": STRING,
            }
        ),
        errors={404: "no call in progress with that Call-ID"},
    ),
)
