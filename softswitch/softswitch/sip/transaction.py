"""RFC 3261 section 17 transactions as pure state machines, and the layer that routes to them.

Sans-I/O in the manner of h11 and aioquic: a transaction is fed *events* (a message
received, a response from the TU, a timer that fired, a transport error) together with the
current time ``now``, and returns *actions* (send this, start or stop that timer, pass this
up, tell the TU it timed out, I am terminated). Nothing here reads a clock or touches a
socket; the asyncio layer asks :meth:`TransactionLayer.next_deadline` and calls
:meth:`TransactionLayer.handle_timers` with ``loop.time()``.

The whole behaviour of the four machines is the table :data:`TRANSITIONS` below (h11's
``_state.py`` style): for a kind, a state and a trigger it gives the next state and the
effects, in order. Two rules complete it:

* each state declares which timers run in it (:data:`STATE_TIMERS`); entering a state
  starts the ones not yet running and stops the rest, so no timer outlives its state;
* a trigger missing from the table is ignored when it comes from the network or a timer
  (stray retransmissions are normal), and is a :class:`TransactionUsageError` when it comes
  from our own TU (sending a response twice is our bug, DESIGN.md principle 6).

Timers whose duration is zero (D, I, J, K on a reliable transport) fire within the same
call, so a TCP transaction goes straight through Completed to Terminated.

Decisions where RFC 3261 is silent or later RFCs differ:

* This is RFC 3261 as written, not RFC 6026: a 2xx terminates both INVITE transactions.
  Retransmitted 2xx then match nothing, and the layer reports them as unmatched so the
  proxy core forwards them statelessly (RFC 3261 16.7 step 5, 16.11).
* Timer B runs in Calling only; once a provisional response arrives the TU's Timer C
  (RFC 3261 16.6 step 11) bounds the wait.
* A server INVITE transaction sends ``100 Trying`` itself on creation (17.2.1) unless the
  layer is built with ``auto_trying=False`` (a TU that always answers within 200 ms).
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, TypeAlias

from .deadline_queue import DeadlineQueue
from .errors import SipParseError
from .fields import Via
from .headers import Headers
from .message import Request, Response
from .parser import parse_message
from .timers import Timer, TimerConfig
from .uri import URI

__all__ = [
    "MAGIC_COOKIE",
    "STATE_TIMERS",
    "TRANSITIONS",
    "Action",
    "ClientTransaction",
    "Effect",
    "Event",
    "Kind",
    "Matched",
    "PassUp",
    "RequestReceived",
    "ResponseReceived",
    "Send",
    "SendResponse",
    "ServerTransaction",
    "StartTimer",
    "State",
    "StopTimer",
    "Terminated",
    "Timeout",
    "TimerFired",
    "Transaction",
    "TransactionLayer",
    "TransactionOutput",
    "TransactionUsageError",
    "TransportError",
    "TransportFailure",
    "Trigger",
    "Unmatched",
    "make_ack",
    "make_cancel",
]

MAGIC_COOKIE: Final = "z9hG4bK"


class TransactionUsageError(RuntimeError):
    """Our own code misused a transaction (e.g. a second final response): a bug, not a peer."""


# ======================================================================================
# Events in, actions out
# ======================================================================================


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response from the network, already matched to this client transaction."""

    response: Response


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A retransmitted request (or the ACK) matched to this server transaction."""

    request: Request


@dataclass(frozen=True, slots=True)
class SendResponse:
    """The TU answers the request of this server transaction."""

    response: Response


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send something this transaction asked it to send."""

    reason: str = ""


Event: TypeAlias = ResponseReceived | RequestReceived | SendResponse | TimerFired | TransportError


