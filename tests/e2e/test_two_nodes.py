"""Two ``softswitch run`` nodes sharing one Redis (``[server] shared_state``), end to end
with SIPp: an account's ``max_calls`` holds across both, a node killed with SIGKILL
stops holding its calls' slots once its lease (10 s) runs out, a gateway's ``capacity``
holds across both, a prepaid account's credit is never overspent across two nodes on one
PostgreSQL ledger, and authentication failures through both block the source on both.

Each node has its own listen port, ``workers = 1`` and its own SQLite CDR file, as nodes on
two hosts would. How many slots the nodes hold is read from Redis itself, with a client of
its own (``SharedState.total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
from callflow_harness import LOCAL, Sipp, Switch, read_cdrs
from callflow_net import NUMBER, Account, Carrier, Net, ok

from loopback_ports import free_port
from postgres_tool import Postgres, postgres
from redis_tool import Redis, running_redis
from softswitch.billing import ledger
from softswitch.billing.money import to_nanos
from softswitch.cluster import SharedState
from softswitch.store.migrations import migrate
from softswitch.store.postgres import query_postgres
from softswitch.store.postgres_connect import connect

__all__ = ["postgres"]

pytestmark = pytest.mark.e2e

MAX_CALLS = 3

#: A customer call the switch answers 503 or connects (then held for ``-d`` ms and hung up).
ANSWERED_OR_REFUSED = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_answered_or_refused">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "caller" <sip:1000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:1000@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="1"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "caller" <sip:1000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "caller" <sip:1000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" next="2"/>
  <label id="1"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "caller" <sip:1000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="2"/>
</scenario>
"""


def held(redis: Redis) -> int:
    """The slots every live node holds on the account, as Redis counts them."""

    async def ask() -> int:
        state = await SharedState.connect(redis.url, "e2e-observer")
        try:
            return await state.total("account:customer")
        finally:
            await state.close()

    return asyncio.run(ask())


def wait_held(redis: Redis, expected: int, timeout: float, explain: Net) -> None:
    deadline = time.monotonic() + timeout
    count = held(redis)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = held(redis)
    assert count == expected, explain.explain()


def start_node(
    net: Net, carrier: Carrier, redis: Redis, workers: int = 1, max_calls: int | None = MAX_CALLS
) -> Switch:
    """``net``'s switch: its own port and CDR file, the shared Redis."""
    return net.start_switch(
        [carrier],
        [Account(max_calls=max_calls)],
        workers=workers,
        server=f'shared_state = "{redis.url}"',
    )


def customer(net: Net, scenario: Path, label: str, calls: int, args: list[str]) -> Sipp:
    """A SIPp customer of ``net``'s node running ``scenario``."""
    sipp = Sipp(net.workdir, label, scenario, args=["-s", NUMBER, *args], calls=calls, timeout=120)
    net.sipps.append(sipp)
    return sipp.start(f"{LOCAL}:{net.port}")


def rows(*nets: Net, expected: int) -> list[dict[str, Any]]:
    """The nodes' CDRs once ``expected`` are written (asserted: no more, no fewer)."""
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [row for n in nets for row in read_cdrs(n.workdir / "cdr.sqlite")]
        if len(found) >= expected:
            break
        time.sleep(0.1)
    assert len(found) == expected, (found, [n.explain() for n in nets])
    return found


def test_max_calls_across_two_nodes_and_a_killed_nodes_slots_come_back(
    net: Net, second: Net
) -> None:
    with running_redis() as redis:
        gw = Carrier("gw1")
        carrier = net.carrier(gw, "uas_answer", calls=100, timeout=120)
        first_node = start_node(net, gw, redis)
        second_node = start_node(second, gw, redis)
        try:
            scenario = net.workdir / "uac_answered_or_refused.xml"
            scenario.write_text(ANSWERED_OR_REFUSED)

            # Both nodes at once: 2 x MAX_CALLS calls, each answered one held 8 s.
            hold = ["-d", "8000", "-l", str(MAX_CALLS), "-r", "20"]
            callers = [
                customer(n, scenario, f"callers_{i}", MAX_CALLS, hold)
                for i, n in enumerate((net, second))
            ]
            ok(net, *callers)
            cdrs = rows(net, second, expected=2 * MAX_CALLS)
            answered = [r for r in cdrs if r["end_reason"] == "normal_clearing"]
            refused = [r for r in cdrs if r["end_reason"] == "limit_exceeded"]
            assert len(answered) == MAX_CALLS, cdrs
            assert len(refused) == MAX_CALLS, cdrs
            assert {(r["status"], r["q850"]) for r in refused} == {(503, 34)}
            wait_held(redis, 0, 10, net)  # every call's end gave its slot back

            # The second node holds every slot; the first refuses; then the second dies.
            first_rows = len(read_cdrs(net.workdir / "cdr.sqlite"))
            holders = customer(
                second, scenario, "holders", MAX_CALLS, ["-d", "600000", "-l", str(MAX_CALLS)]
            )
            wait_held(redis, MAX_CALLS, 20, second)
            refusal = net.customer("uac_refused", fill={"EXPECTED": "503"}, label="refused")
            ok(net, refusal)
            over = rows(net, expected=first_rows + 1)[-1]
            assert (over["end_reason"], over["q850"]) == ("limit_exceeded", 34), over
            assert "across nodes" in over["detail"], over
            assert second_node.process is not None
            os.kill(second_node.process.pid, signal.SIGKILL)
            second_node.process.wait()
            holders.stop()
            wait_held(redis, 0, 30, net)  # within the 10 s lease (and its next check)

            # Admitted again, by the survivor.
            caller = net.customer("uac_call", args=["-d", "200"], label="after")
            ok(net, caller)
            last = rows(net, expected=first_rows + 2)[-1]
            assert last["end_reason"] == "normal_clearing", last
            assert first_node.process is not None
            assert first_node.process.poll() is None
        finally:
            net.switch = first_node
            first_node.stop()
            second_node.stop()
            carrier.stop()


