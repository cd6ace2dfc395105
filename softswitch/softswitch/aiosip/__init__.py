"""An aiosip-shaped asyncio API over the sans-I/O SIP core.

People who used ``aiosip`` find the names they know: ``Application`` with ``router`` and
``run``/``connect``/``close``, ``Peer.request``, ``Dialog.request``/``reply``, handlers
``async def handler(request, message)``, ``UDP``/``TCP``, and the message classes
``Request``, ``Response``, ``Contact``, ``Via``. Retransmissions and timers are the
transaction layer's (``softswitch.sip.transaction``); sockets are ``softswitch.transport``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from softswitch.sip import (
    URI,
    AbsoluteURI,
    CSeq,
    Headers,
    Message,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipURI,
    TelURI,
    Via,
    make_branch,
    make_tag,
    parse_uri,
)
from softswitch.transport import Flow, Limits, Transport, loop_factory

from .application import Application
from .dialog import Dialog
from .incoming import IncomingRequest
from .outgoing import PendingRequest, RequestFailedError
from .peer import Peer
from .router import Handler, Router

__all__ = [
    "TCP",
    "UDP",
    "URI",
    "AbsoluteURI",
    "Application",
    "CSeq",
    "Contact",
    "Dialog",
    "Flow",
    "Handler",
    "Headers",
    "IncomingRequest",
    "Limits",
    "Message",
    "NameAddr",
    "Peer",
    "PendingRequest",
    "Request",
    "RequestFailedError",
    "Response",
    "Router",
    "SipParseError",
    "SipURI",
    "TelURI",
    "Transport",
    "Via",
    "make_branch",
    "make_tag",
    "parse_uri",
    "run",
]

UDP = Transport.UDP
TCP = Transport.TCP
Contact = NameAddr
"""aiosip called the name-addr of Contact, From and To ``Contact``."""

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when the ``speed`` extra is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
