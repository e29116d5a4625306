"""App: one VenueApp per venue, each wiring config → bus, components, feed (and the local
exchange); the App runs them side by side with one metrics endpoint and signal handler.

Order matters and is the contract: components are built and started first (a bad
parameter or an unwritable CSV fails here, before any connection); the feed resumes
from the earliest bar any component already holds; on stop the feed goes first, then
queued handlers drain, then components flush and close (each step bounded by
``stop_timeout``, so one stuck subscriber cannot keep the others from closing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.config import AppConfig, ConfigError, LocalExchangeConfig
from quantcore.consumers.csv_recorder import CsvPathError, CsvRecorder
from quantcore.events import BAR, BarEvent, utc_text
from quantcore.feeds import registry
from quantcore.feeds.base import DataFeed, FeedStats, StreamKey
from quantcore.feeds.binance.feed import BinanceFeedSettings
from quantcore.feeds.binance.venues import SPOT, Venue
from quantcore.history.catchup import attach_archive
from quantcore.intervals import interval_ms
from quantcore.logs import configure_logging
from quantcore.metrics import MetricsServer
from quantcore.replay.warm import feed_settings as warm_settings
from quantcore.replay.warm import warm_up
from quantcore.sinks.refill import BarHistory
from quantcore.sinks.schema import FloatTableError
from quantcore.startfiles import NewFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did; printed as the last line by the CLI."""

    seconds: float
    bars_recorded: int
    bars: int
    frames: int
    malformed: int
    duplicates: int
    reconnects: int
    subscriber_errors: int
    feed_errors: int
    not_recorded: int = 0
    undelivered: int = 0
    stale: int = 0
    backfilled: int = 0

    @property
    def incomplete(self) -> bool:
        """Some accepted bar never reached storage or a ``bar`` subscriber (CLI exit 3)."""
        return self.not_recorded > 0 or self.undelivered > 0

    def line(self) -> str:
        return (
            f"quantcore: stopped after {self.seconds:.1f}s: bars recorded={self.bars_recorded} "
            f"bars published={self.bars} frames={self.frames} malformed={self.malformed} "
            f"duplicates={self.duplicates} stale={self.stale} backfilled={self.backfilled} "
            f"reconnects={self.reconnects} "
            f"subscriber errors={self.subscriber_errors} feed errors={self.feed_errors} "
            f"not recorded={self.not_recorded} undelivered={self.undelivered}"
        )


