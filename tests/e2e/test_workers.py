"""``softswitch run`` with several worker processes, end to end with SIPp.

Which worker handled a call is read from the switch's log: a worker's lines carry
``worker=N`` and the engine's call lines ``call_id=...``. The kernel spreads the callers'
4-tuples over the workers by a hash with a secret of its own, so the tests that need both
workers to take calls place calls from new source ports until both have (each new port is a
coin toss: 16 tosses all alike happen once in 30 000 runs).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.parse
from pathlib import Path
from unittest.mock import ANY

import pytest
from callflow_harness import LOCAL
from callflow_net import NUMBER, Account, Carrier, Net, ok

pytestmark = pytest.mark.e2e

_CALL_LINE = re.compile(r"worker=(\d+) .*call_id=(\S+)")
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def workers_of_calls(net: Net) -> dict[str, set[int]]:
    """Call-ID -> the workers that logged a line about it."""
    out: dict[str, set[int]] = {}
    for match in _CALL_LINE.finditer(net.switch_log()):
        out.setdefault(match.group(2), set()).add(int(match.group(1)))
    return out


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
    placed = 0
    while placed < 16:
        customer = net.customer("uac_call", args=["-d", "100"], label=f"c{placed}")
        placed += 1
        ok(net, customer)
        seen = {w for ws in workers_of_calls(net).values() for w in ws}
        if seen == {0, 1}:
            break
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
    up = []
    while len({w for ws in workers_of_calls(net).values() for w in ws}) < 2 and len(up) < 16:
        up.append(net.customer("uac_call", args=["-d", "1500"], label=f"up{len(up)}"))
        time.sleep(0.3)
    assert {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}, net.explain()
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
    from test_management import start

    gw = Carrier("gw1")
    api = start(net, [gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=40)
    placed = 0
    while placed < 16:
        customer = net.customer("uac_call", args=["-d", "100"], label=f"c{placed}")
        placed += 1
        ok(net, customer)
        if {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}:
            break
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
    from test_management import start

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
    from test_management import start

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


def test_tcp_calls_through_two_workers(net: Net) -> None:
    """Over TCP the kernel hands each connection to one worker; the carrier's leg is a
    connection the worker opens, and the dialog's requests reach the worker's own port."""
    gw = Carrier("gw1", transport="tcp")
    net.start_switch([gw], [Account()], workers=2)
    carrier = net.carrier(gw, "uas_answer", calls=16)
    placed = 0
    while placed < 16:
        customer = net.customer("uac_call", args=["-d", "100"], transport="t1", label=f"t{placed}")
        placed += 1
        ok(net, customer)
        if {w for ws in workers_of_calls(net).values() for w in ws} == {0, 1}:
            break
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
