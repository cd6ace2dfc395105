"""Media end to end: SIPp customers and carriers sending real RTP, the switch, and a real
rtpengine (Debian's, userspace forwarding only) between them, all on 127.0.0.1.

The customers send RTP with SIPp's ``rtp_stream`` (raw 8-bit G.711 from ``tone.raw``, 20 ms
packets, from SIPp's media port to the address of the SDP SIPp received); the carriers run
with ``-rtp_echo``, which sends every packet back to where it came from, so a relayed call
carries RTP both ways. What each side's SDP said is read back from SIPp's message logs
(``-trace_msg``); what rtpengine saw is asked of it over NG (``query``, ``list``) while the
call is up and after it ended. One rtpengine serves the whole module.

Each gateway attempt of a relayed call is its own NG session, ``<Call-ID>-<attempt>``;
most tests find the sessions of a call by listing rtpengine's calls with the Call-ID as
prefix, so they check the switch's behaviour whatever the first attempt's number is, and
``test_first_attempt_session_is_numbered_0`` checks the numbering itself.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from callflow_harness import LOCAL, Sipp
from callflow_net import NUMBER, Account, Carrier, Net, attempts, ok
from media_support import (
    find,
    m_line,
    m_port,
    ng_query,
    ng_sessions,
    ng_totals,
    relay_tail,
    sdp_ports,
    sip_call_id,
    sip_log,
    wait_for,
    write_tone,
)

from loopback_ports import free_port
from rtpengine_tool import Rtpengine, running_rtpengine
from softswitch.billing import ledger
from softswitch.billing.money import to_nanos

pytestmark = pytest.mark.e2e

RELAY = 'media = "relay"'
PCMU = "a=rtpmap:0 PCMU/8000"
PCMU_PCMA = "a=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000"
#: PCMU, PCMA and RFC 4733 DTMF, as softphones offer them.
WITH_DTMF = (
    "a=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15"
)
ANSWER_PCMU = {"ANSWER_PTS": "0", "ANSWER_MAPS": PCMU}
ANSWER_PCMA = {"ANSWER_PTS": "8", "ANSWER_MAPS": "a=rtpmap:8 PCMA/8000"}
DELETED = re.compile(r"media deleted relay=rtp1 session=(\S+) packets=(.*)")


@pytest.fixture(scope="module")
def rtpengine() -> Iterator[Rtpengine]:
    with running_rtpengine() as engine:
        yield engine
        assert engine.process.poll() is None, f"rtpengine died:\n{engine.log()[-3000:]}"


# ----------------------------------------------------------------------------- helpers


def talk(
    *,
    offer: str = "0",
    rtpmaps: str = PCMU,
    pt: str = "0",
    talk_ms: int = 2500,
    quiet_ms: int = 200,
) -> dict[str, str]:
    """The fill of ``uac_media_call`` / ``uac_media_wait_bye``: the offer's payload types
    and rtpmap lines, the payload type of the RTP sent, how long it is sent, then silence."""
    return {
        "OFFER_PTS": offer,
        "RTPMAPS": rtpmaps,
        "RTP_PT": pt,
        "TALK_MS": str(talk_ms),
        "QUIET_MS": str(quiet_ms),
    }


def start_relayed(
    net: Net,
    engine: Rtpengine,
    carriers: list[Carrier],
    accounts: list[Account],
    *,
    media: str = "",
    defaults: str = "",
) -> None:
    """The switch with ``engine`` as its one media relay (``rtp1``); ``media``: more
    ``[media]`` lines."""
    write_tone(net.workdir)
    net.start_switch(
        carriers, accounts, defaults=defaults, tail=relay_tail(engine.ng_port, media=media)
    )


def caller_tag(sipp: Sipp, call: int = 1) -> str:
    assert sipp.process is not None
    return f"{sipp.process.pid}SIPpTag00{call}"


def callee_tag(sipp: Sipp, call: int = 1) -> str:
    assert sipp.process is not None
    return f"{sipp.process.pid}SIPpTag01{call}"


def why(net: Net, engine: Rtpengine) -> str:
    return net.explain() + "\n--- rtpengine log\n" + engine.log()[-4000:]


def live_session(net: Net, engine: Rtpengine, call_id: str, timeout: float = 3.0) -> str:
    """The one NG session rtpengine holds for the SIP call ``call_id`` (waited for)."""
    sessions = wait_for(
        lambda: ng_sessions(engine.ng_port, call_id), timeout, what=f"a session of {call_id}"
    )
    assert len(sessions) == 1, (sessions, why(net, engine))
    return sessions[0]


def both_ways(
    net: Net, engine: Rtpengine, session: str, tags: tuple[str, str], at_least: int = 20
) -> dict[str, int]:
    """rtpengine's packet counts for ``session`` once it has received ``at_least`` RTP
    packets from each of the two parties (``tags``: caller's, callee's)."""
    deadline = time.monotonic() + 5
    totals: dict[str, int] | None = None
    while time.monotonic() < deadline:
        totals = ng_totals(engine.ng_port, session)
        if totals is not None and all(totals.get(tag, 0) >= at_least for tag in tags):
            return totals
        time.sleep(0.2)
    raise AssertionError(f"RTP both ways in {session}: {totals} for {tags}\n{why(net, engine)}")


def assert_relay_sdp(sdp: str, engine: Rtpengine, *hidden: int) -> None:
    """``sdp`` names rtpengine (127.0.0.1, ports of its range) and none of ``hidden``, the
    far side's own media ports (RTP and RTCP)."""
    ports = sdp_ports(sdp)
    assert ports, sdp
    assert all(engine.port_min <= port <= engine.port_max for port in ports), (ports, sdp)
    assert f"c=IN IP4 {LOCAL}" in sdp, sdp
    for port in hidden:
        assert port not in ports, (port, sdp)
        assert str(port) not in sdp, (port, sdp)


