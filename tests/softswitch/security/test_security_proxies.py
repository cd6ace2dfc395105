"""``[server] trusted_proxies``: a balancer's requests are judged by the client behind it.

The client is the one the proxy names in ``X-AUTH-IP``/``X-AUTH-PORT``, read only when the
source is a proxy the configuration trusts: anyone can write a header field, so from any
other source it is never read. Then accounts' ``ips``, digest failures, blocks and pike see
the client, and the balancer itself is never counted or blocked for its customers' sake.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path

import pytest

from kept_cdrs import Sink
from softswitch.call.live import LiveState
from softswitch.call.snapshot import build_snapshot
from softswitch.config import ConfigError, IpRule, load_config
from softswitch.management.calls import call_view
from softswitch.proxy.calls import Admission, Call
from softswitch.proxy.engine import Reply
from softswitch.proxy.pipeline import Pipeline
from softswitch.security.proxies import UNIDENTIFIED, TrustedProxies, client_address
from softswitch.sip import Request, parse_message
from softswitch.sip.digest import DigestAuthenticator, build_authorization
from softswitch.sip.transaction import ServerTransaction
from softswitch.sip.uri import parse_uri
from softswitch.transport import Flow, Malformed, Transport

BALANCER = ("198.51.100.10", 5060)
LOCAL = ("127.0.0.1", 5060)

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"
realm = "test"
trusted_proxies = ["198.51.100.10", "198.51.100.32/28"]

[security]
pike_rate = 5
pike_window = 60
block_time = 300

[defaults]
auth_fail_limit = 2
auth_fail_window = 60
auth_block_time = 300

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[accounts]]
id = "behind"
ips = ["203.0.113.7"]
rate_deck = "sell"
routing_plan = "main"

[[accounts]]
id = "digest"
username = "pbx"
password = "secret"
rate_deck = "sell"
routing_plan = "main"

[[gateways]]
id = "carrier"
address = "192.0.2.1:5060"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["carrier"]
"""


def rules(*texts: str) -> TrustedProxies:
    """``[server] trusted_proxies`` as written in the file (``address[/bits][:port]``)."""
    out = []
    for text in texts:
        address, _, port = text.partition(":")
        out.append(IpRule(network=ipaddress.ip_network(address), port=int(port) if port else None))
    return TrustedProxies(out)


def invite(*extra: str, call_id: str = "c1", auth: str = "") -> Request:
    """An INVITE as a balancer forwards it: its Via on top, the client's below, and the
    header lines in ``extra`` (the proxy's ``X-AUTH-IP``, say)."""
    lines = [
        "INVITE sip:441234567@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKlb1",
        "Via: SIP/2.0/UDP 10.1.1.5:5060;received=203.0.113.250;branch=z9hG4bKc",
        *extra,
        "Max-Forwards: 69",
        "From: <sip:1000@example.net>;tag=f",
        "To: <sip:441234567@127.0.0.1>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Contact: <sip:1000@203.0.113.7>",
        *([f"Proxy-Authorization: {auth}"] if auth else []),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def through_balancer(client: str, port: int | None = None, **kw: str) -> Request:
    """An INVITE the balancer forwards for ``client`` (at ``port``, when it says)."""
    extra = [f"X-AUTH-IP: {client}", *([f"X-AUTH-PORT: {port}"] if port else [])]
    return invite(*extra, **kw)


# -- reading the client the proxy names ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "client"),
    [
        (["X-AUTH-IP: 203.0.113.7", "X-AUTH-PORT: 40000"], ("203.0.113.7", 40000)),
        (["x-auth-ip:203.0.113.7"], ("203.0.113.7", 0)),  # no port: 0, matches no port rule
        (["X-AUTH-IP: [2001:db8::7]", "X-AUTH-PORT: 5070"], ("2001:db8::7", 5070)),
        (["X-AUTH-IP: 2001:DB8::7"], ("2001:db8::7", 0)),
        (["X-AUTH-IP: ::ffff:203.0.113.7"], ("203.0.113.7", 0)),  # one address, one key
        ([], None),  # the proxy's own request
        # named wrongly or twice (a proxy that appended its own and kept the client's)
        (["X-AUTH-IP: 203.0.113.66", "X-AUTH-IP: 203.0.113.7"], UNIDENTIFIED),
        (["X-AUTH-IP: 203.0.113.66, 203.0.113.7"], UNIDENTIFIED),
        (["X-AUTH-IP: pbx.example.net"], UNIDENTIFIED),
        (["X-AUTH-IP: 203.0.113.7", "X-AUTH-PORT: 0"], UNIDENTIFIED),
        (["X-AUTH-IP: 203.0.113.7", "X-AUTH-PORT: \u00b2"], UNIDENTIFIED),  # "²".isdigit()
        (["X-AUTH-IP: 203.0.113.7", "X-AUTH-PORT: \u0661\u0662\u0663"], UNIDENTIFIED),
        (["X-AUTH-IP: 203.0.113.7", "X-AUTH-PORT: 65536"], UNIDENTIFIED),
        (["X-AUTH-IP: 203.0.113.7", "X-AUTH-PORT: 5060", "X-AUTH-PORT: 5061"], UNIDENTIFIED),
        (["X-AUTH-PORT: 5060"], None),
    ],
)
def test_the_client_a_proxy_names(fields: list[str], client: tuple[str, int] | None) -> None:
    assert client_address(invite(*fields)) == client


