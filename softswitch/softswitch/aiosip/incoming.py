"""A request someone sent us, as a handler sees it: the thing to answer, once, finally."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from softswitch.sip import Request, Response, make_tag
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow

from .contact import Contact
from .messages import HeadersArg, adopt, header_items

if TYPE_CHECKING:
    from .application import Application
    from .dialog import Dialog

__all__ = ["DIALOG_CREATING", "IncomingRequest"]

#: Methods whose 1xx/2xx create a dialog (RFC 3261 12.1, RFC 6665 4.1.2.1).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


class IncomingRequest:
    """The first argument of a handler: answers :attr:`message` through its transaction.

    Every non-100 response carries the same To tag (the dialog's, when the request belongs
    to one), so provisional and final responses belong to one dialog. :attr:`cancelled` is
    set when a CANCEL for this INVITE arrives; the stack has then already answered ``487``.

    aiosip's handlers call :meth:`prepare` to get the conversation's :class:`Dialog` (or
    :meth:`_create_dialog` to get it without answering yet); :meth:`reply` answers without
    one.
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
        self._expiry_guard: asyncio.TimerHandle | None = None

    @property
    def method(self) -> str:
        return self.message.method

    @property
    def answered(self) -> bool:
        return self.final is not None

    @property
    def to_tag(self) -> str:
        """Our tag for To: the request's own, else the dialog's, else a fresh one."""
        if self._to_tag is None:
            tag = self.message.to_tag
            if tag is None and self.dialog is not None:
                tag = self.dialog.local_tag
            self._to_tag = tag or make_tag()
        return self._to_tag

    async def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: HeadersArg = None,
        body: bytes | None = None,
        content_type: str | None = None,
        payload: str | bytes | None = None,
        contact_details: Contact | None = None,
    ) -> Response | None:
        """Send a response; a 1xx/2xx to an INVITE or SUBSCRIBE makes (or confirms) the dialog.

        A coroutine for aiosip compatibility and so that a future transport may apply
        back-pressure; today it never waits. A request that already has its final response
        is not answered again (None is returned and a line logged).
        """
        if self.answered:
            self.app._log_late_reply(self, status)
            return None
        if payload is not None:
            body = payload.encode() if isinstance(payload, str) else bytes(payload)
        extra = self.app._outgoing_headers(header_items(headers))
        if contact_details is not None and "contact" not in {n.lower() for n, _ in extra}:
            extra.append(("Contact", str(contact_details)))
        if content_type is not None:
            extra.append(("Content-Type", content_type))
        response = adopt(
            Response.for_request(
                self.message,
                status,
                reason,
                to_tag=None if status == 100 else self.to_tag,
                headers=extra,
                body=body or b"",
            )
        )
        self.app._answer(self, response)
        return response

    def _create_dialog(self, dialog_factory: Any = None, **kwargs: Any) -> Dialog:
        """The conversation's dialog, made now if need be, without answering (aiosip's
        private name, used by its own tests to challenge a request before accepting it)."""
        if self.dialog is None:
            self.dialog = self.app._uas_dialog(self, dialog_factory)
        return self.dialog

    create_dialog = _create_dialog

    async def prepare(
        self,
        status_code: int = 200,
        status_message: str | None = None,
        payload: str | bytes | None = None,
        headers: HeadersArg = None,
        contact_details: Contact | None = None,
        *,
        reason: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Dialog | None:
        """Answer and return the conversation's dialog (aiosip's name and rules).

        Any status: ``100`` answers nothing yet but returns the dialog to answer through
        (``dialog.reply(message, 180)`` ...); a final status of 300 or more answers,
        closes the dialog and returns None.
        """
        dialog = self._create_dialog()
        if status_code != 100 or self.method != "INVITE":
            await dialog.reply(
                self.message,
                status_code,
                status_message or reason,
                payload,
                headers,
                contact_details,
                body=body,
                content_type=content_type,
            )
        if status_code >= 300:
            await dialog.close()
            return None
        return dialog
