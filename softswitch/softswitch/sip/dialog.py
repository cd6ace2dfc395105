"""SIP dialogs (RFC 3261 section 12): identity, route set, remote target and CSeq, sans-I/O.

A dialog is what lets the switch send a BYE (on a billing limit, a shutdown, a lost
carrier) that reaches the far end through the same proxies as the INVITE did. It is plain
state derived from the messages that created it; building a request from it is a pure
function of that state, so the route-set rules (loose and strict routers, RFC 3261 12.2.1.1
and 16.12) can be tested without any network.

Decisions where the RFC leaves room:

* A dialog needs a remote tag. A UAC dialog is only created from a response that carries a
  To tag (a 1xx without one creates no early dialog, RFC 3261 12.1); an RFC 2543 peer that
  omits tags is not supported for dialogs.
* A dialog-creating response without Contact is tolerated on the UAC side: the remote
  target falls back to the Request-URI (some carriers omit it on 183). On the UAS side a
  dialog-creating request without Contact is the peer's error (:class:`DialogError`).
* The first local CSeq of a dialog created as UAS is ``initial_cseq`` (1 by default);
  RFC 3261 8.1.1.5 only asks for a value below 2**31.
* Requests with a CSeq *equal* to the remote one are accepted: ACK and CANCEL reuse the
  INVITE's number, and retransmissions never reach the dialog (the transaction absorbs them).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .fields import CSeq, NameAddr, Via
from .headers import Headers
from .message import Request, Response
from .uri import URI, SipURI

__all__ = ["Dialog", "DialogError", "DialogId", "DialogState", "Role"]

#: Requests that replace the remote target when they (or their 2xx) carry Contact (12.2).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

#: URI parts RFC 3261 19.1.1 table 1 does not allow in a Request-URI.
_NOT_IN_REQUEST_URI = ("method", "ttl")


class DialogError(ValueError):
    """A message cannot create or update a dialog; the peer's fault, fit for a 400."""


class Role(enum.Enum):
    UAC = "UAC"
    UAS = "UAS"


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag, remote tag (12): the same dialog seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_incoming_request(cls, request: Request) -> DialogId | None:
        """The id of the dialog an in-dialog request from the peer belongs to (12.2.2)."""
        if request.call_id is None or request.to_tag is None or request.from_tag is None:
            return None
        return cls(request.call_id, request.to_tag, request.from_tag)

    @classmethod
    def for_incoming_response(cls, response: Response) -> DialogId | None:
        """The id of the dialog a response to one of our requests belongs to."""
        if response.call_id is None or response.from_tag is None or response.to_tag is None:
            return None
        return cls(response.call_id, response.from_tag, response.to_tag)


def _essentials(request: Request) -> tuple[str, NameAddr, NameAddr, CSeq]:
    """Call-ID, From, To and CSeq, which every dialog-creating request must carry."""
    call_id, from_, to, cseq = request.call_id, request.from_, request.to, request.cseq
    if call_id is None or from_ is None or to is None or cseq is None:
        raise DialogError("a dialog needs Call-ID, From, To and CSeq")
    return call_id, from_, to, cseq


