"""The pipeline's stages against a real configuration and real decks, without sockets."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from softswitch.call.live import LiveState
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrRecord
from softswitch.config import load_config
from softswitch.proxy.calls import Admission, Attempt, Call, Target
from softswitch.proxy.engine import Reply
from softswitch.proxy.pipeline import Pipeline
from softswitch.sip import Request, parse_message
from softswitch.sip.digest import DigestAuthenticator
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow, Transport

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"

[defaults]
setup_timeout = 2
max_duration = 60
max_attempts = 4
call_budget = 20

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[rate_decks]]
id = "a"
file = "a.csv"

[[rate_decks]]
id = "b"
file = "b.csv"

[[accounts]]
id = "cust"
ips = ["10.0.0.0/24"]
rate_deck = "sell"
routing_plan = "main"
max_calls = 1

[[gateways]]
id = "a"
address = "192.0.2.1:5070"
rate_deck = "a"
capacity = 1
strip_digits = 2
add_prefix = "777"

[[gateways]]
id = "b"
address = "192.0.2.2:5080"
transport = "tcp"
rate_deck = "b"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["a", "b"]
strategy = "lcr"
"""


class Sink:
    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def write(self, record: CdrRecord) -> Future[None]:
        self.records.append(record)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def enqueue(self, record: CdrRecord) -> None:
        self.records.append(record)


def make_snapshot(tmp_path: Path, config: str = CONFIG) -> Snapshot:
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.10\n")
    (tmp_path / "a.csv").write_text("prefix,rate\n44,0.01\n")
    (tmp_path / "b.csv").write_text("prefix,rate\n44,0.02\n")
    (tmp_path / "switch.toml").write_text(config)
    return build_snapshot(load_config(tmp_path / "switch.toml"))


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[Pipeline, Sink]:
    sink = Sink()
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    return Pipeline(make_snapshot(tmp_path), LiveState(), nonces, sink), sink


