"""``Statistics`` against hand-computed values: one fixed sequence of call events with
explicit (monotonic) times, and each figure worked out by hand in the comments.

The sequence, accounts ``acme`` and ``beta``, gateways ``gw1`` and ``gw2``:

    t        event
    1000.2   A starts (acme, UK, 44); gw1 seized
    1000.4   B starts (acme, UK, 44); gw2 seized
    1000.9   C starts (acme, FR, 33); gw2 seized
    1001.0   B: gw2 answered 503, released; gw1 seized
    1001.5   refused: acme, 503 limit_exceeded
    1001.6   refused: no account, 403 auth_failed
    1002.0   D starts (beta, UK, 44); gw1 seized
    1002.9   C ends: gw2 timed out (no status), released; 408 gateway_timeout
    1003.0   B ends: gw1 rang, 486 busy, released; call PDD 2.1 s
    1033.0   D ends: answered by gw1 (gw PDD 0.75 s), 30.5 s, call PDD 0.8 s; gw1 released
    1040.0   E starts (acme, UK, 44); gw1 seized
    1045.0   E ends: gw1 rang (PDD 2.85 s), caller cancelled, 487; call PDD 2.866 s
    1062.0   A ends: answered by gw1 (gw PDD 1.2 s), 61 s, call PDD 1.234 s; gw1 released
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from softswitch.stats import (
    CallEnded,
    CallRefused,
    CallStarted,
    GatewayAttempt,
    Statistics,
)

Step = Callable[[Statistics, float], None]


def start(account: str, destination: str, prefix: str) -> Step:
    return lambda s, t: s.call_started(CallStarted(account, destination, prefix), t)


def seize(gateway: str) -> Step:
    return lambda s, t: s.gateway_seized(gateway, t)


def release(gateway: str) -> Step:
    return lambda s, t: s.gateway_released(gateway, t)


def end(event: CallEnded) -> Step:
    return lambda s, t: s.call_ended(event, t)


def refuse(account: str | None, status: int, reason: str) -> Step:
    return lambda s, t: s.call_refused(CallRefused(account, status, reason), t)


A = CallEnded(
    "acme", "UK", "44", 200, "normal_clearing", True, True, 61_000, 1234,
    (GatewayAttempt("gw1", 200, "answered", True, 1200, 61_000),),
)  # fmt: skip
B = CallEnded(
    "acme", "UK", "44", 486, "busy", False, True, 0, 2100,
    (
        GatewayAttempt("gw2", 503, "failed", False, None),
        GatewayAttempt("gw1", 486, "failed", True, 1500),
    ),
)  # fmt: skip
C = CallEnded(
    "acme", "FR", "33", 408, "gateway_timeout", False, False, 0, None,
    (GatewayAttempt("gw2", None, "timeout", False, None),),
)  # fmt: skip
D = CallEnded(
    "beta", "UK", "44", 200, "normal_clearing", True, True, 30_500, 800,
    (GatewayAttempt("gw1", 200, "answered", True, 750, 30_500),),
)  # fmt: skip
E = CallEnded(
    "acme", "UK", "44", 487, "caller_cancelled", False, True, 0, 2866,
    (GatewayAttempt("gw1", 487, "cancelled", True, 2850),),
)  # fmt: skip

SEQUENCE: list[tuple[float, Step]] = [
    (1000.2, start("acme", "UK", "44")),
    (1000.2, seize("gw1")),
    (1000.4, start("acme", "UK", "44")),
    (1000.4, seize("gw2")),
    (1000.9, start("acme", "FR", "33")),
    (1000.9, seize("gw2")),
    (1001.0, release("gw2")),
    (1001.0, seize("gw1")),
    (1001.5, refuse("acme", 503, "limit_exceeded")),
    (1001.6, refuse(None, 403, "auth_failed")),
    (1002.0, start("beta", "UK", "44")),
    (1002.0, seize("gw1")),
    (1002.9, release("gw2")),
    (1002.9, end(C)),
    (1003.0, release("gw1")),
    (1003.0, end(B)),
    (1033.0, release("gw1")),
    (1033.0, end(D)),
    (1040.0, start("acme", "UK", "44")),
    (1040.0, seize("gw1")),
    (1045.0, release("gw1")),
    (1045.0, end(E)),
    (1062.0, release("gw1")),
    (1062.0, end(A)),
]


def fed(until: float = 1062.0) -> Statistics:
    stats = Statistics()
    for t, step in SEQUENCE:
        if t <= until:
            step(stats, t)
    return stats


@pytest.fixture
def stats() -> Statistics:
    return fed()


def test_the_switch_over_five_minutes(stats: Statistics) -> None:
    summary = stats.query("switch", "all", "5m", 1062.0)
    assert summary == {
        "dimension": "switch",
        "key": "all",
        "window": "5m",
        "seconds": 300,
        # A, B, C, D, E and the two refusals
        "attempts": 7,
        "answered": 2,  # A, D
        "asr": 2 / 7,
        # A, D answered; B busy (486); E cancelled after ringing (487, rang).
        # Not C (408 without ringing), not the refusals.
        "ner_successes": 4,
        "ner": 4 / 7,
        "seizures": 6,  # A 1, B 2, C 1, D 1, E 1
        "acd": 45.75,  # (61.0 + 30.5) / 2
        "duration": 91.5,
        "pdd": {
            "count": 4,  # A, B, D, E (C never rang)
            "avg": 1.75,  # (1234 + 2100 + 800 + 2866) / 4 = 1750 ms
            # rank ceil(0.95 * 4) = 4: 2866 ms, bin [2800, 2900), capped by the max 2866
            "p95": 2.866,
            "max": 2.866,
        },
        "failures": {
            "status": {"403": 1, "408": 1, "486": 1, "487": 1, "503": 1},
            "reason": {
                "auth_failed": 1,
                "busy": 1,
                "caller_cancelled": 1,
                "gateway_timeout": 1,
                "limit_exceeded": 1,
            },
        },
        # 1 (A) 2 (B) 3 (C) 4 (D at 1002.0); all ended by 1062.0
        "concurrent": {"current": 0, "peak": 4},
        # second 1000: A, B, C; last whole second [1061, 1062): nothing
        "cps": {"current": 0, "peak": 3},
    }
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_an_account_counts_its_refusals_but_not_anonymous_ones(stats: Statistics) -> None:
    acme = stats.query("account", "acme", "5m", 1062.0)
    assert (acme["attempts"], acme["answered"], acme["asr"]) == (5, 1, 0.2)  # A,B,C,E + 503
    assert (acme["ner_successes"], acme["ner"]) == (3, 0.6)  # A, B, E
    assert (acme["seizures"], acme["acd"], acme["duration"]) == (5, 61.0, 61.0)
    # (1234 + 2100 + 2866) / 3 = 2066.67 ms; rank 3 is 2866 ms
    assert acme["pdd"] == {"count": 3, "avg": 2.067, "p95": 2.866, "max": 2.866}
    assert acme["failures"] == {
        "status": {"408": 1, "486": 1, "487": 1, "503": 1},
        "reason": {"busy": 1, "caller_cancelled": 1, "gateway_timeout": 1, "limit_exceeded": 1},
    }
    assert acme["concurrent"] == {"current": 0, "peak": 3}  # A, B, C at 1000.9
    assert acme["cps"] == {"current": 0, "peak": 3}
    beta = stats.query("account", "beta", "5m", 1062.0)
    assert (beta["attempts"], beta["answered"], beta["asr"], beta["ner"]) == (1, 1, 1.0, 1.0)
    assert (beta["acd"], beta["pdd"]["avg"], beta["pdd"]["p95"]) == (30.5, 0.8, 0.8)
    assert stats.keys("account") == ["acme", "beta"]


def test_destinations_and_prefixes_count_admitted_calls_only(stats: Statistics) -> None:
    for dimension, uk, fr in (("destination", "UK", "FR"), ("prefix", "44", "33")):
        here = stats.query(dimension, uk, "5m", 1062.0)
        # A, B, D, E: A and D answered; NER A, B (486), D, E (487 after ringing)
        assert (here["attempts"], here["answered"], here["asr"]) == (4, 2, 0.5)
        assert (here["ner_successes"], here["acd"]) == (4, 45.75)
        assert here["concurrent"] == {"current": 0, "peak": 3}  # A, B, D
        there = stats.query(dimension, fr, "5m", 1062.0)
        assert (there["attempts"], there["answered"], there["asr"], there["ner"]) == (1, 0, 0, 0)
        assert there["acd"] is None
        assert there["pdd"] == {"count": 0, "avg": None, "p95": None, "max": None}
        assert there["failures"] == {"status": {"408": 1}, "reason": {"gateway_timeout": 1}}
    assert stats.keys("destination") == ["FR", "UK"]
    assert stats.keys("prefix") == ["33", "44"]


def test_gateways_count_seizures(stats: Statistics) -> None:
    gw1 = stats.query("gateway", "gw1", "5m", 1062.0)
    # A (200), B's second attempt (486 after ringing), D (200), E (487 after ringing)
    assert (gw1["attempts"], gw1["seizures"], gw1["answered"], gw1["asr"]) == (4, 4, 2, 0.5)
    assert (gw1["ner_successes"], gw1["acd"]) == (4, 45.75)
    # 1200, 1500, 750, 2850: 6300 / 4 = 1575 ms
    assert gw1["pdd"] == {"count": 4, "avg": 1.575, "p95": 2.85, "max": 2.85}
    assert gw1["failures"] == {
        "status": {"486": 1, "487": 1},
        "reason": {"cancelled": 1, "failed": 1},
    }
    # A 1000.2, B 1001.0, D 1002.0: three channels at once; one seizure a second at most
    assert gw1["concurrent"] == {"current": 0, "peak": 3}
    assert gw1["cps"] == {"current": 0, "peak": 1}
    gw2 = stats.query("gateway", "gw2", "5m", 1062.0)
    assert (gw2["attempts"], gw2["answered"], gw2["asr"], gw2["ner"]) == (2, 0, 0, 0)
    assert gw2["failures"] == {"status": {"503": 1}, "reason": {"failed": 1, "timeout": 1}}
    assert gw2["concurrent"] == {"current": 0, "peak": 2}  # B 1000.4, C 1000.9
    assert gw2["cps"] == {"current": 0, "peak": 2}  # both in second 1000
    assert stats.keys("gateway") == ["gw1", "gw2"]


def test_concurrency_and_cps_now() -> None:
    """CPS now is the last whole second's count; concurrency now is the level."""
    stats = fed(1001.6)
    switch = stats.query("switch", "all", "5m", 1001.7)
    assert switch["concurrent"] == {"current": 3, "peak": 3}  # A, B, C up
    assert switch["cps"] == {"current": 3, "peak": 3}  # [1000, 1001): A, B, C
    assert stats.query("gateway", "gw2", "5m", 1001.7)["concurrent"] == {"current": 1, "peak": 2}
    stats = fed(1002.0)
    # [1001, 1002): the two refusals; D (1002.0) is in the current, partial second
    assert stats.query("switch", "all", "5m", 1002.5)["cps"] == {"current": 2, "peak": 3}
    assert stats.query("switch", "all", "5m", 1003.0)["cps"] == {"current": 1, "peak": 3}
    assert stats.query("switch", "all", "5m", 1004.0)["cps"] == {"current": 0, "peak": 3}
    assert stats.query("account", "acme", "5m", 1002.5)["cps"] == {"current": 1, "peak": 3}


