"""The Prometheus collector behind ``/metrics``, and the bar-lag histogram.

Everything but the histogram is read from the feed, bus and sink counters at scrape time
(a custom ``prometheus_client`` collector), so the hot path pays nothing for them; the
histogram costs one bisect per closed bar. With several venues every series is led by a
``venue`` label; one venue keeps its names and labels.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.events import BarEvent, FeedState, epoch_ms
from quantcore.feeds.base import StreamKey
from quantcore.health import Monitored, health, recorders_health
from quantcore.intervals import interval_ms
from quantcore.sinks.base import BufferedSink

LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Bar-lag histogram bounds in seconds (exchange time)."""
LAG_BOUNDS = [*map(repr, LAG_BUCKETS), "+Inf"]
CONNECTION_STATES = (FeedState.CONNECTING, FeedState.LIVE, FeedState.DISCONNECTED,
                     FeedState.STALLED, FeedState.ERROR, FeedState.STOPPED)  # fmt: skip
"""The states a connection of the Binance feed goes through (``quantcore_connection_state``)."""


class MonitoredRun(Protocol):
    """A run the endpoint reports on (``app.App``): one part per venue."""

    @property
    def parts(self) -> Sequence[Monitored]: ...


class LagHistogram:
    """Per-stream bucket counts of bar lag: receive time minus close time, exchange time.

    Receive time is the feed's estimate of the exchange clock when the bar is published,
    never before the frame's own event time (REST-filled bars included: their lag says
    how late they really came); clock jitter below zero counts as 0.
    """

    def __init__(self, run: Monitored) -> None:
        self._run = run
        self.counts: dict[StreamKey, list[int]] = {}
        self.sums: dict[StreamKey, float] = {}
        self._steps: dict[StreamKey, int] = {}

    def observe(self, bar: BarEvent) -> None:
        key = bar.key
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = interval_ms(bar.interval)
            self.counts[key] = [0] * (len(LAG_BUCKETS) + 1)
            self.sums[key] = 0.0
        feed = self._run.feed
        now_ms = feed.exchange_ms() if feed is not None else int(time.time() * 1000)
        now_ms = max(now_ms, epoch_ms(bar.event_time))
        lag = max(0.0, (now_ms - epoch_ms(bar.open_time) - step) / 1000.0)
        self.counts[key][bisect_left(LAG_BUCKETS, lag)] += 1
        self.sums[key] += lag


@dataclass(frozen=True, slots=True)
class Part:
    """One venue's run the endpoint reports on; ``venue`` labels its series (None: the
    only venue)."""

    venue: str | None
    run: Monitored
    lags: LagHistogram

    def labels(self, values: list[str]) -> list[str]:
        """Label values with the venue first when several venues share the endpoint."""
        return values if self.venue is None else [self.venue, *values]

    def name(self, key: StreamKey) -> str:
        """The stream's key in the /health JSON: ``BTCUSDT 1m``, led by the venue if any."""
        text = f"{key[0]} {key[1]}"
        return text if self.venue is None else f"{self.venue} {text}"


def parts_of(run: MonitoredRun) -> list[Part]:
    """Each venue's run, labelled by its venue when there are several (one venue keeps
    the metric names and labels it always had)."""
    several = len(run.parts) > 1
    return [
        Part(part.config.venue if several else None, part, LagHistogram(part)) for part in run.parts
    ]