def deletes(net: Net) -> dict[str, str]:
    """The switch's ``media deleted`` log lines: session -> packets."""
    return dict(DELETED.findall(net.switch_log()))


def assert_deleted(net: Net, engine: Rtpengine, session: str) -> None:
    """rtpengine no longer knows ``session`` and the switch logged deleting it."""
    wait_for(lambda: ng_query(engine.ng_port, session) is None, 3, what=f"{session} deleted")
    wait_for(lambda: session in deletes(net), 3, what=f"'media deleted' of {session}")


# ----------------------------------------------------------------------------- direct


def test_direct_media_passes_sdp_through_byte_for_byte(net: Net, rtpengine: Rtpengine) -> None:
    # A relay is configured, but neither the account nor the gateway asks for it.
    gw = Carrier("gw1")
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(
        gw,
        "uas_media_answer",
        args=["-rtp_echo"],
        fill={"ANSWER_PTS": "8 101", "ANSWER_MAPS": "a=rtpmap:101 telephone-event/8000"},
    )
    customer = net.customer(
        "uac_media_call", fill=talk(offer="0 8 101", rtpmaps=WITH_DTMF, pt="8", talk_ms=300)
    )
    ok(net, customer, carrier)
    theirs, ours = sip_log(customer), sip_log(carrier)
    offer_sent = find(theirs, sent=True, start="INVITE ").body
    assert find(ours, sent=False, start="INVITE ").body == offer_sent
    answer_sent = find(ours, sent=True, start="SIP/2.0 200", method="INVITE").body
    assert find(theirs, sent=False, start="SIP/2.0 200", method="INVITE").body == answer_sent
    assert "a=fmtp:101 0-15" in offer_sent  # the SDP compared is the whole, rich one
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    # rtpengine never heard of the call.
    assert sip_call_id(customer) not in rtpengine.log()
    assert not deletes(net)


# ----------------------------------------------------------------------------- relay