@dataclass(frozen=True, slots=True)
class Send:
    """Hand ``message`` to the transport (destination: the transaction's ``peer``)."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class StartTimer:
    timer: Timer
    deadline: float


@dataclass(frozen=True, slots=True)
class StopTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class PassUp:
    """Deliver to the TU: a response (client) or the new request (server)."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class Timeout:
    """Tell the TU the transaction timed out (B, F: treat as 408; H: no ACK came)."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """Tell the TU the transport failed (RFC 3261 8.1.3.1: treat as 503)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over; the layer forgets it."""


Action: TypeAlias = Send | StartTimer | StopTimer | PassUp | Timeout | TransportFailure | Terminated

# Constructors for the events and actions made on every message. A frozen dataclass's
# ``__init__`` sets each field through ``object.__setattr__``, a Python-level call per
# field; these set the slots directly, for about half the cost, with the same result.
# Terminated, which holds nothing, and StopTimer and TimerFired, which hold only a timer,
# are shared instances.
_new = object.__new__
_set_message = Send.__dict__["message"].__set__
_set_pass_up = PassUp.__dict__["message"].__set__
_set_start_timer = StartTimer.__dict__["timer"].__set__
_set_start_deadline = StartTimer.__dict__["deadline"].__set__
_set_received_response = ResponseReceived.__dict__["response"].__set__
_set_received_request = RequestReceived.__dict__["request"].__set__
_set_sent_response = SendResponse.__dict__["response"].__set__
_TERMINATED: Final = Terminated()


def _send(message: Request | Response) -> Send:
    action: Send = _new(Send)
    _set_message(action, message)
    return action


def _pass_up(message: Request | Response) -> PassUp:
    action: PassUp = _new(PassUp)
    _set_pass_up(action, message)
    return action


def _start_timer(timer: Timer, deadline: float) -> StartTimer:
    action: StartTimer = _new(StartTimer)
    _set_start_timer(action, timer)
    _set_start_deadline(action, deadline)
    return action


#: One StopTimer and one TimerFired per timer, shared (they hold nothing else).
_STOP_TIMER: Final[dict[Timer, StopTimer]] = {t: StopTimer(t) for t in Timer}
_TIMER_FIRED: Final[dict[Timer, TimerFired]] = {t: TimerFired(t) for t in Timer}


def _response_received(response: Response) -> ResponseReceived:
    event: ResponseReceived = _new(ResponseReceived)
    _set_received_response(event, response)
    return event


def _request_received(request: Request) -> RequestReceived:
    event: RequestReceived = _new(RequestReceived)
    _set_received_request(event, request)
    return event


def _send_response(response: Response) -> SendResponse:
    event: SendResponse = _new(SendResponse)
    _set_sent_response(event, response)
    return event


# ======================================================================================
# The state table
# ======================================================================================


class Kind(enum.Enum):
    # Members are singletons: identity hashing (C) rather than Enum's hash of the name
    # (Python), since the state table is probed by them several times per message.
    __hash__ = object.__hash__

    CLIENT_INVITE = "client INVITE"  # RFC 3261 17.1.1, figure 5
    CLIENT_NON_INVITE = "client non-INVITE"  # 17.1.2, figure 6
    SERVER_INVITE = "server INVITE"  # 17.2.1, figure 7
    SERVER_NON_INVITE = "server non-INVITE"  # 17.2.2, figure 8


class State(enum.Enum):
    # Identity hash: see Kind.
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Trigger(enum.Enum):
    # Identity hash: see Kind.
    __hash__ = object.__hash__

    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FAIL = "300-699 received"
    RECV_REQUEST = "request retransmission received"
    RECV_ACK = "ACK received"
    TU_1XX = "TU sends 1xx"
    TU_2XX = "TU sends 2xx"
    TU_FAIL = "TU sends 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"


class Effect(enum.Enum):
    # Identity hash: see Kind.
    __hash__ = object.__hash__

    PASS_UP = "pass the message up to the TU"
    RETRANSMIT = "retransmit the request"
    SEND_ACK = "send (again) the ACK for the non-2xx final response"
    SEND = "send the TU's response, remembering it"
    RESEND_LAST = "resend the most recent response, if any"
    BACKOFF = "restart the fired timer with the next (doubled, maybe capped) interval"
    RESTART_T2 = "restart the fired timer with T2"
    NOTIFY_TIMEOUT = "tell the TU about the timeout"
    NOTIFY_TRANSPORT = "tell the TU about the transport error"


S = State
T = Trigger
E = Effect
_Row: TypeAlias = dict[Trigger, tuple[State, tuple[Effect, ...]]]

#: kind -> state -> trigger -> (next state, effects in order). Figures 5-8 of RFC 3261.
TRANSITIONS: Final[dict[Kind, dict[State, _Row]]] = {
    Kind.CLIENT_INVITE: {
        S.CALLING: {
            T.TIMER_A: (S.CALLING, (E.RETRANSMIT, E.BACKOFF)),
            T.TIMER_B: (S.TERMINATED, (E.NOTIFY_TIMEOUT,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
            T.RECV_1XX: (S.PROCEEDING, (E.PASS_UP,)),
            T.RECV_2XX: (S.TERMINATED, (E.PASS_UP,)),
            T.RECV_FAIL: (S.COMPLETED, (E.PASS_UP, E.SEND_ACK)),
        },
        S.PROCEEDING: {
            T.RECV_1XX: (S.PROCEEDING, (E.PASS_UP,)),
            T.RECV_2XX: (S.TERMINATED, (E.PASS_UP,)),
            T.RECV_FAIL: (S.COMPLETED, (E.PASS_UP, E.SEND_ACK)),
        },
        S.COMPLETED: {
            T.RECV_FAIL: (S.COMPLETED, (E.SEND_ACK,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
            T.TIMER_D: (S.TERMINATED, ()),
        },
        S.TERMINATED: {},
    },
    Kind.CLIENT_NON_INVITE: {
        S.TRYING: {
            T.TIMER_E: (S.TRYING, (E.RETRANSMIT, E.BACKOFF)),
            T.TIMER_F: (S.TERMINATED, (E.NOTIFY_TIMEOUT,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
            T.RECV_1XX: (S.PROCEEDING, (E.PASS_UP,)),
            T.RECV_2XX: (S.COMPLETED, (E.PASS_UP,)),
            T.RECV_FAIL: (S.COMPLETED, (E.PASS_UP,)),
        },
        S.PROCEEDING: {
            T.TIMER_E: (S.PROCEEDING, (E.RETRANSMIT, E.RESTART_T2)),
            T.TIMER_F: (S.TERMINATED, (E.NOTIFY_TIMEOUT,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
            T.RECV_1XX: (S.PROCEEDING, (E.PASS_UP,)),
            T.RECV_2XX: (S.COMPLETED, (E.PASS_UP,)),
            T.RECV_FAIL: (S.COMPLETED, (E.PASS_UP,)),
        },
        S.COMPLETED: {
            T.TIMER_K: (S.TERMINATED, ()),
        },
        S.TERMINATED: {},
    },
    Kind.SERVER_INVITE: {
        S.PROCEEDING: {
            T.RECV_REQUEST: (S.PROCEEDING, (E.RESEND_LAST,)),
            T.TU_1XX: (S.PROCEEDING, (E.SEND,)),
            T.TU_2XX: (S.TERMINATED, (E.SEND,)),
            T.TU_FAIL: (S.COMPLETED, (E.SEND,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
        },
        S.COMPLETED: {
            T.RECV_REQUEST: (S.COMPLETED, (E.RESEND_LAST,)),
            T.RECV_ACK: (S.CONFIRMED, ()),
            T.TIMER_G: (S.COMPLETED, (E.RESEND_LAST, E.BACKOFF)),
            T.TIMER_H: (S.TERMINATED, (E.NOTIFY_TIMEOUT,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
        },
        S.CONFIRMED: {
            T.TIMER_I: (S.TERMINATED, ()),
        },
        S.TERMINATED: {},
    },
    Kind.SERVER_NON_INVITE: {
        S.TRYING: {
            T.TU_1XX: (S.PROCEEDING, (E.SEND,)),
            T.TU_2XX: (S.COMPLETED, (E.SEND,)),
            T.TU_FAIL: (S.COMPLETED, (E.SEND,)),
        },
        S.PROCEEDING: {
            T.RECV_REQUEST: (S.PROCEEDING, (E.RESEND_LAST,)),
            T.TU_1XX: (S.PROCEEDING, (E.SEND,)),
            T.TU_2XX: (S.COMPLETED, (E.SEND,)),
            T.TU_FAIL: (S.COMPLETED, (E.SEND,)),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
        },
        S.COMPLETED: {
            T.RECV_REQUEST: (S.COMPLETED, (E.RESEND_LAST,)),
            T.TIMER_J: (S.TERMINATED, ()),
            T.TRANSPORT_ERROR: (S.TERMINATED, (E.NOTIFY_TRANSPORT,)),
        },
        S.TERMINATED: {},
    },
}

#: The timers that run while a transaction is in a state (started on entry if unused).
STATE_TIMERS: Final[dict[Kind, dict[State, tuple[Timer, ...]]]] = {
    Kind.CLIENT_INVITE: {
        S.CALLING: (Timer.A, Timer.B),
        S.PROCEEDING: (),
        S.COMPLETED: (Timer.D,),
        S.TERMINATED: (),
    },
    Kind.CLIENT_NON_INVITE: {
        S.TRYING: (Timer.E, Timer.F),
        S.PROCEEDING: (Timer.E, Timer.F),
        S.COMPLETED: (Timer.K,),
        S.TERMINATED: (),
    },
    Kind.SERVER_INVITE: {
        S.PROCEEDING: (),
        S.COMPLETED: (Timer.G, Timer.H),
        S.CONFIRMED: (Timer.I,),
        S.TERMINATED: (),
    },
    Kind.SERVER_NON_INVITE: {
        S.TRYING: (),
        S.PROCEEDING: (),
        S.COMPLETED: (Timer.J,),
        S.TERMINATED: (),
    },
}

INITIAL_STATE: Final[dict[Kind, State]] = {
    Kind.CLIENT_INVITE: S.CALLING,
    Kind.CLIENT_NON_INVITE: S.TRYING,
    Kind.SERVER_INVITE: S.PROCEEDING,
    Kind.SERVER_NON_INVITE: S.TRYING,
}


def _status_trigger(status: int, *, tu: bool) -> Trigger:
    if 100 <= status < 200:
        return T.TU_1XX if tu else T.RECV_1XX
    if 200 <= status < 300:
        return T.TU_2XX if tu else T.RECV_2XX
    if 300 <= status < 700:
        return T.TU_FAIL if tu else T.RECV_FAIL
    raise ValueError(f"status {status} outside 100-699")


#: ``Trigger[f"TIMER_{timer.value}"]`` for each timer, looked up once.
_TIMER_TRIGGER: Final[dict[Timer, Trigger]] = {t: Trigger[f"TIMER_{t.value}"] for t in Timer}


#: The triggers of a status by its hundreds, received and sent: ``_status_trigger`` as a
#: look-up, which that function still answers for the statuses outside 100-699.
_RECEIVED_BY_CLASS: Final = {c: _status_trigger(c * 100, tu=False) for c in range(1, 7)}
_SENT_BY_CLASS: Final = {c: _status_trigger(c * 100, tu=True) for c in range(1, 7)}


def _trigger(event: Event) -> Trigger:
    if isinstance(event, ResponseReceived):
        status = event.response.status
        trigger = _RECEIVED_BY_CLASS.get(status // 100)
        return trigger if trigger is not None else _status_trigger(status, tu=False)
    if isinstance(event, SendResponse):
        status = event.response.status
        trigger = _SENT_BY_CLASS.get(status // 100)
        return trigger if trigger is not None else _status_trigger(status, tu=True)
    if isinstance(event, TimerFired):
        return _TIMER_TRIGGER[event.timer]
    if isinstance(event, RequestReceived):
        return T.RECV_ACK if event.request.method == "ACK" else T.RECV_REQUEST
    return T.TRANSPORT_ERROR


# ======================================================================================
# Message helpers the machines need (RFC 3261 17.1.1.3 and 9.1)
# ======================================================================================


def _hop_headers(request: Request, method: str, to: str) -> Headers:
    """The headers an ACK or CANCEL copies from the request it follows (same hop, branch)."""
    h = request.headers
    items: list[tuple[str, str]] = []
    top_via = h.get("Via")
    if top_via is not None:
        items.append(("Via", top_via))
    items.extend(("Route", r) for r in h.get_all("Route"))
    items.append(("Max-Forwards", h.get("Max-Forwards") or "70"))
    items.append(("From", h.get("From") or ""))
    items.append(("To", to))
    items.append(("Call-ID", h.get("Call-ID") or ""))
    cseq = request.cseq
    if cseq is None:
        raise TransactionUsageError("the request has no CSeq")
    items.append(("CSeq", f"{cseq.seq} {method}"))
    return Headers(items)


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final response (17.1.1.3).

    Same Request-URI, top Via (so the same branch), From, Call-ID, CSeq number and Route
    as the INVITE; the To of the response, which carries the UAS's tag.
    """
    return Request(
        "ACK", invite.uri, _hop_headers(invite, "ACK", response.headers.get("To") or ""), b""
    )