@dataclass(frozen=True)
class Seen:
    attempts: int
    concurrent_peak: int
    cps_peak: int


def seen(stats: Statistics, window: str, now: float) -> Seen:
    s = stats.query("switch", "all", window, now)
    return Seen(s["attempts"], s["concurrent"]["peak"], s["cps"]["peak"])


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 5 s buckets, 60 of them: an event in bucket n counts while floor(now/5) - n < 60.
        # C, B and both refusals end in bucket 200 ([1000, 1005)): they leave at 1300.0,
        # (200 + 60) * 5, so between 295 and 300 s after they happened.
        (1299.999, Seen(7, 4, 3)),
        # D (1033, bucket 206), E (1045, 209), A (1062, 212) remain; the level held
        # from D's end is 2 (D's release), E's start and end saw 2; E arrived at 1040.
        (1300.0, Seen(3, 2, 1)),
        (1329.999, Seen(3, 2, 1)),
        (1330.0, Seen(2, 2, 1)),  # D's bucket 206 gone
        (1340.0, Seen(2, 2, 0)),  # E's start (bucket 208) gone: no arrival left
        (1345.0, Seen(1, 1, 0)),  # E's end (209) gone: A's end held 1
        (1359.999, Seen(1, 1, 0)),
        (1360.0, Seen(0, 0, 0)),  # A's end (212) gone, 298 s after it
    ],
)
def test_the_five_minute_window_slides_in_five_second_steps(
    stats: Statistics, now: float, expected: Seen
) -> None:
    assert seen(stats, "5m", now) == expected


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        # 60 s buckets: [960, 1020) holds B, C, the refusals; [1020, 1080) D, E, A.
        ("1h", 4559.999, Seen(7, 4, 3)),
        ("1h", 4560.0, Seen(3, 2, 1)),  # (16 + 60) * 60: B, C, the refusals gone
        ("1h", 4620.0, Seen(0, 0, 0)),
        # 15m reads the hour's newest 15 buckets: bucket 16 leaves at (16 + 15) * 60.
        ("15m", 1859.999, Seen(7, 4, 3)),
        ("15m", 1860.0, Seen(3, 2, 1)),
        ("15m", 1920.0, Seen(0, 0, 0)),
        # 900 s buckets: everything is in [900, 1800), gone at 97 * 900 = 87300.
        ("24h", 87299.999, Seen(7, 4, 3)),
        ("24h", 87300.0, Seen(0, 0, 0)),
    ],
)
def test_the_quarter_hour_hour_and_day_windows(
    stats: Statistics, window: str, now: float, expected: Seen
) -> None:
    assert seen(stats, window, now) == expected


