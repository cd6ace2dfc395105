"""Caller-ID: the ``cli`` rules of accounts and gateways, what counts as a caller-ID, the
From/P-Asserted-Identity a gateway gets, and CLI and non-CLI routes of one prefix."""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.call.cli import (
    Identity,
    Party,
    apply_rule,
    header_edits,
    identity_of,
    rewrite,
    rewrite_user,
)
from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason, Refusal
from softswitch.call.routing import RoutePlan, route_call
from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrRecord
from softswitch.cli import main
from softswitch.commands import show_route
from softswitch.config import CliRule, ConfigError, Route, load_config
from softswitch.proxy.calls import Admission, Call, Target
from softswitch.proxy.forward import Hop, prepare_branch, relay_response
from softswitch.proxy.pipeline import Pipeline
from softswitch.sip import Request, Response, SipURI, Via, parse_message, parse_name_addr
from softswitch.sip.digest import DigestAuthenticator
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow, Transport

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

CONFIG = """
[[rate_decks]]
id = "d"
file = "d.csv"

[[accounts]]
id = "acc"
ips = ["10.0.0.0/24"]
routing_plan = "p"
ACCOUNT_CLI

[[gateways]]
id = "cli_gw"
address = "192.0.2.1:5060"
rate_deck = "d"
GATEWAY_CLI

[[gateways]]
id = "grey_gw"
address = "192.0.2.2:5060"
rate_deck = "d"

[[gateways]]
id = "other_gw"
address = "192.0.2.3:5060"
rate_deck = "d"

[[routes]]
plan = "p"
prefix = "44"
gateways = ["cli_gw"]
cli = "required"

[[routes]]
plan = "p"
prefix = "44"
gateways = ["grey_gw"]
cli = "absent"

[[routes]]
plan = "p"
prefix = "33"
gateways = ["other_gw"]
"""


def write(tmp_path: Path, text: str, account: str = "", gateway: str = "") -> Path:
    (tmp_path / "d.csv").write_text("prefix,rate\n44,0.01\n33,0.02\n")
    path = tmp_path / "switch.toml"
    path.write_text(text.replace("ACCOUNT_CLI", account).replace("GATEWAY_CLI", gateway))
    return path


def problems(tmp_path: Path, text: str, account: str = "", gateway: str = "") -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text, account, gateway))
    lines = str(e.value).splitlines()
    assert len(lines) == len(e.value.problems)  # one line per problem
    assert all(line.startswith(f"{tmp_path / 'switch.toml'}: ") for line in lines)
    return [f"{p.key}: {p.reason}" for p in e.value.problems]


def snapshot_of(tmp_path: Path, account: str = "", gateway: str = "") -> Snapshot:
    return build_snapshot(load_config(write(tmp_path, CONFIG, account, gateway)))