class VenueApp:
    """One venue's run: its own bus, components and feed (so a symbol listed on two
    venues stays two series), started and stopped in the order above; the
    :class:`App` runs one per venue and owns signals, metrics and the refusal."""

    def __init__(
        self,
        config: AppConfig,
        extra_components: Sequence[Component],
        *,
        stop_timeout: float,
        request_stop: Callable[[], None],
    ) -> None:
        runtime = config.runtime
        self.stop_timeout = stop_timeout
        self.config = config
        self.bus = EventBus(queue_size=runtime.queue_size, max_backlog=runtime.max_backlog)
        try:
            self.components: list[Component] = [spec.build() for spec in config.consumers]
        except ConfigError as exc:
            raise ConfigError(f"{config.source}: {exc}") from None
        self.components.extend(extra_components)
        self.context = Context(self.bus, config.streams, self.components, request_stop=request_stop)
        self.feed: DataFeed | None = None
        self.new_files: NewFiles | None = None
        """What this venue's recorders may create, noted as it starts (removed by the App
        if the start is refused)."""
        self._stop_requested = False
        self._local_archive: str | None = None

    def stop(self) -> None:
        """Ask the feed to stop (now, or as soon as it exists)."""
        self._stop_requested = True
        if self.feed is not None:
            self.feed.stop()

    async def run(self, duration: float | None, max_bars: int | None) -> RunSummary:
        """Start components, then the feed; stop after ``duration`` s of feed, when stopped
        or after ``max_bars`` bars; a refused start is a ConfigError."""
        started = time.monotonic()
        for component in self.components:
            component.attach(self.context)
        started_components: list[Component] = []
        self.new_files = NewFiles(self.components, self.config.streams)
        try:
            for component in self.components:
                try:
                    await component.start()
                except (CsvPathError, FloatTableError, OSError) as exc:
                    raise ConfigError(f"{component.name}: {exc}") from None
                started_components.append(component)
            resume = self._resume_points()
            async with self._exchange_urls(resume) as settings:
                feed = self.feed = self._make_feed(settings)
                attach_archive(feed, self.config, self._local_archive)
                self.context.history = history_of(feed)
                self.context.forming = forming_of(feed)
                feed.bar_limit = max_bars
                for key, open_ms in resume.items():
                    feed.resume_after(key, open_ms)
                    log.info("%s %s: resuming after %s", *key, utc_text(open_ms))
                warm_up(self.config, self.components, feed, resume, self.bus)
                if self._stop_requested:
                    feed.stop()
                with self._deadline(duration):
                    await feed.run()
                if feed.fatal is not None:
                    raise ConfigError(self._fatal_text(feed))
        finally:
            await self._shutdown(started_components)
        return self._summary(time.monotonic() - started)

    async def _shutdown(self, components: list[Component]) -> None:
        """Drain the bus, then stop each component, each step bounded by ``stop_timeout``.

        A stuck subscriber or component is named in one line and left behind, so the
        others still flush and close and ``run`` returns.
        """
        for name in await self.bus.drain(self.stop_timeout):
            log.error(
                "subscriber %s is stuck: %d events not handled after %.1fs; stopping without it",
                name,
                self.bus.backlog().get(name, 0),
                self.stop_timeout,
            )
        for component in reversed(components):
            try:
                limit = self.stop_timeout + component.stop_grace
                async with asyncio.timeout(limit):
                    await component.stop()
            except TimeoutError:
                log.error("%s did not stop within %.1fs; left behind", component.name, limit)
            except Exception:
                log.exception("%s failed to stop cleanly", component.name)
        await self.bus.close(0)

    def _make_feed(self, settings: BinanceFeedSettings) -> DataFeed:
        """The configured venue's feed, built by the venue registry."""
        settings = warm_settings(settings, self.components)
        return registry.create(
            self.config.venue, self.bus, self.config.streams, settings, self.config
        )

    def _fatal_text(self, feed: DataFeed) -> str:
        """The feed's reason, led by the file that holds a stream's contradicting history."""
        key = feed.fatal_stream
        holders = [
            str(c.path_for(*key))
            for c in self.components
            if key is not None and isinstance(c, CsvRecorder) and c.resume_point(*key) is not None
        ]
        reason = feed.fatal or ""
        if reason.startswith("unknown symbol "):
            named = set(reason.partition(":")[0].removeprefix("unknown symbol ").split(", "))
            fields = [
                f"{self.config.stream_field(key)}.symbol"
                for key in self.config.streams
                if key[0] in named
            ]
            where = ", ".join(dict.fromkeys(fields)) or "streams"
            hint = "; exchange.local.symbols lists what it generates" if self.config.local else ""
            return f"{self.config.source}: {where} (venue {self.config.venue}): {reason}{hint}"
        return f"{', '.join(holders)}: {reason}" if holders else reason

    def _resume_points(self) -> dict[StreamKey, int]:
        """Per stream, the earliest last-held bar over all components (what to resume after).

        Each recorder skips bars at or before its own last row, so one that is behind is
        filled for its own range and the others get nothing twice. A recorder whose
        server does not answer at start has no point here: it fills its own range through
        ``context.history`` when it answers (waiting for it could not be bounded exactly).
        """
        resume: dict[StreamKey, int] = {}
        for key in self.config.streams:
            points = [p for c in self.components if (p := c.resume_point(*key)) is not None]
            if points:
                resume[key] = min(points)
        return resume

    @contextlib.asynccontextmanager
    async def _exchange_urls(
        self, resume: dict[StreamKey, int]
    ) -> AsyncIterator[BinanceFeedSettings]:
        """The feed settings, pointed at an embedded local exchange if configured."""
        local = self.config.local
        if local is None:
            yield self.config.feed
            return
        venue = self.config.feed.venue
        extra = {} if venue.name == SPOT.name else {"venue": venue}
        exchange = start_local_exchange(local, self.config.streams, resume, **extra)
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(exchange)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"exchange.local.port: port {local.port} is already in use"
                    ) from None
                raise ConfigError(
                    f"exchange.local.port: cannot listen on {local.port}: {exc}"
                ) from None
            self._local_archive = exchange.archive_url
            shown = f" venue={venue.name}" if extra else ""
            log.info("local exchange: ws=%s rest=%s%s", exchange.ws_url, exchange.rest_url, shown)
            yield replace(self.config.feed, ws_url=exchange.ws_url, rest_url=exchange.rest_url)

    @contextlib.contextmanager
    def _deadline(self, duration: float | None) -> Any:
        handle = None
        if duration is not None:
            handle = asyncio.get_running_loop().call_later(duration, self.stop)
        try:
            yield
        finally:
            if handle is not None:
                handle.cancel()

    def _summary(self, seconds: float) -> RunSummary:
        stats = self.feed.stats if self.feed is not None else FeedStats()
        recorders = [c for c in self.components if isinstance(c, CsvRecorder)]
        return RunSummary(
            seconds=seconds,
            bars_recorded=sum(r.rows_written for r in recorders) if recorders else stats.bars,
            bars=stats.bars,
            frames=stats.frames,
            malformed=stats.malformed,
            duplicates=stats.duplicates,
            reconnects=stats.reconnects,
            subscriber_errors=sum(self.bus.handler_errors.values()),
            feed_errors=stats.errors,
            not_recorded=sum(c.unrecorded() + c.refused for c in self.components),
            undelivered=self.bus.lost(BAR),
            stale=stats.stale,
            backfilled=stats.backfilled,
        )


