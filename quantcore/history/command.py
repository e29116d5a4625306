"""``quantcore history CONFIG --since DATE|listing [--until DATE]``: record the past.

For each configured stream it hands the configured recorders (the same components ``run``
builds, through the same EventBus; strategies and the console are not run) every closed
bar of the range, in order, as BarEvents: CSV, database and any other recorder write
exactly what live recording writes, so ``run`` continues the same files. Each recorder
skips what it already holds, and the range starts after the earliest last row the
recorders hold (a resumed run repeats nothing; a file whose last row is older than
``--since`` is continued from there, so it stays gap-free). Whole days and months come from the
public archive (``exchange.archive_url``; verified zips are kept in ``--cache``), the
rest from REST within the weight budget (:mod:`.fill`).

Exit codes: 0 done, 2 bad input or a refused start, 3 bars not recorded, 130 interrupted
(Ctrl-C; what was recorded stays, and the same command continues).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp

from quantcore.app import history_of, start_local_exchange
from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.config import AppConfig, ConfigError, load_config
from quantcore.consumers.csv_recorder import CsvPathError
from quantcore.events import BAR
from quantcore.feeds.binance.feed import BinanceFeedSettings, BinanceKlineFeed
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.venues import SPOT
from quantcore.history.archive import ArchiveCorrupt, ArchiveReader
from quantcore.history.fill import DAY_MS, StreamFill, Totals
from quantcore.intervals import bar_open_ms, interval_ms, month_bounds
from quantcore.logs import configure_logging
from quantcore.progress import progress
from quantcore.sinks.schema import FloatTableError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 2, 3, 130
MAX_BACKLOG = 50_000
"""Bars a coroutine recorder (a database sink) may have queued before the next file waits."""
DEFAULT_CACHE = "data/binance-archive"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config: its streams, recorders and exchange")
    since = "first day (YYYY-MM-DD, UTC) or 'listing' (the symbol's first bar)"
    parser.add_argument("--since", required=True, type=_since, help=since)
    until = "last day (YYYY-MM-DD, UTC), inclusive; default: up to the last closed bar"
    parser.add_argument("--until", type=_date, help=until)
    cache = f"folder of verified archive zips (default {DEFAULT_CACHE})"
    parser.add_argument("--cache", default=DEFAULT_CACHE, help=cache)


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        configure_logging(config.log_level, config.log_file)
        until = None if args.until is None else args.until + DAY_MS
        if until is not None and until <= args.since:
            raise ConfigError(f"--until: {_text(until - DAY_MS)[:10]} is before --since")
        totals, seconds, not_recorded = asyncio.run(
            record_history(config, args.since, until, Path(args.cache))
        )
    except ConfigError as exc:
        print(f"quantcore: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("quantcore history: interrupted; the same command continues where it stopped",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    print(summary_line(totals, seconds), flush=True)
    if not_recorded:
        print(f"quantcore: recorded data incomplete: {not_recorded} bars not recorded "
              "(see the log above)", file=sys.stderr)  # fmt: skip
        return EXIT_INCOMPLETE
    return EXIT_OK


def summary_line(t: Totals, seconds: float) -> str:
    return (
        f"quantcore history: {t.archive_days} days from the archive, {t.rest_days} days from "
        f"REST, {t.bars} bars, {t.gaps} exchange gaps ({t.gap_bars} bars), "
        f"{t.corrections} REST corrections, {t.fallbacks} archive files missing or refused, "
        f"{t.bytes} bytes, REST weight {t.rest_weight}, {seconds:.1f}s"
    )


async def record_history(
    config: AppConfig, since_ms: int, until_ms: int | None, cache: Path
) -> tuple[Totals, float, int]:
    """Fill every configured recorder for the range (each venue of the config in turn);
    returns the totals, the seconds taken and the bars not recorded."""
    began = time.monotonic()
    totals = Totals()
    lost = 0
    for part in config.parts or (config,):
        lost += await _one_venue(part, since_ms, until_ms, cache, totals)
    return totals, time.monotonic() - began, lost


async def _one_venue(
    config: AppConfig, since_ms: int, until_ms: int | None, cache: Path, totals: Totals
) -> int:
    bus = EventBus(queue_size=config.runtime.queue_size, max_backlog=config.runtime.max_backlog)
    try:
        built = [spec.build() for spec in config.consumers]
    except ConfigError as exc:
        raise ConfigError(f"{config.source}: {exc}") from None
    components = [c for c in built if c.is_recorder]
    if not components:
        raise ConfigError(f"{config.source}: consumers: no recorder (csv, a database sink) to fill")
    context = Context(bus, config.streams, components)
    started: list[Component] = []
    for component in components:
        component.attach(context)
    try:
        for component in components:
            try:
                await component.start()
            except (CsvPathError, FloatTableError, OSError) as exc:
                raise ConfigError(f"{component.name}: {exc}") from None
            started.append(component)
        async with _exchange(config) as (settings, archive_url):
            feed = BinanceKlineFeed(EventBus(), config.streams, settings)  # for REST, never run
            context.history = history_of(feed)
            timeout = aiohttp.ClientTimeout(total=300, sock_connect=30)
            async with (
                contextlib.aclosing(feed.rest),
                aiohttp.ClientSession(timeout=timeout) as session,
            ):
                reader = ArchiveReader(session, archive_url, settings.venue, cache)
                await _fill(config, components, bus, feed.rest, reader, since_ms, until_ms, totals)
    finally:
        await bus.drain(config.runtime.stop_timeout)
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                log.exception("%s failed to stop cleanly", component.name)
        await bus.close(0)
    return sum(c.unrecorded() + c.refused for c in components) + bus.lost(BAR)


async def _fill(
    config: AppConfig,
    components: list[Component],
    bus: EventBus,
    rest: BinanceRest,
    reader: ArchiveReader,
    since_ms: int,
    until_ms: int | None,
    totals: Totals,
) -> None:
    try:
        server_now = await rest.server_time()
    except BackfillError as exc:
        raise ConfigError(f"exchange: cannot read the server time: {exc}") from None
    totals.rest_weight += rest.venue.time_weight
    today = server_now - server_now % DAY_MS
    month = month_bounds(server_now)[2]

    def publish(topic: str, event: object) -> None:
        bus.publish(topic, event)

    for symbol, interval in config.streams:
        step = interval_ms(interval)
        end = bar_open_ms(server_now, interval)
        if until_ms is not None:
            end = min(end, bar_open_ms(until_ms - 1, interval) + step)
        held = [c.resume_point(symbol, interval) for c in components if c.is_recorder]
        known = [p for p in held if p is not None]
        start, resumed = since_ms, False
        if known and (min(known) + step < since_ms or len(known) == len(held)):
            start, resumed = min(known) + step, True
            if start < since_ms:
                log.info("%s %s: starting after the last recorded bar (%s), before --since, "
                         "so the files stay gap-free", symbol, interval, _text(start))  # fmt: skip
        if start >= end:
            log.info("%s %s: nothing to do (recorded through %s)", symbol, interval, _text(start))
            continue
        try:
            first = await _first_bar(rest, symbol, interval, start, totals)
        except BackfillError as exc:
            raise ConfigError(f"{symbol} {interval}: {exc}") from None
        if first is None or first >= end:
            log.info("%s %s: the exchange has no bars from %s", symbol, interval, _text(start))
            continue
        cursor = start if resumed else first
        shown = progress((end - cursor) // step, f"history {symbol} {interval}")
        fill = StreamFill(
            symbol, interval, publish, reader, rest, totals, shown.update, _batch(components)
        )
        log.info(
            "%s %s %s: history %s .. %s", config.venue, symbol, interval, _text(cursor), _text(end)
        )
        try:
            await fill.run(cursor, end, today, month, lambda: _throttle(bus))
        except (BackfillError, ArchiveCorrupt, aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"{symbol} {interval}: {exc}") from None
        finally:
            shown.close()


def _batch(components: list[Component]) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Every recorder's :meth:`Component.batch`, entered together."""

    @contextlib.contextmanager
    def together() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for component in components:
                stack.enter_context(component.batch())
            yield

    return together


