"""The registrar as the switch runs it: the stateless 401, digest, applying, the sweep; and
what the pipeline does with registrations (calls to ``registered:`` gateways and calls
authorised by a registration)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from registrar_support import CONFIG, binding, make_snapshot, register

from kept_cdrs import Sink
from softswitch.call.live import LiveState
from softswitch.call.snapshot import Snapshot
from softswitch.config import ConfigError, load_config
from softswitch.proxy.calls import Admission, Attempt, Call, Target
from softswitch.proxy.engine import Reply
from softswitch.proxy.pipeline import Pipeline
from softswitch.registrar import BindingWriter, Registrar, Registrations, load
from softswitch.sip import Request, Response, parse_message
from softswitch.sip.digest import DigestAuthenticator, build_authorization
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow, Transport

SOURCE = ("203.0.113.7", 40000)


class World:
    """A pipeline and a registrar sharing one snapshot, live state, guard and bindings."""

    def __init__(self, tmp_path: Path, config: str = CONFIG) -> None:
        self.snapshot: Snapshot = make_snapshot(tmp_path, config)
        self.live = LiveState()
        self.nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
        self.bindings = Registrations()
        self.sink = Sink()
        self.pipeline = Pipeline(
            self.snapshot, self.live, self.nonces, self.sink, registrations=self.bindings
        )
        self.writer = BindingWriter(tmp_path / "cdr.sqlite")
        self.registrar = Registrar(
            self.bindings,
            self.writer,
            snapshot=lambda: self.pipeline.snapshot,
            nonces=self.nonces,
            live=self.live,
            guard=self.pipeline.guard,
        )

    def send(
        self,
        request: Request,
        source: tuple[str, int] = SOURCE,
        transport: Transport = Transport.UDP,
    ) -> Response:
        flow = Flow(transport, ("127.0.0.1", 5060), source)
        return self.registrar.register(request, flow, time.time())

    def registered(
        self,
        *contacts: str,
        password: str = "secret",
        source: tuple[str, int] = SOURCE,
        transport: Transport = Transport.UDP,
        **kw: object,
    ) -> Response:
        """REGISTER, answer the 401 with credentials, return the final answer."""
        challenge = self.send(register(*contacts, **kw), source, transport)  # type: ignore[arg-type]
        assert challenge.status == 401
        value = challenge.headers.get("WWW-Authenticate")
        assert value is not None
        user = str(kw.get("user", "pbx"))
        auth = build_authorization(
            value, method="REGISTER", uri="sip:127.0.0.1:5060", username=user, password=password
        )
        cseq = int(str(kw.pop("cseq", 1))) + 1
        return self.send(
            register(*contacts, authorization=auth, cseq=cseq, **kw),  # type: ignore[arg-type]
            source,
            transport,
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.writer.close()


def test_register_with_digest_binds_and_writes_the_contact(world: World, tmp_path: Path) -> None:
    ok = world.registered("<sip:pbx@192.168.1.20:5060>", expires=120)
    assert ok.status == 200
    contact = ok.headers.get("Contact")
    assert contact is not None
    assert contact.startswith("<sip:pbx@192.168.1.20:5060>;expires=")
    (b,) = world.bindings.contacts("pbx", time.time())
    assert (b.source_ip, b.source_port, b.nat) == (*SOURCE, True)
    assert world.writer.flush()
    assert [x.contact for x in load(tmp_path / "cdr.sqlite", time.time())] == [b.contact]
    # The address is trusted now: pike and the INVITE screen treat it as a customer's.
    assert world.pipeline.guard.is_customer(SOURCE[0], 1, time.monotonic())


@pytest.mark.parametrize(
    ("user", "password", "aor"),
    [
        ("pbx", "wrong", "pbx"),  # wrong password
        ("plain", "secret", "plain"),  # a digest account that does not register
        ("ghost", "secret", "ghost"),  # nobody
    ],
)
def test_refused_registrations_are_403_and_count_towards_a_block(
    world: World, user: str, password: str, aor: str
) -> None:
    for _ in range(3):
        answer = world.registered("<sip:x@192.0.2.9>", password=password, user=user)
        assert answer.status == 403
    assert len(world.bindings) == 0
    assert world.live.is_blocked(SOURCE[0], time.monotonic())
    # Blocked: refused before any challenge.
    assert world.send(register("<sip:pbx@192.0.2.9>")).status == 403


def test_another_users_address_of_record_is_refused(world: World) -> None:
    request = register("<sip:pbx@192.0.2.9>", user="someone")
    challenge = world.send(request)
    value = challenge.headers.get("WWW-Authenticate")
    assert value is not None
    auth = build_authorization(
        value, method="REGISTER", uri="sip:127.0.0.1:5060", username="pbx", password="secret"
    )
    answer = world.send(register("<sip:pbx@192.0.2.9>", user="someone", authorization=auth))
    assert answer.status == 403
    assert len(world.bindings) == 0


def test_a_too_brief_registration_is_423_and_unregister_removes(world: World) -> None:
    brief = world.registered("<sip:pbx@192.0.2.9>", expires=5)
    assert (brief.status, brief.headers.get("Min-Expires")) == (423, "30")
    assert world.registered("<sip:pbx@192.0.2.9>", expires=60).status == 200
    assert len(world.bindings) == 1
    gone = world.registered("<sip:pbx@192.0.2.9>", expires=0, cseq=5)
    assert (gone.status, gone.headers.get("Contact")) == (200, None)
    assert len(world.bindings) == 0


def test_the_sweep_removes_expired_bindings_from_memory_and_disk(
    world: World, tmp_path: Path
) -> None:
    now = time.time()
    for b in (binding(expires_at=now - 1), binding("sip:b@192.0.2.2", expires_at=now + 60)):
        world.bindings.put(b)
        world.writer.put([b])
    swept = world.registrar.sweep(now)
    assert [b.contact for b in swept] == ["sip:pbx@192.0.2.50:5060"]
    assert [b.contact for b in world.bindings] == ["sip:b@192.0.2.2"]
    assert world.writer.flush()
    assert [b.contact for b in load(tmp_path / "cdr.sqlite", now - 10)] == ["sip:b@192.0.2.2"]


def credentials(realm: str) -> str:
    """Credentials that only say whose realm they are for (the screen reads no more)."""
    return f'Digest username="pbx", realm="{realm}", nonce="x", uri="sip:h", response="0"'


def test_the_screen_challenges_statelessly_and_lets_credentials_through(world: World) -> None:
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), SOURCE)
    screen = world.pipeline.screen(register("<sip:pbx@192.0.2.9>"), flow)
    assert screen is not None
    assert screen.status == 401
    assert screen.headers[0][0] == "WWW-Authenticate"
    with_credentials = register(
        "<sip:pbx@192.0.2.9>",
        authorization=credentials("test"),
    )
    assert world.pipeline.screen(with_credentials, flow) is None
    # Another realm's credentials are not ours: challenged.
    other = register(
        "<sip:pbx@192.0.2.9>",
        authorization=credentials("elsewhere"),
    )
    screen = world.pipeline.screen(other, flow)
    assert screen is not None
    assert screen.status == 401
    # A blocked stranger gets the guard's answer, not a challenge.
    world.pipeline.guard.block(SOURCE[0], "test")
    screen = world.pipeline.screen(register("<sip:pbx@192.0.2.9>"), flow)
    assert screen is not None
    assert screen.status != 401


def test_without_registering_accounts_a_register_is_screened_as_before(tmp_path: Path) -> None:
    config = CONFIG.replace("register = true", "").replace(
        'address = "registered:pbx"', 'address = "192.0.2.7"'
    )
    w = World(tmp_path, config)
    try:
        assert not w.registrar.active()
        flow = Flow(Transport.UDP, ("127.0.0.1", 5060), SOURCE)
        screen = w.pipeline.screen(register("<sip:pbx@192.0.2.9>"), flow)
        assert screen is not None
        assert screen.status == 403
    finally:
        w.writer.close()


# -- calls to a registered: gateway ---------------------------------------------------------


def invite(number: str = "441234567", source: str = "10.0.0.5", port: int = 5060) -> Request:
    text = (
        f"INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bKx\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1000@{source}>;tag=f\r\n"
        "To: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: c-{number}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{source}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def admitted(world: World, request: Request, source: tuple[str, int]) -> Call:
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), source)
    admission = world.pipeline.admit(request, flow, time.time())
    assert isinstance(admission, Admission), admission
    return Call(
        call_id=request.call_id or "",
        invite=request,
        caller_flow=flow,
        server_tx=ServerTransaction(request, reliable=False),
        admission=admission,
        invite_at=time.time(),
        started_mono=0.0,
    )


def test_a_call_tries_each_live_contact_in_order_then_the_next_gateway(world: World) -> None:
    now = time.time()
    world.bindings.put(binding("sip:pbx@192.0.2.50:5070", q=0.5, expires_at=now + 60))
    world.bindings.put(
        binding(
            "sip:pbx@10.1.1.1;transport=udp",
            expires_at=now + 60,
            nat=True,
            source=("203.0.113.9", 61000),
        )
    )
    world.bindings.put(binding("sip:pbx@192.0.2.99", expires_at=now - 1))  # expired
    call = admitted(world, invite(), ("10.0.0.5", 5060))
    mono = time.monotonic()
    first = world.pipeline.next_target(call, mono)
    assert isinstance(first, Target)
    # q 1.0 first, at the NAT's address; strip_digits applies to the number sent.
    assert (first.gateway_id, first.address, first.request_uri) == (
        "to_pbx",
        ("203.0.113.9", 61000),
        "sip:1234567@10.1.1.1;transport=udp",
    )
    assert world.live.gateway_calls("to_pbx") == 1
    call.attempts.append(Attempt("to_pbx", first.request_uri, first.number_sent, now, status=503))
    world.pipeline.release_target(call, first)
    second = world.pipeline.next_target(call, mono)
    assert isinstance(second, Target)
    assert (second.address, second.request_uri) == (
        ("192.0.2.50", 5070),
        "sip:1234567@192.0.2.50:5070",
    )
    world.pipeline.release_target(call, second)
    third = world.pipeline.next_target(call, mono)
    assert isinstance(third, Target)
    assert third.gateway_id == "carrier"


def test_a_full_registered_gateway_skips_its_other_contacts(world: World) -> None:
    now = time.time()
    world.bindings.put(binding("sip:pbx@192.0.2.50", expires_at=now + 60))
    world.bindings.put(binding("sip:pbx@192.0.2.51", expires_at=now + 60))
    call = admitted(world, invite(), ("10.0.0.5", 5060))
    first = world.pipeline.next_target(call, time.monotonic())
    assert isinstance(first, Target)
    assert first.gateway_id == "to_pbx"
    # Capacity 1 and the first branch still holds it: the second contact is not tried.
    second = world.pipeline.next_target(call, time.monotonic())
    assert isinstance(second, Target)
    assert second.gateway_id == "carrier"


def test_nobody_registered_skips_the_gateway_as_not_registered(world: World) -> None:
    call = admitted(world, invite(), ("10.0.0.5", 5060))
    target = world.pipeline.next_target(call, time.monotonic())
    assert isinstance(target, Target)
    assert target.gateway_id == "carrier"
    assert ("to_pbx", "not registered") in call.admission.policy.skipped  # type: ignore[attr-defined]


def test_only_registered_and_none_registered_is_a_no_gateway_refusal(tmp_path: Path) -> None:
    w = World(tmp_path, CONFIG.replace('gateways = ["to_pbx", "carrier"]', 'gateways = ["to_pbx"]'))
    try:
        call = admitted(w, invite(), ("10.0.0.5", 5060))
        refusal = w.pipeline.next_target(call, time.monotonic())
        assert isinstance(refusal, Reply)
        assert (refusal.status, refusal.end_reason) == (503, "no_gateway")
        assert refusal.detail == "to_pbx: not registered"
    finally:
        w.writer.close()


# -- calls from a registered account ----------------------------------------------------------


def test_a_call_from_a_live_registrations_source_is_authorised_by_it(world: World) -> None:
    now = time.time()
    world.bindings.put(binding(expires_at=now + 60, source=("198.51.100.4", 5080)))
    call = admitted(world, invite("9#441234567", "198.51.100.4", 5080), ("198.51.100.4", 5080))
    assert call.admission.account_id == "pbx"
    assert call.admission.number == "441234567"  # its tech prefix stripped
    # Another port of the same address is not the registration: challenged for digest.
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("198.51.100.4", 5081))
    answer = world.pipeline.admit(invite("9#44123", "198.51.100.4", 5081), flow, now)
    assert isinstance(answer, Reply)
    assert answer.status == 407


def test_an_expired_registration_authorises_nothing(world: World) -> None:
    now = time.time()
    world.bindings.put(binding(expires_at=now - 1, source=("198.51.100.4", 5080)))
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("198.51.100.4", 5080))
    answer = world.pipeline.admit(invite("441234567", "198.51.100.4", 5080), flow, now)
    assert isinstance(answer, Reply)
    assert answer.status == 407


def test_config_checks_the_registered_gateway_and_account(tmp_path: Path) -> None:
    bad = CONFIG.replace('registered:pbx"', 'registered:plain"')
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.10\n")
    (tmp_path / "switch.toml").write_text(bad)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "switch.toml")
    assert "gateways[0].address: account 'plain' does not register" in str(info.value)
    (tmp_path / "switch.toml").write_text(CONFIG)
    cfg = load_config(tmp_path / "switch.toml")
    gateway = cfg.gateway("to_pbx")
    assert (gateway.registered, gateway.host) == ("pbx", "registered.invalid")
    assert type(cfg).model_validate(cfg.model_dump()) == cfg


def test_config_refuses_what_a_registrar_cannot_use(tmp_path: Path) -> None:
    bad = (
        CONFIG.replace("registrar_max_expires = 600", "registrar_max_expires = 10")
        .replace(
            'address = "registered:pbx"',
            'address = "registered:pbx"\ntransport = "tcp"\nprobe = 5\ndialog_target = "contact"',
        )
        .replace(
            'id = "plain"\nusername = "plain"\npassword = "secret"',
            'id = "plain"\nips = ["10.9.0.1"]\nregister = true',
        )
    )
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.10\n")
    (tmp_path / "switch.toml").write_text(bad)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "switch.toml")
    text = str(info.value)
    assert (
        "server.registrar_max_expires: must be at least registrar_min_expires (30), got 10" in text
    )
    assert "accounts[2].register: needs username and password" in text
    assert "gateways[0].transport: not used with a registered: address" in text
    assert "gateways[0].probe: a registered: gateway is not probed" in text
    assert "gateways[0].dialog_target: not used with a registered: address" in text


# -- what a registration may not do (the review's findings) ----------------------------------


def test_an_account_with_ips_registers_from_its_addresses_only(tmp_path: Path) -> None:
    """An account that needs its addresses as well as its password: a REGISTER from
    elsewhere is refused, so a leaked password cannot make a registration that authorises
    calls from anywhere."""
    config = CONFIG.replace(
        'id = "pbx"\nusername = "pbx"', 'id = "pbx"\nips = ["203.0.113.0/24"]\nusername = "pbx"'
    )
    w = World(tmp_path, config)
    try:
        assert (
            w.registered("<sip:pbx@192.168.1.20:5060>", source=("198.51.100.4", 5080)).status == 403
        )
        assert w.bindings.contacts("pbx", time.time()) == []
        assert w.registered("<sip:pbx@192.168.1.20:5060>", source=SOURCE).status == 200
        # And a binding from outside its ips (made before the ips were set) authorises nothing.
        w.bindings.put(binding(expires_at=time.time() + 60, source=("198.51.100.4", 5080)))
        flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("198.51.100.4", 5080))
        answer = w.pipeline.admit(invite("9#44123", "198.51.100.4", 5080), flow, time.time())
        assert isinstance(answer, Reply)
        assert answer.status == 407
    finally:
        w.writer.close()


def _answer_to_another_secret(password: str) -> str:
    """Credentials for a nonce another node (or a forger) signed, with ``password``."""
    other = DigestAuthenticator(realm="test", secret=b"another node's secret, 32 bytes.")
    return build_authorization(
        other.challenges(time.time())[0],
        method="REGISTER",
        uri="sip:127.0.0.1:5060",
        username="pbx",
        password=password,
    )


def test_another_secrets_nonce_right_password_gets_stale_a_wrong_one_is_counted(
    world: World,
) -> None:
    """A client that answers another node's 401 here (or sends a nonce from before a
    restart): the right password gets a stale challenge, not counted; wrong ones are refused
    and counted towards the block."""
    right = world.send(
        register("<sip:pbx@192.0.2.9>", authorization=_answer_to_another_secret("secret"), cseq=2)
    )
    assert right.status == 401
    assert "stale=true" in (right.headers.get("WWW-Authenticate") or "")
    assert not world.live.is_blocked(SOURCE[0], time.monotonic())
    for _ in range(3):
        wrong = world.send(
            register("<sip:pbx@192.0.2.9>", authorization=_answer_to_another_secret("nope"), cseq=2)
        )
        assert wrong.status == 403
    assert world.live.is_blocked(SOURCE[0], time.monotonic())


def test_from_an_address_its_account_does_not_list_a_right_password_looks_wrong(
    tmp_path: Path,
) -> None:
    """The address rule of an account with ``ips`` is checked before the password, so from
    elsewhere a right guess gets the answer a wrong one gets (403), never a stale challenge
    that would tell them apart (a review finding), with our nonce or another's."""
    config = CONFIG.replace(
        'id = "pbx"\nusername = "pbx"', 'id = "pbx"\nips = ["203.0.113.0/24"]\nusername = "pbx"'
    )
    w = World(tmp_path, config)
    elsewhere = ("198.51.100.4", 5080)
    try:
        answers = {
            password: w.send(
                register(
                    "<sip:pbx@192.0.2.9>", authorization=_answer_to_another_secret(password), cseq=2
                ),
                elsewhere,
            )
            for password in ("secret", "wrong")
        }
        assert {p: r.status for p, r in answers.items()} == {"secret": 403, "wrong": 403}
        assert w.registered("<sip:pbx@192.0.2.9>", source=elsewhere).status == 403
        assert w.bindings.contacts("pbx", time.time()) == []
    finally:
        w.writer.close()