def test_answers_are_the_summarys_two_counts(stats: Statistics) -> None:
    """``answers`` (what quality routing reads per call) agrees with ``query`` everywhere."""
    for dimension in ("switch", "account", "gateway"):
        for key in [*stats.keys(dimension), "nobody"]:
            for window in ("5m", "15m", "1h", "24h"):
                for now in (1062.0, 1860.0, 1920.0):
                    summary = stats.query(dimension, key, window, now)
                    counts = (summary["attempts"], summary["answered"])
                    assert stats.answers(dimension, key, window, now) == counts
    assert stats.answers("gateway", "gw1", "15m", 1062.0) == (4, 2)  # A, B, D, E
    with pytest.raises(ValueError, match="unknown window"):
        stats.answers("gateway", "gw1", "10m", 1062.0)


def test_p95_is_the_upper_edge_of_the_nearest_rank_bin() -> None:
    """40 calls with PDDs 10, 20, ... 400 ms: rank ceil(0.95 * 40) = 38 is 380 ms, in bin
    [380, 390): p95 = 0.39 s (the true value 0.38 s, one 10 ms bin up); max 0.4 s."""
    stats = Statistics()
    for i in range(1, 41):
        stats.call_started(CallStarted("acme", None, None), 10.0)
        event = CallEnded("acme", None, None, 200, "normal_clearing", True, True, 1000, i * 10)
        stats.call_ended(event, 10.0)
    pdd = stats.query("switch", "all", "5m", 10.0)["pdd"]
    assert pdd == {"count": 40, "avg": 0.205, "p95": 0.39, "max": 0.4}
    assert stats.keys("destination") == stats.keys("prefix") == []