def make_cancel(request: Request) -> Request:
    """The CANCEL for a pending client request (9.1): same hop, same branch, own transaction."""
    if request.method in ("ACK", "CANCEL"):
        raise TransactionUsageError(f"cannot cancel a {request.method}")
    return Request(
        "CANCEL", request.uri, _hop_headers(request, "CANCEL", request.headers.get("To") or ""), b""
    )


#: The first durations of every timer per configuration in use (by identity, the
#: configuration kept alongside so that its id is not reused) and transport reliability:
#: entering a state asks for them on nearly every message. A layer and its transactions
#: share one configuration; the bound keeps configurations made per transaction in check.
_DURATIONS: dict[int, tuple[TimerConfig, dict[Timer, float | None], dict[Timer, float | None]]]
_DURATIONS = {}
_DURATIONS_MAX: Final = 64


def _initial_durations(config: TimerConfig, reliable: bool) -> dict[Timer, float | None]:
    """``config.initial(timer, reliable=reliable)`` for every timer."""
    cached = _DURATIONS.get(id(config))
    if cached is None or cached[0] is not config:
        if len(_DURATIONS) >= _DURATIONS_MAX:
            _DURATIONS.clear()
        cached = _DURATIONS[id(config)] = (
            config,
            {t: config.initial(t, reliable=False) for t in Timer},
            {t: config.initial(t, reliable=True) for t in Timer},
        )
    return cached[2] if reliable else cached[1]


