"""Alarms: the ``[[alarms]]`` rules of the running configuration and the alarms raised now.

Read from the switch's one ``Alarms`` object (``softswitch.alarms``), the same one that logs
them, sets ``softswitch_alarm_active`` and takes gateways out of routing. A gateway an alarm
took out also shows it in ``/api/gateways`` (``disabled_by_alarm``) and in ``/api/route``
(excluded with reason ``alarm <rule id>``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from softswitch.config import AlarmRule

from .errors import ApiError, json_response
from .table import INTEGER, NUMBER, STRING, TIME, Endpoint, array, nullable, obj, switch_of

__all__ = ["ENDPOINTS"]

ALARM = obj(
    {
        "rule": STRING,
        "scope": {"type": "string", "enum": ["gateway", "account", "switch"]},
        "key": {**STRING, "description": "the gateway or account id; the switch's is all"},
        "metric": STRING,
        "window": STRING,
        "clear": {**NUMBER, "description": "the value the metric must be back past to clear"},
        "value": nullable({**NUMBER, "description": "the metric at the latest evaluation"}),
        "attempts": {**INTEGER, "description": "attempts in the window then"},
        "actions": array(STRING),
        "since": TIME,
    },
    "a raised alarm; it has `below` or `above` (the rule's threshold) too",
)

RULE = obj(
    {
        "id": STRING,
        "metric": STRING,
        "scope": STRING,
        "key": nullable({**STRING, "description": "null: every key of the scope"}),
        "window": STRING,
        "below": nullable(NUMBER),
        "above": nullable(NUMBER),
        "clear": NUMBER,
        "min_attempts": INTEGER,
        "actions": array(STRING),
        "interval": NUMBER,
        "raised": {**INTEGER, "description": "how many of its keys are raised now"},
    }
)


def _rule(rule: AlarmRule, raised: int) -> dict[str, Any]:
    return {
        "id": rule.id,
        "metric": rule.metric,
        "scope": rule.scope,
        "key": rule.key,
        "window": rule.window,
        "below": rule.below,
        "above": rule.above,
        "clear": rule.clear_at,
        "min_attempts": rule.min_attempts,
        "actions": list(rule.actions),
        "interval": rule.interval,
        "raised": raised,
    }


async def list_alarms(request: web.Request) -> web.StreamResponse:
    alarms = getattr(switch_of(request), "alarms", None)
    if alarms is None:
        raise ApiError(503, "this switch evaluates no alarms")
    active = alarms.active()
    raised: dict[str, int] = {}
    for alarm in active:
        raised[alarm.rule] = raised.get(alarm.rule, 0) + 1
    return json_response(
        {
            "alarms": [a.view() for a in active],
            "rules": [_rule(r, raised.get(r.id, 0)) for r in alarms.rules],
        }
    )


ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/alarms",
        list_alarms,
        "Alarms raised now, and the rules",
        "alarms",
        description=(
            "The alarms raised now (one per rule and key, since when, the latest value) and"
            " every `[[alarms]]` rule of the running configuration. Raising and clearing are"
            " logged (`event=alarm_raised`, `event=alarm_cleared`) and exported as"
            " `softswitch_alarm_active{rule,key}`."
        ),
        response=obj({"alarms": array(ALARM), "rules": array(RULE)}),
        errors={503: "the switch evaluates no alarms"},
    ),
)