def invite(number: str = "+441234567", call_id: str = "c1") -> Request:
    text = (
        f"INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:1000@10.0.0.5>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@10.0.0.5>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def flow(ip: str = "10.0.0.5") -> Flow:
    return Flow(Transport.UDP, ("127.0.0.1", 5060), (ip, 5060))


def call_for(request: Request, admission: Admission, now: float) -> Call:
    return Call(
        call_id=request.call_id or "",
        invite=request,
        caller_flow=flow(),
        server_tx=ServerTransaction(request, reliable=False),
        admission=admission,
        invite_at=now,
        started_mono=0.0,
    )


def test_unknown_source_is_refused_and_counted_not_recorded(
    pipeline: tuple[Pipeline, Sink],
) -> None:
    """A stranger's refusal is a counter per source and reason, never a CDR row."""
    p, sink = pipeline
    now = time.time()
    request = invite()
    decision = p.admit(request, flow("203.0.113.9"), now)
    assert isinstance(decision, Reply)
    assert (decision.status, decision.end_reason) == (403, "auth_failed")
    assert any(name == "Reason" for name, _ in decision.headers)
    p.account_refusal(request, flow("203.0.113.9"), decision, now)
    assert sink.records == []
    assert p.guard.refusals.by_source() == {"203.0.113.9": {"auth_failed": 1}}


def test_unknown_source_is_screened_statelessly(pipeline: tuple[Pipeline, Sink]) -> None:
    """Before any transaction: a stranger's INVITE gets one 403, a known source goes on."""
    p, _ = pipeline
    screen = p.screen(invite(), flow("203.0.113.9"))
    assert screen is not None
    assert (screen.status, screen.why) == (403, "unknown_source")
    assert p.screen(invite(), flow()) is None


def test_a_refusal_from_a_customer_address_is_recorded(pipeline: tuple[Pipeline, Sink]) -> None:
    p, sink = pipeline
    now = time.time()
    request = invite()
    refused = Reply(403, end_reason="auth_failed")
    p.account_refusal(request, flow(), refused, now)
    (cdr,) = sink.records
    assert (cdr.end_reason, cdr.status) == ("auth_failed", 403)


def test_admitted_call_hunts_in_lcr_order_with_rewritten_uris(
    pipeline: tuple[Pipeline, Sink],
) -> None:
    p, sink = pipeline
    now = time.time()
    request = invite()
    admission = p.admit(request, flow(), now)
    assert isinstance(admission, Admission)
    assert admission.number == "441234567"  # the leading + is gone
    assert (admission.attempt_cap, admission.time_budget, admission.max_duration) == (4, 20, 60)
    call = call_for(request, admission, now)
    first = p.next_target(call, now)
    assert isinstance(first, Target)
    assert first.gateway_id == "a"  # 0.01 before 0.02
    assert first.request_uri == "sip:7771234567@192.0.2.1:5070"
    assert first.number_sent == "7771234567"
    assert p.live.gateway_calls("a") == 1
    call.attempts.append(Attempt("a", first.request_uri, first.number_sent, now, status=503))
    p.release_target(call, first)
    assert p.live.gateway_calls("a") == 0
    second = p.next_target(call, now)
    assert isinstance(second, Target)
    assert second.gateway_id == "b"
    assert second.transport is Transport.TCP
    assert second.request_uri.endswith(";transport=tcp")
    assert p.next_target(call, now) is None
    call.end_reason, call.final_status, call.end_at = "all_gateways_failed", 500, now
    p.account(call)
    assert p.live.account_calls("cust") == 0
    assert p.live.gateway_calls("b") == 0  # released with the call
    (cdr,) = sink.records
    assert cdr.account_id == "cust"
    assert cdr.callee_normalised == "441234567"


def test_full_gateway_is_skipped_and_the_account_limit_applies(
    pipeline: tuple[Pipeline, Sink],
) -> None:
    p, _ = pipeline
    now = time.time()
    first = p.admit(invite(call_id="one"), flow(), now)
    assert isinstance(first, Admission)
    call = call_for(invite(call_id="one"), first, now)
    target = p.next_target(call, now)
    assert isinstance(target, Target)
    assert target.gateway_id == "a"
    # the account allows one call: the second INVITE is refused while the first is up
    second = p.admit(invite(call_id="two"), flow(), now)
    assert isinstance(second, Reply)
    assert (second.status, second.end_reason) == (503, "limit_exceeded")
    # gateway a is full (capacity 1): another call of another account would go to b
    p.live.account_release("cust")
    third = p.admit(invite(call_id="three"), flow(), now)
    assert isinstance(third, Admission)
    other = p.next_target(call_for(invite(call_id="three"), third, now), now)
    assert isinstance(other, Target)
    assert other.gateway_id == "b"


def test_exhausted_answers(pipeline: tuple[Pipeline, Sink]) -> None:
    p, _ = pipeline
    now = time.time()
    admission = p.admit(invite(), flow(), now)
    assert isinstance(admission, Admission)
    call = call_for(invite(), admission, now)
    timeout = p.exhausted(call, 408)
    assert (timeout.status, timeout.end_reason) == (408, "gateway_timeout")
    call.responses.append(503)
    failed = p.exhausted(call, 500)
    assert (failed.status, failed.end_reason) == (500, "all_gateways_failed")


def test_a_reload_does_not_change_a_call_in_progress(
    pipeline: tuple[Pipeline, Sink], tmp_path: Path
) -> None:
    p, _ = pipeline
    now = time.time()
    admission = p.admit(invite(), flow(), now)
    assert isinstance(admission, Admission)
    call = call_for(invite(), admission, now)
    new = tmp_path / "new"
    new.mkdir()
    p.snapshot = make_snapshot(new, CONFIG.replace('gateways = ["a", "b"]', 'gateways = ["b"]'))
    target = p.next_target(call, now)
    assert isinstance(target, Target)
    assert target.gateway_id == "a"  # the old plan, which the call started with


def test_draining_refuses_new_calls(pipeline: tuple[Pipeline, Sink]) -> None:
    p, _ = pipeline
    p.draining = True
    decision = p.admit(invite(), flow(), time.time())
    assert isinstance(decision, Reply)
    assert (decision.status, decision.end_reason) == (503, "system_shutdown")