def invite(*identity: str, from_: str = '"Alice" <sip:0201234567@10.0.0.5>;tag=f-1') -> Request:
    lines = [
        "INVITE sip:441234567@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx",
        "Max-Forwards: 70",
        f"From: {from_}",
        "To: <sip:441234567@127.0.0.1>",
        "Call-ID: c1",
        "CSeq: 1 INVITE",
        "Contact: <sip:1000@10.0.0.5>",
        *identity,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def rule(**keys: object) -> CliRule:
    if "set" in keys:
        return CliRule(kind="set", **keys)  # type: ignore[arg-type]
    kind = "regex" if "match" in keys else "prefix"
    return CliRule(kind=kind, **keys)  # type: ignore[arg-type]


# -- the configuration ----------------------------------------------------------------------


def test_cli_rules_in_the_file_form(tmp_path: Path) -> None:
    account = 'cli = [{ match = "^00", replace = "" }, { prefix = "0", strip = 1, add = "44" }]'
    gateway = 'cli = [{ set = "+441234567890" }]'
    cfg = load_config(write(tmp_path, CONFIG, account, gateway))
    regex, prefix = cfg.account("acc").cli
    assert (regex.kind, regex.match, regex.pattern is not None) == ("regex", "^00", True)
    assert (prefix.kind, prefix.prefix, prefix.strip, prefix.add) == ("prefix", "0", 1, "44")
    (fixed,) = cfg.gateway("cli_gw").cli
    assert (fixed.kind, fixed.set) == ("set", "+441234567890")
    assert cfg.gateway("grey_gw").cli == ()
    assert [r.cli for r in cfg.routes] == ["required", "absent", "any"]
    # The model form round-trips (what the management API serves).
    assert type(cfg).model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize(
    ("account", "gateway", "expected"),
    [
        ('cli = [{ set = "44x" }]', "", "accounts[0].cli[0].set: must be digits, optionally"),
        ('cli = [{ set = "" }]', "", "accounts[0].cli[0].set: must be the caller-ID to send"),
        ("cli = [{}]", "", "accounts[0].cli[0]: needs one of set, match/replace or prefix"),
        ('cli = [{ match = "(" }]', "", "accounts[0].cli[0].match: bad regular expression"),
        ('cli = [{ set = "1", prefix = "0" }]', "", "accounts[0].cli[0].prefix: unknown key"),
        ("", 'cli = [{ prefix = "0", strip = 99 }]', "gateways[0].cli[0].strip: must be between"),
        ("", 'cli = [{ add = "+4+4" }]', "gateways[0].cli[0].add: must be digits"),
        ("", 'cli = { set = "1" }', "gateways[0].cli: must be an array of tables"),
    ],
)
def test_bad_cli_rules_are_one_line_each(
    tmp_path: Path, account: str, gateway: str, expected: str
) -> None:
    found = problems(tmp_path, CONFIG, account, gateway)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_a_route_cli_must_be_one_of_three(tmp_path: Path) -> None:
    text = CONFIG.replace('cli = "absent"', 'cli = "maybe"')
    assert problems(tmp_path, text) == [
        "routes[1].cli: must be one of 'any', 'required', 'absent', got 'maybe'"
    ]


def test_one_prefix_twice_only_as_cli_and_non_cli_route(tmp_path: Path) -> None:
    # 'any' serves every call: it clashes with 'required' and with 'absent'.
    text = CONFIG.replace('cli = "absent"', 'cli = "any"')
    (line,) = problems(tmp_path, text)
    assert line.startswith("routes[1].cli: plan 'p' already has prefix '44' for these calls")
    assert "(routes[0], cli = 'required')" in line
    text = CONFIG.replace('cli = "absent"', 'cli = "required"')
    (line,) = problems(tmp_path, text)
    assert line.startswith("routes[1].cli: plan 'p' already has prefix '44'")
    # Two plain routes: today's message.
    text = CONFIG.replace('cli = "required"', "").replace('cli = "absent"', "")
    assert problems(tmp_path, text) == [
        "routes[1].prefix: plan 'p' already has prefix '44' (routes[0])"
    ]


def test_a_cli_route_and_its_non_cli_twin_share_their_quality(tmp_path: Path) -> None:
    text = CONFIG.replace('cli = "absent"', 'cli = "absent"\nquality = { min_asr = 0.3 }')
    (line,) = problems(tmp_path, text)
    assert line.startswith("routes[1].quality: must be the same as routes[0]'s")
    both = text.replace('cli = "required"', 'cli = "required"\nquality = { min_asr = 0.3 }')
    assert len(load_config(write(tmp_path, both)).routes) == 3


def test_route_cli_defaults_to_any() -> None:
    assert Route(plan="p", prefix="", gateways=("g",)).cli == "any"


# -- the rules ------------------------------------------------------------------------------


def test_each_kind_of_rule() -> None:
    assert apply_rule(rule(prefix="0", strip=1, add="44"), "02012") == "442012"
    assert apply_rule(rule(prefix="0", strip=1, add="44"), "442012") == "442012"  # no match
    assert apply_rule(rule(add="+"), "442012") == "+442012"  # prefix "" = always
    assert apply_rule(rule(strip=1), "+442012") == "442012"
    assert apply_rule(rule(match="^0044", replace="44"), "00442012") == "442012"
    assert apply_rule(rule(match=r"^(\d{3})\d*$", replace=r"\1"), "442012") == "442"
    assert apply_rule(rule(set="441234567890"), "02012") == "441234567890"
    rules = [rule(match="^00", replace=""), rule(prefix="0", strip=1, add="44")]
    assert rewrite_user(rules, "0201234") == "44201234"  # in order, each on the last result
    assert rewrite_user(rules, "00331234") == "331234"


def test_rules_leave_names_alone_but_a_fixed_cli_replaces_them() -> None:
    assert apply_rule(rule(add="44"), "alice") == "alice"
    assert apply_rule(rule(match=".*", replace="1"), "alice") == "alice"
    assert apply_rule(rule(set="4411"), "alice") == "4411"
    assert apply_rule(rule(set="4411"), None) == "4411"  # sip:host: a user is added


def test_a_rule_that_would_empty_the_user_is_skipped() -> None:
    assert apply_rule(rule(strip=5), "0201") == "0201"
    assert apply_rule(rule(match=".*", replace=""), "0201") == "0201"


def test_anonymous_parties_are_never_rewritten() -> None:
    identity = Identity(Party("anonymous", anonymous=True), (Party("0201234"),))
    out = rewrite(identity, [rule(set="441234")])
    assert out.from_ == Party("anonymous", anonymous=True)
    assert out.asserted == (Party("441234"),)


# -- what counts as a caller-ID -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "from_", "number"),
    [
        ((), "<sip:0201234567@h>;tag=1", "0201234567"),
        ((), "<sip:+44201234567@h>;tag=1", "+44201234567"),
        ((), "<sip:%2B44201234567@h>;tag=1", "+44201234567"),  # escapes read
        ((), "<tel:+44201234567>;tag=1", "+44201234567"),
        ((), '"Alice" <sip:alice@h>;tag=1', None),  # a name is no number
        ((), "<sip:h>;tag=1", None),
        ((), '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', None),
        ((), "<sip:0201@anonymous.invalid>;tag=1", None),
        (("P-Asserted-Identity: <sip:+4420@h>",), "<sip:anonymous@h>;tag=1", "+4420"),
        (("P-Asserted-Identity: <sip:+4420@h>, <tel:+4421>",), "<sip:9@h>;tag=1", "+4420"),
        (("P-Asserted-Identity: <sip:bob@h>",), "<sip:0201@h>;tag=1", "0201"),  # From then
        (("P-Asserted-Identity: <sip:+4420@h>", "Privacy: id"), "<sip:0201@h>;tag=1", None),
        (("Privacy: user",), "<sip:0201@h>;tag=1", None),
        (("Privacy: header;id",), "<sip:0201@h>;tag=1", None),
        (("Privacy: none",), "<sip:0201@h>;tag=1", "0201"),
        (("Privacy: header",), "<sip:0201@h>;tag=1", "0201"),
        (("P-Asserted-Identity: not a uri",), "<sip:0201@h>;tag=1", "0201"),
    ],
)
def test_the_caller_id_of_a_request(
    headers: tuple[str, ...], from_: str, number: str | None
) -> None:
    identity = identity_of(invite(*headers, from_=from_))
    assert identity.number == number
    assert identity.present is (number is not None)


