"""The authorise stage: IP/CIDR, port, tech prefix, digest (407, success, wrong password),
blocking."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from call_support import invite

from softswitch.call.authorise import (
    Authorised,
    Challenge,
    authorise,
    dialed_number,
    make_authenticator,
)
from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason, Refusal
from softswitch.call.snapshot import Snapshot
from softswitch.sip import Request, parse_message, validate_request
from softswitch.sip.digest import DigestAuthenticator, build_authorization

NOW = 1_000_000.0


@pytest.fixture
def nonces(snapshot: Snapshot) -> DigestAuthenticator:
    return make_authenticator(snapshot.config, b"0123456789abcdef0123456789abcdef")


def test_ip_in_cidr_authorises_and_keeps_the_number(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    out = authorise(snapshot, invite(), ("10.0.0.77", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Authorised)
    assert (out.account.id, out.dialed, out.number, out.method) == (
        "ipcust",
        "447911123456",
        "447911123456",
        "ip",
    )


@pytest.mark.parametrize(
    ("user", "account", "number"),
    [
        ("1234%2344123", "tech1", "44123"),
        ("99%2344123", "tech2", "44123"),
        ("1234#44123", "tech1", "44123"),  # unescaped, as VOS-style equipment sends it
        ("99#44123", "tech2", "44123"),
    ],
)
def test_tech_prefix_selects_among_accounts_sharing_an_ip(
    snapshot: Snapshot, nonces: DigestAuthenticator, user: str, account: str, number: str
) -> None:
    request = invite(f"sip:{user}@switch")
    out = authorise(snapshot, request, ("10.0.1.5", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Authorised)
    assert (out.account.id, out.number) == (account, number)
    assert out.dialed.endswith(number)
    assert "#" in out.dialed


def test_known_ip_without_a_matching_tech_prefix_is_refused_but_not_counted(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    live = LiveState()
    for _ in range(5):
        out = authorise(snapshot, invite(), ("10.0.1.5", 5060), live, NOW, nonces)
        assert isinstance(out, Challenge)  # digest is possible, so it is offered
    assert not live.is_blocked("10.0.1.5", NOW)


def test_unknown_source_is_challenged_when_digest_accounts_exist(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    out = authorise(snapshot, invite(), ("203.0.113.9", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Challenge)
    assert out.status == 407
    names = [name for name, _ in out.headers()]
    assert names == ["Proxy-Authenticate", "Proxy-Authenticate"]
    assert 'realm="test"' in out.values[0]
    assert "algorithm=MD5" in out.values[0]
    assert "algorithm=SHA-256" in out.values[1]


def test_unknown_source_gets_403_without_digest_accounts_and_gets_blocked(
    make_snapshot: Callable[..., Snapshot],
) -> None:
    snapshot = make_snapshot(
        {
            'username = "alice"\npassword = "secret"\n': 'ips = ["10.9.9.9"]\n',
        }
    )
    nonces = make_authenticator(snapshot.config, b"k" * 32)
    live = LiveState()
    for i in range(3):
        out = authorise(snapshot, invite(), ("203.0.113.9", 5060), live, NOW + i, nonces)
        assert isinstance(out, Refusal)
        assert (out.status, out.end_reason) == (403, EndReason.AUTH_FAILED)
        assert out.reason == "call rejected"  # Q.850 cause 21, whatever failed
    assert live.is_blocked("203.0.113.9", NOW + 3)
    out = authorise(snapshot, invite(), ("203.0.113.9", 5060), live, NOW + 10, nonces)
    assert isinstance(out, Refusal)
    assert "blocked" in out.detail
    assert not live.is_blocked("203.0.113.9", NOW + 3 + 300)


def test_a_block_never_cuts_off_an_ip_authorised_customer(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    live = LiveState()
    for _ in range(5):  # e.g. spoofed packets with bad credentials from the customer's address
        live.note_auth_failure("10.0.0.5", NOW, limit=3)
    assert live.is_blocked("10.0.0.5", NOW)
    out = authorise(snapshot, invite(), ("10.0.0.5", 5060), live, NOW, nonces)
    assert isinstance(out, Authorised)
    # A digest caller from a blocked address is refused without a challenge.
    out = authorise(snapshot, invite(), ("10.0.1.5", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Challenge)
    blocked = LiveState()
    for _ in range(3):
        blocked.note_auth_failure("10.0.1.5", NOW, limit=3)
    out = authorise(snapshot, invite(), ("10.0.1.5", 5060), blocked, NOW, nonces)
    assert isinstance(out, Refusal)


def _answer(
    request_uri: str, challenge: str, username: str, password: str, uri: str | None = None
) -> tuple[str, str]:
    value = build_authorization(
        challenge, method="INVITE", uri=uri or request_uri, username=username, password=password
    )
    return ("Proxy-Authorization", value)


@pytest.mark.parametrize("algorithm_index", [0, 1])
def test_digest_challenge_then_success(
    snapshot: Snapshot, nonces: DigestAuthenticator, algorithm_index: int
) -> None:
    live = LiveState()
    uri = "sip:447911123456@switch"
    first = authorise(snapshot, invite(uri), ("203.0.113.9", 5060), live, NOW, nonces)
    assert isinstance(first, Challenge)
    auth = _answer(uri, first.values[algorithm_index], "alice", "secret")
    out = authorise(snapshot, invite(uri, auth), ("203.0.113.9", 5060), live, NOW + 1, nonces)
    assert isinstance(out, Authorised)
    assert (out.account.id, out.method, out.username) == ("digest", "digest", "alice")


def test_wrong_password_unknown_user_and_wrong_uri_are_403_and_count(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    live = LiveState()
    uri = "sip:447911123456@switch"
    ch = authorise(snapshot, invite(uri), ("203.0.113.9", 5060), live, NOW, nonces)
    assert isinstance(ch, Challenge)
    bad = [
        _answer(uri, ch.values[0], "alice", "wrong"),
        _answer(uri, ch.values[0], "mallory", "secret"),
        _answer(uri, ch.values[0], "alice", "secret", uri="sip:1900@switch"),
    ]
    details = []
    for auth in bad:
        out = authorise(snapshot, invite(uri, auth), ("203.0.113.9", 5060), live, NOW, nonces)
        assert isinstance(out, Refusal)
        assert (out.status, out.end_reason, out.q850) == (403, EndReason.AUTH_FAILED, 21)
        details.append(out.detail)
    assert "wrong response" in details[0]
    assert "unknown user" in details[1]
    assert "uri" in details[2]
    assert live.is_blocked("203.0.113.9", NOW)  # auth_fail_limit = 3


def test_credentials_for_another_realm_are_ignored(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    other = DigestAuthenticator(realm="elsewhere", secret=b"z" * 32, algorithms=("MD5",))
    uri = "sip:447911123456@switch"
    auth = _answer(uri, other.challenges(NOW)[0], "alice", "secret")
    out = authorise(snapshot, invite(uri, auth), ("203.0.113.9", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Challenge)


def test_ip_and_digest_both_required(snapshot: Snapshot, nonces: DigestAuthenticator) -> None:
    live = LiveState()
    uri = "sip:447911123456@switch"
    # Right address and port: challenged, then authorised with bob's password.
    ch = authorise(snapshot, invite(uri), ("10.0.2.1", 5062), live, NOW, nonces)
    assert isinstance(ch, Challenge)
    auth = _answer(uri, ch.values[0], "bob", "pw")
    out = authorise(snapshot, invite(uri, auth), ("10.0.2.1", 5062), live, NOW, nonces)
    assert isinstance(out, Authorised)
    assert out.method == "ip+digest"
    # Right password from another port: the IP rule does not match, bob is not digest-only.
    ch = authorise(snapshot, invite(uri), ("10.0.2.1", 5063), live, NOW, nonces)
    assert isinstance(ch, Challenge)
    auth = _answer(uri, ch.values[0], "bob", "pw")
    out = authorise(snapshot, invite(uri, auth), ("10.0.2.1", 5063), live, NOW, nonces)
    assert isinstance(out, Refusal)
    # Alice's valid credentials from bob's address do not make the call bob's.
    ch = authorise(snapshot, invite(uri), ("10.0.2.1", 5062), live, NOW, nonces)
    assert isinstance(ch, Challenge)
    auth = _answer(uri, ch.values[0], "alice", "secret")
    out = authorise(snapshot, invite(uri, auth), ("10.0.2.1", 5062), live, NOW, nonces)
    assert isinstance(out, Refusal)


def test_expired_nonce_is_rechallenged_as_stale(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    uri = "sip:447911123456@switch"
    ch = authorise(snapshot, invite(uri), ("203.0.113.9", 5060), LiveState(), NOW, nonces)
    assert isinstance(ch, Challenge)
    auth = _answer(uri, ch.values[0], "alice", "secret")
    out = authorise(
        snapshot, invite(uri, auth), ("203.0.113.9", 5060), LiveState(), NOW + 3600, nonces
    )
    assert isinstance(out, Challenge)
    assert out.stale
    assert "stale=true" in out.values[0]


def test_another_nodes_challenge_answered_here_is_stale_and_never_counted(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    """Behind DNS SRV or a balancer a client may send the answer to one node's 407 to
    another (each node signs nonces with its own secret), or to this node after a restart:
    right credentials get a stale challenge (the client retries without prompting) and are
    never counted towards a block; the retry with our nonce is authorised. Wrong ones are
    refused and counted, as always."""
    uri = "sip:447911123456@switch"
    source = ("203.0.113.9", 5060)
    other = make_authenticator(snapshot.config, b"another node's secret, 32 bytes.")
    live = LiveState()
    limit = snapshot.config.defaults.auth_fail_limit
    for _ in range(limit + 1):
        theirs = authorise(snapshot, invite(uri), source, LiveState(), NOW, other)
        assert isinstance(theirs, Challenge)
        auth = _answer(uri, theirs.values[0], "alice", "secret")
        out = authorise(snapshot, invite(uri, auth), source, live, NOW, nonces)
        assert isinstance(out, Challenge), out
        assert out.stale
        assert "stale=true" in out.values[0]
    assert not live.is_blocked(source[0], NOW)
    auth = _answer(uri, out.values[0], "alice", "secret")
    done = authorise(snapshot, invite(uri, auth), source, live, NOW, nonces)
    assert isinstance(done, Authorised)
    assert (done.account.id, done.method, done.username) == ("digest", "digest", "alice")
    theirs = authorise(snapshot, invite(uri), source, LiveState(), NOW, other)
    assert isinstance(theirs, Challenge)
    wrong = _answer(uri, theirs.values[0], "alice", "guess")
    refused = authorise(snapshot, invite(uri, wrong), source, live, NOW, nonces)
    assert isinstance(refused, Refusal)


def test_disabled_account_still_authorises_limits_refuse_it(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    out = authorise(snapshot, invite(), ("10.0.3.1", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Authorised)
    assert out.account.id == "off"


def test_tel_uri_and_plus(snapshot: Snapshot, nonces: DigestAuthenticator) -> None:
    out = authorise(
        snapshot, invite("tel:+447911123456"), ("10.0.0.1", 1), LiveState(), NOW, nonces
    )
    assert isinstance(out, Authorised)
    assert out.number == "+447911123456"


def _wire_invite(user: str, *extra: str) -> Request:
    """An INVITE as received: the user part in the Request-URI, To and From as written."""
    text = "\r\n".join(
        [
            f"INVITE sip:{user}@switch SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.1.5:5060;branch=z9hG4bK-1",
            f"From: <sip:{user}@10.0.1.5>;tag=a",
            f"To: <sip:{user}@switch>",
            "Call-ID: call-1@test",
            "CSeq: 1 INVITE",
            "Max-Forwards: 70",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    assert validate_request(message) is None
    return message


@pytest.mark.parametrize("user", ["*99#44123", "%2A99%2344123", "%2a99#44123", "*99%2344123"])
def test_tech_prefix_with_star_and_hash_matches_escaped_or_not(
    make_snapshot: Callable[..., Snapshot], user: str
) -> None:
    snapshot = make_snapshot({'tech_prefix = "99#"': 'tech_prefix = "*99#"'})
    nonces = make_authenticator(snapshot.config, b"k" * 32)
    request = _wire_invite(user)
    out = authorise(snapshot, request, ("10.0.1.5", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Authorised)
    assert (out.account.id, out.dialed, out.number) == ("tech2", "*99#44123", "44123")
    assert dialed_number(request) == "*99#44123"


def test_digest_uri_with_an_unescaped_hash_is_checked_as_written(
    snapshot: Snapshot, nonces: DigestAuthenticator
) -> None:
    """The client signs the Request-URI it sent; the switch compares it unchanged."""
    user = "1234#447911123456"
    first = authorise(snapshot, _wire_invite(user), ("203.0.113.9", 5060), LiveState(), NOW, nonces)
    assert isinstance(first, Challenge)
    auth = build_authorization(
        first.values[0],
        method="INVITE",
        uri=f"sip:{user}@switch",
        username="alice",
        password="secret",
    )
    request = _wire_invite(user, f"Proxy-Authorization: {auth}")
    out = authorise(snapshot, request, ("203.0.113.9", 5060), LiveState(), NOW, nonces)
    assert isinstance(out, Authorised)
    assert (out.account.id, out.dialed) == ("digest", user)
