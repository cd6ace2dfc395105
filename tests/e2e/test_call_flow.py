"""The call flow end to end: SIPp as the customer, SIPp instances as carriers, the switch
as ``softswitch run --config FILE`` in between, all on 127.0.0.1.

Each test asserts SIPp's verdict (exit code 0: every scenario step happened, in order) and
the CDRs the switch wrote to SQLite. The carriers' scenarios copy Record-Route and the
customer's follow the route set, so BYEs and ACKs really cross the switch. Timers are short
(setup timeout 1 s, max duration 2 s) to keep the suite quick.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from callflow_harness import LOCAL
from callflow_net import NUMBER, Account, Carrier, Net, attempts, digest, ok

pytestmark = pytest.mark.e2e

# ----------------------------------------------------------------------------- answered


def own_udp_port(net: Net, call_id_fragment: str = "") -> int:
    """The listen port, or with several workers the own UDP port of the worker that logged
    the call (each worker listens on the shared port and on one of its own)."""
    log = net.switch_log()
    workers = {int(w) for w in re.findall(r"worker=(\d+) .*call_id=\S*" + call_id_fragment, log)}
    if not workers:
        return net.port
    assert len(workers) == 1, workers  # the whole dialog in one worker
    (worker,) = workers
    ports = {
        int(p)
        for p in re.findall(rf"worker={worker} .*listening on UDP {LOCAL}:(\d+)", log)
        if int(p) != net.port
    }
    assert len(ports) == 1, (worker, ports)
    return ports.pop()


@pytest.mark.parametrize("workers", [1, 2])
def test_normal_call_caller_hangs_up(net: Net, workers: int) -> None:
    """Once in one process, once with two workers: then the Record-Route and the Via name
    the own port of the worker that has the call, not the shared listen port."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=workers)
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "500"])
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert cdr["hangup_side"] == "caller"
    assert cdr["status"] == 200
    assert cdr["account_id"] == "customer"
    assert cdr["gateway_id"] == "gw1"
    assert cdr["callee_dialed"] == NUMBER
    assert cdr["callee_sent"] == NUMBER
    assert attempts(cdr) == [("gw1", 200, "answered")]
    assert cdr["answer_at"] is not None
    assert cdr["pdd"] is not None
    assert 0.4 <= cdr["duration"] < 3
    assert cdr["billsec"] >= 1
    assert cdr["sell_cost"] is not None
    assert cdr["buy_cost"] is not None
    # The switch stayed in the path: the carrier saw our Record-Route and our Via.
    port = net.port if workers == 1 else own_udp_port(net)
    assert (port == net.port) == (workers == 1)
    assert f"Record-Route: <sip:{LOCAL}:{port};lr>" in carrier.messages()
    assert f"Via: SIP/2.0/UDP {LOCAL}:{port};branch=" in carrier.messages()


@pytest.mark.parametrize("workers", [1, 2])
def test_normal_call_callee_hangs_up(net: Net, workers: int) -> None:
    """The callee's BYE follows the Record-Route: with two workers it reaches the worker
    that has the call through that worker's own port."""
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()], workers=workers)
    carrier = net.carrier(gw, "uas_answer_bye", args=["-d", "500"])
    customer = net.customer("uac_wait_bye")
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert cdr["hangup_side"] == "callee"
    assert attempts(cdr) == [("gw1", 200, "answered")]


def test_tcp_call(net: Net) -> None:
    gw = Carrier("gw1", transport="tcp")
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "300"], transport="t1")
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert attempts(cdr) == [("gw1", 200, "answered")]
    assert "transport=tcp" in carrier.messages()


# ----------------------------------------------------------------------------- failover


def test_failover_after_503(net: Net) -> None:
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()])
    bad = net.carrier(gw1, "uas_reject", fill={"STATUS": "503 Service Unavailable"})
    good = net.carrier(gw2, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "300"])
    ok(net, customer, bad, good)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert cdr["gateway_id"] == "gw2"
    assert attempts(cdr) == [("gw1", 503, "failed"), ("gw2", 200, "answered")]


def test_failover_after_setup_timeout(net: Net) -> None:
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()])
    silent = net.carrier(gw1, "uas_silent")
    good = net.carrier(gw2, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "300"])
    ok(net, customer, good)
    silent.stop()
    (cdr,) = net.cdrs()
    assert attempts(cdr) == [("gw1", None, "setup_timeout"), ("gw2", 200, "answered")]
    # The silent gateway was given its setup timeout (1 s), not more, before the next one.
    first, second = cdr["attempts"]
    assert first["ended_at"] <= second["started_at"]