def test_the_account_rules_decide_presence() -> None:
    """A fixed CLI gives a nameless caller one; a rule cannot unmask an anonymous one."""
    named = identity_of(invite(from_="<sip:alice@h>;tag=1"))
    assert not named.present
    assert rewrite(named, [rule(set="4411")]).number == "4411"
    anonymous = identity_of(invite(from_="<sip:anonymous@anonymous.invalid>;tag=1"))
    assert not rewrite(anonymous, [rule(set="4411")]).present


# -- the INVITE a gateway gets --------------------------------------------------------------


def test_only_the_user_part_changes() -> None:
    request = invite(
        'P-Asserted-Identity: "Alice" <sip:0201234567@10.0.0.5;user=phone>, <tel:0201234567>',
        from_='"Alice 0" <sip:0201234567@10.0.0.5;user=phone>;tag=f-1;x=y',
    )
    sent = rewrite(identity_of(request), [rule(prefix="0", strip=1, add="+44")])
    edits = dict(header_edits(request, sent))
    assert edits["From"] == '"Alice 0" <sip:+44201234567@10.0.0.5;user=phone>;tag=f-1;x=y'
    assert edits["P-Asserted-Identity"] == (
        '"Alice" <sip:+44201234567@10.0.0.5;user=phone>, <tel:+44201234567>'
    )