class Dialog:
    """One dialog's state (RFC 3261 12.1). Build with :meth:`as_uac` or :meth:`as_uas`."""

    def __init__(
        self,
        *,
        role: Role,
        state: DialogState,
        dialog_id: DialogId,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: URI,
        route_set: tuple[NameAddr, ...],
        local_seq: int | None,
        remote_seq: int | None,
        secure: bool,
    ) -> None:
        self.role = role
        self.state = state
        self.id = dialog_id
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure

    def __repr__(self) -> str:
        return f"<Dialog {self.role.value} {self.state.value} {self.id}>"

    # -- creation (12.1) ----------------------------------------------------------------

    @classmethod
    def as_uac(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The dialog a 1xx (with To tag) or 2xx to our request creates (12.1.2).

        The route set is the response's Record-Route *reversed*: it lists the proxies from
        the far end back to us, and we walk it outwards.
        """
        if not 101 <= response.status < 300:
            raise DialogError(f"a {response.status} response does not create a dialog")
        call_id, from_, to, cseq = _essentials(request)
        local_tag, remote_tag = from_.tag, response.to_tag
        if local_tag is None or remote_tag is None:
            raise DialogError("a dialog needs a From tag and a To tag")
        contact = response.contact
        return cls(
            role=Role.UAC,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            dialog_id=DialogId(call_id, local_tag, remote_tag),
            local_uri=from_,
            remote_uri=to.with_tag(remote_tag),
            remote_target=contact[0].uri if contact else request.uri,
            route_set=tuple(reversed(response.record_route)),
            local_seq=cseq.seq,
            remote_seq=None,
            secure=secure,
        )

    @classmethod
    def as_uas(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The dialog our 1xx/2xx (carrying our To tag) to ``request`` creates (12.1.1)."""
        if not 101 <= response.status < 300:
            raise DialogError(f"a {response.status} response does not create a dialog")
        call_id, from_, to, cseq = _essentials(request)
        local_tag, remote_tag = response.to_tag, from_.tag
        if local_tag is None or remote_tag is None:
            raise DialogError("a dialog needs a From tag and a To tag")
        contact = request.contact
        if not contact:
            raise DialogError("a dialog-creating request needs a Contact")
        return cls(
            role=Role.UAS,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            dialog_id=DialogId(call_id, local_tag, remote_tag),
            local_uri=to.with_tag(local_tag),
            remote_uri=from_,
            remote_target=contact[0].uri,
            route_set=tuple(request.record_route),
            local_seq=None,
            remote_seq=cseq.seq,
            secure=secure,
        )

    # -- updates ------------------------------------------------------------------------

    def on_response(self, request: Request, response: Response) -> None:
        """Apply a response to a request we sent in (or to create) this dialog.

        A 2xx confirms an early dialog and, for the INVITE, recomputes the route set
        (13.2.2.4); a 2xx to a target refresh updates the remote target; a non-2xx final
        response to the INVITE ends an early dialog (12.3).
        """
        if self.state is DialogState.TERMINATED:
            return
        method = request.method
        if 200 <= response.status < 300:
            if self.state is DialogState.EARLY and self.role is Role.UAC and method == "INVITE":
                self.route_set = tuple(reversed(response.record_route))
            self.state = DialogState.CONFIRMED
            contact = response.contact
            if method in TARGET_REFRESH_METHODS and contact:
                self.remote_target = contact[0].uri
        elif response.status >= 300:
            if self.state is DialogState.EARLY and method == "INVITE":
                self.state = DialogState.TERMINATED
            elif response.status in (404, 410, 416, 481, 482, 483, 484, 485, 502, 604):
                # 12.2.1.2: these mean the dialog (or its target) is gone.
                self.state = DialogState.TERMINATED
        elif method == "INVITE" and self.state is DialogState.EARLY and response.contact:
            self.remote_target = response.contact[0].uri

    def on_request(self, request: Request) -> Response | None:
        """Check and apply a request from the peer (12.2.2).

        Returns a ``500`` to send back when the CSeq is lower than the last one seen (out
        of order), otherwise None after updating the remote CSeq and target.
        """
        cseq = request.cseq
        if cseq is None:
            return Response.for_request(request, 400, "Missing CSeq")
        if self.remote_seq is not None and cseq.seq < self.remote_seq:
            return Response.for_request(request, 500, "CSeq Out of Order")
        self.remote_seq = cseq.seq
        contact = request.contact
        if request.method in TARGET_REFRESH_METHODS and contact:
            self.remote_target = contact[0].uri
        if request.method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- building requests (12.2.1.1) ---------------------------------------------------

    def next_cseq(self, initial_cseq: int = 1) -> int:
        """Take the next local CSeq number (12.2.1.1: one more than the last)."""
        self.local_seq = initial_cseq if self.local_seq is None else self.local_seq + 1
        return self.local_seq

    def request_target(self) -> tuple[URI, tuple[NameAddr, ...]]:
        """Request-URI and Route values for the next request (12.2.1.1, 16.12).

        Loose routing (first route has ``lr``, or no route set): the remote target is the
        Request-URI and the route set is the Route. Strict routing (an RFC 2543 proxy):
        the first route becomes the Request-URI, stripped of what a Request-URI may not
        carry, and the remote target goes to the end of the Route so the strict router can
        restore it.
        """
        if not self.route_set:
            return self.remote_target, ()
        first = self.route_set[0].uri
        if isinstance(first, SipURI) and first.lr:
            return self.remote_target, self.route_set
        ruri = first
        if isinstance(ruri, SipURI):
            ruri = ruri.without_params(*_NOT_IN_REQUEST_URI).with_(headers={})
        routes = (*self.route_set[1:], NameAddr(self.remote_target))
        return ruri, routes

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        cseq: int | None = None,
        contact: NameAddr | None = None,
        max_forwards: int = 70,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        initial_cseq: int = 1,
    ) -> Request:
        """A request within this dialog.

        ``via`` comes from the caller (only the transport knows the sent-by). ``cseq``
        overrides the numbering: the ACK for a 2xx reuses the INVITE's number and does not
        advance the local CSeq. Otherwise the local CSeq is incremented.
        """
        if self.state is DialogState.TERMINATED and method != "ACK":
            raise DialogError("the dialog is terminated")
        if method == "ACK" and cseq is None:
            raise DialogError("an ACK reuses the INVITE's CSeq; pass cseq=")
        number = cseq if cseq is not None else self.next_cseq(initial_cseq)
        ruri, routes = self.request_target()
        h = Headers()
        h.add("Via", str(via))
        h.add("Max-Forwards", str(max_forwards))
        for route in routes:
            h.add("Route", str(route))
        h.add("From", str(self.local_uri))
        h.add("To", str(self.remote_uri))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", f"{number} {method}")
        if contact is not None:
            h.add("Contact", str(contact))
        for name, value in headers:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return Request(method, ruri, h, body)