def test_only_a_trusted_source_is_believed() -> None:
    proxies = rules("198.51.100.10")
    request = through_balancer("203.0.113.7", 5060)
    assert proxies.client_of(request, BALANCER) == ("203.0.113.7", 5060)
    # the same bytes from anyone else: the fields are theirs to forge
    assert proxies.client_of(request, ("198.51.100.11", 5060)) is None
    assert rules().client_of(request, BALANCER) is None


def test_a_port_in_the_rule_trusts_that_port_only() -> None:
    proxies = rules("198.51.100.10:5080")
    request = through_balancer("203.0.113.7", 5060)
    assert proxies.client_of(request, ("198.51.100.10", 5080)) == ("203.0.113.7", 5060)
    assert proxies.client_of(request, BALANCER) is None


def test_the_vias_are_never_read_for_the_client() -> None:
    """The client's Via says 203.0.113.250 in a received the client may have written
    itself (a proxy adds one only when the sent-by is not the source)."""
    proxies = rules("198.51.100.10")
    assert proxies.client_of(invite(), BALANCER) == UNIDENTIFIED
    flow = proxies.flow_of(through_balancer("203.0.113.7"), Flow(Transport.UDP, LOCAL, BALANCER))
    assert flow.remote == BALANCER
    assert flow.origin == ("203.0.113.7", 0)


# -- the pipeline: who the call is, who is counted -------------------------------------------


def make_pipeline(tmp_path: Path, config: str = CONFIG) -> Pipeline:
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.10\n")
    (tmp_path / "switch.toml").write_text(config)
    snapshot = build_snapshot(load_config(tmp_path / "switch.toml"))
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    return Pipeline(snapshot, LiveState(), nonces, Sink())


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path)


def status(pipeline: Pipeline, request: Request, remote: tuple[str, int]) -> int | str | None:
    """What the request gets: the screen's status ("dropped" when silent), the admission's
    refusal status, or None when the call is admitted (then released)."""
    flow = pipeline.origin(request, Flow(Transport.UDP, LOCAL, remote))
    screen = pipeline.screen(request, flow)
    if screen is not None:
        return screen.status if screen.status is not None else "dropped"
    answer = pipeline.admit(request, flow, time.time())
    if isinstance(answer, Reply):
        return answer.status
    pipeline.live.account_release(answer.account_id)
    return None


def test_a_customer_behind_the_balancer_is_authorised_by_its_own_address(
    pipeline: Pipeline,
) -> None:
    assert status(pipeline, through_balancer("203.0.113.7", 40000), BALANCER) is None
    # a stranger behind the same balancer is a stranger (challenged: digest accounts
    # exist), not the balancer's customer
    assert status(pipeline, through_balancer("203.0.113.99"), BALANCER) == 407
    # the customer's address forged from a source nobody trusts proves nothing
    assert status(pipeline, through_balancer("203.0.113.7"), ("198.51.100.11", 5060)) == 407
    # a proxy that names two clients, or none it can, names nobody: refused outright
    two = invite("X-AUTH-IP: 203.0.113.66", "X-AUTH-IP: 203.0.113.7")
    assert status(pipeline, two, BALANCER) == 403


