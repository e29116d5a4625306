"""Warm start: before the first live bar, components get the past bars they declare.

A component asks with ``warmup = N`` (closed bars per stream; :class:`Component`). For a
stream the store already holds, the last N stored bars are published from the store
(the CSV or SQLite the config's recorders write) marked ``replayed``, so no recorder
writes them again and no REST weight is spent; the feed then continues after them as
usual. Where the store lacks them (a fresh start, or fewer than N stored), they come from
REST through the feed's own catch-up: a fresh stream backfills N bars (``warmup_bars``),
a short one is resumed N bars back and every recorder skips the bars it already holds
(its resume point), so each bar is still written once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from quantcore.bus import EventBus
from quantcore.component import Component
from quantcore.config import AppConfig
from quantcore.events import BAR, utc_text
from quantcore.feeds.base import DataFeed, StreamKey
from quantcore.feeds.binance.feed import BinanceKlineFeed
from quantcore.intervals import interval_ms
from quantcore.replay.settings import ReplaySettings
from quantcore.replay.sources import BarSource, ReplayError, open_source

if TYPE_CHECKING:
    from quantcore.feeds.binance.feed import BinanceFeedSettings

log = logging.getLogger(__name__)


def needed(components: Sequence[Component]) -> int:
    """The most past bars any component declared (``warmup``)."""
    return max((component.warmup for component in components), default=0)


def feed_settings(
    settings: BinanceFeedSettings, components: Sequence[Component]
) -> BinanceFeedSettings:
    """The feed's settings with ``warmup_bars`` raised to what the components need (a
    stream nothing is stored for is then backfilled that far over REST)."""
    need = needed(components)
    if need <= settings.warmup_bars:
        return settings
    return dataclasses.replace(settings, warmup_bars=need)


def _store(config: AppConfig) -> BarSource | None:
    from quantcore.replay.feed import resolve

    try:
        return open_source(resolve(ReplaySettings(), config))
    except ReplayError:
        return None


def warm_up(
    config: AppConfig,
    components: Sequence[Component],
    feed: DataFeed,
    resume: Mapping[StreamKey, int],
    bus: EventBus,
) -> int:
    """Publish the stored warm-up bars (before ``feed.run``); returns how many went out.
    Streams the store cannot serve in full are moved back for the feed to fill; warm-up
    bars the feed publishes do not count against ``--max-bars`` (its ``bar_limit``)."""
    need = needed(components)
    if need == 0:
        return 0
    fresh = sum(1 for key in config.streams if key not in resume)
    added = max(0, need - config.feed.warmup_bars) if isinstance(feed, BinanceKlineFeed) else 0
    _extend_limit(feed, added * fresh)
    if not resume:
        return 0
    source = _store(config)
    published = 0
    try:
        for key, last in resume.items():
            step = interval_ms(key[1])
            start = last - (need - 1) * step
            bars = [] if source is None else list(source.bars(key, start, last + 1))
            if len(bars) == need:
                for bar in bars:
                    bus.publish(BAR, bar)
                published += need
                log.info("%s %s: warm start with %d stored bars", *key, need)
                continue
            back = last - need * step
            feed.resume_after(key, back)
            _extend_limit(feed, need)
            log.info(
                "%s %s: warm start: %d of %d bars stored; the feed fills them from %s",
                *key, len(bars), need, utc_text(back + step),
            )  # fmt: skip
    finally:
        if source is not None:
            source.close()
    return published


def _extend_limit(feed: DataFeed, bars: int) -> None:
    if feed.bar_limit is not None:
        feed.bar_limit += bars
