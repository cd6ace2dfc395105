"""The pipeline's stages against a real configuration and real decks, without sockets."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest

from kept_cdrs import Sink
from softswitch.call.live import LiveState
from softswitch.call.refusal import END_REASONS, EndReason, refuse
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrRecord
from softswitch.config import load_config
from softswitch.proxy import pipeline as pipeline_module
from softswitch.proxy.accounting import RefusedInvite, Retransmissions, build_cdr
from softswitch.proxy.calls import Admission, Attempt, Call, Target
from softswitch.proxy.engine import Reply
from softswitch.proxy.forward import check_request
from softswitch.proxy.pipeline import CallContext, Pipeline
from softswitch.sip import Request, SipParseError, parse_message, parse_reason, validate_request
from softswitch.sip.digest import DigestAuthenticator
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow, Malformed, Transport

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


def invite(number: str = "+441234567", call_id: str = "c1", max_forwards: int = 70) -> Request:
    text = (
        f"INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        f"Max-Forwards: {max_forwards}\r\nFrom: <sip:1000@10.0.0.5>;tag=f\r\n"
        "To: <sip:x@127.0.0.1>\r\n"
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
    assert (decision.status, decision.end_reason) == (403, EndReason.AUTH_FAILED)
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
    refused = Reply(403, end_reason=EndReason.AUTH_FAILED)
    p.account_refusal(request, flow(), refused, now)
    (cdr,) = sink.records
    assert (cdr.end_reason, cdr.status) == (EndReason.AUTH_FAILED, 403)


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
    call.end_reason, call.final_status, call.end_at = EndReason.ALL_GATEWAYS_FAILED, 500, now
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
    assert (second.status, second.end_reason) == (503, EndReason.LIMIT_EXCEEDED)
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
    assert (timeout.status, timeout.end_reason) == (408, EndReason.GATEWAY_TIMEOUT)
    call.responses.append(503)
    failed = p.exhausted(call, 500)
    assert (failed.status, failed.end_reason) == (500, EndReason.ALL_GATEWAYS_FAILED)
    # The cause follows the status sent (RFC 3398: 500 -> 41), and so does the text.
    (reason,) = [parse_reason(v) for name, v in failed.headers if name == "Reason"]
    assert (reason.cause, reason.text) == (41, "temporary failure")
    busy = p.exhausted(call, 486)
    (reason,) = [parse_reason(v) for name, v in busy.headers if name == "Reason"]
    assert (busy.status, reason.cause, reason.text) == (486, 17, "user busy")


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
    assert (decision.status, decision.end_reason) == (503, EndReason.SYSTEM_SHUTDOWN)


# ----------------------------------------------------------------------------- refusals
# Every INVITE refused from an address that matches an account gets a CDR with the end
# reason (docs/cdr.md); the engine hands each refusal to ``account_refusal``.

REFUSALS = (
    CONFIG
    + """
[[accounts]]
id = "off"
ips = ["10.0.3.1"]
enabled = false
rate_deck = "sell"
routing_plan = "main"

[[accounts]]
id = "deny"
ips = ["10.0.4.1"]
rate_deck = "sell"
routing_plan = "main"
deny = ["4490"]

[[accounts]]
id = "cps"
ips = ["10.0.5.1"]
rate_deck = "sell"
routing_plan = "main"
max_cps = 1

[[accounts]]
id = "norate"
ips = ["10.0.6.1"]
routing_plan = "main"

