"""The guard's two questions: parse this packet at all, and keep state for this request?"""

from __future__ import annotations

import dataclasses

import pytest

from softswitch.config import SecurityConfig
from softswitch.security import SourceGuard
from softswitch.security import guard as guard_module
from softswitch.sip import Request, parse_message

CUSTOMER = ("198.51.100.10", 5060)
GATEWAY = ("198.51.100.20", 5060)
STRANGER = ("203.0.113.66", 5060)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_guard(clock: Clock, **security: object) -> SourceGuard:
    config = dataclasses.replace(SecurityConfig(), **security)  # type: ignore[arg-type]
    return SourceGuard(
        config,
        customer=lambda ip, port: ip == CUSTOMER[0],
        gateways=frozenset({GATEWAY[0]}),
        clock=clock,
    )


def request(method: str = "INVITE", *, agent: str | None = None, auth: bool = False) -> Request:
    lines = [
        f"{method} sip:441234567@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.66;branch=z9hG4bK1",
        "Max-Forwards: 70",
        "From: <sip:a@203.0.113.66>;tag=1",
        "To: <sip:441234567@192.0.2.1>",
        "Call-ID: guard-test",
        f"CSeq: 1 {method}",
    ]
    if agent is not None:
        lines.append(f"User-Agent: {agent}")
    if auth:
        lines.append('Proxy-Authorization: Digest username="u", realm="softswitch", nonce="n"')
    lines += ["Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def no_credentials(request: Request) -> bool:
    return False


def test_pike_blocks_a_stranger_over_the_rate_and_drops_it_before_parsing() -> None:
    clock = Clock()
    guard = make_guard(clock, pike_rate=10, pike_window=1.0, block_time=60.0)
    assert all(guard.packet(STRANGER) for _ in range(10))
    assert not guard.packet(STRANGER)  # the 11th: blocked, dropped (blocked_source = drop)
    assert not guard.packet(STRANGER)
    assert guard.refusals.totals["blocked"] == 1
    clock.now += 60.0
    assert guard.packet(STRANGER)  # the block has expired


def test_workers_split_the_pike_rate_and_a_reload_keeps_the_split() -> None:
    """Two workers that each see half of a stranger's flood block it at about the rate."""
    clock = Clock()
    guards = [make_guard(clock, pike_rate=11, pike_window=1.0, block_time=60.0) for _ in "ab"]
    for guard in guards:
        guard.share_pike(2)
    assert all(guard.packet(STRANGER) for guard in guards for _ in range(6))  # 12 in all
    assert not guards[0].packet(STRANGER)  # the 7th in one worker: over 11 / 2, rounded up
    guards[1].configure(
        dataclasses.replace(guards[1].security, pike_rate=21),
        lambda ip, port: False,
        frozenset(),
    )
    assert guards[1].pike.rate == 11  # a reload's new rate is split too
    guards[1].share_pike(1)
    assert guards[1].pike.rate == 21
    with pytest.raises(ValueError, match="processes"):
        guards[1].share_pike(0)


def test_known_sources_are_never_counted_by_pike() -> None:
    guard = make_guard(Clock(), pike_rate=10)
    assert all(guard.packet(CUSTOMER) for _ in range(1000))
    assert all(guard.packet(GATEWAY) for _ in range(1000))
    assert len(guard.pike) == 0


def test_a_blocked_customer_address_still_gets_through() -> None:
    """A block must not let whoever spoofs a customer's address cut the customer off."""
    guard = make_guard(Clock())
    guard.block(CUSTOMER[0], "test")
    assert guard.packet(CUSTOMER)
    assert guard.screen(request(), CUSTOMER, has_credentials=no_credentials, challenge=None) is None


def test_blocked_source_reply_answers_403_once() -> None:
    clock = Clock()
    guard = make_guard(clock, blocked_source="reply")
    guard.block(STRANGER[0], "test")
    assert guard.packet(STRANGER)  # parsed, so that the screen can answer it
    screen = guard.screen(request(), STRANGER, has_credentials=no_credentials, challenge=None)
    assert screen is not None
    assert (screen.status, screen.why) == (403, "blocked")


def test_a_stranger_gets_a_stateless_403_or_nothing() -> None:
    guard = make_guard(Clock())
    screen = guard.screen(request(), STRANGER, has_credentials=no_credentials, challenge=None)
    assert screen is not None
    assert (screen.status, screen.why) == (403, "unknown_source")
    quiet = make_guard(Clock(), unknown_source="drop")
    dropped = quiet.screen(request(), STRANGER, has_credentials=no_credentials, challenge=None)
    assert dropped is not None
    assert dropped.status is None


def test_a_gateway_may_ping_but_not_place_calls() -> None:
    guard = make_guard(Clock())
    options = guard.screen(
        request("OPTIONS"), GATEWAY, has_credentials=no_credentials, challenge=None
    )
    assert options is None
    invite = guard.screen(request(), GATEWAY, has_credentials=no_credentials, challenge=None)
    assert invite is not None
    assert invite.status == 403


def test_digest_strangers_are_challenged_statelessly_and_credentials_go_on() -> None:
    guard = make_guard(Clock())

    def challenge() -> list[tuple[str, str]]:
        return [("Proxy-Authenticate", 'Digest realm="softswitch", nonce="x"')]

    screen = guard.screen(request(), STRANGER, has_credentials=no_credentials, challenge=challenge)
    assert screen is not None
    assert (screen.status, screen.headers) == (407, tuple(challenge()))
    assert guard.challenges == 1
    assert guard.refusals.totals == {}  # a challenge is not a refusal
    with_credentials = guard.screen(
        request(auth=True), STRANGER, has_credentials=lambda r: True, challenge=challenge
    )
    assert with_credentials is None


def test_an_address_that_passed_digest_is_a_customer_for_an_hour() -> None:
    clock = Clock()
    guard = make_guard(clock, pike_rate=5)
    guard.trust(STRANGER[0])
    assert all(guard.packet(STRANGER) for _ in range(100))
    bye = guard.screen(request("BYE"), STRANGER, has_credentials=no_credentials, challenge=None)
    assert bye is None
    clock.now += 3601
    assert not guard.is_customer(*STRANGER, clock.now)


def test_a_gateways_dialog_peer_is_known_for_an_hour_but_places_no_calls() -> None:
    """The media gateway a carrier's answer named (``proxy.dialog_target``): its 200s and
    BYEs are never counted by pike; it is no customer; a reload forgets it."""
    clock = Clock()
    guard = make_guard(clock, pike_rate=5)
    guard.peer(STRANGER[0])
    assert all(guard.packet(STRANGER) for _ in range(100))
    assert len(guard.pike) == 0
    bye = guard.screen(request("BYE"), STRANGER, has_credentials=no_credentials, challenge=None)
    assert bye is None
    invite = guard.screen(request(), STRANGER, has_credentials=no_credentials, challenge=None)
    assert invite is not None
    assert invite.status == 403
    assert not guard.is_customer(*STRANGER, clock.now)
    clock.now += 3601
    assert not guard.is_known(*STRANGER, clock.now)
    guard.peer(STRANGER[0])
    guard.configure(guard.security, lambda ip, port: ip == CUSTOMER[0], frozenset({GATEWAY[0]}))
    assert not guard.is_known(*STRANGER, clock.now)


def test_dialog_peers_are_bounded_the_least_recently_named_going_first() -> None:
    guard = make_guard(Clock())
    first, second = "192.0.2.1", "192.0.2.2"
    guard.peer(first)
    guard.peer(second)
    for n in range(guard_module._PEERS_MAX - 2):
        guard.peer(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    guard.peer(first)  # named again: the most recent now
    guard.peer("203.0.113.1")  # one over: the least recently named goes
    now = guard.clock()
    assert guard.is_known(first, 5060, now)
    assert not guard.is_known(second, 5060, now)
    assert guard.is_known("203.0.113.1", 5060, now)
    assert len(guard._peers) == guard_module._PEERS_MAX


@pytest.mark.parametrize(
    "agent", ["friendly-scanner", "sipvicious 0.3", "SIPCLI/v1.8", "pplsip", "sipsak 0.9.8"]
)
def test_scanner_user_agents_are_dropped_and_counted_not_blocked(agent: str) -> None:
    """One spoofed packet must not be able to block an address (or grow the block list):
    a scanner is dropped and counted; pike blocks one that keeps sending."""
    guard = make_guard(Clock())
    screen = guard.screen(
        request("OPTIONS", agent=agent), STRANGER, has_credentials=no_credentials, challenge=None
    )
    assert screen is not None
    assert (screen.status, screen.why) == (None, "scanner")
    assert guard.refusals.totals == {"scanner": 1}
    assert len(guard.blocks) == 0
    assert guard.packet(STRANGER)


def test_scanner_names_from_a_customer_are_not_dropped() -> None:
    guard = make_guard(Clock())
    screen = guard.screen(
        request(agent="sipsak 0.9.8"), CUSTOMER, has_credentials=no_credentials, challenge=None
    )
    assert screen is None


def test_reconfigure_keeps_blocks_and_takes_the_new_rate() -> None:
    clock = Clock()
    guard = make_guard(clock, pike_rate=100)
    guard.block(STRANGER[0], "test")
    guard.configure(
        dataclasses.replace(SecurityConfig(), pike_rate=3),
        lambda ip, port: False,
        frozenset(),
    )
    assert not guard.packet(STRANGER)
    assert guard.pike.rate == 3
    assert not guard.is_known(*CUSTOMER, clock.now)  # the new rule: no customers


def test_a_reload_forgets_addresses_trusted_under_the_old_accounts() -> None:
    clock = Clock()
    guard = make_guard(clock)
    guard.trust(STRANGER[0])
    assert guard.is_customer(*STRANGER, clock.now)
    guard.configure(SecurityConfig(), lambda ip, port: False, frozenset())
    assert not guard.is_customer(*STRANGER, clock.now)


def test_a_full_block_list_refuses_new_blocks_and_counts_them() -> None:
    clock = Clock()
    guard = make_guard(clock)
    guard.blocks.max_blocks = 3
    for i in range(5):
        guard.block(f"203.0.113.{i}", "test")
    assert len(guard.blocks) == 3
    assert guard.refusals.totals == {"block_list_full": 2}