class App:
    """One run of quantcore: build with a config, then ``await run()``.

    One :class:`VenueApp` per venue (``parts``) runs side by side; ``feed``, ``bus``,
    ``components`` and ``context`` are the first's (the only one's, with one venue).
    If the host program has not configured logging, ``run`` sets up quantcore's
    (stdout, UTC timestamps), so the ConsoleLogger's lines are visible.
    """

    def __init__(
        self,
        config: AppConfig,
        extra_components: Sequence[Component] = (),
        *,
        stop_timeout: float | None = None,
    ) -> None:
        timeout = config.runtime.stop_timeout if stop_timeout is None else stop_timeout
        if not timeout > 0:
            raise ValueError(f"stop_timeout must be positive seconds, got {stop_timeout!r}")
        if extra_components and config.parts:
            raise ValueError("extra_components need a config of one venue")
        self.config = config
        self.parts = [
            VenueApp(part, extra_components, stop_timeout=timeout, request_stop=self.stop)
            for part in config.parts or (config,)
        ]
        self.bus, self.components = self.parts[0].bus, self.parts[0].components
        self.context = self.parts[0].context
        self.metrics: MetricsServer | None = None
        """The /metrics and /health endpoint while running, if ``metrics:`` is configured."""

    @property
    def feed(self) -> DataFeed | None:
        """The first venue's feed, once it is built."""
        return self.parts[0].feed

    def stop(self) -> None:
        """Graceful stop (what Ctrl-C and SIGTERM do); safe to call at any time."""
        for part in self.parts:
            part.stop()

    async def run(self, duration: float | None = None, max_bars: int | None = None) -> RunSummary:
        """Run until stopped (signal, ``stop()``), ``duration`` seconds or ``max_bars`` bars
        (each venue's); the first failure stops the others. The one metrics endpoint
        (``metrics:``) serves every venue and is bound before any starts."""
        if max_bars is not None and max_bars < 1:
            raise ValueError(f"max_bars must be a positive integer or None, got {max_bars!r}")
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be positive seconds or None, got {duration!r}")
        if not logging.getLogger().handlers:
            configure_logging(self.config.log_level, self.config.log_file)
        started = time.monotonic()
        if self.config.metrics is not None:
            self.metrics = MetricsServer(self, self.config.metrics)
            await self.metrics.start()
        try:
            runs = [asyncio.create_task(part.run(duration, max_bars)) for part in self.parts]
            with self._signals():
                try:
                    summaries = await asyncio.gather(*runs)
                except BaseException as exc:
                    self.stop()
                    await asyncio.gather(*runs, return_exceptions=True)
                    if isinstance(exc, ConfigError):  # the others were stopped, not refused
                        NewFiles.combined(part.new_files for part in self.parts).remove()
                    raise
        finally:
            if self.metrics is not None:
                await self.metrics.stop()
        totals = {
            f.name: sum(getattr(s, f.name) for s in summaries)
            for f in dataclasses.fields(RunSummary)
            if f.name != "seconds"
        }
        return RunSummary(seconds=time.monotonic() - started, **totals)

    @contextlib.contextmanager
    def _signals(self) -> Any:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append((sig, previous))
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            yield
        finally:
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)  # e.g. the CLI's: a late signal still stops


