"""``from softswitch import aiosip``: a drop-in successor to aiosip 0.2 on the sans-I/O SIP core.

Programs written for aiosip run with that import changed: ``Application(loop=...,
dialplan=...)``, ``BaseDialplan``, ``request.prepare(...)``, dialogs with ``reply``,
``notify``, ``recv``, ``async for``, ``close`` and ``async with``, ``peer.invite``,
``register``, ``subscribe`` and ``request``, ``Contact.from_header``, messages with
``status_code``, ``headers[...]`` and ``payload``, digest authentication with ``password=``,
and ``UDP``, ``TCP`` and ``WS`` (RFC 7118, on the ``websockets`` library). What differs,
and why, is in docs/aiosip.md.

Underneath is the stack the switch runs on: retransmissions and timers are the transaction
layer's (``softswitch.sip.transaction``), dialog state is ``softswitch.sip.dialog``'s,
sockets are ``softswitch.transport``'s. The package's own, older names (``app.route``,
``peer.request(method, uri)`` returning a :class:`PendingRequest`, ``dialog.bye()``) keep
working alongside.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from softswitch.sip import (
    URI,
    AbsoluteURI,
    CSeq,
    NameAddr,
    SipParseError,
    SipURI,
    TelURI,
    Via,
    make_branch,
    make_tag,
    parse_uri,
)
from softswitch.transport import Flow, Limits, Transport, loop_factory

from . import exceptions
from .application import DEFAULTS, Application
from .contact import Contact, Param, Uri
from .dialog import CallState, Dialog, InviteDialog
from .dialplan import BaseDialplan
from .exceptions import (
    AiosipException,
    AuthentificationFailed,
    InviteFailed,
    InviteOngoing,
    RegisterFailed,
    RegisterOngoing,
)
from .incoming import IncomingRequest
from .messages import Headers, Request, Response
from .outgoing import PendingRequest, RequestFailedError
from .peer import Peer
from .router import Handler, Router

__all__ = [
    "DEFAULTS",
    "TCP",
    "UDP",
    "URI",
    "WS",
    "AbsoluteURI",
    "AiosipException",
    "Application",
    "AuthentificationFailed",
    "BaseDialplan",
    "CSeq",
    "CallState",
    "Contact",
    "Dialog",
    "Flow",
    "Handler",
    "Headers",
    "IncomingRequest",
    "InviteDialog",
    "InviteFailed",
    "InviteOngoing",
    "Limits",
    "Message",
    "NameAddr",
    "Param",
    "Peer",
    "PendingRequest",
    "RegisterFailed",
    "RegisterOngoing",
    "Request",
    "RequestFailedError",
    "Response",
    "Router",
    "SipParseError",
    "SipURI",
    "TelURI",
    "Transport",
    "Uri",
    "Via",
    "exceptions",
    "make_branch",
    "make_tag",
    "parse_uri",
    "run",
]

UDP = Transport.UDP
TCP = Transport.TCP
WS = Transport.WS

Message = Request | Response
"""A request or a response, as aiosip's ``Message`` base class named them."""

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when the ``speed`` extra is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
