"""A request someone sent us, as a handler sees it: the thing to answer, once, finally."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from softswitch.sip import Request, Response, make_tag
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow

if TYPE_CHECKING:
    from .application import Application
    from .dialog import Dialog

__all__ = ["IncomingRequest"]

#: Methods whose 1xx/2xx create a dialog (RFC 3261 12.1, RFC 6665 4.1.2.1).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


class IncomingRequest:
    """The first argument of a handler: answers :attr:`message` through its transaction.

    Every non-100 response carries the same To tag, so provisional and final responses
    belong to one dialog. :attr:`cancelled` is set when a CANCEL for this INVITE arrives;
    the stack has then already answered ``487``.
    """

    def __init__(
        self,
        app: Application,
        message: Request,
        flow: Flow,
        transaction: ServerTransaction,
        dialog: Dialog | None = None,
    ) -> None:
        self.app = app
        self.message = message
        self.flow = flow
        self.transaction = transaction
        self.dialog = dialog
        self.cancelled = asyncio.Event()
        self.final: Response | None = None
        self._to_tag: str | None = None

    @property
    def method(self) -> str:
        return self.message.method

    @property
    def answered(self) -> bool:
        return self.final is not None

    @property
    def to_tag(self) -> str:
        """Our tag for To: the peer's when the request is in a dialog, else a fresh one."""
        if self._to_tag is None:
            self._to_tag = self.message.to_tag or make_tag()
        return self._to_tag

    async def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Send a response; a 2xx to an INVITE makes (or confirms) the dialog.

        A coroutine for aiosip compatibility and so that a future transport may apply
        back-pressure; today it never waits.
        """
        extra = list(headers)
        if content_type is not None:
            extra.append(("Content-Type", content_type))
        response = Response.for_request(
            self.message,
            status,
            reason,
            to_tag=None if status == 100 else self.to_tag,
            headers=extra,
            body=body,
        )
        self.app._answer(self, response)
        return response

    async def prepare(
        self,
        status_code: int = 200,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Dialog:
        """Answer with a dialog-creating 1xx/2xx and return the dialog (aiosip's name)."""
        if self.method not in DIALOG_CREATING or not 101 <= status_code < 300:
            raise ValueError(f"a {status_code} to {self.method} creates no dialog")
        await self.reply(status_code, reason, headers=headers, body=body, content_type=content_type)
        assert self.dialog is not None  # made by the application when the response went out
        return self.dialog
