"""What the engine and the accounting stage work out once instead of per message or per
record must be what they worked out each time: our Via's text, our Record-Route value, and
an answered call's two records (``CdrMemo``)."""

from __future__ import annotations

import datetime as dt
import random
import sys
from pathlib import Path

import pytest

from softswitch.call.refusal import EndReason
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy.accounting import CdrMemo, build_cdr
from softswitch.proxy.calls import Admission, Attempt, Call
from softswitch.proxy.engine import Engine
from softswitch.proxy.forward import Hop, own_uri
from softswitch.proxy.forward import _record_route as record_route
from softswitch.sip import NameAddr, Request, Via, parse_message, parse_via
from softswitch.sip.transaction import ServerTransaction
from softswitch.store.records import seconds_between
from softswitch.transport import Flow, Transport

sys.path.append(str(Path(__file__).resolve().parents[3] / "benches"))
import test_bench_stats as stats_bench


@pytest.mark.parametrize(
    ("transport", "local"),
    [
        (Transport.UDP, ("127.0.0.1", 5060)),
        (Transport.UDP, ("::1", 5062)),
        (Transport.TCP, ("10.0.0.1", 5070)),
    ],
)
def test_our_via_is_what_via_new_writes(transport: Transport, local: tuple[str, int]) -> None:
    engine = Engine(policy=None)  # type: ignore[arg-type]  # no message reaches the policy
    flow = Flow(transport, local, ("192.0.2.1", 5060))
    seen = set()
    for _ in range(3):  # the second and third from the kept head
        text = engine._our_via(flow)
        via = parse_via(text)
        assert via.branch is not None
        assert via.branch.startswith("z9hG4bK")
        assert text == str(Via.new(str(transport), via.host, via.port, branch=via.branch))
        host, port = engine.transport.sent_by(flow)
        assert (via.host.strip("[]"), via.port) == (host, port)
        seen.add(via.branch)
    assert len(seen) == 3  # a fresh branch each time


def test_our_via_heads_stay_bounded_for_ever_new_tcp_ports() -> None:
    """Outgoing TCP from an address with no listener sends from a new local port per
    connection: the kept Via heads must not grow with them (a review found 5,000 kept)."""
    from softswitch.proxy import core

    engine = Engine(policy=None)  # type: ignore[arg-type]  # no message reaches the policy
    for port in range(20000, 21000):
        flow = Flow(Transport.TCP, ("10.0.0.1", port), ("192.0.2.1", 5060))
        text = engine._our_via(flow)
        assert parse_via(text).port == engine.transport.sent_by(flow)[1]
    assert len(engine._via_heads) <= core._VIA_HEADS_MAX


def test_record_route_value_is_the_hops_own_uri() -> None:
    for hop in (
        Hop(Transport.UDP, "127.0.0.1", 5060),
        Hop(Transport.TCP, "::1", 5061),
        Hop(Transport.UDP, "[::1]", 5062),
    ):
        assert record_route(hop) == str(NameAddr(own_uri(hop)))
        assert record_route(hop) == record_route(Hop(hop.transport, hop.host, hop.port))


def _invite() -> Request:
    message = parse_message(
        b"INVITE sip:441234567@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        b'Max-Forwards: 70\r\nFrom: "A" <sip:1000@10.0.0.5>;tag=f\r\n'
        b"To: <sip:x@127.0.0.1>\r\nCall-ID: memo\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(message, Request)
    return message


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, RoutePlan]:
    tmp = tmp_path_factory.mktemp("memo")
    snapshot = build_snapshot(load_config(stats_bench._config(tmp)))
    account = snapshot.config.accounts[0]
    at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    plan = route_call(snapshot, account, "44011234567", at, 1)
    assert isinstance(plan, RoutePlan)
    return snapshot, account, plan


@pytest.mark.parametrize("seed", range(12))
def test_an_answered_calls_records_are_those_built_without_the_memo(
    world: tuple[object, object, RoutePlan], seed: int
) -> None:
    """The call as at its answer, then as at its end (its last attempt ended, the end reason,
    the hang-up side, a detail): each record equals the one built from scratch."""
    snapshot, account, plan = world
    rng = random.Random(seed)
    t0 = 1_700_000_000.0 + rng.random()
    request = _invite()
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.5", 5060))
    admission = Admission(account.id, "441234567", plan.number, 3600.0, 4, 30.0)  # type: ignore[attr-defined]
    call = Call("memo", request, flow, ServerTransaction(request, reliable=False), admission,
                t0, 0.0)  # fmt: skip
    skipped = [("gx", "down")] if rng.random() < 0.5 else []
    gateways = plan.gateway_ids
    for i in range(rng.randint(0, 2)):
        call.attempts.append(
            Attempt(
                gateways[1],
                f"sip:{i}@gw",
                "44",
                t0 + 0.01 * i,
                ended_at=t0 + 0.2 + i,
                status=503,
                outcome="failed",
            )
        )
    last = Attempt(gateways[0], "sip:x@gw", "44", t0 + 0.25)
    call.attempts.append(last)
    if rng.random() < 0.7:
        last.ring_at = call.ring_at = t0 + rng.random() * 3
        call.pdd = round(call.ring_at - t0, 3)
    last.answer_at = call.answer_at = t0 + 3 + rng.random() * 5
    last.status, last.outcome = 200, "answered"
    call.final_status = 200
    call.answered_gateway = gateways[0]
    call.number_sent = "44011234567"

    memo = CdrMemo()
    args = (call, snapshot, account, plan, skipped)
    for costed in (False, True):
        assert build_cdr(*args, costed=costed, memo=memo) == build_cdr(*args, costed=costed)  # type: ignore[arg-type]
    # the end
    call.end_at = last.ended_at = call.answer_at + rng.random() * 100
    call.end_reason = rng.choice([EndReason.NORMAL_CLEARING, EndReason.MAX_DURATION])
    call.hangup_side = rng.choice(["caller", "callee", "switch"])
    if rng.random() < 0.3:
        call.end_detail = "media relay gone"
    if rng.random() < 0.2:  # what the memo was read from changed after all: not reused
        call.ring_at = (call.ring_at or t0) + 0.5
    for costed in (True, False):
        record = build_cdr(*args, costed=costed, memo=memo)  # type: ignore[arg-type]
        assert record == build_cdr(*args, costed=costed)  # type: ignore[arg-type]
        # the PDD worked out once is ``CdrRecord``'s own rule
        assert record.pdd == seconds_between(record.invite_at, record.ring_at)
