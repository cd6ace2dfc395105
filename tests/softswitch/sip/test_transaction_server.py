"""Server transactions (RFC 3261 17.2) and request matching (17.2.3, 9.2), fake clock only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.fields import Via, parse_name_addr
from softswitch.sip.message import Request, Response
from softswitch.sip.timers import Timer, TimerConfig
from softswitch.sip.transaction import (
    STATE_TIMERS,
    TRANSITIONS,
    Action,
    Kind,
    Matched,
    PassUp,
    RequestReceived,
    Send,
    SendResponse,
    ServerTransaction,
    StartTimer,
    State,
    StopTimer,
    Terminated,
    Timeout,
    TimerFired,
    TransactionLayer,
    TransactionUsageError,
    TransportError,
    TransportFailure,
    Trigger,
    Unmatched,
)

BRANCH = "z9hG4bK-server-1"


def request(
    method: str = "INVITE",
    *,
    branch: str = BRANCH,
    host: str = "198.51.100.9",
    port: int | None = 5060,
    to_tag: str | None = None,
    cseq_method: str | None = None,
) -> Request:
    to = "<sip:+4420@switch.example>" + (f";tag={to_tag}" if to_tag else "")
    req = Request.build(
        method,
        "sip:+4420@switch.example",
        via=Via.new("UDP", host, port, branch=branch),
        from_=parse_name_addr("<sip:carrier@carrier.example>;tag=c1"),
        to=parse_name_addr(to),
        call_id="abc@carrier",
        cseq=3,
    )
    if cseq_method is not None:
        req.headers.set("CSeq", f"3 {cseq_method}")
    return req


def answer(req: Request, status: int) -> Response:
    return Response.for_request(req, status, to_tag=None if status == 100 else "sw1")


def sends(actions: list[Action]) -> list[Request | Response]:
    return [a.message for a in actions if isinstance(a, Send)]


def run_clock(tx: ServerTransaction, until: float) -> list[tuple[float, Action]]:
    log: list[tuple[float, Action]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        log += [(deadline, a) for a in tx.handle_timers(deadline)]
    return log


def state_of(tx: ServerTransaction) -> State:
    """Read the state afresh (a plain attribute access would stay narrowed for mypy)."""
    return tx.state


def invite_tx(*, reliable: bool = False, **timers: float) -> ServerTransaction:
    tx = ServerTransaction(request(), reliable=reliable, config=TimerConfig(**timers))
    tx.start(0.0, auto_trying=False)
    return tx


# ---------------------------------------------------------------- INVITE, 17.2.1


def test_invite_start_passes_up_and_sends_100_trying() -> None:
    tx = ServerTransaction(request(), reliable=False)
    actions = tx.start(0.0)
    assert actions[0] == PassUp(tx.request)
    (trying,) = sends(actions)
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to_tag is None
    assert tx.state is State.PROCEEDING
    # A retransmitted INVITE gets the most recent provisional again.
    assert tx.handle(RequestReceived(request()), 0.3) == [Send(trying)]


def test_retransmission_before_any_response_is_absorbed() -> None:
    tx = invite_tx()
    assert tx.handle(RequestReceived(request()), 0.3) == []
    ringing = answer(tx.request, 180)
    tx.respond(ringing, 0.4)
    assert tx.handle(RequestReceived(request()), 0.5) == [Send(ringing)]


def test_invite_2xx_terminates() -> None:
    tx = invite_tx()
    ok = answer(tx.request, 200)
    assert tx.respond(ok, 1.0) == [Send(ok), Terminated()]
    with pytest.raises(TransactionUsageError):
        tx.respond(answer(tx.request, 200), 1.1)


def test_final_response_retransmitted_by_g_until_h() -> None:
    tx = invite_tx()
    busy = answer(tx.request, 486)
    actions = tx.respond(busy, 0.0)
    assert actions == [Send(busy), StartTimer(Timer.G, 0.5), StartTimer(Timer.H, 32.0)]
    log = run_clock(tx, 100.0)
    retransmits = [t for t, a in log if isinstance(a, Send)]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(a == Send(busy) for _, a in log if isinstance(a, Send))
    assert [a for t, a in log if t == 32.0] == [Timeout(Timer.H), StopTimer(Timer.G), Terminated()]


@pytest.mark.parametrize(("reliable", "timer_i"), [(False, 5.0), (True, 0.0)])
def test_ack_confirms_and_timer_i_absorbs_acks(reliable: bool, timer_i: float) -> None:
    tx = invite_tx(reliable=reliable)
    busy = answer(tx.request, 486)
    armed = tx.respond(busy, 1.0)
    assert (StartTimer(Timer.G, 1.5) in armed) is (not reliable)
    assert StartTimer(Timer.H, 33.0) in armed
    ack = request("ACK", to_tag="sw1")
    actions = tx.handle(RequestReceived(ack), 2.0)
    if reliable:
        assert actions == [StopTimer(Timer.H), Terminated()]
        return
    assert actions == [StopTimer(Timer.G), StopTimer(Timer.H), StartTimer(Timer.I, 2.0 + timer_i)]
    assert tx.state is State.CONFIRMED
    assert tx.handle(RequestReceived(ack), 2.5) == []
    assert tx.handle(RequestReceived(request()), 2.6) == []
    assert run_clock(tx, 100.0) == [(2.0 + timer_i, Terminated())]


def test_request_retransmission_in_completed_resends_final() -> None:
    tx = invite_tx()
    busy = answer(tx.request, 486)
    tx.respond(busy, 0.0)
    assert tx.handle(RequestReceived(request()), 0.2) == [Send(busy)]


def test_h_is_64_t1() -> None:
    tx = invite_tx(t1=0.25)
    actions = tx.respond(answer(tx.request, 500), 0.0)
    assert StartTimer(Timer.H, 16.0) in actions
    assert StartTimer(Timer.G, 0.25) in actions


def test_transport_error_in_completed() -> None:
    tx = invite_tx()
    tx.respond(answer(tx.request, 486), 0.0)
    actions = tx.handle(TransportError("connection reset"), 0.1)
    assert actions[0] == TransportFailure("connection reset")
    assert actions[-1] == Terminated()


# ---------------------------------------------------------------- non-INVITE, 17.2.2


def test_non_invite_trying_absorbs_then_proceeding_resends_provisional() -> None:
    tx = ServerTransaction(request("OPTIONS"), reliable=False)
    assert tx.start(0.0) == [PassUp(tx.request)]  # no automatic 100 for non-INVITE
    assert tx.state is State.TRYING
    assert tx.handle(RequestReceived(request("OPTIONS")), 0.1) == []
    trying = answer(tx.request, 100)
    assert tx.respond(trying, 0.2) == [Send(trying)]
    assert state_of(tx) is State.PROCEEDING
    assert tx.handle(RequestReceived(request("OPTIONS")), 0.3) == [Send(trying)]


@pytest.mark.parametrize(("reliable", "timer_j"), [(False, 32.0), (True, 0.0)])
def test_non_invite_final_and_timer_j(reliable: bool, timer_j: float) -> None:
    tx = ServerTransaction(request("BYE"), reliable=reliable)
    tx.start(0.0)
    ok = answer(tx.request, 200)
    actions = tx.respond(ok, 1.0)
    if reliable:
        assert actions == [Send(ok), Terminated()]
        return
    assert actions == [Send(ok), StartTimer(Timer.J, 1.0 + timer_j)]
    # Completed keeps the messages only in wire form (see Transaction._compact).
    (resent,) = tx.handle(RequestReceived(request("BYE")), 2.0)
    assert isinstance(resent, Send)
    assert bytes(resent.message) == bytes(ok)
    assert resent.message is tx.last_response is not ok
    assert bytes(tx.request) == bytes(request("BYE"))
    with pytest.raises(TransactionUsageError):
        tx.respond(answer(tx.request, 500), 2.0)
    assert run_clock(tx, 100.0) == [(1.0 + timer_j, Terminated())]


def test_ack_cannot_start_a_server_transaction() -> None:
    with pytest.raises(TransactionUsageError):
        ServerTransaction(request("ACK"), reliable=False)


def test_stray_timer_is_ignored() -> None:
    tx = invite_tx()
    assert tx.handle(TimerFired(Timer.G), 5.0) == []


# ---------------------------------------------------------------- matching, 17.2.3


def test_layer_matches_retransmission_ack_and_keeps_cancel_apart() -> None:
    layer = TransactionLayer(auto_trying=False)
    assert isinstance(layer.receive(request(), 0.0), Unmatched)
    tx, out = layer.create_server(request(), 0.0, reliable=False)
    assert [o.action for o in out] == [PassUp(tx.request)]
    with pytest.raises(TransactionUsageError):
        layer.create_server(request(), 0.0, reliable=False)
    matched = layer.receive(request(), 0.1)
    assert isinstance(matched, Matched)
    assert matched.transaction is tx

    cancel = request("CANCEL")
    assert isinstance(layer.receive(cancel, 0.2), Unmatched)  # CANCEL is its own transaction
    assert layer.match_cancel(cancel) is tx
    cancel_tx, _ = layer.create_server(cancel, 0.2, reliable=False)
    assert cancel_tx is not tx

    layer.respond(tx, answer(tx.request, 487), 0.3)
    ack = layer.receive(request("ACK", to_tag="sw1"), 0.4)
    assert isinstance(ack, Matched)
    assert ack.transaction is tx
    assert tx.state is State.CONFIRMED


@pytest.mark.parametrize(
    "variant",
    [
        {"branch": "z9hG4bK-other"},
        {"host": "198.51.100.10"},
        {"port": 5070},
    ],
)
def test_rfc3261_match_needs_branch_and_sent_by(variant: dict[str, str | int]) -> None:
    layer = TransactionLayer()
    layer.create_server(request(), 0.0, reliable=False)
    assert isinstance(layer.receive(request(**variant), 0.1), Unmatched)  # type: ignore[arg-type]


def test_default_port_equals_explicit_5060() -> None:
    layer = TransactionLayer()
    tx, _ = layer.create_server(request(port=None), 0.0, reliable=False)
    assert layer.match_server(request(port=5060)) is tx


def test_method_distinguishes_transactions_on_one_branch() -> None:
    layer = TransactionLayer()
    tx, _ = layer.create_server(request("OPTIONS"), 0.0, reliable=False)
    assert layer.match_server(request("INFO")) is None
    assert layer.match_server(request("OPTIONS")) is tx


def test_unmatched_ack_for_2xx_goes_to_the_core() -> None:
    layer = TransactionLayer()
    tx, _ = layer.create_server(request(), 0.0, reliable=False)
    layer.respond(tx, answer(tx.request, 200), 1.0)
    assert len(layer) == 0
    assert isinstance(layer.receive(request("ACK", to_tag="sw1"), 1.1), Unmatched)


LEGACY = "1a2b3c"  # an RFC 2543 branch (no magic cookie)


def test_rfc2543_matching() -> None:
    layer = TransactionLayer(auto_trying=False)
    tx, _ = layer.create_server(request(branch=LEGACY), 0.0, reliable=False)
    assert layer.match_server(request(branch=LEGACY)) is tx
    assert layer.match_server(request(branch=LEGACY, to_tag="zz")) is None
    other_via = request(branch=LEGACY, host="203.0.113.1")
    assert layer.match_server(other_via) is None
    assert layer.match_cancel(request("CANCEL", branch=LEGACY)) is tx
    # Before a response is sent, no ACK can match; afterwards only with its To tag.
    assert layer.match_server(request("ACK", branch=LEGACY, to_tag="sw1")) is None
    layer.respond(tx, answer(tx.request, 486), 0.5)
    assert layer.match_server(request("ACK", branch=LEGACY, to_tag="other")) is None
    ack = layer.receive(request("ACK", branch=LEGACY, to_tag="sw1"), 0.6)
    assert isinstance(ack, Matched)
    assert ack.transaction is tx
    layer.handle_timers(100.0)
    assert len(layer) == 0


def test_badbranch_without_suffix_falls_back_to_rfc2543() -> None:
    layer = TransactionLayer()
    tx, _ = layer.create_server(request(branch="z9hG4bK"), 0.0, reliable=False)
    assert layer.match_server(request(branch="z9hG4bK")) is tx
    assert layer.match_server(request(branch="z9hG4bK", to_tag="x")) is None


def test_layer_timers_drive_server_transactions() -> None:
    layer = TransactionLayer(auto_trying=False)
    tx, _ = layer.create_server(request(), 0.0, reliable=False)
    layer.respond(tx, answer(tx.request, 486), 0.0)
    sent_at = []
    while (deadline := layer.next_deadline()) is not None:
        for output in layer.handle_timers(deadline):
            assert output.transaction is tx
            if isinstance(output.action, Send):
                sent_at.append(deadline)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(layer) == 0


# ---------------------------------------------------------------- table and properties

ORDER = [State.TRYING, State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.TERMINATED]


@pytest.mark.parametrize("kind", [Kind.SERVER_INVITE, Kind.SERVER_NON_INVITE])
def test_table_only_moves_forward(kind: Kind) -> None:
    for state, row in TRANSITIONS[kind].items():
        for new_state, _ in row.values():
            assert ORDER.index(new_state) >= ORDER.index(state)
        assert state in STATE_TIMERS[kind]


server_events = st.one_of(
    st.builds(lambda s: ("tu", s), st.sampled_from([100, 180, 200, 486, 603])),
    st.sampled_from([("retransmit", 0), ("ack", 0), ("transport", 0)]),
    st.builds(lambda t: ("timer", t), st.sampled_from(list(Timer))),
    st.builds(lambda d: ("advance", d), st.floats(min_value=0.0, max_value=40.0)),
)


@given(
    method=st.sampled_from(["INVITE", "REGISTER"]),
    reliable=st.booleans(),
    events=st.lists(server_events, max_size=30),
)
def test_random_event_sequences_keep_invariants(
    method: str, reliable: bool, events: list[tuple[str, object]]
) -> None:
    tx = ServerTransaction(request(method), reliable=reliable)
    now = 0.0
    tx.start(now)
    terminated = False
    for kind, value in events:
        before = tx.state
        actions: list[Action] = []
        if kind == "tu":
            assert isinstance(value, int)
            trigger = Trigger.TU_1XX if value < 200 else Trigger.TU_2XX
            trigger = trigger if value < 300 else Trigger.TU_FAIL
            allowed = trigger in TRANSITIONS[tx.kind][before]
            try:
                actions = tx.handle(SendResponse(answer(tx.request, value)), now)
            except TransactionUsageError:
                assert not allowed
                assert tx.state is before
            else:
                assert allowed
                assert sends(actions)[0].status == value  # type: ignore[union-attr]
        elif kind == "retransmit":
            actions = tx.handle(RequestReceived(request(method)), now)
        elif kind == "ack":
            actions = tx.handle(RequestReceived(request("ACK", to_tag="sw1")), now)
        elif kind == "transport":
            actions = tx.handle(TransportError(), now)
        elif kind == "timer":
            assert isinstance(value, Timer)
            actions = tx.handle(TimerFired(value), now)
        else:
            assert isinstance(value, float)
            now += value
            actions = tx.handle_timers(now)
        assert ORDER.index(tx.state) >= ORDER.index(before)
        if terminated:
            assert actions == []
        if Terminated() in actions:
            assert actions[-1] == Terminated()
            terminated = True
        assert set(tx.deadlines()) <= set(STATE_TIMERS[tx.kind][tx.state])
        for sent in sends(actions):
            assert isinstance(sent, Response)
    assert terminated == (tx.state is State.TERMINATED)


def test_a_compacted_transaction_that_cannot_re_read_says_so() -> None:
    tx = ServerTransaction(request("BYE"), reliable=False)
    tx.start(0.0)
    ok = answer(tx.request, 200)
    ok.headers.set("Content-Length", "50")  # a TU's hand edit: no longer matches the body
    tx.respond(ok, 1.0)
    assert "BYE" in repr(tx)  # printing does not re-read
    with pytest.raises(TransactionUsageError, match="no longer parse"):
        tx.handle(RequestReceived(request("BYE")), 2.0)
    with pytest.raises(TransactionUsageError, match="no longer parse"):
        tx.last_response  # noqa: B018
    assert "BYE" in repr(tx)


def test_a_transaction_made_around_the_layer_has_its_timers_run_by_it() -> None:
    """The layer runs the timers of whatever it is handed, not only what it created."""
    layer = TransactionLayer()
    tx = invite_tx()
    out = layer.respond(tx, answer(tx.request, 486), 1.0)
    assert [o.action for o in out][1:] == [StartTimer(Timer.G, 1.5), StartTimer(Timer.H, 33.0)]
    assert layer.next_deadline() == 1.5
    fired = layer.handle_timers(1.5)
    assert [o.action for o in fired] == [Send(tx.last_response), StartTimer(Timer.G, 2.5)]
    assert layer.next_deadline() == 2.5