# ======================================================================================
# The machines
# ======================================================================================


class Transaction:
    """One transaction. Use :class:`ClientTransaction` or :class:`ServerTransaction`.

    ``peer`` is opaque to this module: whatever the transport layer needs to send (an
    address, a connection). It is carried so the core can route :class:`Send` actions.
    """

    kind: Kind

    def __init__(
        self,
        kind: Kind,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig,
        peer: Hashable = None,
    ) -> None:
        self.kind = kind
        # This kind's rows of the tables, looked up on every event.
        self._transitions = TRANSITIONS[kind]
        self._state_timers = STATE_TIMERS[kind]
        self._request: Request | None = request
        self.reliable = reliable
        self.config = config
        self.peer = peer
        self.state = INITIAL_STATE[kind]
        self._last_response: Response | None = None
        # The wire form of request and last response once compacted (see ``_compact``).
        self._wire: tuple[bytes, bytes | None] | None = None
        self._ack: Request | None = None
        self._deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}
        #: Told of each timer started, as ``(transaction, timer, deadline, now)``: the
        #: layer's queue, so that it need not look through every action for them.
        self._on_start: Callable[[Transaction, Timer, float, float], None] | None = None

    def __repr__(self) -> str:
        if self._request is not None:
            method = self._request.method
        elif self._wire is not None:  # compacted: no re-reading just to print
            method = self._wire[0].split(b" ", 1)[0].decode("ascii", "replace")
        else:
            method = "?"
        return f"<{type(self).__name__} {self.kind.value} {self.state.value} {method}>"

    @property
    def request(self) -> Request:
        """The request that created the transaction (re-read from bytes once compacted)."""
        if self._wire is not None:
            self._expand()
        request = self._request
        assert request is not None  # only compaction clears it, and _expand restores it
        return request

    @property
    def last_response(self) -> Response | None:
        """The last response a server transaction sent, if any."""
        if self._wire is not None:
            self._expand()
        return self._last_response

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def deadlines(self) -> dict[Timer, float]:
        """The running timers and when they fire (a copy)."""
        return dict(self._deadlines)

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def handle_timers(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first."""
        actions: list[Action] = []
        while True:
            due = [(d, t.value, t) for t, d in self._deadlines.items() if d <= now]
            if not due:
                return actions
            actions += self.handle(TimerFired(min(due)[2]), now)

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event at time ``now``; the returned actions are to be carried out in order."""
        if isinstance(event, TimerFired):
            timer = event.timer
            if timer not in self._deadlines:
                return []  # stopped already: a late callback from the event loop
            del self._deadlines[timer]
            trigger = _TIMER_TRIGGER[timer]
        else:
            trigger = _trigger(event)
        transition = self._transitions[self.state].get(trigger)
        if transition is None:
            if isinstance(event, SendResponse):
                raise TransactionUsageError(
                    f"{self.kind.value} transaction in state {self.state.value} "
                    f"cannot send a {event.response.status}"
                )
            return []
        new_state, effects = transition
        actions: list[Action] = []
        for effect in effects:
            # The two effects of nearly every message inline; the rest in _apply.
            if effect is E.SEND and isinstance(event, SendResponse):
                self._last_response = event.response
                actions.append(_send(event.response))
            elif effect is E.PASS_UP and isinstance(event, ResponseReceived):
                actions.append(_pass_up(event.response))
            else:
                self._apply(effect, event, now, actions)
        self._enter(new_state, now, actions)
        return actions

    # -- internals --------------------------------------------------------------------

    def _apply(self, effect: Effect, event: Event, now: float, out: list[Action]) -> None:
        if effect is E.PASS_UP:
            assert isinstance(event, ResponseReceived)
            out.append(_pass_up(event.response))
        elif effect is E.SEND:
            assert isinstance(event, SendResponse)
            self._last_response = event.response
            out.append(_send(event.response))
        elif effect is E.RETRANSMIT:
            out.append(_send(self.request))
        elif effect is E.SEND_ACK:
            assert isinstance(event, ResponseReceived)
            if self._ack is None:
                self._ack = make_ack(self.request, event.response)
            out.append(_send(self._ack))
        elif effect is E.RESEND_LAST:
            if self.last_response is not None:
                out.append(_send(self.last_response))
        elif effect is E.BACKOFF or effect is E.RESTART_T2:
            assert isinstance(event, TimerFired)
            timer = event.timer
            if effect is E.BACKOFF:
                interval = self.config.backoff(timer, self._intervals[timer])
            else:
                interval = self.config.t2
            out.append(self._start(timer, interval, now))
        elif effect is E.NOTIFY_TIMEOUT:
            assert isinstance(event, TimerFired)
            out.append(Timeout(event.timer))
        else:  # E.NOTIFY_TRANSPORT
            assert isinstance(event, TransportError)
            out.append(TransportFailure(event.reason))

    def _start(self, timer: Timer, interval: float, now: float) -> StartTimer:
        self._intervals[timer] = interval
        deadline = now + interval
        self._deadlines[timer] = deadline
        if self._on_start is not None:
            self._on_start(self, timer, deadline, now)
        return _start_timer(timer, deadline)

    def _enter(self, state: State, now: float, actions: list[Action] | None = None) -> list[Action]:
        """Enter ``state``: stop the timers it does not run, start the ones it does.

        The actions are appended to ``actions`` (a new list when None), which is returned.
        """
        if actions is None:
            actions = []
        entered = state is not self.state
        self.state = state
        live = self._state_timers[state]
        deadlines = self._deadlines
        if deadlines:
            for timer in tuple(deadlines):
                if timer not in live:
                    del deadlines[timer]
                    actions.append(_STOP_TIMER[timer])
        immediate: list[Timer] | None = None
        if live:
            durations = _initial_durations(self.config, self.reliable)
            for timer in live:
                if timer in deadlines:
                    continue  # already running: E and F carry on from Trying to Proceeding
                duration = durations[timer]
                if duration is None:
                    continue
                if duration == 0:
                    if immediate is None:
                        immediate = []
                    immediate.append(timer)
                    self._intervals[timer] = 0.0
                    deadlines[timer] = now
                else:
                    actions.append(self._start(timer, duration, now))
        if state is S.TERMINATED:
            actions.append(_TERMINATED)
        elif (
            entered
            and state is S.COMPLETED
            and self.kind is Kind.SERVER_NON_INVITE
            and not self.reliable  # Timer J is 0 there: it ends at once
        ):
            self._compact()
        if immediate is not None:
            for timer in immediate:
                actions += self.handle(_TIMER_FIRED[timer], now)
        return actions

    def _compact(self) -> None:
        """Keep the request and the final response only as bytes until someone reads them.

        A completed non-INVITE server transaction waits 64*T1 (32 s) only to answer
        retransmissions with its last response; at a thousand calls a second that is tens
        of thousands of BYE transactions. Parsed, each held some seventy objects (messages,
        header lists, their strings) that were made, then freed cold 32 s later; as bytes
        it holds two, and a retransmission (rare) re-reads them.
        """
        request = self._request
        if request is None:
            return
        response = self._last_response
        self._wire = (bytes(request), None if response is None else bytes(response))
        self._request = self._last_response = None

    def _expand(self) -> None:
        wire = self._wire
        if wire is None:
            return
        request_bytes, response_bytes = wire
        # What we received and what we sent: both parse back, unless a TU edited a message
        # into something unparseable (a hand-set Content-Length that does not match).
        try:
            request = parse_message(request_bytes)
            response = None if response_bytes is None else parse_message(response_bytes)
        except SipParseError as exc:
            raise TransactionUsageError(
                f"a completed transaction's messages no longer parse: {exc.reason}"
            ) from exc
        if not isinstance(request, Request) or not (
            response is None or isinstance(response, Response)
        ):
            raise TransactionUsageError("a completed transaction's messages changed kind")
        self._request, self._last_response = request, response
        self._wire = None


class ClientTransaction(Transaction):
    """RFC 3261 17.1: sends a request and waits for its final response."""

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        peer: Hashable = None,
    ) -> None:
        if request.method == "ACK":
            raise TransactionUsageError("ACK has no client transaction (17.1)")
        kind = Kind.CLIENT_INVITE if request.method == "INVITE" else Kind.CLIENT_NON_INVITE
        super().__init__(
            kind, request, reliable=reliable, config=config or TimerConfig(), peer=peer
        )
        self._started = False

    def start(self, now: float) -> list[Action]:
        """Send the request and arm A/B or E/F; call once, right after construction."""
        if self._started:
            raise TransactionUsageError("client transaction already started")
        self._started = True
        return self._enter(self.state, now, [_send(self.request)])


