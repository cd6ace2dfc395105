"""Client transactions (RFC 3261 17.1) driven by events and a fake clock, no sockets."""

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
    ClientTransaction,
    Kind,
    PassUp,
    ResponseReceived,
    Send,
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
    Unmatched,
    make_cancel,
)

BRANCH = "z9hG4bK-client-1"


def request(method: str = "INVITE", branch: str = BRANCH, *, routes: int = 0) -> Request:
    return Request.build(
        method,
        "sip:+4420@carrier.example",
        via=Via.new("UDP", "192.0.2.1", 5060, branch=branch),
        from_=parse_name_addr("<sip:alice@switch.example>;tag=from1"),
        to=parse_name_addr("<sip:+4420@carrier.example>"),
        call_id="call-1@switch",
        cseq=7,
        route=[parse_name_addr(f"<sip:p{i}.example;lr>") for i in range(routes)],
    )


def response_to(req: Request, status: int, *, to_tag: str | None = "uas1") -> Response:
    return Response.for_request(req, status, to_tag=to_tag if status > 100 else None)


def sends(actions: list[Action]) -> list[Request | Response]:
    return [a.message for a in actions if isinstance(a, Send)]


def run_clock(tx: ClientTransaction, until: float) -> list[tuple[float, Action]]:
    """Advance a fake clock from deadline to deadline, as the asyncio layer would."""
    log: list[tuple[float, Action]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        log += [(deadline, a) for a in tx.handle_timers(deadline)]
    return log


def started(method: str = "INVITE", *, reliable: bool = False, **kw: float) -> ClientTransaction:
    tx = ClientTransaction(request(method), reliable=reliable, config=TimerConfig(**kw))
    tx.start(0.0)
    return tx


# ---------------------------------------------------------------- INVITE, 17.1.1


def test_invite_start_sends_and_arms_a_and_b() -> None:
    tx = ClientTransaction(request(), reliable=False)
    actions = tx.start(0.0)
    assert actions == [Send(tx.request), StartTimer(Timer.A, 0.5), StartTimer(Timer.B, 32.0)]
    assert tx.state is State.CALLING
    with pytest.raises(TransactionUsageError):
        tx.start(0.0)


def test_invite_udp_retransmits_with_doubling_then_times_out_at_64_t1() -> None:
    tx = started()
    log = run_clock(tx, 100.0)
    retransmits = [t for t, a in log if isinstance(a, Send)]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert (32.0, Timeout(Timer.B)) in log
    assert log[-1] == (32.0, Terminated())
    assert tx.state is State.TERMINATED
    assert tx.next_deadline() is None


def test_invite_tcp_never_retransmits_and_timer_b_still_applies() -> None:
    tx = ClientTransaction(request(), reliable=True)
    assert tx.start(0.0) == [Send(tx.request), StartTimer(Timer.B, 32.0)]
    log = run_clock(tx, 100.0)
    assert [a for _, a in log] == [Timeout(Timer.B), Terminated()]


@pytest.mark.parametrize("t1", [0.1, 0.25, 1.0])
def test_t1_is_configurable(t1: float) -> None:
    tx = started(t1=t1, t2=max(4.0, t1))
    log = run_clock(tx, 1000.0)
    first_retransmit = next(t for t, a in log if isinstance(a, Send))
    assert first_retransmit == pytest.approx(t1)
    assert next(t for t, a in log if isinstance(a, Timeout)) == pytest.approx(64 * t1)


def test_provisional_moves_to_proceeding_and_stops_retransmission() -> None:
    tx = started()
    ringing = response_to(tx.request, 180)
    actions = tx.handle(ResponseReceived(ringing), 0.2)
    assert actions == [PassUp(ringing), StopTimer(Timer.A), StopTimer(Timer.B)]
    assert tx.state is State.PROCEEDING
    assert tx.next_deadline() is None
    assert tx.handle(ResponseReceived(ringing), 0.3) == [PassUp(ringing)]


@pytest.mark.parametrize("first", [None, 183])
def test_2xx_passes_up_and_terminates_without_ack(first: int | None) -> None:
    tx = started()
    if first:
        tx.handle(ResponseReceived(response_to(tx.request, first)), 0.1)
    ok = response_to(tx.request, 200)
    actions = tx.handle(ResponseReceived(ok), 1.0)
    assert PassUp(ok) in actions
    assert sends(actions) == []
    assert actions[-1] == Terminated()


def test_non_2xx_final_is_acked_on_the_same_branch() -> None:
    tx = ClientTransaction(request(routes=2), reliable=False)
    tx.start(0.0)
    busy = response_to(tx.request, 486)
    actions = tx.handle(ResponseReceived(busy), 0.7)
    assert actions[0] == PassUp(busy)
    (ack,) = sends(actions)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(tx.request.uri)
    assert ack.top_via is not None
    assert ack.top_via.branch == BRANCH
    assert len(ack.via) == 1
    assert ack.cseq is not None
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.to_tag == "uas1"
    assert ack.from_tag == "from1"
    assert ack.call_id == "call-1@switch"
    assert [str(r.uri) for r in ack.route] == [str(r.uri) for r in tx.request.route]
    assert ack.body == b""
    assert StartTimer(Timer.D, 0.7 + 32.0) in actions
    assert tx.state is State.COMPLETED


def test_completed_reacks_retransmitted_final_without_passing_up() -> None:
    tx = started()
    busy = response_to(tx.request, 486)
    first_ack = sends(tx.handle(ResponseReceived(busy), 1.0))[0]
    again = tx.handle(ResponseReceived(busy), 2.0)
    assert again == [Send(first_ack)]
    assert tx.handle(ResponseReceived(response_to(tx.request, 180)), 2.5) == []
    log = run_clock(tx, 100.0)
    assert log == [(33.0, Terminated())]


def test_completed_over_tcp_terminates_at_once() -> None:
    tx = started(reliable=True)
    actions = tx.handle(ResponseReceived(response_to(tx.request, 503)), 1.0)
    assert actions[-1] == Terminated()
    assert len(sends(actions)) == 1
    assert not any(isinstance(a, StartTimer) for a in actions)


def test_transport_error_informs_tu() -> None:
    tx = started()
    actions = tx.handle(TransportError("ICMP unreachable"), 0.1)
    assert actions[0] == TransportFailure("ICMP unreachable")
    assert actions[-1] == Terminated()


def test_stale_timer_callback_is_ignored() -> None:
    tx = started()
    tx.handle(ResponseReceived(response_to(tx.request, 100)), 0.1)
    assert tx.handle(TimerFired(Timer.A), 0.5) == []


def test_ack_has_no_client_transaction() -> None:
    with pytest.raises(TransactionUsageError):
        ClientTransaction(request("ACK"), reliable=False)


# ---------------------------------------------------------------- non-INVITE, 17.1.2


def test_non_invite_udp_e_doubles_capped_at_t2_until_f() -> None:
    tx = ClientTransaction(request("OPTIONS"), reliable=False)
    assert tx.start(0.0)[1:] == [StartTimer(Timer.E, 0.5), StartTimer(Timer.F, 32.0)]
    log = run_clock(tx, 100.0)
    retransmits = [t for t, a in log if isinstance(a, Send)]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [a for t, a in log if t == 32.0] == [
        Timeout(Timer.F),
        StopTimer(Timer.E),
        Terminated(),
    ]


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    tx = started("BYE")
    tx.handle(ResponseReceived(response_to(tx.request, 100)), 0.1)
    assert tx.state is State.PROCEEDING
    log = run_clock(tx, 20.0)
    assert [t for t, a in log if isinstance(a, Send)] == [0.5, 4.5, 8.5, 12.5, 16.5]


def test_non_invite_tcp_has_no_e() -> None:
    tx = ClientTransaction(request("BYE"), reliable=True)
    assert tx.start(0.0) == [Send(tx.request), StartTimer(Timer.F, 32.0)]


@pytest.mark.parametrize(("reliable", "k"), [(False, 5.0), (True, 0.0)])
@pytest.mark.parametrize("status", [200, 404])
def test_non_invite_final_waits_timer_k(reliable: bool, k: float, status: int) -> None:
    tx = started("BYE", reliable=reliable)
    final = response_to(tx.request, status)
    actions = tx.handle(ResponseReceived(final), 2.0)
    assert actions[0] == PassUp(final)
    assert sends(actions) == []
    if k:
        assert StartTimer(Timer.K, 2.0 + k) in actions
        assert tx.handle(ResponseReceived(final), 3.0) == []
        assert run_clock(tx, 100.0) == [(2.0 + k, Terminated())]
    else:
        assert actions[-1] == Terminated()


def test_t4_is_configurable() -> None:
    tx = started("BYE", t4=2.5)
    actions = tx.handle(ResponseReceived(response_to(tx.request, 200)), 1.0)
    assert StartTimer(Timer.K, 3.5) in actions


# ---------------------------------------------------------------- CANCEL and the layer


def test_make_cancel_follows_9_1() -> None:
    inv = request(routes=1)
    cancel = make_cancel(inv)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(inv.uri)
    assert cancel.top_via == inv.top_via
    assert cancel.cseq is not None
    assert (cancel.cseq.seq, cancel.cseq.method) == (7, "CANCEL")
    assert (cancel.call_id, cancel.from_tag, cancel.to_tag) == ("call-1@switch", "from1", None)
    assert len(cancel.route) == 1
    with pytest.raises(TransactionUsageError):
        make_cancel(request("ACK"))


def test_layer_routes_responses_by_branch_and_method() -> None:
    layer = TransactionLayer()
    inv_tx, out = layer.send_request(request(), 0.0, reliable=False, peer=("198.51.100.7", 5060))
    assert out[0].action == Send(inv_tx.request)
    cancel_tx, _ = layer.send_request(make_cancel(inv_tx.request), 1.0, reliable=False)
    assert len(layer) == 2
    cancel_ok = response_to(cancel_tx.request, 200)
    matched = layer.receive(cancel_ok, 1.1)
    assert not isinstance(matched, Unmatched)
    assert matched.transaction is cancel_tx
    terminated = layer.receive(response_to(inv_tx.request, 487), 1.2)
    assert not isinstance(terminated, Unmatched)
    assert terminated.transaction is inv_tx
    assert inv_tx.state is State.COMPLETED
    other = response_to(request(branch="z9hG4bK-elsewhere"), 200)
    assert isinstance(layer.receive(other, 1.3), Unmatched)


def test_cancel_waits_for_a_provisional_response() -> None:
    layer = TransactionLayer()
    inv, _ = layer.send_request(request(), 0.0, reliable=False, peer="carrier-a")
    assert layer.cancel(inv, 0.1) == ()  # Calling: not yet (9.1)
    assert len(layer) == 1
    result = layer.receive(response_to(inv.request, 180), 0.2)
    assert not isinstance(result, Unmatched)
    cancel_outputs = [o for o in result.outputs if o.transaction is not inv]
    sent = [o.action.message for o in cancel_outputs if isinstance(o.action, Send)]
    assert len(sent) == 1
    assert isinstance(sent[0], Request)
    assert sent[0].method == "CANCEL"
    assert sent[0].top_via == inv.request.top_via
    assert cancel_outputs[0].transaction.peer == "carrier-a"
    assert len(layer) == 2
    # Only once: a second 1xx sends nothing more.
    again = layer.receive(response_to(inv.request, 183), 0.3)
    assert not isinstance(again, Unmatched)
    assert all(o.transaction is inv for o in again.outputs)


def test_cancel_in_proceeding_is_immediate_and_after_final_is_moot() -> None:
    layer = TransactionLayer()
    inv, _ = layer.send_request(request(), 0.0, reliable=True)
    layer.receive(response_to(inv.request, 100), 0.1)
    out = layer.cancel(inv, 0.2)
    assert isinstance(out[0].action, Send)
    assert out[0].transaction.kind is Kind.CLIENT_NON_INVITE
    layer.receive(response_to(inv.request, 487), 0.3)
    assert layer.cancel(inv, 0.4) == ()
    pending, _ = layer.send_request(request(branch="z9hG4bK-2"), 1.0, reliable=False)
    layer.cancel(pending, 1.1)
    layer.receive(response_to(pending.request, 603), 1.2)  # final before any 1xx
    assert len(layer) == 2  # the first CANCEL and the INVITE in Completed; no new CANCEL
    with pytest.raises(TransactionUsageError):
        layer.cancel(layer.send_request(request("BYE", "z9hG4bK-3"), 2.0, reliable=True)[0], 2)


def test_layer_deadlines_and_forgetting() -> None:
    layer = TransactionLayer()
    tx, _ = layer.send_request(request(), 0.0, reliable=False)
    layer.send_request(request("OPTIONS", "z9hG4bK-2"), 0.2, reliable=True)
    assert layer.next_deadline() == 0.5
    out = layer.handle_timers(0.5)
    assert [o.action for o in out] == [Send(tx.request), StartTimer(Timer.A, 1.5)]
    assert layer.next_deadline() == 1.5
    ok = response_to(tx.request, 200)
    layer.receive(ok, 0.6)
    assert len(layer) == 1
    assert layer.next_deadline() == 32.2  # Timer F of the OPTIONS
    assert isinstance(layer.receive(ok, 0.7), Unmatched)  # 2xx retransmission: stateless
    layer.handle_timers(40.0)
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_layer_next_deadline_follows_timers_started_stopped_and_fired() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS", "z9hG4bK-1"), 0.0, reliable=True)
    assert layer.next_deadline() == 32.0  # Timer F
    invite, _ = layer.send_request(request(), 1.0, reliable=False)
    assert layer.next_deadline() == 1.5  # Timer A, earlier
    layer.receive(response_to(invite.request, 180), 1.1)  # stops A and B
    assert layer.next_deadline() == 32.0
    bye, _ = layer.send_request(request("BYE", "z9hG4bK-3"), 2.0, reliable=False)
    assert layer.next_deadline() == 2.5  # Timer E
    layer.handle_timers(2.5)
    assert layer.next_deadline() == 3.5  # E again, doubled
    layer.receive(response_to(bye.request, 200), 3.0)  # E, F stopped; K started
    assert layer.next_deadline() == 8.0
    layer.handle_timers(40.0)
    assert layer.next_deadline() is None
    assert len(layer) == 1  # the INVITE in Proceeding (Timer C is the TU's)


def test_layer_refuses_reused_or_legacy_branch() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), 0.0, reliable=False)
    with pytest.raises(TransactionUsageError):
        layer.send_request(request(), 0.0, reliable=False)
    with pytest.raises(TransactionUsageError):
        layer.send_request(request(branch="1234"), 0.0, reliable=False)


