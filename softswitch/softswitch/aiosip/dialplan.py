"""aiosip's dialplan: the object that picks a handler for each new incoming request.

``Application(dialplan=MyDialplan())`` asks ``await dialplan.resolve(method=..., message=...,
protocol=..., local_addr=..., remote_addr=...)`` for every request that opens something new
(no dialog, no earlier request of the same conversation) and that no route of
``app.router`` took. The handler it returns is called as ``await handler(request,
message)``; returning None answers ``501 Not Implemented``, as aiosip did.
"""

from __future__ import annotations

import logging
from typing import Any

from .router import Handler

__all__ = ["BaseDialplan"]

logger = logging.getLogger("softswitch.aiosip")


class BaseDialplan:
    """Resolves nothing; subclass it and return a handler from :meth:`resolve`.

    aiosip's subclasses call ``await super().resolve(*args, **kwargs)`` first, which logs
    the request; the arguments are passed by keyword, and any extra keyword is accepted so
    a dialplan written for a later signature still loads.
    """

    async def resolve(
        self,
        method: str | None = None,
        message: Any = None,
        protocol: Any = None,
        local_addr: Any = None,
        remote_addr: Any = None,
        **kwargs: Any,
    ) -> Handler | None:
        logger.debug(
            "resolving dialplan for %s from %s to %s over %s",
            method,
            remote_addr,
            local_addr,
            protocol,
        )
        return None