def test_no_failover_on_486(net: Net) -> None:
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()])
    busy = net.carrier(gw1, "uas_reject", fill={"STATUS": "486 Busy Here"})
    spare = net.carrier(gw2, "uas_answer")
    customer = net.customer("uac_refused", fill={"EXPECTED": "486"})
    ok(net, customer, busy)
    spare.stop()
    assert "INVITE sip:" not in spare.messages()
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "busy"
    assert cdr["status"] == 486
    assert attempts(cdr) == [("gw1", 486, "failed")]


def test_all_gateways_failing_answers_500(net: Net) -> None:
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()])
    fill = {"STATUS": "503 Service Unavailable"}
    bad1 = net.carrier(gw1, "uas_reject", fill=fill)
    bad2 = net.carrier(gw2, "uas_reject", fill=fill)
    # RFC 3261 16.7: a lone 503 is passed on as 500, not as "this proxy is unavailable".
    customer = net.customer("uac_refused", fill={"EXPECTED": "500"})
    ok(net, customer, bad1, bad2)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "all_gateways_failed"
    assert cdr["status"] == 500
    assert attempts(cdr) == [("gw1", 503, "failed"), ("gw2", 503, "failed")]
    assert "Reason: Q.850" in customer.messages()


def test_caller_cancel_while_ringing(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_ring_cancel")
    customer = net.customer("uac_cancel")
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "caller_cancelled"
    assert cdr["status"] == 487
    assert cdr["answer_at"] is None
    assert cdr["ring_at"] is not None
    assert [a["outcome"] for a in cdr["attempts"]] == ["cancelled"]


def test_lcr_order_follows_carrier_rates(net: Net) -> None:
    dear, cheap = Carrier("dear", rate="0.050000"), Carrier("cheap", rate="0.010000")
    net.start_switch([dear, cheap], [Account()], strategy="lcr")
    refuse = net.carrier(cheap, "uas_reject", fill={"STATUS": "503 Service Unavailable"})
    answer = net.carrier(dear, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "200"])
    ok(net, customer, refuse, answer)
    (cdr,) = net.cdrs()
    assert [a["gateway_id"] for a in cdr["attempts"]] == ["cheap", "dear"]
    assert cdr["detail"].startswith("route '44': cheap, dear")
    assert cdr["buy_rate"].startswith("0.05")


# ----------------------------------------------------------------------------- authorisation


def test_ip_authorisation_refused(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(ips=("10.9.8.7",))])
    customer = net.customer("uac_refused", fill={"EXPECTED": "403"})
    ok(net, customer)
    # A stranger gets one stateless 403: no 100 Trying, no CDR row, a counter in the log.
    assert "SIP/2.0 100" not in customer.messages()
    assert net.switch is not None
    assert net.switch.cdrs(expected=1, timeout=1.0) == []
    assert "unknown_source=1" in net.switch_log()


def test_digest_authorisation(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(ips=(), username="alice", password="s3cret")])
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer(
        "uac_auth",
        args=[*digest("alice", "s3cret", net), "-d", "200"],
    )
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()  # the 407 challenge is not a call attempt: one CDR
    assert cdr["account_id"] == "customer"
    assert cdr["end_reason"] == "normal_clearing"


def test_digest_wrong_password(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(ips=(), username="alice", password="s3cret")])
    customer = net.customer(
        "uac_auth_refused",
        args=digest("alice", "wrong", net),
        fill={"EXPECTED": "403"},
    )
    ok(net, customer)
    # The 407 was stateless (no 100 Trying first); the failure is counted, not a CDR row.
    assert net.switch is not None
    assert net.switch.cdrs(expected=1, timeout=1.0) == []
    assert "auth_failed=1" in net.switch_log()


def test_tech_prefix_selects_the_account(net: Net) -> None:
    gw = Carrier("gw1")
    accounts = [Account("first", tech_prefix="1234#"), Account("second", tech_prefix="5678#")]
    net.start_switch([gw], accounts)
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer("uac_call", number=f"5678%23{NUMBER}", args=["-d", "200"])
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["account_id"] == "second"
    assert cdr["callee_dialed"] == f"5678#{NUMBER}"
    assert cdr["callee_sent"] == NUMBER  # the tech prefix is not sent to the carrier