[[accounts]]
id = "tech"
ips = ["10.0.7.1"]
tech_prefix = "1234#"
rate_deck = "sell"
routing_plan = "main"
"""
)


@pytest.fixture
def refusing(tmp_path: Path) -> tuple[Pipeline, Sink]:
    sink = Sink()
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    return Pipeline(make_snapshot(tmp_path, REFUSALS), LiveState(), nonces, sink), sink


def refused_and_recorded(
    p: Pipeline, sink: Sink, request: Request, ip: str, decision: Admission | Reply | None = None
) -> tuple[Reply, CdrRecord]:
    """Admit ``request`` from ``ip`` (or take the engine's ``decision``), expect a refusal,
    and hand it to ``account_refusal`` as the engine does: one CDR."""
    now = time.time()
    if decision is None:
        decision = p.admit(request, flow(ip), now)
    assert isinstance(decision, Reply)
    before = len(sink.records)
    p.account_refusal(request, flow(ip), decision, now)
    assert len(sink.records) == before + 1, decision
    cdr = sink.records[-1]
    assert (cdr.end_reason, cdr.status) == (decision.end_reason, decision.status)
    assert cdr.account_id == decision.account_id
    assert cdr.source == f"{ip}:5060"
    assert cdr.answer_at is None
    assert (cdr.billsec, cdr.sell_cost, cdr.buy_cost) == (0, None, None)
    return decision, cdr


@pytest.mark.parametrize(
    ("ip", "number", "end_reason", "status", "account"),
    [
        ("10.0.7.1", "5555%23441234567", EndReason.AUTH_FAILED, 403, None),  # wrong tech prefix
        ("10.0.3.1", "441234567", EndReason.ACCOUNT_DISABLED, 403, "off"),
        ("10.0.4.1", "44901234", EndReason.FORBIDDEN_DESTINATION, 403, "deny"),
        ("10.0.0.5", "44abc", EndReason.INVALID_NUMBER, 484, "cust"),
        ("10.0.7.1", "1234#44*1", EndReason.INVALID_NUMBER, 484, "tech"),
        ("10.0.0.5", "331234567", EndReason.NO_RATE, 404, "cust"),
        ("10.0.6.1", "331234567", EndReason.NO_ROUTE, 404, "norate"),
    ],
)
def test_each_stage_refusal_from_a_customer_address_has_a_cdr(
    refusing: tuple[Pipeline, Sink],
    ip: str,
    number: str,
    end_reason: EndReason,
    status: int,
    account: str | None,
) -> None:
    p, sink = refusing
    request = invite(number)
    reply, cdr = refused_and_recorded(p, sink, request, ip)
    assert (reply.end_reason, reply.status, reply.account_id) == (end_reason, status, account)
    assert cdr.q850 == END_REASONS[end_reason][1]
    assert cdr.callee_dialed == number.replace("%23", "#")
    if account is not None:
        assert p.live.account_calls(account) == 0  # nothing left counted


def test_limit_refusals_have_a_cdr(refusing: tuple[Pipeline, Sink]) -> None:
    p, sink = refusing
    first = p.admit(invite(call_id="one"), flow(), time.time())
    assert isinstance(first, Admission)
    reply, cdr = refused_and_recorded(p, sink, invite(call_id="two"), "10.0.0.5")
    assert (reply.status, reply.end_reason, cdr.account_id) == (
        503,
        EndReason.LIMIT_EXCEEDED,
        "cust",
    )
    assert "max_calls" in cdr.detail
    assert p.live.account_calls("cust") == 1  # the first call's slot only
    assert isinstance(p.admit(invite(call_id="three"), flow("10.0.5.1"), time.time()), Admission)
    reply, cdr = refused_and_recorded(p, sink, invite(call_id="four"), "10.0.5.1")
    assert (reply.status, reply.end_reason, cdr.account_id) == (
        503,
        EndReason.LIMIT_EXCEEDED,
        "cps",
    )
    assert "max_cps" in cdr.detail


def test_no_gateway_refusal_has_a_cdr_and_releases_the_slot(
    refusing: tuple[Pipeline, Sink],
) -> None:
    p, sink = refusing
    p.live.mark_gateway("a", False)
    p.live.mark_gateway("b", False)
    reply, cdr = refused_and_recorded(p, sink, invite(), "10.0.0.5")
    assert (reply.status, reply.end_reason, cdr.account_id) == (503, EndReason.NO_GATEWAY, "cust")
    assert "a: down" in cdr.detail
    assert p.live.account_calls("cust") == 0


def test_draining_refusal_from_a_customer_address_has_a_cdr(
    refusing: tuple[Pipeline, Sink],
) -> None:
    p, sink = refusing
    p.draining = True
    reply, cdr = refused_and_recorded(p, sink, invite(), "10.0.0.5")
    assert (reply.status, cdr.end_reason, cdr.q850) == (503, EndReason.SYSTEM_SHUTDOWN, 41)


@pytest.mark.parametrize(
    ("request_", "status", "end_reason"),
    [
        (invite(max_forwards=0), 483, EndReason.TOO_MANY_HOPS),
        (
            parse_message(
                bytes(invite()).replace(
                    b"Via: SIP/2.0/UDP 10.0.0.5",
                    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKy\r\nVia: SIP/2.0/UDP 10.0.0.5",
                    1,
                )
            ),
            482,
            EndReason.LOOP_DETECTED,
        ),
        (
            parse_message(bytes(invite()).replace(b"\r\n\r\n", b"\r\nProxy-Require: foo\r\n\r\n")),
            420,
            EndReason.INVALID_REQUEST,
        ),
    ],
)
def test_the_engines_sanity_refusals_from_a_customer_address_have_a_cdr(
    refusing: tuple[Pipeline, Sink], request_: Request, status: int, end_reason: EndReason
) -> None:
    """The refusals the engine makes before admission (RFC 3261 16.3), built as it builds
    them (``proxy.engine._on_invite``): no account is known yet, the address names one."""
    assert isinstance(request_, Request)
    p, sink = refusing
    sanity = check_request(request_, lambda host, port: (host, port) == ("10.0.0.5", 5060))
    assert sanity is not None
    assert sanity[0] == status
    engine_reply = Reply.of(refuse(end_reason, sanity[1], status=status))
    _, cdr = refused_and_recorded(p, sink, request_, "10.0.0.5", engine_reply)
    assert (cdr.status, cdr.end_reason, cdr.account_id) == (status, end_reason, None)


# ----------------------------------------------------------------------------- malformed
# What the transport refuses before the engine sees it (a stateless 400/416/505) reaches
# ``Pipeline.malformed``: a customer's INVITE is a refused attempt with a CDR, anything
# else (a stranger's above all) only a counter.


def refused_by_transport(data: bytes, ip: str = "10.0.0.5", *, stream: bool = False) -> Malformed:
    """The ``Malformed`` the transport hands over for ``data`` from ``ip``, built as it
    builds it (``TransportLayer._on_message_bytes``)."""
    source = flow(ip)
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as exc:
        is_request = not data.startswith(b"SIP/")
        answered = is_request and any(name == "Via" for name, _ in exc.partial)
        return Malformed(
            source, exc.status, exc.reason, answered, is_request, None, exc.partial, data
        )
    assert isinstance(message, Request)
    refusal = validate_request(message)
    assert refusal is not None, "not malformed"
    return Malformed(source, refusal[0], refusal[1], True, True, message, (), data)


def broken_invite(number: str = "1234%23441234567", call_id: str = "m1") -> bytes:
    """An INVITE whose Contact line has no colon after its name: a parse error after the
    essential header fields."""
    return bytes(invite(number, call_id)).replace(b"Contact: ", b"Contact ")


def test_a_malformed_invite_from_a_customer_address_is_recorded_from_what_was_salvaged(
    refusing: tuple[Pipeline, Sink],
) -> None:
    p, sink = refusing
    refused = refused_by_transport(broken_invite())
    assert refused.message is None  # a parse error: salvaged header lines only
    assert p.malformed(refused) is True
    (cdr,) = sink.records
    assert (cdr.status, cdr.end_reason, cdr.q850) == (400, EndReason.INVALID_REQUEST, 127)
    assert (cdr.call_id, cdr.caller, cdr.callee_dialed) == ("m1", "1000", "1234#441234567")
    assert (cdr.account_id, cdr.source) == (None, "10.0.0.5:5060")
    assert cdr.detail == "Bad header field name"
    assert cdr.answer_at is None
    assert cdr.attempts == ()
    assert p.guard.refusals.by_source() == {}  # a row, not a counter


@pytest.mark.parametrize(
    ("data", "status", "reason", "dialed"),
    [
        # Refused by validate_request: the parsed INVITE is there, recorded as ever.
        (
            bytes(invite()).replace(b"Max-Forwards: 70", b"Max-Forwards: many"),
            400,
            "Bad Max-Forwards header",
            "+441234567",
        ),
        (bytes(invite()).replace(b"sip:+441234567@", b"mailto:x@", 1), 416, None, None),
        (bytes(invite()).replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1), 505, None, "+441234567"),
    ],
)
def test_a_customers_malformed_invite_keeps_the_status_it_was_answered(
    refusing: tuple[Pipeline, Sink],
    data: bytes,
    status: int,
    reason: str | None,
    dialed: str | None,
) -> None:
    p, sink = refusing
    assert p.malformed(refused_by_transport(data)) is True
    (cdr,) = sink.records
    assert (cdr.status, cdr.end_reason, cdr.q850) == (status, EndReason.INVALID_REQUEST, 127)
    assert (cdr.call_id, cdr.caller) == ("c1", "1000")
    if reason is not None:
        assert cdr.detail == reason
    if dialed is not None:
        assert cdr.callee_dialed == dialed


def test_what_cannot_be_salvaged_is_left_empty(refusing: tuple[Pipeline, Sink]) -> None:
    """An unreadable Request-Line and From, no Call-ID: the CDR is still written (the CSeq
    says INVITE), with empty fields rather than guesses."""
    p, sink = refusing
    data = (
        b"\xff\xfe garbage\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKz\r\n"
        b"From: <<<\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"this is no header\r\n\r\n"
    )
    refused = refused_by_transport(data)
    assert refused.start_line is None
    assert refused.method == "INVITE"
    assert p.malformed(refused) is True
    (cdr,) = sink.records
    assert (cdr.call_id, cdr.caller, cdr.callee_dialed) == ("", "", "")
    assert (cdr.status, cdr.end_reason) == (400, EndReason.INVALID_REQUEST)


def test_an_unanswered_malformed_invite_says_so(refusing: tuple[Pipeline, Sink]) -> None:
    p, sink = refusing
    data = broken_invite().replace(b"Via: ", b"Via ", 1)  # the error comes before any Via
    refused = refused_by_transport(data)
    assert not refused.answered
    assert p.malformed(refused) is True
    (cdr,) = sink.records
    assert cdr.detail == "Bad header field name; not answered: no Via to answer to"


def test_a_retransmitted_malformed_invite_is_one_attempt(refusing: tuple[Pipeline, Sink]) -> None:
    """UDP retransmissions are answered statelessly each time, but recorded once."""
    p, sink = refusing
    for _ in range(3):
        p.malformed(refused_by_transport(broken_invite()))
    p.malformed(refused_by_transport(broken_invite(call_id="m2")))  # another attempt
    p.malformed(refused_by_transport(broken_invite(), "10.0.3.1"))  # another source
    assert [(r.call_id, r.source) for r in sink.records] == [
        ("m1", "10.0.0.5:5060"),
        ("m2", "10.0.0.5:5060"),
        ("m1", "10.0.3.1:5060"),
    ]


def test_a_strangers_malformed_invite_is_counted_and_nothing_more_is_read(
    refusing: tuple[Pipeline, Sink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source decides before the method or any salvage: a flood of garbage from
    strangers costs a cached lookup and a counter, as it did."""
    p, sink = refusing

    def unread(self: Malformed) -> str:
        raise AssertionError("a stranger's message was read further")

    monkeypatch.setattr(Malformed, "method", property(unread))
    monkeypatch.setattr(Malformed, "start_line", property(unread))
    for _ in range(2):
        assert p.malformed(refused_by_transport(broken_invite(), "203.0.113.9")) is False
    assert sink.records == []
    assert p.guard.refusals.by_source() == {"203.0.113.9": {"malformed": 2}}


def test_a_customers_malformed_request_other_than_invite_is_only_counted(
    refusing: tuple[Pipeline, Sink],
) -> None:
    p, sink = refusing
    options = broken_invite().replace(b"INVITE", b"OPTIONS")
    assert p.malformed(refused_by_transport(options)) is False
    response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKx\r\n"
        b"CSeq: 1 INVITE\r\nX\r\n\r\n"
    )
    refused = refused_by_transport(response)
    assert (refused.is_request, refused.method) == (False, None)
    assert p.malformed(refused) is False
    assert sink.records == []
    assert p.guard.refusals.by_source() == {"10.0.0.5": {"malformed": 2}}