def test_an_addr_spec_from_and_a_compact_header() -> None:
    request = invite(from_="sip:0201@10.0.0.5;tag=f-9")
    edits = header_edits(request, rewrite(identity_of(request), [rule(set="4411")]))
    assert edits == (("From", "sip:4411@10.0.0.5;tag=f-9"),)
    compact = parse_message(bytes(request).replace(b"From:", b"f:"))
    assert isinstance(compact, Request)
    assert header_edits(compact, rewrite(identity_of(compact), [rule(set="4411")])) == edits


def test_nothing_changes_without_a_change() -> None:
    request = invite("P-Asserted-Identity: <sip:+4420@h>")
    assert header_edits(request, identity_of(request)) == ()
    no_match = rewrite(identity_of(request), [rule(prefix="9", add="1")])
    assert header_edits(request, no_match) == ()


def test_a_fixed_cli_reaches_a_user_that_needs_escaping_escaped() -> None:
    request = invite(from_="<sip:0201@10.0.0.5>;tag=f")
    sent = Identity(Party("12#3"), ())
    assert header_edits(request, sent) == (("From", "<sip:12%233@10.0.0.5>;tag=f"),)


def test_prepare_branch_replaces_the_fields_where_they_were() -> None:
    request = invite("P-Asserted-Identity: <sip:0201234567@10.0.0.5>")
    edits = header_edits(request, rewrite(identity_of(request), [rule(set="441234")]))
    hop = Hop(Transport.UDP, "127.0.0.1", 5060)
    out = prepare_branch(
        request,
        uri=SipURI(user="441234567", host="192.0.2.1", port=5060),
        via=Via("UDP", "127.0.0.1", 5060, {"branch": "z9hG4bK-b1"}),
        record_route=[hop],
        is_ours=lambda host, port: (host, port) == ("127.0.0.1", 5060),
        replace_headers=edits,
    )
    wire = bytes(out).decode()
    assert 'From: "Alice" <sip:441234@10.0.0.5>;tag=f-1\r\n' in wire
    assert "P-Asserted-Identity: <sip:441234@10.0.0.5>\r\n" in wire
    names = [name for name, _ in out.headers]
    assert names.index("From") < names.index("To")  # in its place
    assert out.from_tag == request.from_tag == "f-1"
    assert "sip:0201234567@" in bytes(request).decode()  # the caller's INVITE is untouched


_numbers = st.from_regex(r"\+?[0-9]{1,15}", fullmatch=True)
_display = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9 ]{0,12}", fullmatch=True))
_rules = st.lists(
    st.one_of(
        st.builds(
            lambda p, n, a: rule(prefix=p, strip=n, add=a),
            st.from_regex(r"\+?[0-9]{0,3}", fullmatch=True),
            st.integers(0, 4),
            st.from_regex(r"\+?[0-9]{0,4}", fullmatch=True),
        ),
        st.builds(lambda n: rule(set=n), _numbers),
        st.builds(
            lambda n: rule(match="^0+", replace=n), st.from_regex(r"[0-9]{0,3}", fullmatch=True)
        ),
    ),
    max_size=4,
)