class ServerTransaction(Transaction):
    """RFC 3261 17.2: absorbs retransmissions of a request and of our responses."""

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        peer: Hashable = None,
    ) -> None:
        if request.method == "ACK":
            raise TransactionUsageError("ACK does not create a server transaction (17.2)")
        kind = Kind.SERVER_INVITE if request.method == "INVITE" else Kind.SERVER_NON_INVITE
        super().__init__(
            kind, request, reliable=reliable, config=config or TimerConfig(), peer=peer
        )
        self._started = False

    def start(self, now: float, *, auto_trying: bool = True) -> list[Action]:
        """Pass the request up; an INVITE also gets ``100 Trying`` unless told otherwise."""
        if self._started:
            raise TransactionUsageError("server transaction already started")
        self._started = True
        actions: list[Action] = [_pass_up(self.request)]
        if auto_trying and self.kind is Kind.SERVER_INVITE:
            actions += self.handle(_send_response(Response.for_request(self.request, 100)), now)
        return actions

    def respond(self, response: Response, now: float) -> list[Action]:
        return self.handle(_send_response(response), now)


# ======================================================================================
# Matching (17.1.3, 17.2.3, 9.2) and the layer
# ======================================================================================

_ClientKey: TypeAlias = tuple[str, str]
_ServerKey: TypeAlias = tuple[str, str, int, str]
_LegacyKey: TypeAlias = tuple[str, URI, str, str, int, tuple[str, str, int, str]]