def test_pike_blocks_a_stranger_behind_the_balancer_not_the_balancer(pipeline: Pipeline) -> None:
    scanner = "203.0.113.66"
    customer = "203.0.113.7"
    answers = [
        status(pipeline, through_balancer(scanner, call_id=f"s{i}"), BALANCER) for i in range(8)
    ]
    assert answers[:5] == [407] * 5  # challenged, counted: pike_rate = 5
    # blocked; answered, not dropped (blocked_source = "drop"): the balancer waits for an
    # answer, and a node that gives none looks dead to it
    assert answers[5:] == [403] * 3
    guard = pipeline.guard
    now = guard.clock()
    assert guard.blocks.is_blocked("203.0.113.66", now)
    assert not guard.blocks.is_blocked(BALANCER[0], now)
    assert guard.packet(BALANCER)  # the balancer's own packets still parsed
    assert status(pipeline, through_balancer(customer, call_id="c9"), BALANCER) is None


def test_wrong_passwords_behind_the_balancer_block_the_client_only(pipeline: Pipeline) -> None:
    bad = (
        'Digest username="pbx", realm="test", nonce="x", uri="sip:441234567@127.0.0.1",'
        ' response="00000000000000000000000000000000"'
    )
    guesser = "203.0.113.50"
    customer = "203.0.113.7"
    for i in range(4):
        status(pipeline, through_balancer(guesser, call_id=f"g{i}", auth=bad), BALANCER)
    mono = time.monotonic()
    assert pipeline.live.is_blocked("203.0.113.50", mono)
    assert not pipeline.live.is_blocked(BALANCER[0], mono)
    assert status(pipeline, through_balancer(customer, call_id="c2"), BALANCER) is None


def test_a_refused_calls_cdr_names_the_client_behind_the_balancer(pipeline: Pipeline) -> None:
    request = through_balancer("203.0.113.7", 40000)
    request.uri = parse_uri("sip:3312345678@127.0.0.1")  # no route for 33
    flow = pipeline.origin(request, Flow(Transport.UDP, LOCAL, BALANCER))
    assert flow.remote == BALANCER
    answer = pipeline.admit(request, flow, time.time())
    assert isinstance(answer, Reply)
    assert answer.account_id == "behind"
    pipeline.account_refusal(request, flow, answer, time.time())
    sink = pipeline.cdrs
    assert isinstance(sink, Sink)
    assert [r.source for r in sink.records] == ["203.0.113.7:40000"]


# -- the proxy's own standing, reloads, digest, malformed requests ---------------------------


def test_the_balancer_itself_is_never_counted_or_blocked(pipeline: Pipeline) -> None:
    guard = pipeline.guard
    assert all(guard.packet(BALANCER) for _ in range(50))  # pike_rate = 5
    assert not guard.blocks.is_blocked(BALANCER[0], guard.clock())