# ---------------------------------------------------------------- table and properties

ORDER = [State.CALLING, State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED]


@pytest.mark.parametrize("kind", [Kind.CLIENT_INVITE, Kind.CLIENT_NON_INVITE])
def test_table_only_moves_forward(kind: Kind) -> None:
    for state, row in TRANSITIONS[kind].items():
        for new_state, _ in row.values():
            assert ORDER.index(new_state) >= ORDER.index(state)
        assert state in STATE_TIMERS[kind]


client_events = st.one_of(
    st.builds(lambda s: ("response", s), st.sampled_from([100, 180, 183, 200, 202, 302, 486, 603])),
    st.builds(lambda t: ("timer", t), st.sampled_from(list(Timer))),
    st.just(("transport", 0)),
    st.builds(lambda d: ("advance", d), st.floats(min_value=0.0, max_value=40.0)),
)


@given(
    method=st.sampled_from(["INVITE", "BYE"]),
    reliable=st.booleans(),
    events=st.lists(client_events, max_size=30),
)
def test_random_event_sequences_keep_invariants(
    method: str, reliable: bool, events: list[tuple[str, float]]
) -> None:
    tx = ClientTransaction(request(method), reliable=reliable)
    now = 0.0
    actions = tx.start(now)
    terminated = False
    for kind, value in events:
        before = tx.state
        if kind == "response":
            actions = tx.handle(ResponseReceived(response_to(tx.request, int(value))), now)
        elif kind == "timer":
            actions = tx.handle(TimerFired(Timer(value)), now)
        elif kind == "transport":
            actions = tx.handle(TransportError(), now)
        else:
            now += value
            actions = tx.handle_timers(now)
        assert ORDER.index(tx.state) >= ORDER.index(before)
        if terminated:
            assert actions == []
        if Terminated() in actions:
            assert actions[-1] == Terminated()
            assert tx.state is State.TERMINATED
            terminated = True
        for deadline in tx.deadlines().values():
            assert deadline > now or deadline == now
        assert set(tx.deadlines()) <= set(STATE_TIMERS[tx.kind][tx.state])
    assert terminated == (tx.state is State.TERMINATED)


