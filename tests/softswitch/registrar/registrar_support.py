"""Test support for the registrar: REGISTER requests as bytes, bindings, a configuration, a
CDR store that keeps nothing, and the phone's call as the pipeline's admission sees it.

A module with a unique name (not ``conftest``) so tests can import it directly.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

from softswitch.call.snapshot import Snapshot, build_snapshot
from softswitch.cdr import CdrRecord
from softswitch.config import load_config
from softswitch.proxy.engine import Reply
from softswitch.proxy.pipeline import Pipeline
from softswitch.registrar import Binding
from softswitch.sip import Request, parse_message
from softswitch.transport import Flow, Transport

CONFIG = """
[server]
listen = ["udp:127.0.0.1:5060"]
database = "cdr.sqlite"
realm = "test"
registrar_min_expires = 30
registrar_max_expires = 600

[defaults]
auth_fail_limit = 3
auth_fail_window = 60
auth_block_time = 300
max_attempts = 5

[[rate_decks]]
id = "sell"
file = "sell.csv"

[[accounts]]
id = "cust"
ips = ["10.0.0.0/24"]
rate_deck = "sell"
routing_plan = "main"

[[accounts]]
id = "pbx"
username = "pbx"
password = "secret"
register = true
routing_plan = "main"
tech_prefix = "9#"

[[accounts]]
id = "plain"
username = "plain"
password = "secret"
routing_plan = "main"

[[gateways]]
id = "to_pbx"
address = "registered:pbx"
priority = -1
strip_digits = 2
capacity = 1

[[gateways]]
id = "carrier"
address = "192.0.2.1:5060"

[[routes]]
plan = "main"
prefix = "44"
gateways = ["to_pbx", "carrier"]
strategy = "priority"
"""


def make_snapshot(tmp_path: Path, config: str = CONFIG) -> Snapshot:
    (tmp_path / "sell.csv").write_text("prefix,rate\n44,0.10\n")
    (tmp_path / "switch.toml").write_text(config)
    return build_snapshot(load_config(tmp_path / "switch.toml"))


def register(
    *contacts: str,
    expires: int | str | None = None,
    call_id: str = "reg-1",
    cseq: int = 1,
    user: str = "pbx",
    rport: bool = False,
    via_host: str = "192.168.1.20:5060",
    authorization: str | None = None,
    uri: str = "sip:127.0.0.1:5060",
    extra: tuple[str, ...] = (),
) -> Request:
    """A REGISTER for ``user``'s address of record with these Contact values; ``extra``:
    more header lines (``Path: ...``)."""
    lines = [
        f"REGISTER {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host};branch=z9hG4bK{call_id}{cseq}" + (";rport" if rport else ""),
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1>;tag=f1",
        f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines += extra
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def binding(
    contact: str = "sip:pbx@192.0.2.50:5060",
    *,
    account_id: str = "pbx",
    expires_at: float = 2000.0,
    q: float = 1.0,
    registered_at: float = 1000.0,
    source: tuple[str, int] = ("192.0.2.50", 5060),
    nat: bool = False,
    transport: str = "udp",
    path: str = "",
) -> Binding:
    return Binding(
        account_id=account_id,
        contact=contact,
        expires_at=expires_at,
        q=q,
        call_id="reg-1",
        cseq=1,
        transport=transport,
        source_ip=source[0],
        source_port=source[1],
        nat=nat,
        registered_at=registered_at,
        path=path,
    )


class NullSink:
    """The CDR store a registrar test's pipeline needs and never reads back: what it is
    given is done at once and dropped."""

    def write(self, record: CdrRecord) -> Future[None]:
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def enqueue(self, record: CdrRecord) -> None:
        pass


#: The registering phone's source address in the tests that call from it.
PHONE = ("203.0.113.7", 40000)


def invite(source: str, port: int) -> Request:
    """A bare INVITE from ``source:port`` to a number the CONFIG routes."""
    text = (
        "INVITE sip:441234567@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bKx\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1000@{source}>;tag=f\r\n"
        "To: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: c-{port}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{source}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def phone_calls(pipeline: Pipeline) -> int | None:
    """The status a call from the phone's address gets at admission (None: admitted): whether
    a registration authorises it."""
    flow = Flow(Transport.UDP, ("127.0.0.1", 5060), PHONE)
    answer = pipeline.admit(invite(*PHONE), flow, time.time())
    return answer.status if isinstance(answer, Reply) else None