def test_a_tcp_registration_does_not_authorise_udp_invites(world: World) -> None:
    now = time.time()
    source = ("198.51.100.7", 40001)
    world.bindings.put(binding(expires_at=now + 60, source=source, transport="tcp"))
    udp = Flow(Transport.UDP, ("127.0.0.1", 5060), source)
    answer = world.pipeline.admit(invite("9#44123", *source), udp, now)
    assert isinstance(answer, Reply)
    assert answer.status == 407  # a forged UDP source must prove itself
    tcp = Flow(Transport.TCP, ("127.0.0.1", 5060), source)
    admission = world.pipeline.admit(invite("9#441234567", *source), tcp, now)
    assert isinstance(admission, Admission)
    assert admission.account_id == "pbx"


def test_a_reload_that_changes_the_password_drops_the_accounts_bindings(
    world: World, tmp_path: Path
) -> None:
    assert world.registered("<sip:pbx@192.168.1.20:5060>", expires=120).status == 200
    (tmp_path / "same").mkdir()
    same = make_snapshot(tmp_path / "same", CONFIG)
    assert world.registrar.forget_changed(world.pipeline.snapshot, same) == []
    assert len(world.bindings.contacts("pbx", time.time())) == 1
    (tmp_path / "new").mkdir()
    rotated = make_snapshot(
        tmp_path / "new",
        CONFIG.replace('password = "secret"\nregister', 'password = "rotated"\nregister'),
    )
    dropped = world.registrar.forget_changed(world.pipeline.snapshot, rotated)
    assert [b.account_id for b in dropped] == ["pbx"]
    assert world.bindings.contacts("pbx", time.time()) == []
    assert world.writer.flush()
    assert load(tmp_path / "cdr.sqlite", time.time()) == []  # gone from the disk too