def test_retransmissions_forget_after_the_window_and_past_the_bound() -> None:
    seen = Retransmissions(window=32.0, max_entries=3)
    assert seen.first("a", 0.0) is True
    assert seen.first("a", 31.9) is False
    assert seen.first("a", 32.0) is True  # the window is over: a new attempt
    for key in "bcd":
        assert seen.first(key, 33.0) is True
    assert seen.first("a", 33.0) is True  # forgotten: the oldest went first
    assert seen.first("d", 33.0) is False


def test_a_refused_invite_reads_the_same_from_a_request_or_its_salvage() -> None:
    request = invite("1234%23441234567", "same")
    refused = refused_by_transport(broken_invite("1234%23441234567", "same"))
    assert refused.message is None
    assert RefusedInvite.salvaged(refused) == RefusedInvite.of(request)
    assert RefusedInvite.of(request) == RefusedInvite("same", "1000", "1234#441234567")


# ----------------------------------------------------------------------------- a bug
# An exception after the limits counted the call must give the account's slot back.


@pytest.mark.parametrize("stage", ["route_call", "select_gateways", "routing_trace"])
def test_an_exception_after_the_limits_releases_the_slot(
    refusing: tuple[Pipeline, Sink],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stage: str,
) -> None:
    p, sink = refusing
    caplog.set_level(logging.INFO, logger="softswitch.proxy.pipeline")  # the routing trace

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{stage} is broken")

    monkeypatch.setattr(pipeline_module, stage, broken)
    for attempt in range(3):  # max_calls = 1: a leaked slot would refuse the second
        reply, cdr = refused_and_recorded(p, sink, invite(call_id=f"c{attempt}"), "10.0.0.5")
        assert (reply.status, reply.end_reason, reply.account_id) == (
            500,
            EndReason.INTERNAL_ERROR,
            "cust",
        )
        assert p.live.account_calls("cust") == 0
        assert cdr.account_id == "cust"
    assert f"{stage} is broken" in caplog.text  # the traceback is logged
    monkeypatch.undo()
    assert isinstance(p.admit(invite(call_id="after"), flow(), time.time()), Admission)
    assert p.live.account_calls("cust") == 1


