"""The caller-ID a replay routes on is the one the switch routed on (``cdrs.caller_id``),
recorded by the real pipeline: ``P-Asserted-Identity`` over ``From``, ``tel:`` URIs,
anonymity. CDRs without it (older ones) fall back to ``caller`` with the account's rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from pathlib import Path

from replay_support import write_config

from softswitch.call.live import LiveState
from softswitch.call.refusal import EndReason
from softswitch.call.snapshot import build_snapshot
from softswitch.cdr import CdrRecord, CdrStore, query_file
from softswitch.config import load_config
from softswitch.proxy.accounting import build_cdr
from softswitch.proxy.calls import Admission, Attempt, Call
from softswitch.proxy.pipeline import Pipeline
from softswitch.replay.command import replay
from softswitch.sip import Request
from softswitch.sip.digest import DigestAuthenticator
from softswitch.sip.transaction import ServerTransaction
from softswitch.transport import Flow, Transport

#: Callers whose caller-ID starts 4420 go to b; everyone else to a (replay_support's LCR).
CALLER_ROUTE = (
    '\n[[routes]]\nplan = "main"\nprefix = "44"\ngateways = ["b"]\ncaller_prefix = "4420"\n'
)
AT = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC).timestamp()


class _Sink:
    def enqueue(self, *args: object) -> None:
        pass


def _recorded(config: Path, call_id: str, headers: list[tuple[str, str]]) -> CdrRecord:
    """The CDR the switch writes for a call from ``headers`` that its first gateway
    refuses busy: admitted by the real pipeline, recorded by ``build_cdr``."""
    snapshot = build_snapshot(load_config(config))
    nonces = DigestAuthenticator(realm="test", secret=b"0123456789abcdef0123")
    pipeline = Pipeline(snapshot, LiveState(), nonces, _Sink())  # type: ignore[arg-type]
    uri = "sip:442071234567@switch.example"
    request = Request(
        "INVITE",
        uri,
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1"),
            *headers,
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
        ],
    )
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), ("10.0.0.1", 5060))
    admission = pipeline.admit(request, flow, AT)
    assert isinstance(admission, Admission), admission
    context = admission.policy
    first = context.plan.candidates[0].gateway  # type: ignore[attr-defined]
    call = Call(
        call_id=call_id,
        invite=request,
        caller_flow=flow,
        server_tx=ServerTransaction(request, reliable=False),
        admission=admission,
        invite_at=AT,
        started_mono=0.0,
    )
    call.attempts.append(
        Attempt(first, uri, "442071234567", AT, status=486, outcome="failed", ended_at=AT + 1)
    )
    call.end_at, call.final_status, call.end_reason = AT + 1, 486, EndReason.BUSY
    record = build_cdr(
        call,
        snapshot,
        context.account,  # type: ignore[attr-defined]
        context.plan,  # type: ignore[attr-defined]
    )
    pipeline.live.account_release("cust")
    return record


def _replay(config: Path, cdrs: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert replay(str(config), str(cdrs), [], out=out, err=err, progress=False) == 0, err
    return out.getvalue()


def test_replay_routes_on_the_caller_id_the_switch_routed_on(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + CALLER_ROUTE)
    calls = {
        # A PBX's extension in From, the number in P-Asserted-Identity: routed to b.
        "pai": [("From", "<sip:100@pbx>;tag=a"), ("P-Asserted-Identity", "<sip:442079460000@pbx>")],
        # A tel: URI: its number, routed to b.
        "tel": [("From", "<tel:442079460000>;tag=a")],
        # Anonymous by host: no caller-ID, routed to a although the user is a 4420 number.
        "anon": [("From", "<sip:442079460000@anonymous.invalid>;tag=a")],
    }
    records = [_recorded(config, call_id, headers) for call_id, headers in calls.items()]
    assert [(r.caller, r.caller_id, r.attempts[0].gateway_id) for r in records] == [
        ("100", "442079460000", "b"),
        ("tel:442079460000", "442079460000", "b"),
        ("442079460000", "", "a"),
    ]
    database = tmp_path / "cdr.sqlite"
    with CdrStore(database) as store:
        for record in records:
            store.write(record).result(timeout=30)
    assert [r.caller_id for r in query_file(database)] == ["442079460000", "442079460000", ""]
    out = _replay(config, database)
    assert "3 calls replayed: 0 to a different first gateway, 0 refused" in out


def test_a_cdr_without_caller_id_falls_back_to_the_from_user(tmp_path: Path) -> None:
    """An older CDR (caller_id null) is replayed on ``caller`` with the account's rules: a
    ``tel:`` URI's number is read, a P-Asserted-Identity it never had is missed."""
    config = write_config(tmp_path)
    config.write_text(config.read_text() + CALLER_ROUTE)
    tel = _recorded(config, "tel", [("From", "<tel:442079460000>;tag=a")])
    pai = _recorded(
        config,
        "pai",
        [("From", "<sip:100@pbx>;tag=a"), ("P-Asserted-Identity", "<sip:442079460000@pbx>")],
    )
    database = tmp_path / "cdr.sqlite"
    with CdrStore(database) as store:
        for record in (tel, pai):
            store.write(dataclasses.replace(record, caller_id=None)).result(timeout=30)
    out = _replay(config, database)
    assert "2 calls replayed: 1 to a different first gateway, 0 refused" in out
    assert "pai  cust  442071234567  b -> a" in out