def test_each_worker_is_a_node_of_its_own(net: Net) -> None:
    """``workers = 2``: two clients, ``<host>:<port>/0`` and ``/1``, both leased; calls
    through them count and give their slots back."""
    with running_redis() as redis:
        gw = Carrier("gw1")
        carrier = net.carrier(gw, "uas_answer", calls=100, timeout=60)
        node = start_node(net, gw, redis, workers=2)
        try:
            client = redis_client.Redis.from_url(redis.url, decode_responses=True)
            with contextlib.closing(client):
                leases = sorted(client.scan_iter("softswitch:node:*"))
            host = f"{socket.gethostname()}:{net.port}"
            assert leases == [f"softswitch:node:{host}/0", f"softswitch:node:{host}/1"]
            calls = net.customer("uac_call", calls=4, args=["-d", "200", "-l", "2"])
            ok(net, calls)
            assert [r["end_reason"] for r in rows(net, expected=4)] == ["normal_clearing"] * 4
            wait_held(redis, 0, 10, net)
        finally:
            node.stop()
            carrier.stop()


#: A deck whose first increment is all a call costs: a connect fee of 1.00, no per-minute
#: rate, so a call's later slices take nothing more and only the first holds compete.
CONNECT_FEE_DECK = "prefix,destination,rate,connect_fee\n44,UK,0,1.00\n"

#: The first holds the prepaid balance covers.
FIRST_HOLDS = 3


def start_billed_node(net: Net, carrier: Carrier, redis: Redis, database: str) -> Switch:
    """``net``'s switch on the shared PostgreSQL ``database`` and Redis, its customer a
    prepaid account on ``CONNECT_FEE_DECK``."""
    net.sell = CONNECT_FEE_DECK
    prepaid = Account(extra=('billing = "prepaid"',))
    # No periodic ledger read during the test: each node admits on the balance at its start.
    return net.start_switch(
        [carrier],
        [prepaid],
        billing="sync_interval = 30",
        server=f'shared_state = "{redis.url}"',
        database=database,
    )


def test_credit_is_never_overspent_across_two_nodes(
    net: Net, second: Net, postgres: Postgres
) -> None:
    """Both nodes read a balance of 3.00 from one ledger; each alone would admit 3 calls of
    a 1.00 first increment. Six calls at once, three through each: exactly 3 admitted."""
    url = postgres.database()
    migrate(url)
    with connect(url) as conn:
        at = dt.datetime.now(dt.UTC)
        ledger.book(conn, ledger.Booking("customer", "topup", to_nanos(Decimal(3)), "e2e", at))
    with running_redis() as redis:
        gw = Carrier("gw1")
        carrier = net.carrier(gw, "uas_answer", calls=100, timeout=120)
        first_node = start_billed_node(net, gw, redis, url)
        second_node = start_billed_node(second, gw, redis, url)
        try:
            scenario = net.workdir / "uac_answered_or_refused.xml"
            scenario.write_text(ANSWERED_OR_REFUSED.replace('"503"', '"402"'))
            hold = ["-d", "8000", "-l", str(FIRST_HOLDS), "-r", "20"]
            callers = [
                customer(n, scenario, f"callers_{i}", FIRST_HOLDS, hold)
                for i, n in enumerate((net, second))
            ]
            ok(net, *callers)
            cdrs = query_postgres(url)
            for _ in range(200):
                if len(cdrs) >= 2 * FIRST_HOLDS:
                    break
                time.sleep(0.05)
                cdrs = query_postgres(url)
            assert len(cdrs) == 2 * FIRST_HOLDS, (cdrs, net.explain(), second.explain())
            answered = [c for c in cdrs if c.end_reason == "normal_clearing"]
            refused = [c for c in cdrs if c.end_reason == "insufficient_balance"]
            assert len(answered) == FIRST_HOLDS, cdrs
            assert len(refused) == FIRST_HOLDS, cdrs
            assert {(c.status, c.q850) for c in refused} == {(402, 21)}
            assert all("across nodes" in c.detail for c in refused), cdrs
            with connect(url) as conn:
                sums, _ = ledger.balances(conn)
            assert sums["customer"] == 0  # 3.00 less three connect fees, never below

            def credit_held() -> int:
                async def ask() -> int:
                    state = await SharedState.connect(redis.url, "e2e-credit-observer")
                    try:
                        return await state.total("credit:customer")
                    finally:
                        await state.close()

                return asyncio.run(ask())

            deadline = time.monotonic() + 10
            while credit_held() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert credit_held() == 0  # every call's end gave its credit back
            # Each node's credit holds would outlive its 10 s lease by its grace, were it
            # killed: (3 + 1) heartbeats of 5 s, its 30 s ledger reads, a lease (60 s),
            # renewed with the lease every 3.3 s.
            client = redis_client.Redis.from_url(redis.url)
            try:
                graces = [client.pttl(k) for k in client.keys("softswitch:seen:*")]
            finally:
                client.close()
            assert len(graces) == 2, graces
            assert all(50_000 < ttl <= 60_000 for ttl in graces), graces
        finally:
            first_node.stop()
            second_node.stop()
            carrier.stop()


