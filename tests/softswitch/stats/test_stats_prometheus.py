"""The Prometheus face: the same events, read back from the exposition text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from softswitch.stats import CallEnded, CallRefused, CallStarted, GatewayAttempt, Statistics
from softswitch.stats.prometheus import Metrics, status_class


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_status_classes() -> None:
    assert [status_class(s) for s in (None, 99, 183, 200, 302, 486, 503, 603, 700)] == [
        "none", "none", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "none",
    ]  # fmt: skip


def test_counters_gauges_and_histograms_follow_the_events() -> None:
    metrics = Metrics()
    stats = Statistics(metrics=metrics)
    for _ in range(3):
        stats.call_started(CallStarted("acme", "UK", "44"), 1.0)
    stats.gateway_seized("gw1", 1.0)
    stats.gateway_seized("gw2", 1.0)
    stats.gateway_released("gw2", 1.5)
    stats.gateway_seized("gw1", 1.5)
    answered = CallEnded(
        "acme", "UK", "44", 200, "normal_clearing", True, True, 42_000, 1234,
        (
            GatewayAttempt("gw2", 503, "failed", False, None),
            GatewayAttempt("gw1", 200, "answered", True, 1200, 42_000),
        ),
    )  # fmt: skip
    timeout = CallEnded(
        "acme", "UK", "44", 408, "gateway_timeout", False, False, 0, None,
        (GatewayAttempt("gw1", None, "timeout", False, None),),
    )  # fmt: skip
    stats.gateway_released("gw1", 50.0)
    stats.call_ended(answered, 50.0)
    stats.gateway_released("gw1", 50.0)
    stats.call_ended(timeout, 50.0)
    stats.call_refused(CallRefused("acme", 503, "limit_exceeded"), 51.0)
    stats.call_refused(CallRefused(None, 403, "auth_failed"), 51.0)
    got = samples(metrics)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("softswitch_calls_total", account="acme", outcome="normal_clearing") == 1
    assert value("softswitch_calls_total", account="acme", outcome="gateway_timeout") == 1
    assert value("softswitch_calls_total", account="acme", outcome="limit_exceeded") == 1
    assert value("softswitch_calls_total", account="", outcome="auth_failed") == 1
    assert value("softswitch_gateway_attempts_total", gateway="gw1", status_class="2xx") == 1
    assert value("softswitch_gateway_attempts_total", gateway="gw1", status_class="none") == 1
    assert value("softswitch_gateway_attempts_total", gateway="gw2", status_class="5xx") == 1
    assert value("softswitch_calls_active", account="acme") == 1  # three started, two ended
    assert value("softswitch_gateway_calls_active", gateway="gw1") == 0
    assert value("softswitch_gateway_calls_active", gateway="gw2") == 0
    assert value("softswitch_pdd_seconds_count", account="acme") == 1
    assert value("softswitch_pdd_seconds_sum", account="acme") == 1.234
    assert value("softswitch_pdd_seconds_bucket", account="acme", le="1.0") == 0
    assert value("softswitch_pdd_seconds_bucket", account="acme", le="1.5") == 1
    assert value("softswitch_call_duration_seconds_count", account="acme") == 1
    assert value("softswitch_call_duration_seconds_sum", account="acme") == 42.0
    assert value("softswitch_call_duration_seconds_bucket", account="acme", le="30.0") == 0
    assert value("softswitch_call_duration_seconds_bucket", account="acme", le="60.0") == 1
    # bounded labels: ids and outcomes only, never a number
    names = {label for (_, labels) in got for label, _ in labels}
    assert names == {"account", "outcome", "gateway", "status_class", "le"}


def test_each_switch_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.call_refused(CallRefused("acme", 403, "auth_failed"))
    assert samples(two) == {}
    assert (
        samples(one)[("softswitch_calls_total", (("account", "acme"), ("outcome", "auth_failed")))]
        == 1
    )


def test_openmetrics_when_asked() -> None:
    body, content_type = Metrics().exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