#: What matching reads of a top Via: the branch lower-cased (None without one), the same
#: when it is an RFC 3261 branch (else None: RFC 2543 matching), the sent-by host
#: lower-cased, the sent-by port (the transport's default when absent) and the transport
#: upper-cased.
_ViaKey: TypeAlias = tuple[str | None, str | None, str, int, str]


def _default_port(transport: str) -> int:
    return 5061 if transport.upper() in ("TLS", "WSS") else 5060


def _is_rfc3261(branch: str) -> bool:
    """Via.is_rfc3261_branch of a branch already read: the magic cookie and something
    after it (RFC 4475 badbranch has nothing after: RFC 2543 matching then)."""
    return branch.startswith(MAGIC_COOKIE) and len(branch) > 7


def _via_key(via: Via) -> _ViaKey:
    branch = via.branch
    port = via.port if via.port is not None else _default_port(via.transport)
    if branch is None:
        return (None, None, via.host.lower(), port, via.transport.upper())
    lower = branch.lower()
    return (
        lower,
        lower if _is_rfc3261(branch) else None,
        via.host.lower(),
        port,
        via.transport.upper(),
    )


def _legacy_key(request: Request, method: str, via: _ViaKey | None) -> _LegacyKey | None:
    """RFC 2543 matching (17.2.3, last paragraphs): everything but the To tag."""
    cseq = request.cseq
    if via is None or cseq is None:
        return None
    branch, _, host, port, transport = via
    return (
        method,
        request.uri,  # compared by RFC 3261 19.1.4 rules, not as text
        request.from_tag or "",
        request.call_id or "",
        cseq.seq,
        (transport, host, port, branch or ""),
    )


#: Where the layer filed a transaction (client, server, legacy key), to forget it in O(1).
_Keys: TypeAlias = tuple[_ClientKey | None, _ServerKey | None, _LegacyKey | None]


@dataclass(frozen=True, slots=True)
class TransactionOutput:
    """An action together with the transaction that asked for it."""

    transaction: Transaction
    action: Action


_set_output_transaction = TransactionOutput.__dict__["transaction"].__set__
_set_output_action = TransactionOutput.__dict__["action"].__set__


def _output(transaction: Transaction, action: Action) -> TransactionOutput:
    """``TransactionOutput(transaction, action)``, as the events are made (a dozen a call)."""
    output: TransactionOutput = _new(TransactionOutput)
    _set_output_transaction(output, transaction)
    _set_output_action(output, action)
    return output


@dataclass(frozen=True, slots=True)
class Matched:
    transaction: Transaction
    outputs: tuple[TransactionOutput, ...]


@dataclass(frozen=True, slots=True)
class Unmatched:
    """No transaction wants this message; the core decides (16.11 stateless forwarding of a
    response, a new server transaction for a request, the TU for an ACK to a 2xx)."""

    message: Request | Response


_set_matched_transaction = Matched.__dict__["transaction"].__set__
_set_matched_outputs = Matched.__dict__["outputs"].__set__
_set_unmatched_message = Unmatched.__dict__["message"].__set__


def _matched(transaction: Transaction, outputs: tuple[TransactionOutput, ...]) -> Matched:
    result: Matched = _new(Matched)
    _set_matched_transaction(result, transaction)
    _set_matched_outputs(result, outputs)
    return result


def _unmatched(message: Request | Response) -> Unmatched:
    result: Unmatched = _new(Unmatched)
    _set_unmatched_message(result, message)
    return result