def test_the_balancers_own_ping_is_answered_but_its_own_invite_refused(
    pipeline: Pipeline,
) -> None:
    """A proxy's OPTIONS probe names no client and is the proxy's; an INVITE (or REGISTER)
    is always someone's call, so one naming nobody is refused, never the proxy's own."""
    ping = parse_message(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKping\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:lb@198.51.100.10>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
        b"Call-ID: ping\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(ping, Request)
    flow = pipeline.origin(ping, Flow(Transport.UDP, LOCAL, BALANCER))
    assert flow.client is None
    assert pipeline.screen(ping, flow) is None
    assert status(pipeline, invite(), BALANCER) == 403
    register = parse_message(
        bytes(ping).replace(b"OPTIONS sip:", b"REGISTER sip:").replace(b"1 OPTIONS", b"1 REGISTER")
    )
    assert isinstance(register, Request)
    flow = pipeline.origin(register, Flow(Transport.UDP, LOCAL, BALANCER))
    screen = pipeline.screen(register, flow)
    assert screen is not None
    assert screen.status == 403


def test_a_client_named_as_a_trusted_proxy_is_nobody(pipeline: Pipeline) -> None:
    """A proxy's address as the client would lend the proxy's standing to whoever wrote
    the field (a registration made through the proxy is at the proxy's address)."""
    proxies = pipeline.proxies
    assert proxies is not None
    for named in ("198.51.100.10", "198.51.100.40"):  # the balancer, one of the /28
        assert proxies.client_of(through_balancer(named), BALANCER) == UNIDENTIFIED
    assert status(pipeline, through_balancer("198.51.100.10"), BALANCER) == 403


def test_the_live_calls_view_shows_the_client(pipeline: Pipeline) -> None:
    request = through_balancer("203.0.113.7", 40000)
    call = Call(
        call_id="c1",
        invite=request,
        caller_flow=pipeline.origin(request, Flow(Transport.UDP, LOCAL, BALANCER)),
        server_tx=ServerTransaction(request, reliable=False),
        admission=Admission("behind", "441234567", "441234567", 60.0, 3, 10.0),
        invite_at=0.0,
        started_mono=0.0,
    )
    assert call_view(call, 1.0)["source"] == "203.0.113.7:40000"


def test_a_known_client_behind_the_balancer_is_not_counted_by_pike(pipeline: Pipeline) -> None:
    for i in range(10):  # pike_rate = 5
        pipeline.origin(
            through_balancer("203.0.113.7", call_id=f"k{i}"), Flow(Transport.UDP, LOCAL, BALANCER)
        )
    assert not pipeline.guard.blocks.is_blocked("203.0.113.7", pipeline.guard.clock())


def test_a_stranger_is_dropped_when_direct_and_answered_through_the_balancer(
    tmp_path: Path,
) -> None:
    config = CONFIG.replace("[security]", '[security]\nunknown_source = "drop"').replace(
        'username = "pbx"\npassword = "secret"', 'ips = ["192.0.2.99"]'
    )
    p = make_pipeline(tmp_path, config)
    stranger = ("203.0.113.99", 5060)
    assert status(p, invite(), stranger) == "dropped"
    assert status(p, through_balancer(stranger[0]), BALANCER) == 403


def test_a_reload_changes_who_is_trusted(pipeline: Pipeline, tmp_path: Path) -> None:
    assert status(pipeline, through_balancer("203.0.113.7", call_id="r1"), BALANCER) is None
    (tmp_path / "switch.toml").write_text(
        CONFIG.replace('"198.51.100.10", "198.51.100.32/28"', '"198.51.100.32/28"')
    )
    pipeline.use(build_snapshot(load_config(tmp_path / "switch.toml")))
    # the balancer is a stranger now, whatever it names
    assert status(pipeline, through_balancer("203.0.113.7", call_id="r2"), BALANCER) == 407


def test_digest_behind_the_balancer_makes_the_client_known_not_the_balancer(
    pipeline: Pipeline,
) -> None:
    client = "203.0.113.99"
    request = through_balancer(client, call_id="d1")
    flow = pipeline.origin(request, Flow(Transport.UDP, LOCAL, BALANCER))
    screen = pipeline.screen(request, flow)
    assert screen is not None
    assert screen.status == 407
    challenge = dict(screen.headers)["Proxy-Authenticate"]
    auth = build_authorization(
        challenge,
        method="INVITE",
        uri="sip:441234567@127.0.0.1",
        username="pbx",
        password="secret",
    )
    guard = pipeline.guard
    assert not guard.is_customer(client, 0, guard.clock())
    assert status(pipeline, through_balancer(client, call_id="d2", auth=auth), BALANCER) is None
    assert guard.is_customer(client, 0, guard.clock())
    assert not guard.is_customer(BALANCER[0], BALANCER[1], guard.clock())


def test_a_malformed_invite_through_the_balancer_is_the_clients(pipeline: Pipeline) -> None:
    """Refused by validation (a CSeq of another method), so parsed: the client it names
    gets the refused call's CDR, as if it had sent it directly."""
    request = through_balancer("203.0.113.7", 40000)
    data = bytes(request).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    bad = parse_message(data)
    assert isinstance(bad, Request)
    flow = Flow(Transport.UDP, LOCAL, BALANCER)
    malformed = Malformed(flow, 400, "CSeq method mismatch", True, True, bad, (), data)
    assert pipeline.malformed(malformed)
    sink = pipeline.cdrs
    assert isinstance(sink, Sink)
    assert [r.source for r in sink.records] == [
        "203.0.113.7:40000"
    ]  # as a direct one's: no account


@pytest.mark.parametrize(
    ("proxies", "ips", "problem"),
    [
        ('["0.0.0.0/0"]', '["192.0.2.1"]', "server.trusted_proxies[0]: 0.0.0.0/0 is wider"),
        ('["::/0"]', '["192.0.2.1"]', "server.trusted_proxies[0]: ::/0 is wider"),
        ('["10.0.0.0/24"]', '["10.0.0.7"]', "accounts[0].ips: 10.0.0.7/32 is within"),
        ('["10.0.0.7:5060"]', '["10.0.0.7:5060"]', "accounts[0].ips: 10.0.0.7/32:5060 is within"),
        # halves of everything, the IPv4-mapped space: as wide as everything, nearly
        ('["0.0.0.0/1", "128.0.0.0/1"]', '["192.0.2.1"]', "server.trusted_proxies[0]: 0.0.0.0/1"),
        ('["::ffff:0:0/96"]', '["192.0.2.1"]', "server.trusted_proxies[0]: ::ffff:0:0/96"),
        ('["2001:db8::/31"]', '["192.0.2.1"]', "server.trusted_proxies[0]: 2001:db8::/31"),
    ],
)
def test_proxies_that_would_swallow_customers_are_refused(
    tmp_path: Path, proxies: str, ips: str, problem: str
) -> None:
    config = CONFIG.replace(
        'trusted_proxies = ["198.51.100.10", "198.51.100.32/28"]', f"trusted_proxies = {proxies}"
    ).replace('ips = ["203.0.113.7"]', f"ips = {ips}")
    with pytest.raises(ConfigError, match=re.escape(problem)):
        make_pipeline(tmp_path, config)


def test_an_account_beside_a_proxy_on_another_port_loads(tmp_path: Path) -> None:
    config = CONFIG.replace(
        'trusted_proxies = ["198.51.100.10", "198.51.100.32/28"]',
        'trusted_proxies = ["10.0.0.7:5080"]',
    ).replace('ips = ["203.0.113.7"]', 'ips = ["10.0.0.7:5060", "10.0.0.0/24"]')
    make_pipeline(tmp_path, config)
    widest = CONFIG.replace(
        'trusted_proxies = ["198.51.100.10", "198.51.100.32/28"]',
        'trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.0/104"]',
    )
    make_pipeline(tmp_path, widest)


def test_a_register_from_a_client_blocked_behind_the_balancer_is_refused(tmp_path: Path) -> None:
    """The REGISTER screen asks about the client too: a client pike blocked behind the
    balancer gets 403, not the challenge every REGISTER without credentials gets."""
    config = CONFIG.replace('password = "secret"', 'password = "secret"\nregister = true')
    p = make_pipeline(tmp_path, config)
    for i in range(6):  # pike_rate = 5: blocked at the sixth
        status(p, through_balancer("203.0.113.66", call_id=f"s{i}"), BALANCER)
    register = parse_message(
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKreg\r\n"
        b"Via: SIP/2.0/UDP 203.0.113.66:5060;branch=z9hG4bKc\r\n"
        b"X-AUTH-IP: 203.0.113.66\r\n"
        b"Max-Forwards: 69\r\nFrom: <sip:pbx@127.0.0.1>;tag=r\r\nTo: <sip:pbx@127.0.0.1>\r\n"
        b"Call-ID: reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:pbx@203.0.113.66>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(register, Request)
    flow = p.origin(register, Flow(Transport.UDP, LOCAL, BALANCER))
    screen = p.screen(register, flow)
    assert screen is not None
    assert screen.status == 403
    unblocked = register.headers
    unblocked.set("X-AUTH-IP", "203.0.113.67")
    screen = p.screen(register, p.origin(register, Flow(Transport.UDP, LOCAL, BALANCER)))
    assert screen is not None
    assert screen.status == 401  # anyone else: challenged
