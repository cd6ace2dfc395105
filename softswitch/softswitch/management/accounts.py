"""Accounts: their state, enabling or disabling one at run time, and blocked addresses.

An account an operator disables is refused at the limits stage like one the file disables:
``403``, end reason ``account_disabled`` (its CDR's detail says "by an operator"). Blocked
addresses are the switch's one blocklist (``LiveState.blocks``): sources blocked for failed
authentication and those pike blocked for flooding; unblocking one also forgets its recent
failures and its pike count, so it starts afresh.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from aiohttp import web

from softswitch.call.live import LiveState
from softswitch.config import Account

from .errors import ApiError, json_response
from .overrides import OVERRIDE, toggle
from .table import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    Endpoint,
    array,
    nullable,
    obj,
    switch_of,
)

__all__ = ["ENDPOINTS", "account_view"]

logger = logging.getLogger("softswitch.management")

ACCOUNT = obj(
    {
        "id": STRING,
        "enabled": {**BOOLEAN, "description": "may place calls now (file and operator)"},
        "enabled_in_file": BOOLEAN,
        "disabled_by_operator": BOOLEAN,
        "auth": {"type": "string", "enum": ["ip", "digest", "ip+digest"]},
        "calls": {**INTEGER, "description": "calls in progress"},
        "max_calls": nullable(INTEGER),
        "cps": {**INTEGER, "description": "calls admitted in the last second"},
        "max_cps": nullable(INTEGER),
        "routing_plan": STRING,
        "rate_deck": nullable(STRING),
        "tech_prefix": STRING,
        "billing": {"type": "string", "enum": ["none", "prepaid", "postpaid"]},
    }
)

BLOCK = obj(
    {
        "ip": STRING,
        "seconds_left": {**NUMBER, "description": "until the block lifts by itself"},
    }
)


def account_view(account: Account, live: LiveState, now: float) -> dict[str, Any]:
    """One account's state; ``now`` on the live state's monotonic clock."""
    auth = "+".join(
        kind for kind, used in (("ip", account.uses_ip), ("digest", account.uses_digest)) if used
    )
    operator = live.account_disabled(account.id)
    return {
        "id": account.id,
        "enabled": account.enabled and not operator,
        "enabled_in_file": account.enabled,
        "disabled_by_operator": operator,
        "auth": auth,
        "calls": live.account_calls(account.id),
        "max_calls": account.max_calls,
        "cps": live.account_rate(account.id, now),
        "max_cps": account.max_cps,
        "routing_plan": account.routing_plan,
        "rate_deck": account.rate_deck,
        "tech_prefix": account.tech_prefix,
        "billing": account.billing,
    }


def account_of(request: web.Request) -> Account:
    """The path's account in the running configuration (404 when there is none)."""
    account_id = request.match_info["account_id"]
    account = switch_of(request).pipeline.snapshot.accounts.get(account_id)
    if account is None:
        raise ApiError(404, f"no account with id {account_id!r}")
    return account


async def list_accounts(request: web.Request) -> web.StreamResponse:
    switch = switch_of(request)
    now = time.monotonic()
    accounts = switch.pipeline.snapshot.config.accounts
    return json_response({"accounts": [account_view(a, switch.live, now) for a in accounts]})


async def get_account(request: web.Request) -> web.StreamResponse:
    return json_response(
        account_view(account_of(request), switch_of(request).live, time.monotonic())
    )


async def _set(request: web.Request, disable: bool) -> web.StreamResponse:
    account = account_of(request)
    live = switch_of(request).live
    answer = toggle(
        request,
        "account",
        account.id,
        disable=disable,
        in_file=account.enabled,
        set_disabled=live.set_account_disabled,
    )
    return json_response(answer)


async def disable_account(request: web.Request) -> web.StreamResponse:
    return await _set(request, True)


async def enable_account(request: web.Request) -> web.StreamResponse:
    return await _set(request, False)


async def list_blocks(request: web.Request) -> web.StreamResponse:
    blocked = switch_of(request).live.blocks.blocked(time.monotonic())
    rows = [{"ip": ip, "seconds_left": round(left, 3)} for ip, left in sorted(blocked.items())]
    return json_response({"blocks": rows})


async def unblock(request: web.Request) -> web.StreamResponse:
    text = request.match_info["ip"]
    try:
        ip = str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ApiError(400, f"{text!r} is not an IP address") from None
    switch = switch_of(request)
    if not switch.live.is_blocked(ip, time.monotonic()):
        raise ApiError(404, f"{ip} is not blocked")
    switch.live.unblock(ip)
    switch.pipeline.guard.pike.forget(ip)
    logger.warning("%s unblocked by an operator (management API, from %s)", ip, request.remote)
    return json_response({"ip": ip, "unblocked": True})


_ID = {"account_id": "the account's id"}
_UNKNOWN = {404: "no account with that id"}

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/accounts",
        list_accounts,
        "Accounts",
        "accounts",
        description="Every account of the running configuration, in file order.",
        response=obj({"accounts": array(ACCOUNT)}),
    ),
    Endpoint(
        "GET",
        "/api/accounts/{account_id}",
        get_account,
        "One account",
        "accounts",
        path_params=_ID,
        response=ACCOUNT,
        errors=_UNKNOWN,
    ),
    Endpoint(
        "POST",
        "/api/accounts/{account_id}/disable",
        disable_account,
        "Disable an account at run time",
        "accounts",
        description=(
            "Its new calls are refused 403 `account_disabled`; calls in progress go on. Lasts"
            " until enabled again or the switch restarts; a SIGHUP reload keeps it."
        ),
        path_params=_ID,
        response=OVERRIDE,
        errors=_UNKNOWN,
    ),
    Endpoint(
        "POST",
        "/api/accounts/{account_id}/enable",
        enable_account,
        "Enable an account an operator disabled",
        "accounts",
        path_params=_ID,
        response=OVERRIDE,
        errors={**_UNKNOWN, 409: "disabled in the configuration file: only the file enables it"},
    ),
    Endpoint(
        "GET",
        "/api/blocks",
        list_blocks,
        "Blocked source addresses",
        "accounts",
        description="Sources blocked for failed authentication or by pike, and for how long.",
        response=obj({"blocks": array(BLOCK)}),
    ),
    Endpoint(
        "DELETE",
        "/api/blocks/{ip}",
        unblock,
        "Unblock a source address",
        "accounts",
        description="Its recent authentication failures and pike count are forgotten too.",
        path_params={"ip": "the blocked IPv4 or IPv6 address"},
        response=obj({"ip": STRING, "unblocked": BOOLEAN}),
        errors={400: "not an IP address", 404: "that address is not blocked"},
    ),
)
