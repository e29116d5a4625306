"""Metrics and health over HTTP: ``/metrics`` (Prometheus text) and ``/health`` (JSON).

Served by aiohttp in the app's own event loop (no thread). Everything but the bar-lag
histogram is read from the feed, bus and sink counters at scrape time through a custom
``prometheus_client`` collector on a dedicated registry, so the hot path pays nothing
for them; the histogram costs one bisect per closed bar, and only when enabled.
With several venues (one App each) one endpoint serves them all, every series and
/health entry then led by a ``venue`` label; one venue keeps its names and labels.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from quantcore.config import ConfigError, MetricsConfig
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.events import BAR, BarEvent, FeedState, epoch_ms, utc_text
from quantcore.feeds.base import DataFeed, StreamKey
from quantcore.intervals import interval_ms
from quantcore.recorder_health import recorders_health
from quantcore.sinks.base import BufferedSink

if TYPE_CHECKING:
    from quantcore.app import App, VenueApp

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Bar-lag histogram bounds in seconds (exchange time)."""
CONNECTION_STATES = (
    FeedState.CONNECTING,
    FeedState.LIVE,
    FeedState.DISCONNECTED,
    FeedState.STALLED,
    FeedState.ERROR,
    FeedState.STOPPED,
)
"""The states a connection of the Binance feed goes through (``quantcore_connection_state``)."""
DEFAULT_MARGIN = 10.0
"""Health margin in seconds for feeds without settle/stall settings (e.g. Redis)."""


class LagHistogram:
    """Per-stream bucket counts of bar lag: receive time minus close time, exchange time.

    Receive time is the feed's estimate of the exchange clock when the bar is published,
    never before the frame's own event time (REST-filled bars included: their lag says
    how late they really came); clock jitter below zero counts as 0.
    """

    def __init__(self, app: VenueApp) -> None:
        self._app = app
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
        now_ms = max(_exchange_now_ms(self._app.feed), epoch_ms(bar.event_time))
        lag = max(0.0, (now_ms - epoch_ms(bar.open_time) - step) / 1000.0)
        self.counts[key][bisect_left(LAG_BUCKETS, lag)] += 1
        self.sums[key] += lag


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """One stream's verdict; ``reason`` says why it is not healthy (or why excluded)."""

    healthy: bool
    reason: str
    last_open: str | None = None
    age_seconds: float | None = None
    excluded: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"healthy": self.healthy, "reason": self.reason}
        if self.last_open is not None:
            out["last_open"] = self.last_open
        if self.age_seconds is not None:
            out["age_seconds"] = round(self.age_seconds, 1)
        if self.excluded:
            out["excluded"] = True
        return out


def health(app: VenueApp) -> dict[StreamKey, StreamHealth]:
    """Per stream: healthy only while its connection is live and its last bar is recent.

    Live: the connection is up, it was not found stalled since its last frame, and a frame
    came within 2 x ``stall_timeout`` or a REST probe since then found the market quiet.
    Recent: the last closed bar closed at most 2 intervals + margin (``settle`` +
    ``stall_timeout`` + ``poll``) ago in exchange time. Halted symbols are excluded.
    """
    feed = app.feed
    verdicts: dict[StreamKey, StreamHealth] = {}
    for key in app.config.streams:
        verdicts[key] = _stream_health(feed, key)
    return verdicts


def _stream_health(feed: DataFeed | None, key: StreamKey) -> StreamHealth:
    if feed is None:
        return StreamHealth(False, "feed not started")
    if feed.fatal is not None:
        return StreamHealth(False, f"feed stopped: {feed.fatal}")
    states = getattr(feed, "states", {})
    state = states.get(key)
    if state is not None and state.halted:
        return StreamHealth(True, "symbol not TRADING (excluded)", excluded=True)
    settings = getattr(feed, "settings", None)
    margin = DEFAULT_MARGIN
    if settings is not None:
        margin = settings.settle + settings.stall_timeout + settings.poll
        reason = _connection_problem(feed, key, 2 * settings.stall_timeout)
        if reason is not None:
            return StreamHealth(False, reason)
    last = feed.sequencers[key].last
    if last is None:
        return StreamHealth(False, "no closed bar yet")
    step = interval_ms(key[1])
    last_ms = epoch_ms(last)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_ms / 1000))
    age = (_exchange_now_ms(feed) - last_ms - step) / 1000.0
    limit = 2 * step / 1000.0 + margin
    if age > limit:
        reason = f"last closed bar closed {age:.0f}s ago (exchange time), more than {limit:.0f}s"
        waits = getattr(feed, "waits", None)
        wait: Any = None if waits is None else waits().get(key)
        if wait is not None:
            reason += (
                f"; {wait.held} live bars held until REST shows the bar at "
                f"{utc_text(epoch_ms(wait.missing_from))} (waiting since "
                f"{wait.since:%Y-%m-%d %H:%M:%S})"
            )
        return StreamHealth(False, reason, stamp, age)
    return StreamHealth(True, "live", stamp, age)


def _connection_problem(feed: DataFeed, key: StreamKey, silence_limit: float) -> str | None:
    """Why the connection carrying ``key`` is not live, or None."""
    for conn in getattr(feed, "connections", []):
        if not any(s.key == key for s in conn.streams):
            continue
        if conn.state is not FeedState.LIVE:
            return f"connection {conn.label}: {conn.state.value}"
        if conn.last_data == 0.0 and conn.quiet_at == 0.0:
            return f"connection {conn.label}: no frame yet"
        silent = time.monotonic() - conn.last_data
        if conn.stalled_at > conn.last_data:
            return f"connection {conn.label}: stalled, no frame for {silent:.1f}s"
        if silent > silence_limit and conn.quiet_at < conn.last_data:
            return f"connection {conn.label}: no frame for {silent:.1f}s"
        return None
    return "not connected yet"


