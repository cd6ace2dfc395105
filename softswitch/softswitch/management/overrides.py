"""Operators' run-time enable/disable of gateways and accounts, shared by both resources.

The override lives in ``LiveState`` (``set_gateway_disabled``/``set_account_disabled``),
keyed by id: it survives a SIGHUP reload, which swaps the snapshot but keeps live state, and
is gone at a restart, where the file rules again. Both the response and the log line say
so, since an operator who disables a carrier at 3 a.m. must know it comes back at the next
restart. Overrides only take away: what the file disables cannot be enabled here (for a
gateway it is not even in the routing tables), and saying so is a 409.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import ApiError
from .table import BOOLEAN, STRING, obj

__all__ = ["LASTS", "OVERRIDE", "toggle"]

logger = logging.getLogger("softswitch.management")

#: How long a run-time override lasts, in the operator's words.
LASTS = "until enabled again or the switch restarts (a SIGHUP reload keeps it)"

#: The answer to an enable or disable.
OVERRIDE = obj(
    {
        "id": STRING,
        "enabled": {**BOOLEAN, "description": "whether it takes new calls now"},
        "disabled_by_operator": BOOLEAN,
        "changed": {**BOOLEAN, "description": "false: it already was so"},
        "lasts": STRING,
    }
)


def toggle(
    request: web.Request,
    kind: str,
    item_id: str,
    *,
    disable: bool,
    in_file: bool,
    set_disabled: Callable[[str, bool], bool],
) -> dict[str, Any]:
    """Apply one operator's enable (``disable`` False) or disable; log it; the answer.

    ``in_file``: the file's ``enabled``. ``set_disabled(id, bool) -> changed``.
    """
    if not disable and not in_file:
        raise ApiError(
            409,
            f"{kind} {item_id!r} is disabled in the configuration file: set enabled = true"
            " there and reload (a run-time override can only disable)",
        )
    changed = bool(set_disabled(item_id, disable))
    if changed:
        if disable:
            logger.warning(
                "%s %s disabled by an operator (management API, from %s); lasts %s",
                kind,
                item_id,
                request.remote,
                LASTS,
            )
        else:
            logger.warning(
                "%s %s enabled again by an operator (management API, from %s)",
                kind,
                item_id,
                request.remote,
            )
    return {
        "id": item_id,
        "enabled": in_file and not disable,
        "disabled_by_operator": disable,
        "changed": changed,
        "lasts": LASTS if disable else "as the configuration file says",
    }
