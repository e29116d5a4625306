"""Whole archived days for the live feed's catch-up after a long outage (``run``).

A catch-up that spans whole UTC days before the exchange's today takes them from the public
archive (verified zips: final bars at no REST weight) and leaves the rest, the partial
first day if the archive is short of it and today, to the settler's REST path. Only days
whose file is verified and holds every bar of its range are used; the first day that is
missing, refused, has a hole or cannot be fetched ends the archive part (logged), so REST
and its evidence rules decide everything else, exactly as before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp

from quantcore.events import BarEvent, from_epoch_ms, utc_text
from quantcore.feeds.binance.venues import DEFAULT_ARCHIVE_URL, Venue
from quantcore.history.archive import ArchiveCorrupt, ArchiveReader
from quantcore.intervals import interval_ms

if TYPE_CHECKING:
    from quantcore.feeds.binance.feed import BinanceFeedSettings
    from quantcore.feeds.binance.settler import SettlingFeed, StreamState

log = logging.getLogger(__name__)


class ArchiveConfig(Protocol):
    """What :func:`attach_archive` reads of an AppConfig (history does not import config)."""

    @property
    def archive_url(self) -> str: ...
    @property
    def feed(self) -> BinanceFeedSettings: ...


DAY_MS = 86_400_000


class ArchiveCatchUp:
    """The archive at ``base_url`` for one venue; ``cache`` as for ``history`` (None: none)."""

    def __init__(self, base_url: str, venue: Venue, cache: Path | None = None) -> None:
        self.base_url = base_url
        self.venue = venue
        self.cache = cache
        self.days_used = 0

    async def days(
        self, symbol: str, interval: str, start_ms: int, today_ms: int
    ) -> AsyncGenerator[list[BarEvent], None]:
        """Each whole archived day from the one holding ``start_ms`` up to ``today_ms``: its
        bars from ``start_ms`` on, contiguous; stops at the first day it cannot vouch for."""
        step = interval_ms(interval)
        if not step or DAY_MS % step:
            return
        day = start_ms - start_ms % DAY_MS
        timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            reader = ArchiveReader(session, self.base_url, self.venue, self.cache)
            while day + DAY_MS <= today_ms:
                period = utc_text(day)[:10]
                try:
                    found = await reader.read(symbol, interval, period, day, day + DAY_MS)
                except (ArchiveCorrupt, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("%s %s: archive day %s not used (%s); REST takes over",
                                symbol, interval, period, exc)  # fmt: skip
                    return
                lo = max(start_ms, day)
                bars = [] if found is None else [b for b in found.bars if b.open_time_ms >= lo]
                whole = bool(bars) and bars[0].open_time_ms == lo and (
                    bars[-1].open_time_ms == day + DAY_MS - step == lo + (len(bars) - 1) * step
                )  # fmt: skip
                if not whole:
                    log.info("%s %s: archive day %s %s; REST takes over", symbol, interval,
                             period, "missing" if found is None else "has holes")  # fmt: skip
                    return
                self.days_used += 1
                yield bars
                day += DAY_MS

    async def publish_days(
        self, feed: SettlingFeed, state: StreamState, start_ms: int, server_now: int
    ) -> int:
        """Publish on ``feed`` the whole archived days of ``state``'s hole from ``start_ms``
        (final, no REST weight); returns the open time where REST takes over. Live bars
        held behind the hole keep precedence."""
        symbol, interval = state.key
        held = state.sequencer.held
        held_from = held[0].open_time_ms if held else None
        today = server_now - server_now % DAY_MS
        published = 0
        nxt = start_ms
        async with contextlib.aclosing(self.days(symbol, interval, start_ms, today)) as days:
            async for bars in days:
                for bar in bars:
                    if held_from is not None and bar.open_time_ms >= held_from:
                        break
                    if bar.open_time_ms == nxt:
                        if not feed.publish_closed(bar, backfilled=True):
                            break
                        published += 1
                        nxt += state.step_ms
                if nxt <= bars[-1].open_time_ms:
                    break
        if published:
            log.info("%s: %s %s: %d bars (%s .. %s) from the public archive", feed.name,
                     symbol, interval, published, from_epoch_ms(start_ms),
                     from_epoch_ms(nxt - state.step_ms))  # fmt: skip
        return nxt


def attach_archive(feed: object, config: ArchiveConfig, local_archive_url: str | None) -> None:
    """Give a Binance feed the archive for long catch-ups: the embedded local exchange's,
    or ``exchange.archive_url`` when it was set or the feed talks to Binance's own REST
    (an explicit ``rest_url`` with no archive named gets none)."""
    from quantcore.feeds.binance.settler import SettlingFeed

    if not isinstance(feed, SettlingFeed):
        return
    url = local_archive_url
    if url is None and (
        config.archive_url != DEFAULT_ARCHIVE_URL or config.feed.rest_url == feed.venue.rest_url
    ):
        url = config.archive_url
    if url is not None:
        feed.archive = ArchiveCatchUp(url, feed.venue)