def test_a_tcp_registration_lasts_no_longer_than_the_idle_timeout(tmp_path: Path) -> None:
    """Over TCP the connection is the way to a NAT'd contact: the expiry granted is capped
    at the idle timeout, so the client's refresh keeps the connection open."""
    w = World(
        tmp_path,
        CONFIG.replace(
            "registrar_max_expires = 600", "registrar_max_expires = 600\ntcp_idle_timeout = 120"
        ),
    )
    try:
        ok = w.registered(
            "<sip:pbx@192.168.1.20:5060;transport=tcp>", expires=600, transport=Transport.TCP
        )
        assert ok.status == 200
        (b,) = w.bindings.contacts("pbx", time.time())
        assert 115 <= b.expires_in(time.time()) <= 120
        udp = w.registered("<sip:pbx@192.168.1.21:5060>", expires=600, source=("203.0.113.8", 1))
        assert udp.status == 200
        assert max(x.expires_in(time.time()) for x in w.bindings.contacts("pbx", time.time())) > 500
    finally:
        w.writer.close()


def test_a_disabled_account_neither_registers_nor_takes_calls(tmp_path: Path) -> None:
    w = World(tmp_path, CONFIG.replace("register = true", "register = true\nenabled = false"))
    try:
        assert w.registered("<sip:pbx@192.168.1.20:5060>").status == 403
        w.bindings.put(binding(expires_at=time.time() + 60))
        call = admitted(w, invite(), ("10.0.0.5", 5060))
        target = w.pipeline.next_target(call, time.monotonic())
        assert isinstance(target, Target)
        assert target.gateway_id == "carrier"  # to_pbx skipped: nobody to ring
    finally:
        w.writer.close()


