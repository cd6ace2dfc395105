"""Digest authentication: the RFC worked examples, the header grammar, nonces and replays."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.digest import (
    AuthOutcome,
    DigestAuthenticator,
    DigestParseError,
    NonceCountStore,
    build_authorization,
    compute_response,
    parse_auth_header,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef-test-secret"

# ---------------------------------------------------------------- RFC worked examples

RFC2617_AUTHORIZATION = """Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41\""""


def test_rfc2617_section_3_5_example() -> None:
    cred = parse_credentials(RFC2617_AUTHORIZATION)
    assert cred.username == "Mufasa"
    assert cred.nc == "00000001"
    computed = compute_response(
        algorithm=cred.algorithm,
        username=cred.username,
        realm=cred.realm,
        password="Circle Of Life",
        nonce=cred.nonce,
        method="GET",
        uri=cred.uri,
        qop=cred.qop,
        nc=cred.nc,
        cnonce=cred.cnonce,
    )
    assert computed == cred.response == "6629fae49393a05397450978507c4ef1"


RFC7616_CHALLENGE = {
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    challenge = (
        f'Digest realm="{RFC7616_CHALLENGE["realm"]}", qop="auth, auth-int", '
        f'algorithm={algorithm}, nonce="{RFC7616_CHALLENGE["nonce"]}", '
        f'opaque="{RFC7616_CHALLENGE["opaque"]}"'
    )
    header = build_authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
    )
    cred = parse_credentials(header)
    assert cred.response == expected
    assert cred.qop == "auth"
    assert cred.nc == "00000001"
    assert cred.opaque == RFC7616_CHALLENGE["opaque"]
    assert cred.algorithm == algorithm


# ---------------------------------------------------------------- header grammar


def test_parse_handles_escapes_commas_and_case() -> None:
    scheme, params = parse_auth_header(
        'digest  USERNAME="a\\"b,c" ,, Realm = "r\\\\x", nc=00000001,qop=auth'
    )
    assert scheme == "digest"
    assert params == {"username": 'a"b,c', "realm": "r\\x", "nc": "00000001", "qop": "auth"}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Digest realm",
        'Digest realm="unterminated',
        "Digest realm=a realm=b",
        'Digest realm="a", realm="b"',
        "Digest =x",
        'Digest realm="x\\',
    ],
)
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(DigestParseError):
        parse_auth_header(bad)


@given(st.text(max_size=60))
def test_parse_never_raises_anything_but_parse_error(text: str) -> None:
    with contextlib.suppress(DigestParseError):
        parse_auth_header(text)


@given(
    st.dictionaries(
        st.sampled_from(["username", "realm", "nonce", "uri", "cnonce", "opaque"]),
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
        min_size=1,
    )
)
def test_quoted_values_round_trip(values: dict[str, str]) -> None:
    from softswitch.sip.digest import format_auth_params

    header = format_auth_params("Digest", list(values.items()))
    assert parse_auth_header(header) == ("Digest", values)


def test_credentials_require_nc_and_cnonce_with_qop() -> None:
    with pytest.raises(DigestParseError):
        parse_credentials(
            'Digest username="u", realm="r", nonce="n", uri="x", response="0", qop=auth'
        )
    with pytest.raises(DigestParseError):
        parse_credentials(
            'Digest username="u", realm="r", nonce="n", uri="x", response="0", '
            'qop=auth, nc=1, cnonce="c"'
        )


# ---------------------------------------------------------------- server round trips

URI = "sip:+441234@switch.example"


def make_auth(**kw: object) -> DigestAuthenticator:
    counter = iter(range(1, 10_000))
    return DigestAuthenticator(
        realm="switch.example",
        secret=SECRET,
        salt=lambda n: next(counter).to_bytes(n, "big"),
        **kw,  # type: ignore[arg-type]
    )


def answer(challenge: str, *, password: str = "pw", nc: int = 1, method: str = "INVITE") -> str:
    return build_authorization(
        challenge, method=method, uri=URI, username="alice", password=password, nc=nc
    )


@pytest.mark.parametrize("index", [0, 1])
def test_round_trip_each_algorithm(index: int) -> None:
    auth = make_auth()
    challenges = auth.challenges(100.0)
    assert [parse_challenge(c).algorithm for c in challenges] == ["SHA-256", "MD5"]
    header = answer(challenges[index])
    result = auth.verify(header, method="INVITE", now=101.0, password="pw", request_uri=URI)
    assert result.ok, result.reason
    assert result.username == "alice"


def test_rfc8760_sha_512_256_round_trip() -> None:
    auth = make_auth(algorithms=("SHA-512-256",))
    (challenge,) = auth.challenges(0.0)
    header = answer(challenge)
    assert "algorithm=SHA-512-256" in header
    assert len(parse_credentials(header).response) == 64
    assert auth.verify(header, method="INVITE", now=1.0, password="pw").ok


def test_stored_ha1_instead_of_password() -> None:
    import hashlib

    auth = make_auth(algorithms=("MD5",))
    ha1 = hashlib.md5(b"alice:switch.example:pw").hexdigest()
    header = answer(auth.challenges(0.0)[0])
    assert auth.verify(header, method="INVITE", now=1.0, ha1=ha1).ok


def test_wrong_password_rejected() -> None:
    auth = make_auth()
    header = answer(auth.challenges(0.0)[0], password="guess")
    result = auth.verify(header, method="INVITE", now=1.0, password="pw")
    assert result.outcome is AuthOutcome.REJECTED


def test_wrong_method_rejected() -> None:
    auth = make_auth()
    header = answer(auth.challenges(0.0)[0], method="REGISTER")
    assert not auth.verify(header, method="INVITE", now=1.0, password="pw").ok


def test_another_secrets_nonce_is_stale_with_the_right_password_rejected_without() -> None:
    """Another node's nonce (each node signs with its own secret), or this switch's before a
    restart: a right response gets ``stale`` (the client retries with our nonce without
    prompting, RFC 7616 3.3), a wrong one a rejection (counted as a failure)."""
    auth = make_auth()
    other = DigestAuthenticator(realm="switch.example", secret=b"another-secret-of-16+")
    assert other.opaque != auth.opaque
    theirs = other.challenges(0.0)[0]
    forged = theirs.replace(other.opaque, auth.opaque)  # their nonce, our opaque
    for challenge in (theirs, forged):
        result = auth.verify(answer(challenge), method="INVITE", now=1.0, password="pw")
        assert result.outcome is AuthOutcome.STALE, result
        assert result.username == "alice"
        wrong = auth.verify(
            answer(challenge, password="guess"), method="INVITE", now=1.0, password="pw"
        )
        assert wrong.outcome is AuthOutcome.REJECTED, wrong
    assert (
        "nonce"
        in auth.verify(answer(forged, password="x"), method="INVITE", now=1.0, password="pw").reason
    )
    # Our nonce with another secret's opaque: stale too (the opaque is theirs).
    ours = auth.challenges(0.0)[0].replace(auth.opaque, other.opaque)
    assert auth.verify(answer(ours), method="INVITE", now=1.0, password="pw").stale
    # A garbage nonce with a right response for it: stale; the fresh nonce then works.
    garbage = auth.challenges(0.0)[0].replace('nonce="', 'nonce="x', 1)
    assert auth.verify(answer(garbage), method="INVITE", now=1.0, password="pw").stale
    assert auth.verify(
        answer(auth.challenges(2.0, stale=True)[0]), method="INVITE", now=3.0, password="pw"
    ).ok


def test_expired_nonce_with_valid_credentials_is_stale() -> None:
    auth = make_auth(nonce_ttl=30)
    header = answer(auth.challenges(0.0)[0])
    assert auth.verify(header, method="INVITE", now=29.0, password="pw").ok
    late = answer(auth.challenges(0.0)[0])
    assert auth.verify(late, method="INVITE", now=31.0, password="pw").stale
    challenge = auth.challenges(31.0, stale=True)[0]
    assert parse_challenge(challenge).stale


def test_expired_nonce_with_wrong_password_is_rejected_not_stale() -> None:
    auth = make_auth(nonce_ttl=30)
    header = answer(auth.challenges(0.0)[0], password="bad")
    assert auth.verify(header, method="INVITE", now=99.0, password="pw").outcome is (
        AuthOutcome.REJECTED
    )


def test_nonce_count_replay_detected() -> None:
    auth = make_auth()
    challenge = auth.challenges(0.0)[0]
    first = answer(challenge, nc=1)
    assert auth.verify(first, method="INVITE", now=1.0, password="pw").ok
    assert auth.verify(first, method="INVITE", now=2.0, password="pw").stale
    second = answer(challenge, nc=2)
    assert auth.verify(second, method="INVITE", now=3.0, password="pw").ok


def test_failed_attempt_does_not_consume_the_count() -> None:
    auth = make_auth()
    challenge = auth.challenges(0.0)[0]
    assert not auth.verify(
        answer(challenge, password="x"), method="INVITE", now=1, password="pw"
    ).ok
    assert auth.verify(answer(challenge), method="INVITE", now=1, password="pw").ok


def test_rfc2069_refused_by_default_and_single_use_when_allowed() -> None:
    strict = make_auth()
    legacy_challenge = strict.challenges(0.0)[0].replace(', qop="auth"', "")
    header = answer(legacy_challenge)
    assert "qop" not in header
    assert not strict.verify(header, method="INVITE", now=1.0, password="pw").ok
    lenient = make_auth(allow_rfc2069=True)
    header = answer(lenient.challenges(0.0)[0].replace(', qop="auth"', ""))
    assert lenient.verify(header, method="INVITE", now=1.0, password="pw").ok
    assert lenient.verify(header, method="INVITE", now=1.5, password="pw").stale
    # Without qop the response does not cover an nc: one added to the captured request does
    # not make it fresh again (a review finding).
    for n in (1, 2):
        replay = lenient.verify(f"{header}, nc={n:08x}", method="INVITE", now=2.0, password="pw")
        assert replay.stale, replay


def test_request_uri_must_match_when_checked() -> None:
    auth = make_auth()
    header = answer(auth.challenges(0.0)[0])
    result = auth.verify(header, method="INVITE", now=1.0, password="pw", request_uri="sip:x@y")
    assert not result.ok


def test_sess_algorithm_and_wrong_realm_refused() -> None:
    auth = make_auth()
    nonce = parse_challenge(auth.challenges(0.0)[0]).nonce
    sess = build_authorization(
        f'Digest realm="switch.example", nonce="{nonce}", algorithm=MD5-sess, qop="auth"',
        method="INVITE",
        uri=URI,
        username="alice",
        password="pw",
    )
    assert "algorithm" in auth.verify(sess, method="INVITE", now=1.0, password="pw").reason
    other_realm = build_authorization(
        f'Digest realm="elsewhere", nonce="{nonce}", qop="auth"',
        method="INVITE",
        uri=URI,
        username="alice",
        password="pw",
    )
    assert auth.verify(other_realm, method="INVITE", now=1.0, password="pw").reason == (
        "realm mismatch"
    )


def test_garbage_credentials_are_a_rejection_not_an_exception() -> None:
    auth = make_auth()
    assert not auth.verify('Digest username="x', method="INVITE", now=0, password="pw").ok


def test_store_is_bounded_and_eviction_does_not_reopen_replay() -> None:
    store = NonceCountStore(max_nonces=2, window=4)
    auth = make_auth(store=store)
    challenges = [auth.challenges(float(t))[0] for t in range(3)]
    for t, challenge in enumerate(challenges):
        assert auth.verify(answer(challenge), method="INVITE", now=t + 0.5, password="pw").ok
    assert len(store) == 2
    # The oldest nonce was evicted; replaying its first request must not succeed.
    replay = auth.verify(answer(challenges[0]), method="INVITE", now=5.0, password="pw")
    assert replay.stale


def test_store_window() -> None:
    store = NonceCountStore(window=4)
    store.record("n", 0, 10)
    assert store.is_fresh("n", 0, 9)
    assert not store.is_fresh("n", 0, 6)
    assert not store.is_fresh("n", 0, 10)
    assert store.is_fresh("n", 0, 11)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        DigestAuthenticator(realm="r", secret=b"short")


@given(st.text(max_size=200))
def test_verify_never_raises_on_garbage(text: str) -> None:
    auth = make_auth()
    result = auth.verify("Digest " + text, method="INVITE", now=0.0, password="pw")
    assert not result.ok