@given(
    user=_numbers,
    display=_display,
    tag=st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
    rules=_rules,
)
def test_rewriting_keeps_everything_but_the_user(
    user: str, display: str | None, tag: str, rules: list[CliRule]
) -> None:
    """Whatever the rules, the From a gateway gets differs from the caller's in its user part
    only: the same display name, host, URI parameters and tag (the caller's dialog)."""
    shown = "" if display is None else f'"{display}" '
    request = invite(from_=f"{shown}<sip:{user}@10.0.0.5;user=phone>;tag={tag}")
    sent = rewrite(identity_of(request), rules)
    edits = dict(header_edits(request, sent))
    expected = rewrite_user(rules, user)
    assert ("From" in edits) is (expected != user)
    value = edits.get("From", request.headers.get("From") or "")
    before, after = request.from_, parse_name_addr(value)
    assert before is not None
    assert (after.display, after.params) == (before.display, before.params)
    assert after.tag == tag
    assert isinstance(after.uri, SipURI)
    assert isinstance(before.uri, SipURI)
    assert after.uri.with_(user=before.uri.user) == before.uri
    assert identity_of(invite(from_=value)).from_ == Party(expected)


# -- CLI and non-CLI routes -----------------------------------------------------------------


def test_a_call_with_a_caller_id_takes_the_cli_route(tmp_path: Path) -> None:
    snap = snapshot_of(tmp_path)
    account = snap.accounts["acc"]
    assert snap.has_cli_routes("p")
    with_cli = route_call(snap, account, "441234", AT, "c1", cli=True)
    without = route_call(snap, account, "441234", AT, "c1", cli=False)
    assert isinstance(with_cli, RoutePlan)
    assert isinstance(without, RoutePlan)
    assert (with_cli.gateway_ids, without.gateway_ids) == (("cli_gw",), ("grey_gw",))
    for cli in (True, False):  # routes for any call serve both
        plan = route_call(snap, account, "331234", AT, "c1", cli=cli)
        assert isinstance(plan, RoutePlan)
        assert plan.gateway_ids == ("other_gw",)