# ----------------------------------------------------------------------------- billing
# A call cut at max_duration is billed the maximum, not the maximum plus the BYE's lag.


def answered_call(p: Pipeline, *, max_duration: float, lasted: float) -> Call:
    now = time.time()
    admission = p.admit(invite(), flow(), now)
    assert isinstance(admission, Admission)
    admission = Admission(
        admission.account_id,
        admission.number_dialed,
        admission.number,
        max_duration,
        admission.attempt_cap,
        admission.time_budget,
        admission.policy,
    )
    call = call_for(invite(), admission, now)
    target = p.next_target(call, now)
    assert isinstance(target, Target)
    call.attempts.append(
        Attempt(target.gateway_id, target.request_uri, target.number_sent, now, status=200)
    )
    call.answered_gateway = target.gateway_id
    call.answer_at = now + 1.0
    call.end_at = call.answer_at + lasted
    call.final_status = 200
    return call


@pytest.mark.parametrize(
    ("end_reason", "lasted", "duration", "billsec"),
    [
        (EndReason.MAX_DURATION, 3.003, 3.0, 3),  # the switch's BYE, 3 ms after the timer
        (EndReason.NORMAL_CLEARING, 3.2, 3.0, 3),  # a BYE racing the cut-off: never above the cap
        (EndReason.NORMAL_CLEARING, 2.001, 2.001, 3),  # below the cap: rounded up as ever
    ],
)
def test_billed_duration_never_exceeds_max_duration(
    tmp_path: Path, end_reason: EndReason, lasted: float, duration: float, billsec: int
) -> None:
    (tmp_path / "sell.csv").write_text(
        "prefix,rate,initial_increment,subsequent_increment\n44,0.60,1,1\n"
    )
    (tmp_path / "a.csv").write_text(
        "prefix,rate,initial_increment,subsequent_increment\n44,0.006,1,1\n"
    )
    (tmp_path / "b.csv").write_text("prefix,rate\n44,0.02\n")
    (tmp_path / "switch.toml").write_text(CONFIG)
    snapshot = build_snapshot(load_config(tmp_path / "switch.toml"))
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    p = Pipeline(snapshot, LiveState(), nonces, Sink())
    call = answered_call(p, max_duration=3.0, lasted=lasted)
    call.end_reason = end_reason
    context = call.admission.policy
    assert isinstance(context, CallContext)
    cdr = build_cdr(call, context.snapshot, context.account, context.plan)
    assert (cdr.duration, cdr.billsec) == (duration, billsec)
    assert cdr.gateway_id == "a"
    # 1/1 increments: 0.60 and 0.006 a minute are 0.01 and 0.0001 a second.
    assert cdr.sell_cost == Decimal("0.01") * billsec
    assert cdr.buy_cost == Decimal("0.0001") * billsec