def _exchange_now_ms(feed: DataFeed | None) -> int:
    clock = getattr(feed, "clock", None)
    if clock is not None and clock.known:
        return int(clock.now_ms())
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Part:
    """One App the endpoint reports on; ``venue`` labels its series (None: the only one)."""

    venue: str | None
    app: VenueApp
    lags: LagHistogram

    def labels(self, values: list[str]) -> list[str]:
        """Label values with the venue first when several venues share the endpoint."""
        return values if self.venue is None else [self.venue, *values]

    def name(self, key: StreamKey) -> str:
        """The stream's key in the /health JSON: ``BTCUSDT 1m``, led by the venue if any."""
        text = f"{key[0]} {key[1]}"
        return text if self.venue is None else f"{self.venue} {text}"


def parts_of(app: App) -> list[Part]:
    """The Apps behind ``app``: each venue's, labelled, or ``app`` alone without a label
    (one venue keeps the metric names and labels it always had)."""
    several = len(app.parts) > 1
    return [
        Part(part.config.venue if several else None, part, LagHistogram(part)) for part in app.parts
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
            app = part.app
            feed = app.feed
            verdicts = health(app)
            for key in app.config.streams:
                values = part.labels(list(key))
                if feed is not None:
                    last = feed.sequencers[key].last
                    if last is not None:
                        last_open.add_metric(values, epoch_ms(last) / 1000.0)
                    bars.add_metric(values, feed.stream_bars[key])
                    filled.add_metric(values, feed.stream_backfilled[key])
                healthy.add_metric(values, 1.0 if verdicts[key].healthy else 0.0)
            for key, counts in part.lags.counts.items():
                buckets: list[tuple[str, float]] = []
                total = 0
                for bound, count in zip((*LAG_BUCKETS, float("inf")), counts, strict=True):
                    total += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
                lag.add_metric(part.labels(list(key)), buckets, part.lags.sums[key])
        yield from (last_open, bars, filled, lag, healthy)

    def _feeds(self) -> Iterator[Metric]:
        feeds = [(part, part.app.feed) for part in self._parts if part.app.feed is not None]
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
        budgets = [
            (part, budget)
            for part, feed in feeds
            if (budget := getattr(feed, "rest_budget", None)) is not None
        ]
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
                used.add_metric(part.labels([]), budget.used_reported)
                limit.add_metric(part.labels([]), budget.limits.weight_per_minute)
                spent.add_metric(part.labels([]), budget.spent)
            yield from (used, limit, spent)
        connected = [(part, getattr(feed, "connections", [])) for part, feed in feeds]
        if not any(connections for _, connections in connected):
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
        for part, connections in connected:
            for n, conn in enumerate(connections):
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
            for name, verdict in recorders_health(part.app.components).items():
                healthy.add_metric(part.labels([name]), float(verdict.healthy))
            bus = part.app.bus
            for name, count in bus.handler_errors.items():
                errors.add_metric(part.labels([name]), count)
            for name, count in bus.backlog().items():
                backlog.add_metric(part.labels([name]), count)
            for name, count in bus.dropped().items():
                dropped.add_metric(part.labels([name]), count)
            for component in part.app.components:
                if isinstance(component, CsvRecorder):
                    buffered.add_metric(part.labels([component.name]), component.pending)
                    for (symbol, interval), rows in component.rows_by_stream().items():
                        recorded.add_metric(part.labels([component.name, symbol, interval]), rows)
                elif isinstance(component, BufferedSink):
                    buffered.add_metric(part.labels([component.name]), len(component.buffer))
        yield from (errors, backlog, dropped, buffered, recorded, healthy)


class MetricsServer:
    """The HTTP endpoint; :meth:`start` binds (port 0: any free port, see :attr:`port`).

    Given an App running several venues, one endpoint serves every venue's App.
    """

    def __init__(self, app: App, config: MetricsConfig) -> None:
        self.config = config
        self.parts = parts_of(app)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(QuantcoreCollector(self.parts))
        self.port = config.port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; a busy or forbidden port is a ConfigError (exit 2)."""
        for part in self.parts:
            part.app.bus.subscribe(BAR, part.lags.observe, name="metrics")
        web_app = web.Application()
        web_app.router.add_get("/metrics", self._metrics)
        web_app.router.add_get("/health", self._health)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            what = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
            raise ConfigError(
                f"metrics: listening on {self.config.host}:{self.config.port} {what}"
            ) from None
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("metrics: %s/metrics and %s/health", self.url, self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await asyncio.shield(runner.cleanup())

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        verdicts = {
            part.name(key): verdict
            for part in self.parts
            for key, verdict in health(part.app).items()
        }
        recorders = {
            name if part.venue is None else f"{part.venue} {name}": verdict
            for part in self.parts
            for name, verdict in recorders_health(part.app.components).items()
        }
        ok = all(v.healthy for v in verdicts.values()) and all(
            v.healthy for v in recorders.values()
        )
        body = {
            "status": "ok" if ok else "unhealthy",
            "streams": {name: v.as_json() for name, v in verdicts.items()},
            "recorders": {name: v.as_json() for name, v in recorders.items()},
        }
        return web.Response(
            status=200 if ok else 503,
            text=json.dumps(body, indent=1) + "\n",
            content_type="application/json",
        )