class TransactionLayer:
    """All live transactions of one switch, routing messages and timers to them.

    Deadlines are kept in a :class:`DeadlineQueue` with lazy deletion (a stopped timer's
    entry is skipped when it comes due), so starting, stopping and firing a timer cost
    the same with tens of thousands of transactions in flight.
    """

    def __init__(self, config: TimerConfig | None = None, *, auto_trying: bool = True) -> None:
        self.config = config or TimerConfig()
        self.auto_trying = auto_trying
        self._clients: dict[_ClientKey, ClientTransaction] = {}
        self._servers: dict[_ServerKey, ServerTransaction] = {}
        self._legacy: dict[_LegacyKey, list[ServerTransaction]] = {}
        self._keys: dict[Transaction, _Keys] = {}
        # Weak references: a transaction that ended is freed at once, not when its last
        # stopped timer (Timer B, F: 32 s) comes up in the queue. At a thousand calls a
        # second, holding them cost a gigabyte and garbage-collector pauses.
        self._timers: DeadlineQueue[tuple[weakref.ref[Transaction], Timer]] = DeadlineQueue()
        self._cancel_pending: set[ClientTransaction] = set()
        # The last top Via read and what matching takes from it: a request is matched by
        # receive() and filed by create_server() (two reads of one Via), and a proxy's
        # Via values are shared between messages.
        self._via: Via | None = None
        self._via_key: _ViaKey | None = None
        # The earliest live entry next_deadline() found, while no timer fired since: the
        # driver asks after every input. Checked again before it is reported (its timer
        # may have stopped since), and replaced by an earlier timer started.
        self._next: tuple[float, weakref.ref[Transaction], Timer] | None = None
        self._next_known = False
        # Bound once: transactions compare it to know they report to this layer.
        self._timer_started = self._on_timer_started

    def __len__(self) -> int:
        return len(self._keys)

    def _top_via(self, message: Request | Response) -> _ViaKey | None:
        via = message.top_via
        if via is None:
            return None
        if via is self._via:
            return self._via_key
        key = _via_key(via)
        self._via, self._via_key = via, key
        return key

    # -- creation ---------------------------------------------------------------------

    def send_request(
        self, request: Request, now: float, *, reliable: bool, peer: Hashable = None
    ) -> tuple[ClientTransaction, tuple[TransactionOutput, ...]]:
        """Create and start a client transaction (the request must carry its own branch)."""
        via = request.top_via
        cseq = request.cseq
        branch = None if via is None else via.branch
        if branch is None or cseq is None or not _is_rfc3261(branch):
            raise TransactionUsageError("our requests need a z9hG4bK branch in the top Via")
        key = (branch.lower(), cseq.method)
        if key in self._clients:
            raise TransactionUsageError(f"branch {key[0]!r} already in use for {key[1]}")
        tx = ClientTransaction(request, reliable=reliable, config=self.config, peer=peer)
        tx._on_start = self._timer_started
        self._clients[key] = tx
        self._keys[tx] = (key, None, None)
        return tx, self._track(tx, tx.start(now), now)

    def create_server(
        self, request: Request, now: float, *, reliable: bool, peer: Hashable = None
    ) -> tuple[ServerTransaction, tuple[TransactionOutput, ...]]:
        """Create a server transaction for a request that :meth:`receive` did not match."""
        tx = ServerTransaction(request, reliable=reliable, config=self.config, peer=peer)
        tx._on_start = self._timer_started
        if request.method == "ACK":
            raise TransactionUsageError("ACK does not create a server transaction (17.2)")
        skey: _ServerKey | None = None
        lkey: _LegacyKey | None = None
        via = self._top_via(request)
        if via is not None and (branch := via[1]) is not None:
            skey = (branch, via[2], via[3], request.method)
            if skey in self._servers:
                raise TransactionUsageError("a server transaction already matches this request")
            self._servers[skey] = tx
        else:
            if self.match_server(request) is not None:
                raise TransactionUsageError("a server transaction already matches this request")
            lkey = _legacy_key(request, request.method, via)
            if lkey is not None:
                self._legacy.setdefault(lkey, []).append(tx)
        self._keys[tx] = (None, skey, lkey)
        return tx, self._track(tx, tx.start(now, auto_trying=self.auto_trying), now)

    # -- input ------------------------------------------------------------------------

    def receive(self, message: Request | Response, now: float) -> Matched | Unmatched:
        """Route a message from the network to its transaction, or report no match."""
        if isinstance(message, Response):
            # The client key: the branch and the CSeq method (17.1.3).
            via = message.top_via
            cseq = message.cseq
            branch = None if via is None else via.branch
            if branch is None or cseq is None:
                return _unmatched(message)
            client = self._clients.get((branch.lower(), cseq.method))
            if client is None:
                return _unmatched(message)
            out = self._track(client, client.handle(_response_received(message), now), now)
            if client in self._cancel_pending and client.state is not S.CALLING:
                self._cancel_pending.discard(client)
                if client.state is S.PROCEEDING:
                    out += self._send_cancel(client, now)
            return _matched(client, out)
        sent_by = self._top_via(message)
        if sent_by is not None and (branch := sent_by[1]) is not None:
            method = message.method
            key = (branch, sent_by[2], sent_by[3], "INVITE" if method == "ACK" else method)
            server = self._servers.get(key)
        else:
            server = self.match_server(message)
        if server is None:
            return _unmatched(message)
        out = self._track(server, server.handle(_request_received(message), now), now)
        return _matched(server, out)

    def serves(self, via: Via, method: str) -> bool | None:
        """Whether a server transaction matches a request of ``method`` (ACK: its INVITE's)
        with ``via`` on top, by RFC 3261 branch (17.2.3); None when the branch is not an RFC
        3261 one, whose matching needs the whole request (:meth:`match_server`)."""
        key = _via_key(via)
        branch = key[1]
        if branch is None:
            return None
        return (branch, key[2], key[3], "INVITE" if method == "ACK" else method) in self._servers

    def match_server(self, request: Request) -> ServerTransaction | None:
        """The server transaction this request belongs to (17.2.3), ACK included."""
        method = request.method
        if method == "ACK":
            return self._find_server(request, "INVITE", ack=True)
        return self._find_server(request, method, ack=False)

    def match_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL targets (9.2: match as if it were INVITE)."""
        tx = self._find_server(cancel, "INVITE", ack=False)
        return tx if tx is not None and tx.kind is Kind.SERVER_INVITE else None

    def _find_server(self, request: Request, method: str, *, ack: bool) -> ServerTransaction | None:
        via = self._top_via(request)
        if via is not None and (branch := via[1]) is not None:
            return self._servers.get((branch, via[2], via[3], method))
        lkey = _legacy_key(request, method, via)
        if lkey is None:
            return None
        to_tag = request.to_tag
        for tx in self._legacy.get(lkey, ()):
            if ack:
                # The ACK carries the To tag of the response we sent (17.2.3).
                sent = tx.last_response
                if sent is not None and sent.to_tag == to_tag:
                    return tx
            elif tx.request.to_tag == to_tag:
                return tx
        return None

    def cancel(self, invite: ClientTransaction, now: float) -> tuple[TransactionOutput, ...]:
        """Cancel a pending INVITE (9.1), now or as soon as it may be.

        A CANCEL must not be sent before a provisional response arrived (the INVITE may
        not have reached the peer; a CANCEL overtaking it would be answered 481 and the
        INVITE would then ring). So in Calling the CANCEL is remembered and sent by
        :meth:`receive` with the first 1xx; once a final response arrived there is nothing
        left to cancel and no CANCEL is sent. The outputs of the CANCEL's own client
        transaction are returned (attributed to it, not to the INVITE).
        """
        if invite.kind is not Kind.CLIENT_INVITE:
            raise TransactionUsageError("only INVITE client transactions can be cancelled")
        if invite.state is S.CALLING:
            if invite in self._keys:
                self._cancel_pending.add(invite)
            return ()
        if invite.state is S.PROCEEDING:
            return self._send_cancel(invite, now)
        return ()

    def _send_cancel(self, invite: ClientTransaction, now: float) -> tuple[TransactionOutput, ...]:
        _, out = self.send_request(
            make_cancel(invite.request), now, reliable=invite.reliable, peer=invite.peer
        )
        return out

    def respond(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> tuple[TransactionOutput, ...]:
        return self._track(transaction, transaction.respond(response, now), now)

    def transport_error(
        self, transaction: Transaction, now: float, reason: str = ""
    ) -> tuple[TransactionOutput, ...]:
        return self._track(transaction, transaction.handle(TransportError(reason), now), now)

    # -- time -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` next has work, or None if no timer runs."""
        if self._next_known:
            head = self._next
            if head is None:
                return None
            deadline, ref, timer = head
            tx = ref()
            if tx is not None and tx._deadlines.get(timer) == deadline:
                return deadline
        timers = self._timers
        while (entry := timers.peek()) is not None:
            deadline, (ref, timer) = entry
            tx = ref()
            if tx is not None and tx._deadlines.get(timer) == deadline:
                self._next, self._next_known = (deadline, ref, timer), True
                return deadline
            timers.drop_earliest()
        self._next, self._next_known = None, True
        return None

    def handle_timers(self, now: float) -> tuple[TransactionOutput, ...]:
        out: list[TransactionOutput] = []
        self._next_known = False
        # Firing may start timers; one due at ``now`` already is fired in the next round.
        while due := self._timers.pop_due(now):
            for deadline, (ref, timer) in due:
                tx = ref()
                if tx is None or tx._deadlines.get(timer) != deadline:
                    continue  # stopped, restarted or its transaction is gone
                out += self._track(tx, tx.handle(_TIMER_FIRED[timer], now), now)
        self._next_known = False
        return tuple(out)

    # -- bookkeeping ------------------------------------------------------------------

    def _on_timer_started(self, tx: Transaction, timer: Timer, deadline: float, now: float) -> None:
        ref = weakref.ref(tx)
        self._timers.push(deadline, deadline - now, (ref, timer))
        if self._next_known:
            head = self._next
            if head is None or deadline < head[0]:
                self._next = (deadline, ref, timer)

    def _track(
        self, tx: Transaction, actions: list[Action], now: float
    ) -> tuple[TransactionOutput, ...]:
        if tx._on_start is not self._timer_started:
            # Not one of ours (made around the layer): its timers are queued here.
            for action in actions:
                if isinstance(action, StartTimer):
                    self._on_timer_started(tx, action.timer, action.deadline, now)
        if tx.state is S.TERMINATED:
            self._forget(tx)
        out = []
        for action in actions:
            out.append(_output(tx, action))
        return tuple(out)

    def _forget(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            self._cancel_pending.discard(tx)
        keys = self._keys.pop(tx, None)
        if keys is None:
            return
        client, server, legacy = keys
        if client is not None:
            self._clients.pop(client, None)
        if server is not None:
            self._servers.pop(server, None)
        if legacy is not None:
            txs = self._legacy.get(legacy, [])
            if tx in txs:
                txs.remove(tx)
            if not txs:
                self._legacy.pop(legacy, None)
