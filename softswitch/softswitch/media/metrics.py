"""The media relays in ``/metrics``: read from ``MediaControl`` when Prometheus scrapes.

    softswitch_media_relay_up{relay}                 gauge: 1 while the relay answers pings
    softswitch_media_requests_total{command}         counter: offer, answer, delete sent
    softswitch_media_failures_total                  counter: offers/answers the relay failed
    softswitch_media_timeouts_total                  counter: calls hung up for dead RTP

A collector rather than metrics updated on every NG request: the counters already exist on
``MediaControl.stats``, and a scrape reads them once.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .control import MediaControl

__all__ = ["MediaCollector"]


class MediaCollector(Collector):
    """Register on the switch's registry: ``registry.register(MediaCollector(media))``."""

    def __init__(self, media: MediaControl) -> None:
        self.media = media

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "softswitch_media_relay_up", "1 while the media relay answers pings", labels=["relay"]
        )
        for relay in self.media.pool.relays:
            up.add_metric([relay.id], 1.0 if relay.up else 0.0)
        yield up
        stats = self.media.stats
        requests = CounterMetricFamily(
            "softswitch_media_requests",
            "NG requests sent to the media relays",
            labels=["command"],
        )
        for command, count in (
            ("offer", stats.offers),
            ("answer", stats.answers),
            ("delete", stats.deletes),
        ):
            requests.add_metric([command], count)
        yield requests
        yield CounterMetricFamily(
            "softswitch_media_failures",
            "offers and answers a media relay did not answer or refused",
            value=stats.failures,
        )
        yield CounterMetricFamily(
            "softswitch_media_timeouts",
            "relayed calls hung up because their RTP stopped both ways",
            value=stats.timeouts,
        )
