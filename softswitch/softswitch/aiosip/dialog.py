"""A dialog as an object you talk to: aiosip's ``Dialog``, on the stack's dialog state.

aiosip called a "dialog" every conversation a program holds with a peer under one Call-ID:
an INVITE session or a subscription (RFC 3261 and RFC 6665 dialogs), but also a
registration and its refreshes, or an OPTIONS or MESSAGE exchange. This class is that
object. When the conversation is an RFC dialog, the dialog *state* (route set, CSeq,
remote target) is ``softswitch.sip.dialog``'s and is attached as :attr:`state` once the
dialog exists (a 2xx, or a 1xx with a To tag, to the creating request); until then, and for
conversations that never become dialogs, requests follow the first one (same Call-ID and
From tag, CSeq one higher) to the same peer.

What needs a loop is here: the ACK a UAC owes every 2xx to its INVITE, the 2xx a UAS
retransmits until that ACK arrives (RFC 3261 13.3.1.4, not a transaction's job since the
INVITE server transaction ends with the 2xx), the queue of requests the peer sends in the
dialog (``recv()``, ``async for``), and the timer that forgets a conversation nobody closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from softswitch.sip import Request, Response
from softswitch.sip.dialog import Dialog as DialogState
from softswitch.sip.dialog import DialogId, Role
from softswitch.sip.dialog import DialogState as State
from softswitch.transport import Flow, Transport

from .contact import Contact
from .exceptions import AuthentificationFailed
from .messages import HeadersArg, header_items
from .outgoing import PendingRequest
from .router import Router

if TYPE_CHECKING:
    from .application import Application
    from .peer import Peer

__all__ = ["MAX_QUEUED", "CallState", "Dialog", "InviteDialog"]

logger = logging.getLogger("softswitch.aiosip")

#: Requests from the peer waiting in one dialog's queue; more are answered 503 (so a peer
#: cannot make a dialog nobody reads hold an unbounded number of transactions).
MAX_QUEUED: Final = 64


class CallState:
    """aiosip's ``CallState`` names for :attr:`Dialog.call_state` of an INVITE we sent."""

    Calling = "Calling"
    Proceeding = "Proceeding"
    Completed = "Completed"
    Terminated = "Terminated"


#: The largest Expires we act on (RFC 3261 20.19: delta-seconds up to 2**32-1); more is clamped.
MAX_EXPIRES: Final = 2**32 - 1


