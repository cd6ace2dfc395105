"""``softswitch run`` with several worker processes, end to end with SIPp.

Which worker handled a call is read from the switch's log: a worker's lines carry
``worker=N`` and the engine's call lines ``call_id=...``. A UDP request belongs to the
worker its Call-ID hashes to: the kernel delivers most there itself (``workers.steering``)
and a worker hands it the others (``workers.handoff``). TCP connections and datagrams with
no Call-ID go where the kernel's hash of the 4-tuple sends them, a hash with a secret of its
own; so the tests that need both workers to take calls place calls until both have (each
new call or source port is a coin toss: 16 tosses all alike happen once in 30 000 runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import re
import signal
import socket
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path
from unittest.mock import ANY

import pytest
from callflow_harness import LOCAL, Sipp
from callflow_net import NUMBER, Account, Carrier, Net, ok
from test_billing import assert_chain, deck, ledger_rows, nanos, top_up
from test_management import start
from test_registrar import PASSWORD, PBX, TO_PBX
from test_two_nodes import ANSWERED_OR_REFUSED, CONNECT_FEE_DECK, FIRST_HOLDS

from loopback_ports import free_port
from redis_tool import running_redis
from softswitch.billing import ledger
from softswitch.billing.money import to_nanos
from softswitch.cluster import SharedState
from softswitch.sip import Response, parse_message
from softswitch.sip.digest import build_authorization
from softswitch.transport import Address
from softswitch.workers.steering import FIRST, WINDOW

pytestmark = pytest.mark.e2e

_CALL_LINE = re.compile(r"worker=(\d+) .*call_id=(\S+)")
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def workers_of_calls(net: Net) -> dict[str, set[int]]:
    """Call-ID -> the workers that logged a line about it."""
    out: dict[str, set[int]] = {}
    for match in _CALL_LINE.finditer(net.switch_log()):
        out.setdefault(match.group(2), set()).add(int(match.group(1)))
    return out


def calls_until_both_workers(net: Net, *, transport: str = "u1", label: str = "c") -> int:
    """Calls of 100 ms, one after the other, until each of two workers has taken one (the
    kernel picks by Call-ID), at most 16: how many were placed."""
    placed = 0
    while placed < 16:
        customer = net.customer(
            "uac_call", args=["-d", "100"], transport=transport, label=f"{label}{placed}"
        )
        placed += 1
        ok(net, customer)
        if {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}:
            break
    return placed


def worker_pids(net: Net) -> dict[int, int]:
    """Worker index -> pid, the latest start of each."""
    return {int(m.group(1)): int(m.group(2)) for m in _STARTED.finditer(net.switch_log())}


def wait_for(predicate: object, what: str, net: Net, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"{what}\n{net.explain()}")


def test_calls_through_two_workers_spread_and_land_once(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=16)
    placed = calls_until_both_workers(net)
    rows = net.cdrs(placed)
    assert all(r["end_reason"] == "normal_clearing" for r in rows)
    assert len({r["call_id"] for r in rows}) == placed  # one CDR per call
    calls = workers_of_calls(net)
    assert {w for ws in calls.values() for w in ws} == {0, 1}, net.explain()
    # Every call's lines come from one worker: its ACK and BYE reached the worker that had it.
    assert all(len(ws) == 1 for ws in calls.values()), calls
    carrier.stop()


def test_default_worker_count_takes_calls(net: Net) -> None:
    """No ``workers`` anywhere: one per core (two on a two-core machine)."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=None)
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "200"])
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    expected = os.cpu_count() or 1
    if expected > 1:
        assert f"{expected} workers" in net.switch_log()


def _invite(port: int, call_id: str, source: int) -> bytes:
    return (
        f"INVITE sip:{NUMBER}@{LOCAL}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOCAL}:{source};branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:1000@{LOCAL}:{source}>;tag=t-{call_id}\r\n"
        f"To: <sip:{NUMBER}@{LOCAL}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:1000@{LOCAL}:{source}>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_invite_retransmissions_reach_one_worker(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_reject", fill={"STATUS": "486 Busy Here"}, calls=16)
    handled: set[int] = set()
    for n in range(16):
        call_id = f"retrans-{n}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOCAL, 0))
            source = sock.getsockname()[1]
            invite = _invite(net.port, call_id, source)
            for _ in range(5):  # the INVITE and four retransmissions, one socket
                sock.sendto(invite, (LOCAL, net.port))
            sock.settimeout(5)
            final = b""
            while not final.startswith(b"SIP/2.0 486"):
                final = sock.recv(65535)
            ack = invite.replace(b"INVITE sip", b"ACK sip", 1).replace(b"1 INVITE", b"1 ACK")
            to = re.search(rb"^To: .*$", final, re.M)
            assert to is not None
            ack = re.sub(rb"^To: .*$", to.group(0).replace(b"\\", b"\\\\"), ack, flags=re.M)
            sock.sendto(ack, (LOCAL, net.port))
        wait_for(lambda c=call_id: c in workers_of_calls(net), "no log of the call", net)
        workers = workers_of_calls(net)[call_id]
        assert len(workers) == 1, (call_id, workers)
        handled |= workers
        if n >= 1 and handled == {0, 1}:
            break
    rows = net.cdrs(n + 1)
    # One CDR per INVITE, however many copies of it came: no second worker started a call.
    assert sorted(r["call_id"] for r in rows) == sorted(f"retrans-{i}" for i in range(n + 1))
    assert handled == {0, 1}, "all calls on one worker: the spread was not shown"
    assert all(r["status"] == 486 for r in rows)
    carrier.stop()


