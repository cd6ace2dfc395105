"""What every part of the engine shares: the tables that find a call, and a few primitives.

The engine is split by job into mixins over this one base: ``ending`` (the ways a call
ends), ``hunting`` (branches to gateways until one answers), ``relay`` (the dialog's
requests between the two sides) and ``dispatch`` (each message to the part it belongs to).
Each part calls only the parts below it::

    EngineCore <- CallEnding <- Hunting, InDialogRelay <- Dispatch <- Engine

Mixins rather than helper objects because the parts call one another on every message:
as methods of one object they pay no lookups through other objects on the hot path.

This base holds the state the parts share (who owns which transaction, the calls and
dialogs in progress, counters) and what each of them needs to do: open a server
transaction, answer through one, send a request of our own, put our Via on a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from softswitch.machine_address import wildcard_answers
from softswitch.sip import Request, Response, Via, make_branch
from softswitch.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
    TransactionOutput,
)
from softswitch.transaction_driver import TransactionDriver
from softswitch.transport import Address, Flow, TransportLayer

from .calls import Branch, Call

if TYPE_CHECKING:
    from softswitch.media.control import MediaControl
from .policy import CallPolicy

__all__ = ["EngineCore", "EngineStats", "Relay", "log_call", "logger", "uri_host"]

#: The engine's one logger: every part of it logs here, with the Call-ID on every line.
logger = logging.getLogger("softswitch.proxy")


def log_call(level: int, call_id: str | None, msg: str, *args: object) -> None:
    """A log line about one call: its Call-ID leads the text and rides along as ``extra``."""
    if logger.isEnabledFor(level):
        logger.log(level, "call_id=%s " + msg, call_id, *args, extra={"call_id": call_id})


def uri_host(host: str) -> str:
    """A host as a SIP URI or Via writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(eq=False, slots=True)
class Relay:
    """An in-dialog request (not ACK) being relayed: its server and client transactions."""

    call: Call
    server: ServerTransaction
    from_caller: bool
    client: ClientTransaction | None = None


@dataclass(slots=True)
class EngineStats:
    """Counters since start, for logs and the load harness."""

    calls: int = 0
    active: int = 0
    answered: int = 0
    failed: int = 0
    refused: int = 0


class EngineCore:
    """The engine's shared state and primitives; see the module docstring for the parts."""

    def __init__(
        self,
        policy: CallPolicy,
        driver: TransactionDriver,
        user_agent: str,
        media: MediaControl | None = None,
    ) -> None:
        self.policy = policy
        #: The media relays, when the configuration has any (``proxy.media``).
        self.media = media
        self.user_agent = user_agent
        self.driver = driver
        self.transport: TransportLayer = driver.transport
        self.transactions: TransactionLayer = driver.transactions
        # Bound once: these run for every message.
        self._now: Callable[[], float] = driver.now
        self._process: Callable[[Iterable[TransactionOutput]], None] = driver.process
        self.stats = EngineStats()
        #: The caller's INVITE server transaction -> its call (CANCEL finds the call here).
        self._server_calls: dict[ServerTransaction, Call] = {}
        #: Each branch's INVITE client transaction -> the branch.
        self._branches: dict[ClientTransaction, Branch] = {}
        #: Each relayed in-dialog request's client transaction -> the relay.
        self._relays_out: dict[ClientTransaction, Relay] = {}
        #: Answered calls by ``Call.key`` (Call-ID, caller's From tag), kept a while after.
        self._dialogs: dict[tuple[str, str], Call] = {}
        self._calls: set[Call] = set()
        #: Requests of our own (OPTIONS probes) -> who waits for the final answer.
        self._own: dict[ClientTransaction, asyncio.Future[Response | None]] = {}
        self._ours: set[Address] = set()
        #: Our Via's text up to its branch value, by what ``_our_via`` writes before it.
        self._via_heads: dict[tuple[object, str, int], str] = {}

    def is_ours(self, host: str, port: int) -> bool:
        """Whether ``host:port`` names one of our listeners (loop detection, own Routes, a
        dialog's target). A wildcard listener's port is ours on this machine's addresses
        (``machine_address``), not on every host using the same port number, and on any host
        name (the switch resolves no names: a Route naming it by name is taken as ours)."""
        for listen_host, listen_port in self._ours:
            if listen_port == port and (
                listen_host == host or (listen_host in ("0.0.0.0", "::") and wildcard_answers(host))
            ):
                return True
        return False

    def _server(self, request: Request, flow: Flow, now: float) -> ServerTransaction | None:
        try:
            tx, outputs = self.driver.open_server(request, flow, now)
        except Exception as exc:  # a request the transaction layer will not take
            log_call(logging.INFO, request.call_id, "no server transaction: %s", exc)
            return None
        self._process(outputs)
        return tx

    def _respond(self, tx: ServerTransaction, response: Response) -> None:
        if tx.last_response is not None and tx.last_response.status >= 200:
            return  # already answered (a race between a timer and a response)
        try:
            outputs = self.transactions.respond(tx, response, self._now())
        except Exception as exc:
            log_call(logging.INFO, response.call_id, "could not respond: %s", exc)
            return
        self._process(outputs)

    def _send_ours(self, request: Request, flow: Flow) -> ClientTransaction | None:
        """Send a request the switch itself makes (a BYE, a probe) in a client transaction."""
        try:
            tx, outputs = self.driver.open_client(request, flow, self._now())
        except Exception as exc:
            log_call(logging.INFO, request.call_id, "cannot send %s: %s", request.method, exc)
            return None
        self._process(outputs)
        return tx

    def _our_via(self, flow: Flow) -> str:
        """Our Via for a request leaving on ``flow``, as header text: what
        ``str(Via.new(transport, host, port))`` writes, its fixed part kept per sent-by
        (a fresh branch each time)."""
        host, port = self.transport.sent_by(flow)
        key = (flow.transport, host, port)
        head = self._via_heads.get(key)
        if head is None:
            via = Via.new(str(flow.transport), uri_host(host), port, branch=_BRANCH_MARK)
            text = str(via)
            if not text.endswith(f";branch={_BRANCH_MARK}"):  # not one Via.new writes
                return str(Via.new(str(flow.transport), uri_host(host), port, branch=make_branch()))
            if len(self._via_heads) >= _VIA_HEADS_MAX:
                # Outgoing TCP without a listener of that address sends from a new port
                # per connection: bounded, as the other per-hop caches are.
                self._via_heads.clear()
            head = self._via_heads[key] = text[: -len(_BRANCH_MARK)]
        return head + make_branch()


#: Sent-by addresses whose Via text ``_our_via`` keeps at most.
_VIA_HEADS_MAX = 256
#: A branch value no Via of ours ends with otherwise: marks where ``_our_via``'s head ends.
_BRANCH_MARK = "z9hG4bK-mark-of-the-head"