@pytest.mark.parametrize("side", ["gateway", "account"])
def test_relayed_call_hides_each_side_and_carries_rtp_both_ways(
    net: Net, rtpengine: Rtpengine, side: str
) -> None:
    gw = Carrier("gw1", extra=RELAY if side == "gateway" else "")
    account = Account(extra=(RELAY,) if side == "account" else ())
    start_relayed(net, rtpengine, [gw], [account])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_call", fill=talk(talk_ms=2500))
    call_id = sip_call_id(customer)
    session = live_session(net, rtpengine, call_id)
    totals = both_ways(net, rtpengine, session, (caller_tag(customer), callee_tag(carrier)))
    ok(net, customer, carrier)
    theirs, ours = sip_log(customer), sip_log(carrier)
    offer_sent = find(theirs, sent=True, start="INVITE ").body
    offer_got = find(ours, sent=False, start="INVITE ").body
    answer_sent = find(ours, sent=True, start="SIP/2.0 200", method="INVITE").body
    answer_got = find(theirs, sent=False, start="SIP/2.0 200", method="INVITE").body
    caller_port, callee_port = m_port(offer_sent), m_port(answer_sent)
    # The carrier sees rtpengine, never the customer's ports; the customer never the
    # carrier's; and each faces its own port of the relay.
    assert_relay_sdp(offer_got, rtpengine, caller_port, caller_port + 1)
    assert_relay_sdp(answer_got, rtpengine, callee_port, callee_port + 1)
    assert m_port(offer_got) != m_port(answer_got)
    assert totals[caller_tag(customer)] >= 20
    assert totals[callee_tag(carrier)] >= 20
    # BYE from the caller: the session is deleted.
    assert_deleted(net, rtpengine, session)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert cdr["hangup_side"] == "caller"