def _parse_expires(value: str | None) -> int | None:
    """An Expires value as delta-seconds: ASCII digits only (``str.isdigit`` also takes
    '²'), clamped to :data:`MAX_EXPIRES`; None when absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    if not value or not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0")
    if len(digits) > len(str(MAX_EXPIRES)):
        return MAX_EXPIRES  # no int() of a huge string, no float overflow later
    return min(int(value), MAX_EXPIRES)


def _bad_expires(message: Request | Response) -> bool:
    """True when the message has an Expires header that is not delta-seconds."""
    value = message.headers.get("Expires")
    return value is not None and _parse_expires(value) is None


def _expires(message: Request | Response) -> int | None:
    return _parse_expires(message.headers.get("Expires"))


class Dialog:
    """One conversation with a peer, UAC or UAS side (see the module docstring).

    For requests the peer sends in it: a route in :attr:`router` takes them first; the rest
    wait in a queue read by :meth:`recv` or ``async for message in dialog`` and are answered
    with :meth:`reply`. A BYE is answered ``200`` by the stack and ends the dialog (and the
    iteration, after yielding the BYE). A queued request left unanswered for ``32*T1`` is
    answered ``500`` so its transaction ends.
    """

    def __init__(
        self,
        app: Application,
        *,
        transport: Transport,
        inbound: bool,
        method: str,
        call_id: str,
        local_tag: str,
        remote_tag: str | None,
        from_details: Contact,
        to_details: Contact,
        contact_details: Contact | None = None,
        flow: Flow | None = None,
        peer: Peer | None = None,
        password: str | None = None,
        original: Request | None = None,
        state: DialogState | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.app = app
        self.transport = transport
        self.inbound = inbound
        self.method = method
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.from_details = from_details
        self.to_details = to_details
        self.contact_details = contact_details
        self.flow = flow
        self.peer = peer
        self.password = password
        self.original_msg = original
        self.state = state
        self.router = Router()
        #: The request that made this conversation, when we sent it (aiosip's results).
        self.pending: PendingRequest | None = None
        self.status_code: int | None = None
        self.status_message: str | None = None
        #: Our last CSeq outside a dialog state (registrations, OPTIONS, MESSAGE).
        self.cseq = 0
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._confirmed: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._closing = False
        self._ended = False
        self._ack: tuple[Request, Flow] | None = None
        self._retransmit: asyncio.TimerHandle | None = None
        self._unacked: int | None = None  # CSeq of our 2xx still waiting for its ACK
        self._expiry: asyncio.TimerHandle | None = None
        #: Set when the handler of the request that opened it (UAS) has returned.
        self._opener_done = False
        #: Our last final status to a request of this conversation (UAS).
        self._last_final: int | None = None

    def __repr__(self) -> str:
        side = "UAS" if self.inbound else "UAC"
        phase = "terminated" if self.terminated else (self.state.state.value if self.state else "")
        return f"<aiosip.Dialog {side} {self.method} {phase} call_id={self.call_id}>"

    # -- identity -----------------------------------------------------------------------

    @property
    def id(self) -> DialogId | None:
        """The RFC dialog id once the dialog exists (None for other conversations)."""
        return None if self.state is None else self.state.id

    @property
    def dialog_id(self) -> frozenset[str | None]:
        """aiosip's key: the two tags and the Call-ID."""
        return frozenset((self.local_tag, self.remote_tag, self.call_id))

    @property
    def terminated(self) -> bool:
        return self._ended

    @property
    def response(self) -> Response | None:
        """The final response to the request that opened the conversation, once in."""
        return None if self.pending is None else self.pending.final

    @property
    def call_state(self) -> str:
        """aiosip's INVITE states: Calling, Proceeding, then Completed (a non-2xx final)
        or Terminated (a 2xx); a dialog we did not open is always Terminated."""
        pending = self.pending
        if pending is None:
            return CallState.Terminated
        final = pending.final
        if final is None:
            return CallState.Proceeding if pending.responses else CallState.Calling
        return CallState.Terminated if final.status < 300 else CallState.Completed

    # -- sending ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        contact_details: Contact | None = None,
        headers: HeadersArg = None,
        payload: str | bytes | None = None,
        timeout: float | None = None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> PendingRequest:
        """Send a request in this conversation; ``await`` it for the final response.

        Within an RFC dialog, route set, CSeq and target come from its state; otherwise the
        request follows the first one (same Call-ID, From and To, CSeq one higher).
        """
        if contact_details is not None:
            self.contact_details = contact_details
        if payload is not None:
            body = payload.encode() if isinstance(payload, str) else bytes(payload)
        return self.app._send_in_dialog(
            self,
            method,
            headers=header_items(headers),
            body=body,
            content_type=content_type,
            timeout=timeout,
        )

    async def bye(self, *, headers: HeadersArg = None) -> Response:
        """Hang up. The dialog ends with the BYE's final response, whatever it is (15.1.1)."""
        return await self.request("BYE", headers=headers)

    def notify(
        self,
        payload: str | bytes | None = None,
        headers: HeadersArg = None,
        **kwargs: Any,
    ) -> PendingRequest:
        """Send a NOTIFY (RFC 6665) with aiosip's defaults for what ``headers`` leaves out:
        the subscription's Event (``dialog`` when it named none), ``Subscription-State:
        active`` and, with a payload, Content-Type ``application/dialog-info+xml``."""
        items = header_items(headers)
        names = {name.lower() for name, _ in items}
        event = None if self.original_msg is None else self.original_msg.headers.get("Event")
        defaults = [("Event", event or "dialog"), ("Subscription-State", "active")]
        if payload:
            defaults.append(("Content-Type", "application/dialog-info+xml"))
        items += [(name, value) for name, value in defaults if name.lower() not in names]
        return self.request("NOTIFY", headers=items, payload=payload, **kwargs)

    def refresh(
        self, headers: HeadersArg = None, expires: int = 1800, **kwargs: Any
    ) -> PendingRequest:
        """Send the opening request again (a REGISTER or SUBSCRIBE refresh) with Expires."""
        items = header_items(headers)
        if "expires" not in {name.lower() for name, _ in items}:
            items.append(("Expires", str(int(expires))))
        return self.request(self.method, headers=items, **kwargs)

    def cancel(self) -> PendingRequest | None:
        """CANCEL the INVITE we sent if it has a provisional and no final response yet."""
        pending = self.pending
        if pending is None or pending.done or not pending.responses:
            return None
        return pending.cancel()

    def ack(self, *args: Any, **kwargs: Any) -> None:
        """The stack sends every ACK itself (RFC 3261 13.2.2.4, 17.1.1.3): nothing to do."""

    # -- answering ----------------------------------------------------------------------

    async def reply(
        self,
        message: Request,
        status_code: int,
        status_message: str | None = None,
        payload: str | bytes | None = None,
        headers: HeadersArg = None,
        contact_details: Contact | None = None,
        *,
        reason: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Response | None:
        """Answer a request of this conversation (from :meth:`recv`, or the first one).

        A request that already has its final response (a BYE the stack answered, a
        request cancelled meanwhile) is not answered twice: the call logs it and returns
        None.
        """
        if contact_details is not None:
            self.contact_details = contact_details
        try:
            incoming = self.app._incoming_for(message)
        except LookupError:
            logger.info(
                "%d to %s not sent: that request is no longer open",
                status_code,
                message.method,
                extra={"call_id": message.call_id},
            )
            return None
        if incoming.dialog is None:
            incoming.dialog = self
        return await incoming.reply(
            status_code,
            status_message or reason,
            headers=headers,
            payload=payload,
            body=body,
            content_type=content_type,
            contact_details=contact_details,
        )

    async def unauthorized(
        self, message: Request, realm: str = "sip", algorithm: str = "md5", **kwargs: Any
    ) -> Response | None:
        """Challenge ``message`` with ``401`` and a Digest ``WWW-Authenticate`` (aiosip)."""
        challenge = self.app._challenger.challenge(realm, algorithm)
        return await self.reply(message, 401, headers=[("WWW-Authenticate", challenge)])

    def validate_auth(self, message: Request, password: str) -> bool:
        """Whether ``message`` carries good credentials for ``password`` against one of our
        challenges (CANCEL needs none, RFC 3261 22.1)."""
        if message.method == "CANCEL":
            return True
        return self.app._challenger.verify(message, password)

    # -- receiving ----------------------------------------------------------------------

    async def recv(self) -> Request:
        """The next request the peer sent in this conversation.

        Raises ConnectionAbortedError once the dialog is over and the queue is empty
        (aiosip waited for ever).
        """
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)  # every later reader sees the end too
            raise ConnectionAbortedError("the dialog is terminated")
        return message

    def __aiter__(self) -> AsyncIterator[Request]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Request]:
        while True:
            try:
                message = await self.recv()
            except ConnectionAbortedError:
                return
            yield message

    async def wait_for_terminate(self) -> AsyncIterator[Response]:
        """The responses to the request that opened the conversation, up to the final one
        (all of them, from the first, whenever this is called)."""
        if self.pending is not None:
            async for response in self.pending:
                yield response

    async def ready(self) -> None:
        """Until the final response; RuntimeError unless it is a 2xx (aiosip: unless 200)."""
        if self.pending is None:
            return
        response = await self.pending
        if not 200 <= response.status < 300:
            raise RuntimeError(f"INVITE failed with {response.status}")

    async def wait_confirmed(self) -> None:
        """Until the dialog is confirmed: a UAS waits for the ACK of its 2xx."""
        await asyncio.shield(self._confirmed)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # -- ending -------------------------------------------------------------------------

    async def close(
        self,
        headers: HeadersArg = None,
        fast: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response | None:
        """End the conversation as aiosip did, in RFC terms.

        A call: BYE once answered, CANCEL while ringing (``487`` ends it), nothing after a
        failure. A registration or subscription we made: the same request with
        ``Expires: 0`` (unless ``fast``). Anything else is forgotten locally. Returns the
        final response of the request sent, if one was.
        """
        if self._closing or self._ended:
            return None
        self._closing = True
        try:
            work = self._close_exchange(headers, fast)
            if timeout is None:
                return await work
            return await asyncio.wait_for(work, timeout)
        finally:
            self._terminate()

    async def _close_exchange(self, headers: HeadersArg, fast: bool) -> Response | None:
        if self.method == "INVITE":
            return await self._hang_up()
        if fast or self.method not in ("REGISTER", "SUBSCRIBE"):
            return None
        if self.inbound:
            if self.method == "SUBSCRIBE" and self.state is not None:
                # The notifier ends the subscription (RFC 6665 4.2.2).
                state = "terminated;reason=noresource"
                return await self.notify(headers={"Subscription-State": state})
            return None
        final = self.response
        if final is None or not 200 <= final.status < 300:
            return None
        items = header_items(headers)
        if "expires" not in {name.lower() for name, _ in items}:
            items.append(("Expires", "0"))
        return await self.request(self.method, headers=items)

    async def _hang_up(self) -> Response | None:
        state = self.state
        if state is not None and state.state is State.CONFIRMED:
            return await self.bye()
        pending = self.pending
        if self.inbound or pending is None or pending.done:
            return None
        await pending.wait_provisional()  # RFC 3261 9.1: no CANCEL before a provisional
        final = pending.final
        if final is not None:
            if 200 <= final.status < 300 and self.state is not None:
                return await self.bye()
            return None
        await pending.cancel()
        final = await pending
        if 200 <= final.status < 300 and self.state is not None:
            return await self.bye()  # the 2xx crossed our CANCEL: hang up the call
        return final

    async def __aenter__(self) -> Dialog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- fed by the application ---------------------------------------------------------

    def _attach(self, state: DialogState) -> None:
        self.state = state
        self.remote_tag = state.id.remote_tag
        if state.role is Role.UAC:
            self.to_details["params"]["tag"] = state.id.remote_tag

    def _deliver_final(self, response: Response) -> None:
        """The opening request's final response is in (UAC): aiosip's results."""
        self.status_code = response.status
        self.status_message = response.reason

    def _holds_requests(self) -> bool:
        """Whether a request without a To tag and with our Call-ID and From tag is this
        conversation's: while the handler that opened it runs, or after our 401/407 (the
        request retried with credentials). Otherwise it is new, for the dialplan."""
        return not self._opener_done or self._last_final in (401, 407)

    def _enqueue(self, message: Request) -> bool:
        """Queue a request for :meth:`recv`; False when the queue is full."""
        if self._queue.qsize() >= MAX_QUEUED:
            return False
        self._queue.put_nowait(message)
        return True

    def _arm_expiry(self, message: Request | Response | None = None) -> None:
        """Forget a conversation left alone: a registration or subscription when its
        Expires runs out (with a tenth to spare), anything else without an RFC dialog
        after the application's ``dialog_closing_delay`` of silence (aiosip's default 30 s).
        INVITE dialogs last until BYE."""
        if self._ended or (self.state is not None and self.method == "INVITE"):
            return
        expires = None if message is None else _expires(message)
        if expires is not None and self.method in ("REGISTER", "SUBSCRIBE"):
            delay = expires * 1.1 + 1.0
        elif self.state is not None:
            return  # a subscription without Expires lasts until it is ended
        else:
            delay = float(self.app.defaults["dialog_closing_delay"])
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        logger.debug("%r expired", self, extra={"call_id": self.call_id})
        self._terminate()

    def _confirm(self) -> None:
        if not self._confirmed.done():
            self._confirmed.set_result(None)

    def _on_ack(self, ack: Request) -> None:
        """The peer's ACK for our 2xx: stop retransmitting the 2xx it acknowledges."""
        cseq = ack.cseq
        if cseq is not None and cseq.seq == self._unacked:
            self._unacked = None
            if self._retransmit is not None:
                self._retransmit.cancel()
                self._retransmit = None
        self._confirm()

    def _terminate(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.state is not None:
            self.state.terminate()
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)
        if not self._closed.done():
            self._closed.set_result(None)
        if not self._confirmed.done():
            self._confirmed.set_exception(
                ConnectionAbortedError("the dialog ended before it was confirmed")
            )
            self._confirmed.exception()  # waiting for it is optional: never log it as lost
        self.app._forget_dialog(self)

    def _remember_ack(self, ack: Request, flow: Flow) -> None:
        self._ack = (ack, flow)
        self._confirm()

    def _resend_ack(self) -> None:
        """A retransmitted 2xx means our ACK was lost (RFC 3261 13.2.2.4)."""
        if self._ack is not None:
            self.app.transport.send(self._ack[1], self._ack[0])

    def _retransmit_2xx(self, response: Response, flow: Flow) -> None:
        """Resend our 2xx at T1, 2T1 ... capped at T2 until ACK or 64*T1, over every
        transport (RFC 3261 13.3.1.4: the 2xx is the core's, not a transaction's, and the
        64*T1 give-up is how a dialog never ACKed ends)."""
        cseq = response.cseq
        if cseq is None:
            return
        self._unacked = cseq.seq
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        timers = self.app.transactions.config
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 64 * timers.t1

        def fire(interval: float) -> None:
            if self._unacked != cseq.seq or self.terminated:
                return
            if loop.time() >= give_up:
                logger.info("no ACK for our 2xx", extra={"call_id": self.call_id})
                self._terminate()
                return
            self.app.transport.send_response(response, flow)
            nxt = min(2 * interval, timers.t2)
            self._retransmit = loop.call_later(nxt, fire, nxt)

        self._retransmit = loop.call_later(timers.t1, fire, timers.t1)


class InviteDialog(Dialog):
    """aiosip's class for calls; the same object here (kept for ``dialog_factory=`` and
    ``isinstance``)."""


def raise_if_refused(dialog: Dialog) -> None:
    """aiosip's outcome of a request whose credentials were refused to the end."""
    if dialog.pending is not None and dialog.pending.auth_failed:
        raise AuthentificationFailed("Too many unauthorized attempts!")