def test_a_cli_only_destination_refuses_a_call_without_one(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("prefix,rate\n44,0.01\n33,0.02\n")
    text = CONFIG.replace(
        'prefix = "44"\ngateways = ["grey_gw"]', 'prefix = "4420"\ngateways = ["grey_gw"]'
    )
    snap = build_snapshot(load_config(write(tmp_path, text)))
    out = route_call(snap, snap.accounts["acc"], "441234", AT, "c1", cli=False)
    assert isinstance(out, Refusal)
    assert out.end_reason is EndReason.NO_ROUTE
    assert out.detail == "plan 'p' (a call without a caller-ID): no route matches 441234"
    # Without a CLI the 4420 route is the longest match; with one, 44 (required) is.
    plan = route_call(snap, snap.accounts["acc"], "442012", AT, "c1", cli=False)
    assert isinstance(plan, RoutePlan)
    assert plan.gateway_ids == ("grey_gw",)
    plan = route_call(snap, snap.accounts["acc"], "442012", AT, "c1", cli=True)
    assert isinstance(plan, RoutePlan)
    assert plan.gateway_ids == ("cli_gw",)


def test_a_plan_without_cli_routes_has_one_table(tmp_path: Path) -> None:
    text = CONFIG.replace('cli = "required"', "").replace(
        'prefix = "44"\ngateways = ["grey_gw"]\ncli = "absent"',
        'prefix = "4420"\ngateways = ["grey_gw"]',
    )
    snap = build_snapshot(load_config(write(tmp_path, text)))
    assert not snap.has_cli_routes("p")
    assert snap.table("p", cli=False) is snap.table("p", cli=True) is snap.tables["p"]


# -- the pipeline: admit and the targets ----------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def enqueue(self, record: CdrRecord) -> None:
        self.records.append(record)


def _admit(snap: Snapshot, request: Request) -> tuple[Pipeline, Call]:
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    pipeline = Pipeline(snap, LiveState(), nonces, _Sink())  # type: ignore[arg-type]
    caller = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.5", 5060))
    now = time.time()
    admission = pipeline.admit(request, caller, now)
    assert isinstance(admission, Admission), admission
    call = Call(
        call_id="c1",
        invite=request,
        caller_flow=caller,
        server_tx=ServerTransaction(request, reliable=False),
        admission=admission,
        invite_at=now,
        started_mono=0.0,
    )
    return pipeline, call


def test_account_rules_route_and_gateway_rules_send(tmp_path: Path) -> None:
    """The account's rule makes the 0... number an E.164 one (present: the CLI route); the
    gateway's rule puts its own fixed CLI on top, in From and P-Asserted-Identity."""
    snap = snapshot_of(
        tmp_path,
        account='cli = [{ prefix = "0", strip = 1, add = "44" }]',
        gateway='cli = [{ add = "+" }]',
    )
    request = invite("P-Asserted-Identity: <sip:0201234567@10.0.0.5>")
    pipeline, call = _admit(snap, request)
    target = pipeline.next_target(call, time.monotonic())
    assert isinstance(target, Target)
    assert target.gateway_id == "cli_gw"
    assert dict(target.replace_headers) == {
        "From": '"Alice" <sip:+44201234567@10.0.0.5>;tag=f-1',
        "P-Asserted-Identity": "<sip:+44201234567@10.0.0.5>",
    }


def test_an_anonymous_call_takes_the_non_cli_route_as_sent(tmp_path: Path) -> None:
    snap = snapshot_of(tmp_path, account='cli = [{ set = "441234567890" }]')
    request = invite(from_='"Anonymous" <sip:anonymous@anonymous.invalid>;tag=f-2')
    pipeline, call = _admit(snap, request)
    target = pipeline.next_target(call, time.monotonic())
    assert isinstance(target, Target)
    assert (target.gateway_id, target.replace_headers) == ("grey_gw", ())


def test_without_rules_nothing_is_replaced(tmp_path: Path) -> None:
    pipeline, call = _admit(snapshot_of(tmp_path), invite())
    target = pipeline.next_target(call, time.monotonic())
    assert isinstance(target, Target)
    assert (target.gateway_id, target.replace_headers) == ("cli_gw", ())


# -- softswitch route --cli / --no-cli ------------------------------------------------------


def test_softswitch_route_with_and_without_a_caller_id(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG, account='cli = [{ prefix = "0", strip = 1, add = "44" }]')

    def run(**cli: str | bool) -> tuple[int, str]:
        out = io.StringIO()
        code = show_route(str(path), "acc", "441234", at=AT, out=out, err=out, **cli)  # type: ignore[arg-type]
        return code, out.getvalue()

    code, text = run(cli="0201234")
    assert code == 0
    assert "caller-ID '0201234' sent as '44201234' (the account's cli rules)" in text
    assert "cli_gw" in text
    assert "grey_gw" not in text
    code, text = run(cli=False)
    assert code == 0
    assert "caller-ID: none; the plan's routes for calls without one" in text
    assert "grey_gw" in text
    assert "cli_gw" not in text
    code, text = run(cli="anonymous")
    assert "not a caller-ID" in text
    assert "grey_gw" in text
    code, text = run()
    assert "caller-ID: present" in text
    assert "cli_gw" in text


def test_softswitch_route_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, CONFIG))
    base = ["route", "--config", path, "--account", "acc", "--at", "2026-06-01"]
    assert main([*base, "--no-cli", "441234"]) == 0
    assert "grey_gw" in capsys.readouterr().out
    assert main([*base, "--cli", "0201234", "441234"]) == 0
    assert "cli_gw" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one or the other
        main([*base, "--cli", "0201234", "--no-cli", "441234"])
    assert main([*base, "--live", "--no-cli", "441234"]) == 2
    assert "--no-cli is for the offline route, not --live" in capsys.readouterr().err


def test_the_caller_gets_its_own_from_back_in_the_answers() -> None:
    request = invite()
    response = parse_message(
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b1\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        b'From: "Alice" <sip:441234@10.0.0.5>;tag=f-1\r\n'
        b"To: <sip:441234567@127.0.0.1>;tag=callee\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(response, Response)
    original = request.headers.get("From") or ""
    out = relay_response(response, restore=[("From", original)])
    assert out.headers.get("From") == '"Alice" <sip:0201234567@10.0.0.5>;tag=f-1'
    assert [v.host for v in out.via] == ["10.0.0.5"]
    assert relay_response(response).headers.get("From") == response.headers.get("From")