def test_first_attempt_session_is_numbered_0(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_call", fill=talk(talk_ms=1000))
    call_id = sip_call_id(customer)
    try:
        sessions = wait_for(lambda: ng_sessions(rtpengine.ng_port, call_id), 3, what="session")
    finally:
        ok(net, customer, carrier)
    assert sessions == [f"{call_id}-0"]


def test_delete_logs_the_final_packet_counts(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_call", fill=talk(talk_ms=1000))
    session = live_session(net, rtpengine, sip_call_id(customer))
    ok(net, customer, carrier)
    assert_deleted(net, rtpengine, session)
    packets = deletes(net)[session]
    assert caller_tag(customer) in packets, packets
    assert callee_tag(carrier) in packets, packets


# ----------------------------------------------------------------------------- deletes


def test_callee_hangup_deletes_the_session(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_answer_bye", args=["-rtp_echo", "-d", "2000"])
    customer = net.customer("uac_media_wait_bye", fill=talk(talk_ms=1000))
    session = live_session(net, rtpengine, sip_call_id(customer))
    both_ways(net, rtpengine, session, (caller_tag(customer), callee_tag(carrier)), 10)
    ok(net, customer, carrier)
    assert_deleted(net, rtpengine, session)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert cdr["hangup_side"] == "callee"


def test_cancel_before_answer_deletes_the_session(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_ring_cancel")
    customer = net.customer("uac_cancel")
    ok(net, customer, carrier)
    call_id = sip_call_id(customer)
    # The INVITE the carrier got had been through the relay.
    offer_sent = find(sip_log(customer), sent=True, start="INVITE ").body
    offer_got = find(sip_log(carrier), sent=False, start="INVITE ").body
    assert_relay_sdp(offer_got, rtpengine, m_port(offer_sent))
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "caller_cancelled"
    deleted = wait_for(
        lambda: [s for s in deletes(net) if s.startswith(call_id + "-")], 3, what="delete"
    )
    assert len(deleted) == 1, deleted
    assert_deleted(net, rtpengine, deleted[0])
    assert ng_sessions(rtpengine.ng_port, call_id) == []


@pytest.mark.parametrize("first", ["183_then_503", "503"])
def test_failover_deletes_the_failed_attempts_session(
    net: Net, rtpengine: Rtpengine, first: str
) -> None:
    gw1, gw2 = Carrier("gw1", extra=RELAY), Carrier("gw2", extra=RELAY)
    start_relayed(net, rtpengine, [gw1, gw2], [Account()])
    if first == "503":
        bad = net.carrier(gw1, "uas_reject", fill={"STATUS": "503 Service Unavailable"})
    else:
        bad = net.carrier(gw1, "uas_media_early_reject", args=["-rtp_echo"])
    good = net.carrier(gw2, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_call", fill=talk(talk_ms=2000))
    call_id = sip_call_id(customer)
    prefix = call_id + "-"
    # While the second gateway's call is up: the first attempt's session is deleted, the
    # second one is the call's, and carries the RTP.
    failed = wait_for(
        lambda: [s for s in deletes(net) if s.startswith(prefix)], 4, what="first delete"
    )
    live = wait_for(lambda: ng_sessions(rtpengine.ng_port, call_id), 3, what="second session")
    assert len(failed) == 1, (failed, live, why(net, rtpengine))
    assert len(live) == 1, (failed, live, why(net, rtpengine))
    assert int(live[0][len(prefix) :]) == int(failed[0][len(prefix) :]) + 1, (failed, live)
    assert ng_query(rtpengine.ng_port, failed[0]) is None
    both_ways(net, rtpengine, live[0], (caller_tag(customer), callee_tag(good)), 10)
    ok(net, customer, bad, good)
    assert_deleted(net, rtpengine, live[0])
    theirs = sip_log(customer)
    offer_sent = find(theirs, sent=True, start="INVITE ").body
    caller_port = m_port(offer_sent)
    for gateway in (bad, good):
        assert_relay_sdp(
            find(sip_log(gateway), sent=False, start="INVITE ").body, rtpengine, caller_port
        )
    answer_got = find(theirs, sent=False, start="SIP/2.0 200", method="INVITE").body
    good_port = m_port(find(sip_log(good), sent=True, start="SIP/2.0 200").body)
    assert_relay_sdp(answer_got, rtpengine, good_port)
    if first == "183_then_503":
        early_got = find(theirs, sent=False, start="SIP/2.0 183").body
        early_port = m_port(find(sip_log(bad), sent=True, start="SIP/2.0 183").body)
        assert_relay_sdp(early_got, rtpengine, early_port)
    (cdr,) = net.cdrs()
    assert attempts(cdr) == [("gw1", 503, "failed"), ("gw2", 200, "answered")]
    assert cdr["end_reason"] == "normal_clearing"


def test_failover_from_a_relayed_gateway_to_a_direct_one(net: Net, rtpengine: Rtpengine) -> None:
    """The mode is the attempt's: after a relayed gateway's 183 (with SDP) and 503, a
    direct gateway's call is direct from its 183 on: its SDP reaches the caller byte for
    byte, the relay holds nothing for it, and the call is not refused for want of one."""
    gw1, gw2 = Carrier("gw1", extra=RELAY), Carrier("gw2")
    start_relayed(net, rtpengine, [gw1, gw2], [Account()])
    bad = net.carrier(gw1, "uas_media_early_reject", args=["-rtp_echo"])
    good = net.carrier(gw2, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_call", fill=talk(talk_ms=1500))
    call_id = sip_call_id(customer)
    wait_for(lambda: [s for s in deletes(net) if s.startswith(call_id)], 4, what="first delete")
    ok(net, customer, bad, good)
    assert ng_sessions(rtpengine.ng_port, call_id) == []
    theirs = sip_log(customer)
    answer_sent = find(sip_log(good), sent=True, start="SIP/2.0 200").body
    answer_got = find(theirs, sent=False, start="SIP/2.0 200", method="INVITE").body
    assert answer_got == answer_sent  # direct: as the gateway wrote it
    offer_sent = find(theirs, sent=True, start="INVITE ").body
    assert find(sip_log(good), sent=False, start="INVITE ").body == offer_sent
    (cdr,) = net.cdrs()
    assert attempts(cdr) == [("gw1", 503, "failed"), ("gw2", 200, "answered")]
    assert cdr["end_reason"] == "normal_clearing"


def test_max_duration_deletes_the_session(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account(max_duration=2)])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_wait_bye", fill=talk(talk_ms=1000))
    session = live_session(net, rtpengine, sip_call_id(customer))
    ok(net, customer, carrier)
    assert_deleted(net, rtpengine, session)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "max_duration"
    assert cdr["hangup_side"] == "switch"


def test_shutdown_deletes_the_session(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_wait_bye", fill=talk(talk_ms=1000))
    session = live_session(net, rtpengine, sip_call_id(customer))
    both_ways(net, rtpengine, session, (caller_tag(customer), callee_tag(carrier)), 5)
    assert net.switch is not None
    net.switch.stop()  # SIGTERM: drain (2 s), then BYE to both sides
    ok(net, customer, carrier)
    # The switch waited for its deletes before exiting.
    assert ng_query(rtpengine.ng_port, session) is None, why(net, rtpengine)
    assert session in deletes(net), why(net, rtpengine)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "system_shutdown"


def test_operator_hangup_deletes_the_session_and_the_api_shows_the_relay(
    net: Net, rtpengine: Rtpengine
) -> None:
    gw = Carrier("gw1", extra=RELAY)
    write_tone(net.workdir)
    port = free_port()
    net.start_switch(
        [gw],
        [Account()],
        management=f'listen = "{LOCAL}:{port}"',
        tail=relay_tail(rtpengine.ng_port),
    )
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_wait_bye", fill=talk(talk_ms=1000))
    call_id = sip_call_id(customer)
    session = live_session(net, rtpengine, call_id)
    base = f"http://{LOCAL}:{port}/api/calls"
    calls = wait_for(lambda: _answered(base), 5, what="the answered call in /api/calls")
    assert [(c["id"], c["media_relay"]) for c in calls] == [(call_id, "rtp1")]
    time.sleep(1.2)  # past the customer's talk: SIPp takes the BYE once it waits for one
    quoted = urllib.parse.quote(call_id, safe="")
    with urllib.request.urlopen(urllib.request.Request(f"{base}/{quoted}", method="DELETE")):
        pass
    ok(net, customer, carrier)
    assert_deleted(net, rtpengine, session)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "operator_hangup"


def _answered(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(base, timeout=5) as response:
        calls: list[dict[str, Any]] = json.load(response)["calls"]
    return [c for c in calls if c["state"] == "answered"]


def test_credit_cutoff_deletes_the_session(net: Net, rtpengine: Rtpengine) -> None:
    """A prepaid account with 2 seconds of credit at 0.01 a second: cut at its credit
    (BYE to both sides), and its relay session deleted with it."""
    net.sell = (
        "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment\n"
        "44,UK,0.600000,0,1,1\n"
    )
    with ledger.connect(net.workdir / "cdr.sqlite", create=True) as conn:
        booking = ledger.Booking(
            "customer", "topup", to_nanos(Decimal("0.02")), "setup", dt.datetime.now(dt.UTC)
        )
        ledger.book(conn, booking)
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account(extra=('billing = "prepaid"',))])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMU)
    customer = net.customer("uac_media_wait_bye", fill=talk(talk_ms=1000))
    session = live_session(net, rtpengine, sip_call_id(customer))
    ok(net, customer, carrier)
    assert_deleted(net, rtpengine, session)
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "credit_exhausted"
    assert cdr["billsec"] <= 2


# ----------------------------------------------------------------------------- media timeout


def test_media_timeout_ends_silent_calls_only(net: Net, rtpengine: Rtpengine) -> None:
    """Three calls at once, media timeout 3 s, polled each second: one whose caller stops
    sending after 1 s, one that never sends, and one that keeps RTP flowing both ways (the
    carrier echoes) for 5.5 s, longer than the timeout, then hangs up itself."""
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(
        net,
        rtpengine,
        [gw],
        [Account()],
        media="poll_interval = 1",
        defaults="media_timeout = 3",
    )
    carrier = net.carrier(gw, "uas_media_answer", calls=3, args=["-rtp_echo"], fill=ANSWER_PCMU)
    stops = net.customer("uac_media_wait_bye", fill=talk(talk_ms=1000), label="stops")
    silent = net.customer("uac_wait_bye", label="silent")
    talks = net.customer("uac_media_call", fill=talk(talk_ms=5500, quiet_ms=100), label="talks")
    # Early on: the first call's RTP flows both ways, the second's not at all.
    stops_session = live_session(net, rtpengine, sip_call_id(stops))
    stops_totals = wait_for(
        lambda: (t := ng_totals(rtpengine.ng_port, stops_session)) and min(t.values()) >= 5 and t,
        2,
        what="RTP both ways in the call that stops",
    )
    assert stops_totals[caller_tag(stops)] >= 5
    silent_totals = ng_totals(rtpengine.ng_port, live_session(net, rtpengine, sip_call_id(silent)))
    assert silent_totals is not None
    assert set(silent_totals.values()) <= {0}, silent_totals
    ok(net, stops, silent, talks, carrier)
    rows = {row["call_id"]: row for row in net.cdrs(3)}
    for sipp in (stops, silent):
        cdr = rows[sip_call_id(sipp)]
        assert cdr["end_reason"] == "media_timeout", (sipp.name, cdr)
        assert cdr["hangup_side"] == "switch"
        assert 2.5 <= cdr["duration"] < 8, (sipp.name, cdr["duration"])
        # The switch's BYE reached the customer (SIPp's verdict) and the carrier.
        assert find(sip_log(sipp), sent=False, start="BYE ")
    kept = rows[sip_call_id(talks)]
    assert kept["end_reason"] == "normal_clearing", kept
    assert kept["hangup_side"] == "caller"
    assert kept["duration"] >= 5
    assert len([m for m in sip_log(carrier) if not m.sent and m.first_line.startswith("BYE ")]) == 3
    # Every session is gone.
    for sipp in (stops, silent, talks):
        assert ng_sessions(rtpengine.ng_port, sip_call_id(sipp)) == []


# ----------------------------------------------------------------------------- codecs


@pytest.mark.parametrize(
    ("codecs", "offer", "rtpmaps", "expected"),
    [
        ('["PCMA"]', "0 8 101", WITH_DTMF, "8 101"),
        ('["PCMA", "PCMU"]', "0 8", PCMU_PCMA, "8 0"),
    ],
    ids=["only_pcma_keeps_dtmf", "reordered"],
)
def test_codec_policy_edits_the_direct_offer(
    net: Net, codecs: str, offer: str, rtpmaps: str, expected: str
) -> None:
    gw = Carrier("gw1", extra=f"codecs = {codecs}")
    net.start_switch([gw], [Account()])
    write_tone(net.workdir)
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMA)
    customer = net.customer(
        "uac_media_call", fill=talk(offer=offer, rtpmaps=rtpmaps, pt="8", talk_ms=300)
    )
    ok(net, customer, carrier)
    offer_sent = find(sip_log(customer), sent=True, start="INVITE ").body
    offer_got = find(sip_log(carrier), sent=False, start="INVITE ").body
    assert m_line(offer_got) == f"m=audio {m_port(offer_sent)} RTP/AVP {expected}"
    # The rtpmap lines of the codecs taken out are gone, the others' (and DTMF's fmtp) kept.
    for pt in offer.split():
        assert (f"a=rtpmap:{pt} " in offer_got) == (pt in expected.split()), (pt, offer_got)
    assert ("a=fmtp:101 0-15" in offer_got) == ("101" in expected.split())
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"


def test_no_codec_in_common_is_refused_488(net: Net) -> None:
    gw = Carrier("gw1", extra='codecs = ["G729"]')
    net.start_switch([gw], [Account()])
    carrier = net.carrier(gw, "uas_media_answer", fill=ANSWER_PCMU)
    customer = net.customer("uac_refused", fill={"EXPECTED": "488"})  # offers PCMU only
    ok(net, customer)
    carrier.stop()
    assert "INVITE sip:" not in carrier.messages()
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "codec_mismatch"
    assert cdr["status"] == 488
    assert attempts(cdr) == []


@pytest.mark.parametrize(
    ("codecs", "offer", "rtpmaps", "expected"),
    [
        ('["PCMA"]', "0 8 101", WITH_DTMF, "8 101"),
        ('["PCMA", "PCMU"]', "0 8", PCMU_PCMA, "8 0"),
    ],
    ids=["only_pcma_keeps_dtmf", "reordered"],
)
def test_codec_policy_on_a_relayed_call(
    net: Net, rtpengine: Rtpengine, codecs: str, offer: str, rtpmaps: str, expected: str
) -> None:
    gw = Carrier("gw1", extra=f"{RELAY}\ncodecs = {codecs}")
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMA)
    customer = net.customer(
        "uac_media_call", fill=talk(offer=offer, rtpmaps=rtpmaps, pt="8", talk_ms=1500)
    )
    session = live_session(net, rtpengine, sip_call_id(customer))
    both_ways(net, rtpengine, session, (caller_tag(customer), callee_tag(carrier)), 10)
    ok(net, customer, carrier)
    offer_sent = find(sip_log(customer), sent=True, start="INVITE ").body
    offer_got = find(sip_log(carrier), sent=False, start="INVITE ").body
    assert_relay_sdp(offer_got, rtpengine, m_port(offer_sent))
    # rtpengine's codec flags give the same m= line as the direct call's policy.
    assert m_line(offer_got) == f"m=audio {m_port(offer_got)} RTP/AVP {expected}"
    answer_got = find(sip_log(customer), sent=False, start="SIP/2.0 200", method="INVITE").body
    assert m_line(answer_got) == f"m=audio {m_port(answer_got)} RTP/AVP 8"


def test_transcoding_offers_the_gateway_its_codec_and_converts(
    net: Net, rtpengine: Rtpengine
) -> None:
    """A PCMU-only caller and a PCMA-only carrier (``transcode = true``): without the relay
    the call would be a 488; the relay offers the carrier PCMA, answers the caller PCMU,
    and converts the RTP both ways (rtpengine marks the media ``transcoding``)."""
    gw = Carrier("gw1", extra=f'{RELAY}\ncodecs = ["PCMA"]\ntranscode = true')
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_answer", args=["-rtp_echo"], fill=ANSWER_PCMA)
    customer = net.customer("uac_media_call", fill=talk(offer="0", rtpmaps=PCMU, pt="0"))
    session = live_session(net, rtpengine, sip_call_id(customer))
    both_ways(net, rtpengine, session, (caller_tag(customer), callee_tag(carrier)), 10)
    query = ng_query(rtpengine.ng_port, session)
    ok(net, customer, carrier)
    offer_got = find(sip_log(carrier), sent=False, start="INVITE ").body
    # PCMA, and DTMF as RFC 4733 events that the relay makes for a caller who offered none
    # (a dynamic payload type of its choice).
    formats = m_line(offer_got).split()[3:]
    assert formats[0] == "8", offer_got
    assert [f"a=rtpmap:{pt} telephone-event/8000" in offer_got for pt in formats[1:]] == [True]
    answer_got = find(sip_log(customer), sent=False, start="SIP/2.0 200", method="INVITE").body
    assert m_line(answer_got) == f"m=audio {m_port(answer_got)} RTP/AVP 0"
    assert query is not None
    assert b"transcoding" in repr(query).encode(), query
    assert net.cdrs(1)[0]["end_reason"] == "normal_clearing"


# ----------------------------------------------------------------------------- no relay


def test_no_relay_answering_refuses_relayed_calls_only(net: Net) -> None:
    gw = Carrier("gw1")
    accounts = [
        Account("relayed", tech_prefix="1111#", extra=(RELAY,)),
        Account("direct", tech_prefix="2222#"),
    ]
    dead = free_port()  # nothing listens there
    net.start_switch(
        [gw], accounts, tail=relay_tail(dead, media="ng_timeout = 0.2\nng_retries = 1")
    )
    carrier = net.carrier(gw, "uas_answer")
    refused = net.customer(
        "uac_refused", number=f"1111%23{NUMBER}", fill={"EXPECTED": "503"}, label="relayed"
    )
    ok(net, refused)
    direct = net.customer("uac_call", number=f"2222%23{NUMBER}", args=["-d", "300"], label="direct")
    ok(net, direct, carrier)
    rows = {row["account_id"]: row for row in net.cdrs(2)}
    assert rows["relayed"]["end_reason"] == "media_unavailable"
    assert rows["relayed"]["status"] == 503
    assert rows["relayed"]["answer_at"] is None
    # The gateway was chosen, then the call stopped before its INVITE left: said so.
    assert attempts(rows["relayed"]) == [("gw1", None, "media_unavailable")]
    assert rows["relayed"]["detail"].endswith("; media: no media relay answers")
    assert rows["direct"]["end_reason"] == "normal_clearing"
    # The carrier got one INVITE: the direct call's.
    invites = [m for m in sip_log(carrier) if not m.sent and m.first_line.startswith("INVITE ")]
    assert [m.header("Call-ID") for m in invites] == [sip_call_id(direct)]


# ----------------------------------------------------------------------------- offer/answer


def test_late_offer_through_the_relay(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_late", args=["-rtp_echo"])
    customer = net.customer("uac_media_late", fill={"TALK_MS": "2500"})
    session = live_session(net, rtpengine, sip_call_id(customer))
    both_ways(net, rtpengine, session, (caller_tag(customer), callee_tag(carrier)), 10)
    ok(net, customer, carrier)
    theirs, ours = sip_log(customer), sip_log(carrier)
    assert find(ours, sent=False, start="INVITE ").body == ""
    offer_sent = find(ours, sent=True, start="SIP/2.0 200", method="INVITE").body
    offer_got = find(theirs, sent=False, start="SIP/2.0 200", method="INVITE").body
    answer_sent = find(theirs, sent=True, start="ACK ").body
    answer_got = find(ours, sent=False, start="ACK ").body
    callee_port, caller_port = m_port(offer_sent), m_port(answer_sent)
    assert_relay_sdp(offer_got, rtpengine, callee_port, callee_port + 1)
    assert_relay_sdp(answer_got, rtpengine, caller_port, caller_port + 1)
    assert_deleted(net, rtpengine, session)


def test_update_and_prack_in_the_early_dialog_go_through_the_relay(
    net: Net, rtpengine: Rtpengine
) -> None:
    """A reliable 183 with SDP (PRACKed), then the caller's UPDATE with a new offer while
    the call still rings (RFC 3311): the carrier's 183 reaches the caller with the relay's
    port, the UPDATE reaches the carrier with the relay's port, and its 200's SDP comes
    back rewritten too; neither side ever sees the other's media port."""
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_update")
    customer = net.customer("uac_media_update")
    ok(net, customer, carrier)
    sent = sip_log(customer)
    got = sip_log(carrier)
    caller_port = m_port(find(sent, sent=True, start="INVITE ").body)
    callee_port = m_port(find(got, sent=True, start="SIP/2.0 183").body)
    early = find(sent, sent=False, start="SIP/2.0 183").body
    assert_relay_sdp(early, rtpengine, callee_port, callee_port + 1)
    update = find(got, sent=False, start="UPDATE ").body
    assert_relay_sdp(update, rtpengine, caller_port, caller_port + 1)
    assert "o=caller 1 2" in update  # the caller's new offer, relayed
    update_ok = find(sent, sent=False, start="SIP/2.0 200", method="UPDATE").body
    assert_relay_sdp(update_ok, rtpengine, callee_port, callee_port + 1)
    assert "o=carrier 1 2" in update_ok  # the carrier's answer to it
    assert net.cdrs(1)[0]["end_reason"] == "normal_clearing"


def test_reinvite_from_the_caller_is_rewritten(net: Net, rtpengine: Rtpengine) -> None:
    gw = Carrier("gw1", extra=RELAY)
    start_relayed(net, rtpengine, [gw], [Account()])
    carrier = net.carrier(gw, "uas_media_reinvite", args=["-rtp_echo"])
    customer = net.customer("uac_media_reinvite", fill={"TALK_MS": "2000"})
    session = live_session(net, rtpengine, sip_call_id(customer))
    tags = (caller_tag(customer), callee_tag(carrier))
    both_ways(net, rtpengine, session, tags, 10)
    # Once the re-INVITE's 200 reached the caller, RTP still flows both ways.
    wait_for(
        lambda: [m for m in sip_log(customer) if not m.sent and m.header("CSeq") == "2 INVITE"],
        5,
        what="the re-INVITE's answer",
    )
    before = ng_totals(rtpengine.ng_port, session) or {}
    time.sleep(0.8)
    after = ng_totals(rtpengine.ng_port, session) or {}
    assert all(after.get(tag, 0) >= before.get(tag, 0) + 10 for tag in tags), (before, after)
    ok(net, customer, carrier)
    theirs, ours = sip_log(customer), sip_log(carrier)
    reoffer_sent = find(theirs, sent=True, start="INVITE ", cseq="2 INVITE").body
    reoffer_got = find(ours, sent=False, start="INVITE ", cseq="2 INVITE").body
    reanswer_sent = find(ours, sent=True, start="SIP/2.0 200", cseq="2 INVITE").body
    reanswer_got = find(theirs, sent=False, start="SIP/2.0 200", cseq="2 INVITE").body
    caller_port, callee_port = m_port(reoffer_sent), m_port(reanswer_sent)
    assert_relay_sdp(reoffer_got, rtpengine, caller_port, caller_port + 1)
    assert_relay_sdp(reanswer_got, rtpengine, callee_port, callee_port + 1)
    # The same relay ports as the first offer/answer: RTP keeps flowing where it went.
    assert m_port(reoffer_got) == m_port(find(ours, sent=False, start="INVITE ").body)
    assert m_port(reanswer_got) == m_port(
        find(theirs, sent=False, start="SIP/2.0 200", cseq="1 INVITE").body
    )
    (cdr,) = net.cdrs()
    assert cdr["end_reason"] == "normal_clearing"
    assert_deleted(net, rtpengine, session)