BALANCER = ("198.51.100.10", 5060)


def test_through_a_trusted_balancer_the_client_registers_and_is_judged(tmp_path: Path) -> None:
    """``[server] trusted_proxies``: the account's ``ips`` and the failures count the client
    the balancer names (``X-AUTH-IP``); the contact is reached through the balancer, where
    the REGISTER came from."""
    config = CONFIG.replace(
        'realm = "test"', 'realm = "test"\ntrusted_proxies = ["198.51.100.10"]'
    ).replace(
        'password = "secret"\nregister = true',
        'password = "secret"\nregister = true\nips = ["203.0.113.0/24"]',
    )
    world = World(tmp_path, config)

    def through_balancer(client: str, password: str, cseq: int) -> Response:
        def forwarded(request: Request) -> Flow:
            request.headers.prepend("Via", "SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKlb")
            request.headers.add("X-AUTH-IP", client)
            flow = world.pipeline.origin(
                request, Flow(Transport.UDP, ("127.0.0.1", 5060), BALANCER)
            )
            assert flow.remote == BALANCER
            return flow

        contact = "<sip:pbx@10.1.1.5:5060>"
        # Without credentials, as from any address not known yet: the screen's stateless
        # 401 (the balancer is known; its client is not)
        first = register(contact, via_host=f"{client}:5060", cseq=cseq)
        screen = world.pipeline.screen(first, forwarded(first))
        assert screen is not None
        assert screen.status == 401
        value = dict(screen.headers)["WWW-Authenticate"]
        auth = build_authorization(
            value, method="REGISTER", uri="sip:127.0.0.1:5060", username="pbx", password=password
        )
        second = register(contact, via_host=f"{client}:5060", cseq=cseq + 1, authorization=auth)
        flow = forwarded(second)
        assert world.pipeline.screen(second, flow) is None  # credentials: on to the registrar
        return world.registrar.register(second, flow, time.time())

    try:
        assert through_balancer("203.0.113.7", "secret", 1).status == 200
        (bound,) = world.bindings.of("pbx").values()
        assert (bound.source_ip, bound.source_port) == BALANCER
        # a client outside the account's ips: refused with the right password, counted
        # against the client; the balancer, carrying everyone's REGISTERs, is never blocked
        for cseq in (3, 5, 7):
            assert through_balancer("198.18.0.1", "secret", cseq).status == 403
        mono = time.monotonic()
        assert world.live.is_blocked("198.18.0.1", mono)
        assert not world.live.is_blocked(BALANCER[0], mono)
        assert through_balancer("203.0.113.7", "secret", 9).status == 200
    finally:
        world.writer.close()