async def _throttle(bus: EventBus) -> None:
    """Let coroutine recorders (database sinks) catch up before the next file."""
    if any(n > MAX_BACKLOG for n in bus.backlog().values()):
        await bus.drain()


async def _first_bar(
    rest: BinanceRest, symbol: str, interval: str, start: int, totals: Totals
) -> int | None:
    """Open time of the exchange's first bar at or after ``start`` (``startTime=0``: the
    listing), from one ``limit=1`` klines request."""
    totals.rest_weight += rest.venue.klines_weight(1)
    rows = await rest.klines(symbol, interval, start, None, 1)
    return int(rows[0][0]) if rows else None


@contextlib.asynccontextmanager
async def _exchange(config: AppConfig) -> AsyncIterator[tuple[BinanceFeedSettings, str]]:
    """The feed settings and archive URL: the config's, or the embedded local exchange's."""
    if config.local is None:
        yield config.feed, config.archive_url
        return
    venue = config.feed.venue
    extra = {} if venue.name == SPOT.name else {"venue": venue}
    exchange = start_local_exchange(config.local, config.streams, None, **extra)
    async with exchange:
        settings = dataclasses.replace(
            config.feed, ws_url=exchange.ws_url, rest_url=exchange.rest_url
        )
        yield settings, exchange.archive_url


def _date(text: str) -> int:
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d")) * 1000
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _since(text: str) -> int:
    return 0 if text == "listing" else _date(text)


def _text(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms // 1000))