layer_events = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(["INVITE", "OPTIONS"]), st.booleans()),
        st.tuples(st.just("respond"), st.integers(0, 9), st.sampled_from([100, 180, 200, 486])),
        st.tuples(st.just("advance"), st.floats(0.0, 20.0), st.just(False)),
    ),
    max_size=40,
)


@given(layer_events)
def test_layer_bookkeeping_matches_its_transactions(
    events: list[tuple[str, object, object]],
) -> None:
    """The deadline queue with lazy deletion must agree with the transactions' own deadlines."""
    layer = TransactionLayer()
    live: list[ClientTransaction] = []
    now = 0.0
    for n, (kind, a, b) in enumerate(events):
        if kind == "send":
            assert isinstance(a, str)
            assert isinstance(b, bool)
            tx, _ = layer.send_request(request(a, f"z9hG4bK-{n}"), now, reliable=b)
            live.append(tx)
        elif kind == "respond" and live:
            assert isinstance(a, int)
            assert isinstance(b, int)
            tx = live[a % len(live)]
            result = layer.receive(response_to(tx.request, b), now)
            assert not isinstance(result, Unmatched)
            assert result.transaction is tx
        elif kind == "advance":
            assert isinstance(a, float)
            now += a
            done: set[int] = set()
            for output in layer.handle_timers(now):
                assert id(output.transaction) not in done  # nothing after Terminated
                if isinstance(output.action, Terminated):
                    done.add(id(output.transaction))
        live = [tx for tx in live if not tx.terminated]
        assert len(layer) == len(live)
        expected = min((d for tx in live for d in tx.deadlines().values()), default=None)
        assert layer.next_deadline() == expected