def history_of(feed: DataFeed) -> BarHistory | None:
    """The feed's past bars for recorders filling their own range (None: it has none)."""
    from quantcore.feeds.binance.feed import BinanceKlineFeed
    from quantcore.feeds.binance.history import RestHistory

    return RestHistory(feed) if isinstance(feed, BinanceKlineFeed) else None


def forming_of(feed: DataFeed) -> Callable[[str, str], BarEvent | None] | None:
    """The feed's bars still forming, converted on request (None: it keeps none)."""
    from quantcore.feeds.binance.feed import BinanceKlineFeed

    return feed.forming.current if isinstance(feed, BinanceKlineFeed) else None


def start_local_exchange(
    local: LocalExchangeConfig,
    streams: Sequence[StreamKey],
    resume: Mapping[StreamKey, int] | None = None,
    venue: Venue = SPOT,
) -> Any:
    """Build (not yet start) the embedded local exchange serving these streams.

    Replay files come from ``local.data`` (``[SYMBOL=]FILE``); the symbols of
    ``local.symbols`` are played by the seeded random-walk generator; any other is not
    listed, so the feed refuses it as it would against Binance. A bad file is a config
    error. With only generated symbols, the market clock starts no earlier than just
    after the latest bar already recorded (the generator is a pure function of time), so
    an offline demo that ran ahead of the wall clock continues where it stopped.
    """
    from quantcore.sim import DataFileError, LocalExchange, sources_from_specs

    try:
        sources = sources_from_specs(list(local.data or ()))
        start_ms = None
        if not sources and resume:
            now_ms = int(time.time() * 1000)
            after = max(open_ms + interval_ms(i) for (_, i), open_ms in resume.items())
            start_ms = after if after > now_ms else None
        generated = set(local.symbols) - {source.symbol for source in sources}
        return LocalExchange(
            sources,
            symbols=sorted({symbol for symbol, _ in streams} & generated),
            intervals=sorted({interval for _, interval in streams}),
            seed=local.seed,
            speed=local.rate,
            history_bars=local.history_bars,
            updates_per_bar=local.updates_per_bar,
            port=local.port,
            start_ms=start_ms,
            venue=venue,
        )
    except (DataFileError, ValueError, OSError) as exc:
        raise ConfigError(f"exchange.local: {exc}") from None