def test_account_max_calls_holds_across_workers(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(max_calls=2)], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=20)
    held = [net.customer("uac_call", args=["-d", "30000"], label=f"held{i}") for i in (0, 1)]
    wait_for(lambda: len(workers_of_calls(net)) >= 2, "two calls up", net)
    time.sleep(0.5)  # both answered
    refused = 0
    refusers: set[int] = set()
    while refused < 12:
        extra = net.customer(
            "uac_refused", fill={"EXPECTED": "503"}, label=f"extra{refused}", timeout=5
        )
        ok(net, extra)
        refused += 1
        refusers = {w for c, ws in workers_of_calls(net).items() for w in ws}
        rows = [r for r in net.switch.cdrs(refused) if r["end_reason"] == "limit_exceeded"]
        assert len(rows) == refused, net.explain()
        if refusers == {0, 1} and refused >= 2:
            break
    # The two held calls and the refusals between them used both workers.
    assert refusers == {0, 1}, net.explain()
    for sipp in held:
        sipp.stop()
    carrier.stop()
    rows = net.switch.cdrs(refused)
    assert all(r["status"] == 503 for r in rows if r["end_reason"] == "limit_exceeded")


def calls_up_on_both_workers(net: Net, hold_ms: int) -> list[Sipp]:
    """Calls held ``hold_ms`` each, placed until both workers have one (at most 16)."""
    up: list[Sipp] = []
    while len({w for ws in workers_of_calls(net).values() for w in ws}) < 2 and len(up) < 16:
        up.append(net.customer("uac_call", args=["-d", str(hold_ms)], label=f"up{len(up)}"))
        time.sleep(0.3)
    assert {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}, net.explain()
    return up


def test_sighup_reaches_both_workers_and_sigterm_drains_both(net: Net) -> None:
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    switch = net.start_switch([gw1, gw2], [Account()], route=["gw1"], workers=2)
    c1 = net.carrier(gw1, "uas_answer", calls=20)
    c2 = net.carrier(gw2, "uas_answer", calls=20)
    net.write_config([gw1, gw2], [Account()], route=["gw2"], workers=2)
    switch.signal(signal.SIGHUP)
    wait_for(
        lambda: (
            {0, 1}
            <= set(map(int, re.findall(r"worker=(\d+) .*configuration reloaded", net.switch_log())))
        ),
        "both workers reloaded",
        net,
    )
    # Calls from many ports go to gw2 now, whichever worker takes them; two stay up.
    up = calls_up_on_both_workers(net, hold_ms=1500)
    switch.signal(signal.SIGTERM)
    ok(net, *up)
    assert switch.process is not None
    assert switch.process.wait(timeout=20) == 0
    rows = net.cdrs(len(up))
    assert all(r["gateway_id"] == "gw2" for r in rows)
    assert all(r["end_reason"] == "normal_clearing" for r in rows)
    log = net.switch_log()
    assert "worker=0" in log
    assert "worker=1" in log
    assert len(re.findall(r"worker=\d+ .*stopping: draining", log)) == 2
    c1.stop()
    c2.stop()


def test_ctrl_c_to_the_process_group_drains_every_worker(net: Net) -> None:
    """A terminal's Ctrl-C reaches the supervisor and every worker at once: the workers leave
    SIGINT to the supervisor, whose SIGTERM they drain on (a worker that took SIGINT itself
    would be killed by that SIGTERM in the middle of its drain)."""
    gw = Carrier("gw1")
    switch = net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=20)
    up = calls_up_on_both_workers(net, hold_ms=2000)
    switch.signal_group(signal.SIGINT)
    ok(net, *up)
    assert switch.process is not None
    assert switch.process.wait(timeout=20) == 0
    rows = net.cdrs(len(up))
    assert all(r["end_reason"] == "normal_clearing" for r in rows), rows
    log = net.switch_log()
    assert len(re.findall(r"worker=\d+ .*stopping: draining", log)) == 2, log
    assert "exited (signal" not in log, log
    carrier.stop()


def test_killed_worker_is_restarted_and_its_calls_released(net: Net, tmp_path: Path) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(max_calls=1)], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=20)
    held = net.customer("uac_call", args=["-d", "60000"], label="held", timeout=70)
    wait_for(lambda: len(workers_of_calls(net)) == 1, "the held call", net)
    time.sleep(0.5)
    (owners,) = workers_of_calls(net).values()
    (owner,) = owners
    # The limit holds: a second call is refused, whichever worker takes it.
    second = net.customer("uac_refused", fill={"EXPECTED": "503"}, label="second", timeout=5)
    ok(net, second)
    # Its CDR committed before the kill: a worker killed within a flush of a refusal loses
    # that CDR (only answered calls are kept open for recovery), as one process does.
    wait_for(lambda: len(net.switch.cdrs(1, timeout=0.1)) == 1, "the refusal's CDR", net)
    pids = worker_pids(net)
    os.kill(pids[owner], signal.SIGKILL)
    wait_for(
        lambda: worker_pids(net).get(owner, pids[owner]) != pids[owner],
        "the killed worker restarted",
        net,
    )
    died = rf"worker {owner} \(pid {pids[owner]}\) died \(signal SIGKILL\).* its (\d+) call counts"
    released = re.search(died, net.switch_log())
    assert released is not None, net.explain()
    assert released.group(1) == "2"  # the account's call and the gateway's attempt
    held.stop()
    # Its share is released: a new call is admitted although the dead one never hung up.
    third = net.customer("uac_call", args=["-d", "200"], label="third")
    ok(net, third)
    # The killed worker's call is closed by its successor (crash recovery), the others are
    # the refusal and the call admitted after the restart.
    rows = net.cdrs(3)
    reasons = ["limit_exceeded", "normal_clearing", "system_failure"]
    assert sorted(r["end_reason"] for r in rows) == reasons, net.explain()
    carrier.stop()