# ----------------------------------------------------------------------------- limits


def test_account_concurrent_call_limit(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(max_calls=1)])
    carrier = net.carrier(gw, "uas_answer")
    first = net.customer("uac_call", args=["-d", "2000"], label="first")
    time.sleep(0.7)  # the first call is up
    second = net.customer("uac_refused", fill={"EXPECTED": "503"}, label="second")
    ok(net, second, first, carrier)
    rows = net.cdrs(2)
    by_reason = {r["end_reason"]: r for r in rows}
    assert set(by_reason) == {"limit_exceeded", "normal_clearing"}
    assert by_reason["limit_exceeded"]["status"] == 503


def test_gateway_capacity_uses_next_gateway(net: Net) -> None:
    gw1, gw2 = Carrier("gw1", capacity=1), Carrier("gw2")
    net.start_switch([gw1, gw2], [Account()])
    full = net.carrier(gw1, "uas_answer")
    spare = net.carrier(gw2, "uas_answer")
    first = net.customer("uac_call", args=["-d", "2000"], label="first")
    time.sleep(0.7)
    second = net.customer("uac_call", args=["-d", "200"], label="second")
    ok(net, second, first, full, spare)
    rows = net.cdrs(2)
    assert sorted(r["gateway_id"] for r in rows) == ["gw1", "gw2"]
    assert all(r["end_reason"] == "normal_clearing" for r in rows)


def test_max_duration_cuts_the_call(net: Net) -> None:
    gw = Carrier("gw1")
    net.start_switch([gw], [Account(max_duration=2)])
    carrier = net.carrier(gw, "uas_answer")  # waits for a BYE
    customer = net.customer("uac_wait_bye")  # waits for a BYE too
    ok(net, customer, carrier)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "max_duration"
    assert cdr["hangup_side"] == "switch"
    assert 1.8 <= cdr["duration"] < 3.5


# ----------------------------------------------------------------------------- operations


def test_gateway_marked_down_by_probe_is_skipped(net: Net) -> None:
    dead, alive = Carrier("dead", probe=0.3), Carrier("alive", probe=0.3)
    net.start_switch([dead, alive], [Account()])
    carrier = net.carrier(alive, "uas_answer_probed", calls=1000)
    time.sleep(1.0)  # the first probe of "dead" got no answer
    customer = net.customer("uac_call", args=["-d", "200"])
    ok(net, customer)
    carrier.stop()
    (cdr,) = net.cdrs()
    assert attempts(cdr) == [("alive", 200, "answered")]
    assert "skipped dead: down" in cdr["detail"]


def test_config_reload_while_a_call_is_up(net: Net) -> None:
    gw1, gw2 = Carrier("gw1"), Carrier("gw2")
    switch = net.start_switch([gw1, gw2], [Account()], route=["gw1"])
    c1 = net.carrier(gw1, "uas_answer")
    c2 = net.carrier(gw2, "uas_answer")
    first = net.customer("uac_call", args=["-d", "2500"], label="first")
    time.sleep(0.7)
    net.write_config([gw1, gw2], [Account()], route=["gw2"])
    switch.signal(signal.SIGHUP)
    assert switch.process is not None
    assert switch.process.stdout is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "reloaded" in switch.process.stdout.readline().decode():
            break
    else:
        pytest.fail("no reload\n" + net.explain())
    second = net.customer("uac_call", args=["-d", "200"], label="second")
    ok(net, second, first, c1, c2)
    rows = net.cdrs(2)
    assert {r["gateway_id"] for r in rows} == {"gw1", "gw2"}
    assert all(r["end_reason"] == "normal_clearing" for r in rows)


@pytest.mark.parametrize("sighup", [False, True], ids=["sigterm", "then_sighup"])
def test_sigterm_drains_then_exits(net: Net, sighup: bool) -> None:
    """With ``sighup``: a reload asked while the switch drains (``systemctl reload`` during
    a stop) is ignored, and the drain goes on. Once the drain started, SIGHUP had its
    default action back and ended the process, dropping the calls draining."""
    gw = Carrier("gw1")
    switch = net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_answer")
    customer = net.customer("uac_call", args=["-d", "800"])
    time.sleep(0.4)
    switch.signal(signal.SIGTERM)
    if sighup:
        time.sleep(0.1)
        switch.signal(signal.SIGHUP)
    ok(net, customer, carrier)
    assert switch.process is not None
    assert switch.process.wait(timeout=10) == 0
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