def test_gateway_capacity_across_two_nodes(net: Net, second: Net) -> None:
    """A gateway of capacity 2 and no account limit: each node alone would send it 3 calls;
    six at once through both, exactly 2 reach it and 4 are refused ``no_gateway``."""
    with running_redis() as redis:
        gw = Carrier("gw1", capacity=2)
        carrier = net.carrier(gw, "uas_answer", calls=100, timeout=120)
        first_node = start_node(net, gw, redis, max_calls=None)
        second_node = start_node(second, gw, redis, max_calls=None)
        try:
            scenario = net.workdir / "uac_answered_or_refused.xml"
            scenario.write_text(ANSWERED_OR_REFUSED)
            hold = ["-d", "8000", "-l", "3", "-r", "20"]
            callers = [
                customer(n, scenario, f"callers_{i}", 3, hold) for i, n in enumerate((net, second))
            ]
            ok(net, *callers)
            cdrs = rows(net, second, expected=6)
            answered = [r for r in cdrs if r["end_reason"] == "normal_clearing"]
            refused = [r for r in cdrs if r["end_reason"] == "no_gateway"]
            assert len(answered) == 2, cdrs
            assert len(refused) == 4, cdrs
            assert {(r["status"], r["q850"]) for r in refused} == {(503, 34)}
            across = [r for r in refused if "capacity 2 across nodes" in r["detail"]]
            assert across, cdrs  # at least one refusal came from the other node's calls

            def gateway_held() -> int:
                async def ask() -> int:
                    state = await SharedState.connect(redis.url, "e2e-gateway-observer")
                    try:
                        return await state.total("gateway:gw1")
                    finally:
                        await state.close()

                return asyncio.run(ask())

            deadline = time.monotonic() + 10
            while gateway_held() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert gateway_held() == 0  # every branch's end gave its slot back
        finally:
            first_node.stop()
            second_node.stop()
            carrier.stop()


def management_api(port: int, path: str) -> Any:
    """GET ``path`` of a node's management API (its token is ``e2e-token``)."""
    request = urllib.request.Request(f"http://{LOCAL}:{port}{path}")
    request.add_header("Authorization", "Bearer e2e-token")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode())


def test_auth_failures_through_both_nodes_block_the_source_on_both(net: Net, second: Net) -> None:
    """``auth_fail_limit = 4``: two wrong passwords from 127.0.0.2 through each node (neither
    node's own count reaches 4) block it in Redis, and each node copies the block into its
    own list (``/api/blocks``)."""
    with running_redis() as redis:
        gw = Carrier("gw1")
        alice = Account("alice", ips=(), username="alice", password="s3cret")
        apis = []
        for n in (net, second):
            port = free_port()
            apis.append(port)
            n.start_switch(
                [gw],
                [Account(), alice],
                defaults="auth_fail_limit = 4",
                management=f'listen = "{LOCAL}:{port}"\ntoken = "e2e-token"',
                server=f'shared_state = "{redis.url}"',
            )
        try:
            for n in (net, second):
                wrong = ["-au", "alice", "-ap", "wrong", "-auth_uri", f"{NUMBER}@{LOCAL}:{n.port}"]
                guesser = n.customer(
                    "uac_auth_refused",
                    calls=2,
                    args=[*wrong, "-i", "127.0.0.2"],
                    fill={"EXPECTED": "403"},
                    label="guesser",
                )
                ok(n, guesser)
            deadline = time.monotonic() + 10
            listed: list[list[str]] = []
            while time.monotonic() < deadline:
                listed = [
                    [b["ip"] for b in management_api(p, "/api/blocks")["blocks"]] for p in apis
                ]
                if listed == [["127.0.0.2"], ["127.0.0.2"]]:
                    break
                time.sleep(0.2)
            assert listed == [["127.0.0.2"], ["127.0.0.2"]], (net.explain(), second.explain())
            assert "authentication failures across nodes" in net.switch_log()
        finally:
            for n in (net, second):
                if n.switch is not None:
                    n.switch.stop()