class QuantcoreCollector(Collector):
    """Builds every metric family from the parts' live objects when scraped; each family
    is built once over all parts, so a name appears once in the exposition."""

    def __init__(self, parts: list[Part]) -> None:
        self._parts = parts
        self._venue = ["venue"] if any(p.venue is not None for p in parts) else []

    def collect(self) -> Iterator[Metric]:
        yield from self._streams()
        yield from self._feeds()
        yield from self._bus_and_sinks()

    def _streams(self) -> Iterator[Metric]:
        labels = [*self._venue, "symbol", "interval"]
        last_open = GaugeMetricFamily(
            "quantcore_bar_last_open_time_seconds",
            "Open time (epoch s) of the last closed bar of the stream (resume point included)",
            labels=labels,
        )
        bars = CounterMetricFamily(
            "quantcore_bars", "Closed bars published this run", labels=labels
        )
        filled = CounterMetricFamily(
            "quantcore_bars_backfilled", "Of those, bars filled over REST", labels=labels
        )
        healthy = GaugeMetricFamily(
            "quantcore_stream_healthy", "1 while /health counts the stream healthy", labels=labels
        )
        lag = HistogramMetricFamily(
            "quantcore_bar_lag_seconds",
            "Receive time minus close time of closed bars, exchange time",
            labels=labels,
        )
        for part in self._parts:
            feed = part.run.feed
            verdicts = health(part.run)
            for key in part.run.config.streams:
                values = part.labels(list(key))
                if feed is not None:
                    last = feed.sequencers[key].last
                    if last is not None:
                        last_open.add_metric(values, epoch_ms(last) / 1000.0)
                    bars.add_metric(values, feed.stream_bars[key])
                    filled.add_metric(values, feed.stream_backfilled[key])
                healthy.add_metric(values, 1.0 if verdicts[key].healthy else 0.0)
            for key, counts in part.lags.counts.items():
                buckets = list(zip(LAG_BOUNDS, accumulate(counts), strict=True))
                lag.add_metric(part.labels(list(key)), buckets, part.lags.sums[key])
        yield from (last_open, bars, filled, lag, healthy)

    def _feeds(self) -> Iterator[Metric]:
        feeds = [(part, feed) for part in self._parts if (feed := part.run.feed) is not None]
        if not feeds:
            return
        for field, doc in (
            ("frames", "WebSocket frames received"),
            ("duplicates", "Closed bars dropped as duplicates"),
            ("stale", "Updates dropped as older than the last closed bar"),
            ("malformed", "Frames or REST rows that were not valid klines"),
            ("reconnects", "Reconnects over all connections"),
            ("handovers", "Planned handovers to a fresh connection"),
            ("probes", "REST liveness probes of silent connections"),
            ("rest_calls", "REST requests sent"),
            ("rate_limited", "REST answers 429 or 418 seen"),
            ("errors", "Connection and backfill errors"),
        ):
            family = CounterMetricFamily(
                f"quantcore_feed_{field}", doc, labels=[*self._venue, "feed"]
            )
            for part, feed in feeds:
                family.add_metric(part.labels([feed.name]), getattr(feed.stats, field))
            yield family
        snapshots = [(part, feed.health_snapshot()) for part, feed in feeds]
        budgets = [(part, rest) for part, snap in snapshots if (rest := snap.rest) is not None]
        if budgets:
            used = GaugeMetricFamily(
                "quantcore_rest_weight_used",
                "Last X-MBX-USED-WEIGHT-1M the exchange reported (weight used this minute)",
                labels=self._venue,
            )
            limit = GaugeMetricFamily(
                "quantcore_rest_weight_limit",
                "Weight per minute this process allows itself",
                labels=self._venue,
            )
            spent = CounterMetricFamily(
                "quantcore_rest_weight_spent", "REST weight requested", labels=self._venue
            )
            for part, budget in budgets:
                used.add_metric(part.labels([]), budget.used)
                limit.add_metric(part.labels([]), budget.limit)
                spent.add_metric(part.labels([]), budget.spent)
            yield from (used, limit, spent)
        if not any(snap.connections for _, snap in snapshots):
            return
        labels = [*self._venue, "connection", "streams"]
        state = GaugeMetricFamily(
            "quantcore_connection_state",
            "1 for the connection's current state",
            labels=[*labels, "state"],
        )
        reconnects = CounterMetricFamily(
            "quantcore_connection_reconnects", "Reconnects of the connection", labels=labels
        )
        stalls = CounterMetricFamily(
            "quantcore_connection_stalls",
            "Silences ended because REST showed the market moved",
            labels=labels,
        )
        silence = GaugeMetricFamily(
            "quantcore_connection_silence_seconds", "Seconds since the last frame", labels=labels
        )
        now = time.monotonic()
        for part, snap in snapshots:
            for n, conn in enumerate(snap.connections):
                values = part.labels([str(n), conn.label])
                for option in CONNECTION_STATES:
                    state.add_metric([*values, option.value], float(conn.state is option))
                reconnects.add_metric(values, conn.reconnects)
                stalls.add_metric(values, conn.stalls)
                if conn.last_data:
                    silence.add_metric(values, now - conn.last_data)
        yield from (state, reconnects, stalls, silence)

    def _bus_and_sinks(self) -> Iterator[Metric]:
        subscriber = [*self._venue, "subscriber"]
        errors = CounterMetricFamily(
            "quantcore_subscriber_errors", "Exceptions raised by subscribers", labels=subscriber
        )
        backlog = GaugeMetricFamily(
            "quantcore_subscriber_backlog",
            "Events queued for an async subscriber",
            labels=subscriber,
        )
        dropped = CounterMetricFamily(
            "quantcore_subscriber_dropped",
            "Events dropped on an async subscriber's full queue",
            labels=subscriber,
        )
        buffered = GaugeMetricFamily(
            "quantcore_sink_buffered",
            "Bars held in memory, not yet stored",
            labels=[*self._venue, "sink"],
        )
        recorded = CounterMetricFamily(
            "quantcore_bars_recorded",
            "Rows appended to the recorder's file this run",
            labels=[*self._venue, "sink", "symbol", "interval"],
        )
        healthy = GaugeMetricFamily(
            "quantcore_recorder_healthy",
            "1 while /health counts the recorder healthy (not failing, behind or dropping)",
            labels=[*self._venue, "recorder"],
        )
        for part in self._parts:
            for name, verdict in recorders_health(part.run.components).items():
                healthy.add_metric(part.labels([name]), float(verdict.healthy))
            bus = part.run.bus
            for name, count in bus.handler_errors.items():
                errors.add_metric(part.labels([name]), count)
            for name, count in bus.backlog().items():
                backlog.add_metric(part.labels([name]), count)
            for name, count in bus.dropped().items():
                dropped.add_metric(part.labels([name]), count)
            for component in part.run.components:
                if isinstance(component, CsvRecorder):
                    buffered.add_metric(part.labels([component.name]), component.pending)
                    for (symbol, interval), rows in component.rows_by_stream().items():
                        recorded.add_metric(part.labels([component.name, symbol, interval]), rows)
                elif isinstance(component, BufferedSink):
                    buffered.add_metric(part.labels([component.name]), len(component.buffer))
        yield from (errors, backlog, dropped, buffered, recorded, healthy)
