"""The statistics and the Prometheus exposition under SIPp traffic through a real switch.

The switch here is ``proxy.server.Switch`` (what ``softswitch run`` builds) running in this
test's event loop rather than in a subprocess: ``/metrics`` is served by the management API,
which does not exist yet, so the test reads ``Metrics.exposition()`` directly, as that
endpoint will. SIPp (customer and carrier) is real and runs as processes, as in
``test_call_flow.py``. A scrape and a look at the engine's calls happen at the same instant
of the event loop, so they must agree exactly; at the end the counters are checked against
the CDRs the switch wrote.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from callflow_harness import read_cdrs
from callflow_net import Account, Carrier, Net, ok
from prometheus_client.parser import text_string_to_metric_families

from softswitch.call.snapshot import build_snapshot
from softswitch.config import load_config
from softswitch.proxy.server import Switch

pytestmark = pytest.mark.e2e

ANSWERED = 20
REFUSED = 5

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(switch: Switch) -> Samples:
    assert switch.stats.metrics is not None
    body, _ = switch.stats.metrics.exposition()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def traffic(net: Net, config_path: Path) -> tuple[Switch, list[tuple[float, int]], Samples]:
    """Run the switch while SIPp calls through it; scrape every 50 ms until SIPp is done."""
    config = load_config(config_path)
    switch = Switch(config, build_snapshot(config), config_path)
    await switch.start(config.server.listen)
    try:
        answered = net.customer("uac_call", args=["-d", "1000", "-r", "10"], calls=ANSWERED)
        refused = net.customer(
            "uac_refused",
            number="331234567",  # the sell deck rates 44 only: 404 no_rate
            fill={"EXPECTED": "404"},
            calls=REFUSED,
            label="refused",
            args=["-r", "5"],
        )
        done = asyncio.gather(asyncio.to_thread(answered.wait), asyncio.to_thread(refused.wait))
        seen: list[tuple[float, int]] = []
        while not done.done():
            samples = scrape(switch)
            active = value(samples, "softswitch_calls_active", account="customer")
            seen.append((active, switch.engine.active_calls))
            await asyncio.sleep(0.05)
        assert await done == [0, 0], net.explain()
        # The customer's BYE ends the call in the switch before SIPp sees the 200.
        assert switch.engine.active_calls == 0
        return switch, seen, scrape(switch)
    finally:
        await switch.stop(1.0)


def test_metrics_and_statistics_during_sipp_traffic(net: Net) -> None:
    gw = Carrier("gw1")
    config_path = net.write_config([gw], [Account()])
    carrier = net.carrier(gw, "uas_answer", calls=ANSWERED)
    switch, seen, final = asyncio.run(traffic(net, config_path))
    ok(net, carrier)

    # During the traffic: every scrape agreed with the engine's own count of calls up, and
    # the traffic was seen (20 calls held 1 s at 10 calls/s).
    assert all(active == engine for active, engine in seen), seen
    assert max(active for active, _ in seen) >= 1

    counts = {labels: v for (name, labels), v in final.items() if name == "softswitch_calls_total"}
    assert counts == {
        (("account", "customer"), ("outcome", "normal_clearing")): ANSWERED,
        (("account", "customer"), ("outcome", "no_rate")): REFUSED,
    }
    gateway = {
        labels: v
        for (name, labels), v in final.items()
        if name == "softswitch_gateway_attempts_total"
    }
    assert gateway == {(("gateway", "gw1"), ("status_class", "2xx")): ANSWERED}
    assert value(final, "softswitch_calls_active", account="customer") == 0
    assert value(final, "softswitch_gateway_calls_active", gateway="gw1") == 0

    # The histograms hold exactly what the CDRs say.
    rows = read_cdrs(net.workdir / "cdr.sqlite")
    assert len(rows) == ANSWERED + REFUSED
    up = [r for r in rows if r["end_reason"] == "normal_clearing"]
    assert len(up) == ANSWERED
    pdd = "softswitch_pdd_seconds"
    duration = "softswitch_call_duration_seconds"
    assert value(final, f"{pdd}_count", account="customer") == ANSWERED
    assert value(final, f"{pdd}_sum", account="customer") == pytest.approx(
        sum(r["pdd"] for r in up), abs=1e-6
    )
    assert value(final, f"{duration}_count", account="customer") == ANSWERED
    assert value(final, f"{duration}_sum", account="customer") == pytest.approx(
        sum(r["duration"] for r in up), abs=1e-6
    )
    assert value(final, f"{duration}_bucket", account="customer", le="+Inf") == ANSWERED

    # The windowed statistics, from the same events.
    now = time.monotonic()
    account = switch.stats.query("account", "customer", "5m", now)
    assert (account["attempts"], account["answered"]) == (ANSWERED + REFUSED, ANSWERED)
    assert account["asr"] == ANSWERED / (ANSWERED + REFUSED)
    assert account["failures"] == {"status": {"404": REFUSED}, "reason": {"no_rate": REFUSED}}
    # Rounded to 3 decimals by the statistics: a mean that falls on a ...5 may round either
    # way depending on how the float sum came out, so compare within the rounding.
    mean = sum(r["duration"] for r in up) / ANSWERED
    assert account["acd"] == pytest.approx(mean, abs=0.0005 + 1e-9)
    assert account["acd"] == round(account["acd"], 3)
    assert account["pdd"]["count"] == ANSWERED
    assert account["concurrent"]["current"] == 0
    assert account["concurrent"]["peak"] >= max(active for active, _ in seen)
    assert account["cps"]["peak"] >= 1
    uk = switch.stats.query("destination", "UK", "5m", now)
    assert (uk["attempts"], uk["answered"]) == (ANSWERED, ANSWERED)  # refused: no destination
    gw1 = switch.stats.query("gateway", "gw1", "5m", now)
    assert (gw1["seizures"], gw1["answered"], gw1["ner"]) == (ANSWERED, ANSWERED, 1.0)
    assert switch.stats.keys("prefix") == ["44"]