def test_unknown_keys_answer_zeros_and_unknown_names_are_errors(stats: Statistics) -> None:
    nobody = stats.query("account", "nobody", "24h", 1062.0)
    assert (nobody["attempts"], nobody["asr"], nobody["acd"]) == (0, None, None)
    assert nobody["concurrent"] == {"current": 0, "peak": 0}
    with pytest.raises(ValueError, match="unknown window"):
        stats.query("switch", "all", "2h", 1062.0)
    with pytest.raises(ValueError, match="unknown dimension"):
        stats.keys("country")
    assert stats.keys("switch") == ["all"]


def test_idle_series_are_forgotten_but_the_switch_stays(stats: Statistics) -> None:
    assert stats.prune(1062.0) == 0
    # 24 h later every window is empty and nothing is up
    assert stats.prune(1062.0 + 86400.0) == 2 + 2 + 2 + 2  # accounts, gateways, dest., prefixes
    assert stats.keys("account") == []
    assert stats.keys("switch") == ["all"]


class Broken:
    def __getattr__(self, name: str) -> object:
        raise RuntimeError("boom")


def test_recording_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the metrics (here: every method raises) is logged; the call goes on."""
    stats = Statistics(metrics=Broken())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="softswitch.stats"):
        stats.call_started(CallStarted("acme", None, None), 1.0)
        stats.gateway_seized("gw1", 1.0)
        stats.gateway_released("gw1", 1.0)
        stats.call_ended(
            CallEnded("acme", None, None, 503, "no_gateway", False, False, 0, None), 2.0
        )
        stats.call_refused(CallRefused(None, 403, "auth_failed"), 2.0)
    assert len(caplog.records) == 5
    # the windows were fed before the metrics failed
    assert stats.query("switch", "all", "5m", 2.0)["attempts"] == 2