def test_statistics_and_operator_overrides_hold_across_workers(net: Net) -> None:
    """The primary's ``/metrics`` count every worker's calls; a gateway disabled through its
    API is disabled for the other worker too."""

    gw = Carrier("gw1")
    api = start(net, [gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=40)
    placed = calls_until_both_workers(net)
    assert {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}, net.explain()
    net.cdrs(placed)
    labels = {"account": "customer", "outcome": "normal_clearing"}
    wait_for(
        lambda: api.metric("softswitch_calls_total", **labels) == placed,
        f"/metrics counting {placed} calls",
        net,
    )
    assert api.metric("softswitch_calls_active", account="customer") == 0.0
    # Disabled on the primary (the API's worker): refused by both workers.
    assert api("POST", "/api/gateways/gw1/disable")[0] == 200
    before = set(workers_of_calls(net))
    refusers: set[int] = set()
    refused = 0
    while refusers != {0, 1} and refused < 16:
        extra = net.customer(
            "uac_refused", fill={"EXPECTED": "503"}, label=f"off{refused}", timeout=5
        )
        ok(net, extra)
        refused += 1
        calls = workers_of_calls(net)
        refusers = {w for c, ws in calls.items() if c not in before for w in ws}
    assert refusers == {0, 1}, net.explain()
    rows = net.cdrs(placed + refused)
    assert sum(r["gateway_id"] is None for r in rows) == refused
    carrier.stop()


def test_live_calls_of_every_worker_listed_and_hung_up_from_the_api(net: Net) -> None:

    gw = Carrier("gw1")
    api = start(net, [gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=16)
    waiting = []
    while len(waiting) < 16:
        waiting.append(net.customer("uac_wait_bye", label=f"w{len(waiting)}", timeout=30))
        api.calls_until("answered", len(waiting))
        if {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}:
            break
    assert {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}, net.explain()
    listed = api.calls_until("answered", len(waiting))
    assert sorted(c["id"] for c in listed) == sorted(workers_of_calls(net))
    owner = workers_of_calls(net)
    for call in listed:
        quoted = urllib.parse.quote(call["id"], safe="")
        assert api("GET", f"/api/calls/{quoted}") == (200, call | {"duration": ANY, "elapsed": ANY})
        status, done = api("DELETE", f"/api/calls/{quoted}")
        assert (status, done["hung_up"]) == (200, 1), (owner[call["id"]], done)
    ok(net, *waiting)  # each SIPp caller got the BYE of the worker that had its call
    rows = net.cdrs(len(waiting))
    assert all(r["end_reason"] == "operator_hangup" for r in rows)
    assert api("GET", "/api/calls") == (200, {"calls": []})
    carrier.stop()


def test_reload_from_the_api_reaches_every_worker(net: Net) -> None:

    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    api = start(net, [gw1, gw2], [Account()], route=["gw1"], workers=2)
    net.write_config(
        [gw1, gw2],
        [Account()],
        route=["gw2"],
        workers=2,
        management=f'listen = "{api.base.removeprefix("http://")}"\ntoken = "e2e-token"',
    )
    status, _ = api("POST", "/api/reload")
    assert status == 200
    wait_for(
        lambda: (
            {"0", "1"}
            <= set(re.findall(r"worker=(\d+) .*configuration reloaded", net.switch_log()))
        ),
        "both workers reloaded",
        net,
    )
    assert len(re.findall(r"configuration reloaded", net.switch_log())) == 2
    # Through the supervisor, as a SIGHUP: numbered, and passed to a worker restarting.
    assert "reload: passing SIGHUP to workers" in net.switch_log()


def test_tcp_calls_through_two_workers(net: Net) -> None:
    """Over TCP the kernel hands each connection to one worker; the carrier's leg is a
    connection the worker opens, and the dialog's requests reach the worker's own port."""
    gw = Carrier("gw1", transport="tcp")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=16)
    placed = calls_until_both_workers(net, transport="t1", label="t")
    calls = workers_of_calls(net)
    assert {w for ws in calls.values() for w in ws} == {0, 1}, net.explain()
    assert all(len(ws) == 1 for ws in calls.values()), calls
    rows = net.cdrs(placed)
    assert all(r["end_reason"] == "normal_clearing" for r in rows)
    assert "transport=tcp" in carrier.messages()
    carrier.stop()


def test_a_restarted_worker_relays_the_calls_queued_for_it_from_its_own_port(net: Net) -> None:
    """INVITEs that came while a worker was dead wait in its socket (the supervisor keeps it
    open); its successor must relay them from its own port, as any call: a Via naming the
    shared listen port sends the carrier's answers to whichever worker the kernel picks, and
    the call times out (408) when that is the other one."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_reject", fill={"STATUS": "486 Busy Here"}, calls=16)
    pids = worker_pids(net)
    os.kill(pids[1], signal.SIGKILL)
    sockets = []
    for n in range(12):  # during the restart's back-off: queued in the dead worker's socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCAL, 0))
        sock.sendto(_invite(net.port, f"queued-{n}", sock.getsockname()[1]), (LOCAL, net.port))
        sockets.append(sock)
    finals = {}
    for n, sock in enumerate(sockets):
        with sock:
            sock.settimeout(15)
            final = b"SIP/2.0 100"
            while final.startswith(b"SIP/2.0 1"):
                final = sock.recv(65535)
            finals[f"queued-{n}"] = final.split(b"\r\n", 1)[0].decode()
            invite = _invite(net.port, f"queued-{n}", sock.getsockname()[1])
            ack = invite.replace(b"INVITE sip", b"ACK sip", 1).replace(b"1 INVITE", b"1 ACK")
            to = re.search(rb"^To: .*$", final, re.M)
            assert to is not None
            ack = re.sub(rb"^To: .*$", to.group(0).replace(b"\\", b"\\\\"), ack, flags=re.M)
            sock.sendto(ack, (LOCAL, net.port))
    workers = workers_of_calls(net)
    assert any(workers.get(c) == {1} for c in finals), "no call queued for the dead worker"
    # Every INVITE the carrier got names a worker's own port, never the shared one.
    for block in re.split(r"^-{10,}.*$", carrier.messages(), flags=re.MULTILINE):
        if "message received" in block and re.search(r"^INVITE sip:", block, re.M):
            via = re.search(rf"^Via: SIP/2.0/UDP {LOCAL}:(\d+);", block, re.M)
            route = re.search(rf"^Record-Route: <sip:{LOCAL}:(\d+);lr>", block, re.M)
            assert via is not None
            assert route is not None
            assert int(via.group(1)) != net.port, block
            assert int(route.group(1)) != net.port, block
    assert set(finals.values()) == {"SIP/2.0 486 Busy Here"}, (finals, net.explain())
    carrier.stop()


def _header(message: bytes, name: str) -> str:
    found = re.search(rb"^" + name.encode() + rb": *(.*?)\r$", message, re.M)
    assert found is not None, (name, message)
    return found.group(1).decode()


def test_a_bye_towards_the_caller_leaves_from_the_port_it_called(net: Net) -> None:
    """The caller's NAT or firewall lets in only the address it sent its INVITE to (the
    shared listen port): the carrier's BYE must reach it from there, whichever worker has
    the call, while the Via of that BYE names the worker's own port."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer_bye", args=["-d", "200"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        sock.settimeout(10)
        source = sock.getsockname()[1]
        invite = _invite(net.port, "bye-source", source)
        sock.sendto(invite, (LOCAL, net.port))
        final = b"SIP/2.0 100"
        while final.startswith(b"SIP/2.0 1"):
            final = sock.recv(65535)
        assert final.startswith(b"SIP/2.0 200"), final
        route = _header(final, "Record-Route")
        hop = re.search(r"sip:([^:;>]+):(\d+)", route)
        assert hop is not None
        contact = _header(final, "Contact").strip("<>").split(">")[0]
        ack = (
            f"ACK {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL}:{source};branch=z9hG4bK-bye-source-ack\r\n"
            f"Route: {route}\r\n"
            f"From: {_header(final, 'From')}\r\nTo: {_header(final, 'To')}\r\n"
            "Call-ID: bye-source\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(ack.encode(), (hop.group(1), int(hop.group(2))))
        data, sender = b"", ("", 0)
        while not data.startswith(b"BYE "):
            data, sender = sock.recvfrom(65535)
        assert sender == (LOCAL, net.port), net.explain()
        via = re.search(rf"SIP/2.0/UDP {LOCAL}:(\d+)", _header(data, "Via"))
        assert via is not None
        assert int(via.group(1)) != net.port  # the answer goes to the worker's own port
        vias = re.findall(rb"^Via: .*?\r\n", data, re.M)  # every Via, in order
        reply = (
            b"SIP/2.0 200 OK\r\n"
            + b"".join(vias)
            + "".join(
                f"{name}: {_header(data, name)}\r\n" for name in ("From", "To", "Call-ID")
            ).encode()
            + f"CSeq: {_header(data, 'CSeq')}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        sock.sendto(reply, (LOCAL, int(via.group(1))))
    ok(net, carrier)
    (cdr,) = net.cdrs()
    assert cdr["hangup_side"] == "callee"


def test_one_caller_socket_spreads_its_calls_over_both_workers(net: Net) -> None:
    """A wholesale SBC sends every call from one ip:port (SIPp's default ``-t u1``: one
    socket): the Call-ID steering (``workers.steering``) spreads the calls over the workers,
    where the 4-tuple hash alone would put them all on one. Two witnesses of the worker: the
    switch log's ``worker=N`` lines per Call-ID, and the worker's own port in the top Via of
    the INVITEs the carrier received."""
    calls = 24
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=calls)
    customer = net.customer("uac_call", args=["-d", "100", "-r", "20"], calls=calls)
    ok(net, customer, carrier)
    rows = net.cdrs(calls)
    assert all(r["end_reason"] == "normal_clearing" for r in rows)
    assert len({r["call_id"] for r in rows}) == calls
    by_call = workers_of_calls(net)
    assert {r["call_id"] for r in rows} <= set(by_call)
    # Every call's lines come from one worker (its ACK and BYE reached it), and both worked:
    # all 24 on one worker by chance happens once in 8 million runs.
    assert all(len(ws) == 1 for ws in by_call.values()), by_call
    assert {w for ws in by_call.values() for w in ws} == {0, 1}, net.explain()
    invites = [m for m in carrier.messages().split("\n\n") if "\nINVITE sip:" in f"\n{m}"]
    own_ports = {
        match.group(1)
        for message in invites
        if (match := re.search(rf"^Via: SIP/2.0/UDP {LOCAL}:(\d+)", message, re.M))
    }
    assert len(invites) >= calls
    assert len(own_ports) == 2, own_ports
    assert str(net.port) not in own_ports


def test_prepaid_credit_is_never_overspent_across_workers(net: Net) -> None:
    """A balance of 3.00 covers 3 calls of a 1.00 connect fee; each worker alone would admit
    3. Twelve calls at once, each from its own source port (``-t un``) and Call-ID: both
    workers take some;
    exactly 3 are answered, the rest refused 402, and the ledger never goes below zero."""

    placed = 12
    with ledger.connect(net.workdir / "cdr.sqlite", create=True) as conn:
        at = dt.datetime.now(dt.UTC)
        ledger.book(conn, ledger.Booking("customer", "topup", to_nanos(Decimal(3)), "e2e", at))
    net.sell = CONNECT_FEE_DECK
    gw = Carrier("gw1")
    prepaid = Account(extra=('billing = "prepaid"',))
    # No periodic ledger read during the test: the workers admit on the balance at start.
    net.start_switch([gw], [prepaid], billing="sync_interval = 30", workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=placed, timeout=60)
    scenario = net.workdir / "uac_answered_or_refused.xml"
    scenario.write_text(ANSWERED_OR_REFUSED.replace('"503"', '"402"'))
    hold = ["-s", NUMBER, "-d", "8000", "-l", str(placed), "-r", "50", "-max_socket", "64"]
    callers = Sipp(net.workdir, "callers", scenario, args=hold, calls=placed, timeout=60)
    callers.transport = "un"  # a socket (a source port) per call
    net.sipps.append(callers)
    ok(net, callers.start(f"{LOCAL}:{net.port}"))
    rows = net.cdrs(placed, timeout=10)
    answered = [r for r in rows if r["end_reason"] == "normal_clearing"]
    refused = [r for r in rows if r["end_reason"] == "insufficient_balance"]
    assert len(answered) == FIRST_HOLDS, rows
    assert len(refused) == placed - FIRST_HOLDS, rows
    assert {r["status"] for r in refused} == {402}
    calls = workers_of_calls(net)
    assert {w for ws in calls.values() for w in ws} == {0, 1}, net.explain()
    # Both workers took calls, so one refused while its own book still had credit: the
    # other worker's calls held it.
    assert any("across workers" in r["detail"] for r in refused), rows
    with ledger.connect(net.workdir / "cdr.sqlite") as conn:
        sums, _ = ledger.balances(conn)
        chain = [e.balance_after for e in ledger.entries(conn, "customer")]
    assert sums["customer"] == 0  # 3.00 less three connect fees
    assert len(chain) == 1 + FIRST_HOLDS
    assert min(chain) >= 0, chain  # never overspent, not even for a moment
    # A second wave, the first one's calls ended: a worker that took none of the answered
    # calls has not read their debits (no periodic read), yet admits none: the debits were
    # held across workers until committed, and once let go it reads the ledger first.
    before = set(calls)
    again = Sipp(net.workdir, "again", scenario, args=hold, calls=placed, timeout=60)
    again.transport = "un"
    net.sipps.append(again)
    ok(net, again.start(f"{LOCAL}:{net.port}"))
    second = [r for r in net.cdrs(2 * placed, timeout=10) if r["call_id"] not in before]
    assert [r["end_reason"] for r in second] == ["insufficient_balance"] * placed, second
    # Nothing is held any more (no kept debit leaked): a refusal names credit held by
    # calls across workers only while some is.
    assert not any("across workers" in r["detail"] for r in second), second
    later = {w for c, ws in workers_of_calls(net).items() if c not in before for w in ws}
    assert later == {0, 1}, net.explain()
    with ledger.connect(net.workdir / "cdr.sqlite") as conn:
        chain = [e.balance_after for e in ledger.entries(conn, "customer")]
    assert chain[-1] == 0, chain
    assert len(chain) == 1 + FIRST_HOLDS
    carrier.stop()


def _own_ports(workers: int) -> tuple[int, str]:
    """A ``[server] worker_port_base`` and its line: worker i's own port is base + i. The
    Call-ID hash has a secret key drawn at each start, so no test can tell which worker a
    Call-ID goes to on the listen port; a request sent to a worker's own port is that
    worker's."""
    base = free_port(span=workers)
    return base, f"worker_port_base = {base}"


def test_slices_of_one_account_cross_workers_and_never_overspend(net: Net) -> None:
    """Two calls of one prepaid account, one on each worker, 0.60 a minute per second and
    3 s slices: each slice is held across workers, so the two calls are cut together when
    the 0.10 runs out, and never bill more than it. Then a top-up while the switch runs
    pays for one more call: nothing the first two held was left held (no leak)."""

    net.sell = deck(1)
    top_up(net, "customer", "0.100000")  # 10 call-seconds for both calls together
    gw = Carrier("gw1")
    base, own_ports = _own_ports(2)
    net.start_switch(
        [gw],
        [Account(extra=('billing = "prepaid"',))],
        billing="slice = 3\nsync_interval = 30",
        workers=2,
        server=own_ports,
    )
    carrier = net.carrier(gw, "uas_answer", calls=3, timeout=60)
    ids = [f"slices{w}@own-port" for w in (0, 1)]
    calls = [
        net.customer(
            "uac_wait_bye_reason", label=f"on{w}", args=["-cid_str", call_id], port=base + w
        )
        for w, call_id in enumerate(ids)
    ]
    ok(net, *calls)
    cdrs = net.cdrs(2)
    assert [c["end_reason"] for c in cdrs] == ["credit_exhausted"] * 2, cdrs
    workers = workers_of_calls(net)
    assert [workers.get(call_id) for call_id in ids] == [{0}, {1}], net.explain()
    total = sum(nanos(c["sell_cost"]) for c in cdrs)
    assert nanos("0.080000") <= total <= nanos("0.100000"), cdrs  # the credit, used up
    rows = ledger_rows(net)
    assert_chain(rows)
    assert min(r["balance_after"] for r in rows) >= 0, rows  # never overspent
    # A top-up of 3 call-seconds: read before the refusal, it pays for a third call.
    top_up(net, "customer", "0.030000")
    third = net.customer("uac_wait_bye_reason", label="third")
    ok(net, third, carrier)
    cdrs = net.cdrs(3)
    assert cdrs[-1]["end_reason"] == "credit_exhausted", cdrs
    assert Decimal(cdrs[-1]["sell_cost"]) > 0, cdrs
    rows = ledger_rows(net)
    assert_chain(rows)
    assert min(r["balance_after"] for r in rows) >= 0, rows


#: A phone's REGISTER alone (401, then with credentials, 200): its Contact names the UAS
#: that takes the phone's calls (``CONTACT``), registered for ``EXPIRES`` seconds.
REGISTER_ONLY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="register_only">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[remote_ip]:[remote_port]>;tag=[pid]reg[call_number]
      To: <sip:pbx@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: CONTACT
      Expires: EXPIRES
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[remote_ip]:[remote_port]>;tag=[pid]reg[call_number]
      To: <sip:pbx@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      [authentication]
      Contact: CONTACT
      Expires: EXPIRES
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def test_registered_contacts_are_shared_by_the_workers(net: Net) -> None:
    """A phone (a UAS on a port of its own) is registered once, by a REGISTER that lands on
    one worker (the steering hashes its Call-ID), and called by callers whose calls land
    on either, until one call was routed by the worker that did not take the REGISTER: that
    worker knows the contact from the journal only. Its un-REGISTER, through one worker, is
    then seen by both: calls fail over to the carrier as ``to_pbx: not registered`` on
    each."""

    phone_at, backup = Carrier("phone"), Carrier("backup")
    net.start_switch([backup], [Account(), PBX], route=["to_pbx", "backup"], tail=TO_PBX, workers=2)
    phone = net.carrier(phone_at, "uas_answer", calls=40, timeout=60)
    carrier = net.carrier(backup, "uas_answer", calls=40, timeout=60)
    contact = f"sip:pbx@{LOCAL}:{phone_at.port}"
    registered = re.compile(rf"worker=(\d+) .*registered account=pbx contact={contact} ")

    def register(label: str, expires: int) -> None:
        xml = net.workdir / f"register_{label}.xml"
        xml.write_text(
            REGISTER_ONLY.replace("CONTACT", f"<{contact}>").replace("EXPIRES", str(expires))
        )
        args = ["-au", "pbx", "-ap", PASSWORD, "-s", "pbx"]
        sipp = Sipp(net.workdir, label, xml, args=args, timeout=20)
        net.sipps.append(sipp)
        ok(net, sipp.start(f"{LOCAL}:{net.port}"))

    def call(label: str) -> str:
        """A caller's call, answered; the Call-ID of the call."""
        before = set(workers_of_calls(net))
        ok(net, net.customer("uac_call", args=["-d", "100"], label=label))
        (call_id,) = set(workers_of_calls(net)) - before
        return call_id

    crossed = None
    placed = 0
    # Registered once: the worker that did not take this REGISTER has no REGISTER of the
    # contact of its own, so a call it routes to the phone proves the journal carried it.
    register("reg", 300)
    (by,) = map(int, registered.findall(net.switch_log()))
    while crossed is None and placed < 16:
        # Each call lands on a worker the kernel picks from its Call-ID.
        call_id = call(f"caller{placed}")
        placed += 1
        routed = workers_of_calls(net)[call_id]
        assert routed in ({0}, {1}), routed
        if routed == {1 - by}:
            crossed = (by, call_id)
    assert crossed is not None, net.explain()
    rows = net.cdrs(placed)
    assert all(r["attempts"][0]["gateway_id"] == "to_pbx" for r in rows), rows
    assert all(r["end_reason"] == "normal_clearing" for r in rows), rows
    assert f"INVITE sip:{NUMBER}@{LOCAL}:{phone_at.port} SIP/2.0" in phone.messages()

    register("unregister", 0)  # through one worker: both route past the phone now
    assert "unregistered account=pbx" in net.switch_log()
    failed_over: dict[str, set[int]] = {}
    while {w for ws in failed_over.values() for w in ws} != {0, 1} and len(failed_over) < 16:
        call_id = call(f"after{len(failed_over)}")
        failed_over[call_id] = workers_of_calls(net)[call_id]
    assert {w for ws in failed_over.values() for w in ws} == {0, 1}, net.explain()
    after = [r for r in net.cdrs(placed + len(failed_over)) if r["call_id"] in failed_over]
    assert len(after) == len(failed_over)
    assert all(r["attempts"][0]["gateway_id"] == "backup" for r in after), after
    assert all("to_pbx: not registered" in r["detail"] for r in after), after
    phone.stop()
    carrier.stop()


def test_a_rotated_password_keeps_a_registration_dropped_across_a_worker_restart(
    net: Net,
) -> None:
    """A phone registered through one worker; a reload rotates the account's password,
    which drops its registration in both workers; then the worker that took the REGISTER
    is killed and restarted, and replays the journal, which still holds that REGISTER. The
    contact stays dropped there too: calls through either worker fail over to the carrier
    as ``to_pbx: not registered`` (before the fix the restarted worker routed them to the
    phone again, and trusted its source)."""

    phone_at, backup = Carrier("phone"), Carrier("backup")
    args = dict(route=["to_pbx", "backup"], tail=TO_PBX, workers=2)
    switch = net.start_switch([backup], [Account(), PBX], **args)  # type: ignore[arg-type]
    phone = net.carrier(phone_at, "uas_answer", calls=40, timeout=60)
    carrier = net.carrier(backup, "uas_answer", calls=40, timeout=60)
    contact = f"sip:pbx@{LOCAL}:{phone_at.port}"
    xml = net.workdir / "register_once.xml"
    xml.write_text(REGISTER_ONLY.replace("CONTACT", f"<{contact}>").replace("EXPIRES", "300"))
    sipp = Sipp(net.workdir, "reg", xml, args=["-au", "pbx", "-ap", PASSWORD, "-s", "pbx"])
    net.sipps.append(sipp)
    ok(net, sipp.start(f"{LOCAL}:{net.port}"))
    registered = re.compile(rf"worker=(\d+) .*registered account=pbx contact={contact} ")
    (by,) = map(int, registered.findall(net.switch_log()))

    rotated = dataclasses.replace(PBX, password="rotated-" + PASSWORD)
    net.write_config([backup], [Account(), rotated], **args)  # type: ignore[arg-type]
    switch.signal(signal.SIGHUP)
    dropped = r"worker=(\d+) .*registrations of account=pbx dropped"
    wait_for(
        lambda: {0, 1} <= set(map(int, re.findall(dropped, net.switch_log()))),
        "both workers dropped the registration",
        net,
    )
    pids = worker_pids(net)
    os.kill(pids[by], signal.SIGKILL)
    wait_for(
        lambda: worker_pids(net).get(by, pids[by]) != pids[by],
        "the killed worker restarted",
        net,
    )
    routed: dict[str, set[int]] = {}
    while {w for ws in routed.values() for w in ws} != {0, 1} and len(routed) < 16:
        before = set(workers_of_calls(net))
        ok(net, net.customer("uac_call", args=["-d", "100"], label=f"after{len(routed)}"))
        (call_id,) = set(workers_of_calls(net)) - before
        routed[call_id] = workers_of_calls(net)[call_id]
    assert {w for ws in routed.values() for w in ws} == {0, 1}, net.explain()
    rows = net.cdrs(len(routed))
    assert all(r["attempts"][0]["gateway_id"] == "backup" for r in rows), rows
    assert all("to_pbx: not registered" in r["detail"] for r in rows), rows
    assert "INVITE sip:" not in phone.messages()
    phone.stop()
    carrier.stop()


def test_with_redis_as_well_the_credit_is_held_in_redis(net: Net) -> None:
    """``[server] shared_state`` and two workers: Redis's counters span every worker of
    every node, so they hold the credit (each worker is a node of its own there) and the
    shared memory is not used for it: exactly 3 of 12 calls answered, the refusals that
    other calls' holds caused name the nodes, and every hold is given back in Redis."""

    placed = 12
    with ledger.connect(net.workdir / "cdr.sqlite", create=True) as conn:
        at = dt.datetime.now(dt.UTC)
        ledger.book(conn, ledger.Booking("customer", "topup", to_nanos(Decimal(3)), "e2e", at))
    net.sell = CONNECT_FEE_DECK
    gw = Carrier("gw1")
    prepaid = Account(extra=('billing = "prepaid"',))
    with running_redis() as redis:
        switch = net.start_switch(
            [gw],
            [prepaid],
            billing="sync_interval = 30",
            workers=2,
            server=f'shared_state = "{redis.url}"',
        )
        carrier = net.carrier(gw, "uas_answer", calls=placed, timeout=60)
        scenario = net.workdir / "uac_answered_or_refused.xml"
        scenario.write_text(ANSWERED_OR_REFUSED.replace('"503"', '"402"'))
        hold = ["-s", NUMBER, "-d", "4000", "-l", str(placed), "-r", "50", "-max_socket", "64"]
        callers = Sipp(net.workdir, "callers", scenario, args=hold, calls=placed, timeout=60)
        callers.transport = "un"
        net.sipps.append(callers)
        ok(net, callers.start(f"{LOCAL}:{net.port}"))
        rows = net.cdrs(placed, timeout=10)
        answered = [r for r in rows if r["end_reason"] == "normal_clearing"]
        refused = [r for r in rows if r["end_reason"] == "insufficient_balance"]
        assert len(answered) == FIRST_HOLDS, rows
        assert len(refused) == placed - FIRST_HOLDS, rows
        calls = workers_of_calls(net)
        assert {w for ws in calls.values() for w in ws} == {0, 1}, net.explain()
        # Both workers took calls: one was refused by the other's holds, counted in Redis.
        assert any("held by calls across nodes" in r["detail"] for r in refused), rows
        assert not any("across workers" in r["detail"] for r in refused), rows

        def credit_held() -> int:
            async def ask() -> int:
                state = await SharedState.connect(redis.url, "e2e-workers-observer")
                try:
                    return await state.total("credit:customer")
                finally:
                    await state.close()

            return asyncio.run(ask())

        wait_for(lambda: credit_held() == 0, "every hold given back in Redis", net)
        switch.stop()
        carrier.stop()


#: Bytes of an X- header put before the Call-ID of the INVITEs: their Call-ID line starts
#: past the window of the kernel's Call-ID program (``workers.steering.WINDOW``).
_PADDING = 760


@pytest.mark.parametrize("steer", [True, False], ids=["program", "steering-off"])
def test_cancelled_calls_with_the_call_id_past_the_window_stay_whole(net: Net, steer: bool) -> None:
    """One caller socket (a wholesale SBC), INVITEs with a long X- header before their
    Call-ID (the kernel's program cannot find it: the 4-tuple hash picks a worker, one for
    every INVITE) and their short CANCEL and failure ACK (found, steered by Call-ID): the
    worker that got an INVITE it does not own hands it to its owner (``workers.handoff``),
    so every CANCEL finds its INVITE. Without the hand-off about half of them would meet
    the other worker: 481 to the CANCEL, and the INVITE ringing on. ``steering-off``:
    ``[server] steer_by_call_id = false`` (a kernel that refused the program): the
    4-tuple hash for all, the hand-off for every request another worker owns."""

    calls = 12
    gw = Carrier("gw1")
    net.start_switch(
        [gw], [Account()], workers=2, server="" if steer else "steer_by_call_id = false"
    )
    carrier = net.carrier(gw, "uas_ring_cancel", calls=calls)
    via = "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
    scenario = (Path(__file__).parent / "scenarios" / "callflow" / "uac_cancel.xml").read_text()
    assert scenario.count(via) == 1  # the INVITE's; the CANCEL and ACK copy it
    padded = scenario.replace(via, f"{via}      X-Route-Info: {'r' * _PADDING}\n")
    path = net.workdir / "uac_cancel_padded.xml"
    path.write_text(padded)

    customer = Sipp(net.workdir, "customer", path, args=["-s", NUMBER, "-r", "10"], calls=calls)
    net.sipps.append(customer)
    ok(net, customer.start(f"{LOCAL}:{net.port}"), carrier)
    # SIPp's exit status: every CANCEL answered 200, every INVITE 487. And the INVITEs
    # sent had their Call-ID past the program's window.
    invites = [m for m in customer.messages().split("\n\n") if "\nINVITE sip:" in f"\n{m}"]
    assert len(invites) >= calls
    assert all(m.index("Call-ID:") > FIRST + WINDOW + 8 for m in invites)
    messages = customer.messages()
    assert messages.count("SIP/2.0 487 ") >= calls
    assert "SIP/2.0 481" not in messages
    rows = net.cdrs(calls)
    assert {r["end_reason"] for r in rows} == {"caller_cancelled"}, rows
    assert {r["status"] for r in rows} == {487}
    assert all([a["outcome"] for a in r["attempts"]] == ["cancelled"] for r in rows)
    # Each call's lines come from one worker (its INVITE, CANCEL and ACK met), and both
    # took calls: all 12 on one worker by chance happens once in 2,000 runs.
    by_call = workers_of_calls(net)
    assert {r["call_id"] for r in rows} <= set(by_call)
    assert all(len(ws) == 1 for ws in by_call.values()), by_call
    assert {w for ws in by_call.values() for w in ws} == {0, 1}, net.explain()
    program_off = "no Call-ID program on the UDP listen sockets" in net.switch_log()
    assert program_off is not steer


def _invite_with(
    listen: int, call_id: str, source: int, cseq: int, auth: str | None = None
) -> bytes:
    """``_invite`` as the ``cseq``-th request of its call, with a Proxy-Authorization."""
    invite = _invite(listen, call_id, source)
    invite = invite.replace(b"CSeq: 1 INVITE", f"CSeq: {cseq} INVITE".encode())
    invite = invite.replace(
        f"branch=z9hG4bK-{call_id}".encode(), f"branch=z9hG4bK-{call_id}-{cseq}".encode()
    )
    if auth is not None:
        invite = invite.replace(
            b"Max-Forwards", f"Proxy-Authorization: {auth}\r\nMax-Forwards".encode()
        )
    return invite


def _final(sock: socket.socket, request: bytes, to: Address) -> Response:
    """Send ``request`` to ``to`` and read until its final response; ACK it (the ACK of a
    non-2xx goes where the INVITE went, RFC 3261 17.1.1.3)."""
    sock.sendto(request, to)
    while True:
        response = parse_message(sock.recv(65535))
        assert isinstance(response, Response)
        if response.status >= 200:
            break
    ack = request.split(b"\r\n\r\n", 1)[0].replace(b"INVITE sip", b"ACK sip", 1)
    ack = re.sub(rb"CSeq: (\d+) INVITE", rb"CSeq: \1 ACK", ack)
    ack = re.sub(rb"^Proxy-Authorization: .*\r\n", b"", ack, flags=re.M)
    ack = re.sub(rb"^To: .*$", f"To: {response.headers.get('To')}".encode(), ack, flags=re.M)
    sock.sendto(ack + b"\r\n\r\n", to)
    return response


def _digest_workers(net: Net) -> tuple[int, Sipp]:
    """Two workers on own ports from the returned base, one digest account (alice, secret,
    no address), and a carrier that refuses its one call 486: the digest nonce tests."""
    gw = Carrier("gw1")
    customer = Account(ips=(), username="alice", password="secret")
    base, own_ports = _own_ports(2)
    net.start_switch([gw], [customer], workers=2, server=own_ports)
    return base, net.carrier(gw, "uas_reject", fill={"STATUS": "486 Busy Here"}, calls=1)


def test_a_captured_invite_replayed_to_another_worker_gets_stale_not_a_call(net: Net) -> None:
    """Each worker signs its digest nonces with a secret of its own, since it alone counts
    the nonce's uses: an INVITE with right credentials, captured and sent again with another
    Call-ID (which the steering gives to either worker), is answered ``stale=true`` by the
    other worker as by the one that issued it (a nonce count seen), and places no call."""
    base, carrier = _digest_workers(net)
    uri = f"sip:{NUMBER}@{LOCAL}:{net.port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        sock.settimeout(10)
        source = sock.getsockname()[1]
        worker0, worker1 = (LOCAL, base), (LOCAL, base + 1)
        challenge = _final(sock, _invite_with(net.port, "replay-0", source, 1), worker0)
        assert challenge.status == 407, challenge
        header = challenge.headers.get("Proxy-Authenticate")
        assert header is not None
        auth = build_authorization(
            header, method="INVITE", uri=uri, username="alice", password="secret"
        )
        answered = _final(sock, _invite_with(net.port, "replay-0", source, 2, auth), worker0)
        assert answered.status == 486, answered  # authorised, routed, refused by the carrier
        for call_id, worker in (("replay-1", worker1), ("replay-2", worker0)):
            replay = _final(sock, _invite_with(net.port, call_id, source, 1, auth), worker)
            assert replay.status == 407, (worker, replay)
            stale = replay.headers.get("Proxy-Authenticate")
            assert stale is not None, replay
            assert "stale=true" in stale, (worker, stale)
    ok(net, carrier)  # its one call, the first
    time.sleep(0.5)  # the CDR writers' commits (a replayed call would have one too)
    assert [r["call_id"] for r in net.cdrs(1)] == ["replay-0"]


def test_a_restarted_worker_draws_a_new_nonce_secret(net: Net) -> None:
    """A worker killed and restarted by the supervisor draws its own secret again, never
    the dead one's: a nonce of the dead worker answered with the right password at its
    replacement is ``stale=true`` and no call (the replacement's nonce counts start empty,
    so with the old secret a captured, never used challenge would be a fresh call there);
    the client's retry with the replacement's own nonce is then a call."""
    base, carrier = _digest_workers(net)
    uri = f"sip:{NUMBER}@{LOCAL}:{net.port}"
    worker1 = (LOCAL, base + 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        sock.settimeout(10)
        source = sock.getsockname()[1]
        challenge = _final(sock, _invite_with(net.port, "restart-0", source, 1), worker1)
        assert challenge.status == 407, challenge
        header = challenge.headers.get("Proxy-Authenticate")
        assert header is not None
        auth = build_authorization(
            header, method="INVITE", uri=uri, username="alice", password="secret"
        )
        pids = worker_pids(net)
        os.kill(pids[1], signal.SIGKILL)
        wait_for(
            lambda: worker_pids(net).get(1, pids[1]) != pids[1],
            "the killed worker restarted",
            net,
        )
        # Worker 1's own port is a socket the supervisor keeps and the replacement inherits:
        # sent now, the request waits there until the replacement reads it.
        stale = _final(sock, _invite_with(net.port, "restart-0", source, 2, auth), worker1)
        assert stale.status == 407, stale
        fresh = stale.headers.get("Proxy-Authenticate")
        assert fresh is not None
        assert "stale=true" in fresh, fresh
        auth = build_authorization(
            fresh, method="INVITE", uri=uri, username="alice", password="secret"
        )
        answered = _final(sock, _invite_with(net.port, "restart-0", source, 3, auth), worker1)
        assert answered.status == 486, answered  # authorised, routed, refused by the carrier
    ok(net, carrier)  # its one call, the retry's
    time.sleep(0.5)  # the CDR writers' commits (a call on the old nonce would have one too)
    (cdr,) = net.cdrs(1)
    assert cdr["call_id"] == "restart-0"
    assert [a["gateway_id"] for a in cdr["attempts"]] == ["gw1"], cdr
    assert workers_of_calls(net)["restart-0"] == {1}, net.explain()
