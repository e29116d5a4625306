"""ReplayFeed: a recorded store's bars published on the bus like a live feed's.

Several streams are merged into one sequence ordered by close time; bars closing at the
same moment go out in the order their streams are listed in the config (``streams:``),
so two runs over the same store publish the same events in the same order. Every bar is
marked ``replayed`` (recorders skip it) and carries ``received_ns=0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from quantcore.component import Component
from quantcore.config_components import ConsumerSpec
from quantcore.config_schema import AppConfig
from quantcore.events import BarEvent, FeedState, epoch_ms, utc_text
from quantcore.feeds.base import DataFeed, StreamKey
from quantcore.replay import parquet_source as _parquet_source  # noqa: F401 (registers it)
from quantcore.replay.settings import ReplaySettings
from quantcore.replay.sources import BarSource, ReplayError, open_source, sources

if TYPE_CHECKING:
    from quantcore.bus import EventBus

log = logging.getLogger(__name__)

_YIELD_EVERY = 256
"""At full speed, bars published between two yields to the event loop (async subscribers run)."""


def merged(
    source: BarSource, streams: Sequence[StreamKey], start: int, end: int
) -> Iterator[BarEvent]:
    """Every stream's bars in ``[start, end)`` in close-time order; ties: config order."""
    rank = {key: n for n, key in enumerate(streams)}
    return heapq.merge(
        *(source.bars(key, start, end) for key in streams),
        key=lambda bar: (bar.close_time, rank[bar.key]),
    )


def plan(
    source: BarSource, streams: Sequence[StreamKey], settings: ReplaySettings
) -> tuple[int, int]:
    """The range to replay, checked against what the store holds (ReplayError if empty)."""
    try:
        start, end = settings.range_ms()
    except ValueError as exc:
        raise ReplayError(f"replay.{exc}") from None
    if start is not None and end is not None and start >= end:
        raise ReplayError(f"replay: from {settings.start!r} is not before to {settings.end!r}")
    extents = {}
    for key in streams:
        extent = source.extent(key)
        if extent is None:
            raise ReplayError(f"{source.location(key)}: {key[0]} {key[1]} is not in the store")
        extents[key] = extent
    first = min(e[0] for e in extents.values())
    last = max(e[1] for e in extents.values())
    start = first if start is None else start
    end = last + 1 if end is None else end
    if not any(a < end and b >= start for a, b in extents.values()):
        asked = f"from {utc_text(start)}" + (f" to before {utc_text(end)}" if settings.end else "")
        raise ReplayError(
            f"{source.location()}: no bars {asked} (it holds {utc_text(first)} to {utc_text(last)})"
        )
    return start, end


class ReplayFeed(DataFeed):
    """Publishes the store's bars for ``streams`` in ``settings``' range, then stops."""

    def __init__(
        self,
        bus: EventBus,
        streams: Sequence[StreamKey],
        settings: ReplaySettings,
        name: str = "replay",
    ) -> None:
        super().__init__(bus, streams, name)
        self.settings = settings
        self.source = open_source(settings)
        try:
            self.start_ms, self.end_ms = plan(self.source, self.streams, settings)
        except BaseException:
            self.source.close()
            raise
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        rate = self.settings.rate
        shown = "max speed" if rate is None else f"{rate:g}x market time"
        self.report(
            FeedState.LIVE,
            f"replaying {self.source.location()} from {utc_text(self.start_ms)} "
            f"to before {utc_text(self.end_ms)} at {shown}",
        )
        started = time.monotonic()
        first_close: int | None = None
        try:
            for n, bar in enumerate(merged(self.source, self.streams, self.start_ms, self.end_ms)):
                if self._stopping.is_set():
                    break
                if rate is not None:
                    close_ms = epoch_ms(bar.close_time)
                    first_close = close_ms if first_close is None else first_close
                    delay = started + (close_ms - first_close) / 1000 / rate - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopping.wait(), delay)
                        if self._stopping.is_set():
                            break
                elif n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                self.stats.frames += 1
                if not self.publish_closed(bar, backfilled=False):
                    break
        finally:
            self.source.close()
            self.report(FeedState.STOPPED, self.stats.summary())


def records(spec: ConsumerSpec) -> bool:
    """Whether the consumer is a bar recorder (it has a resume point, like every sink)."""
    return spec.cls.resume_point is not Component.resume_point


def resolve(settings: ReplaySettings, config: AppConfig) -> ReplaySettings:
    """Fill an unset source/path/dsn from the config's own recorders (the store it
    writes): the first recorder some registered source reads, of ``source`` if given."""
    if settings.source is not None and (settings.path or settings.dsn):
        return settings
    readers = {cls.recorder: cls for cls in sources()}
    for spec in config.consumers:
        reader = readers.get(spec.cls.__name__)
        if reader is None or settings.source not in (None, reader.kind):
            continue
        given = {} if settings.path or settings.dsn else reader.settings_of(spec.params)
        return settings.merged(source=reader.kind, **given)
    if settings.source is not None:
        return settings
    raise ReplayError(
        f"{config.source}: replay: no store to read: give replay.source and replay.path "
        "(--source/--path), or list a csv, sqlite or postgres recorder in consumers"
    )


def replay_config(config: AppConfig, settings: ReplaySettings) -> AppConfig:
    """``config`` turned into a replay: the store resolved and checked, the feed the
    ``replay`` venue, and every bar recorder dropped (a replay records nothing: its bars
    are stored already, and the store it reads is never opened for writing)."""
    if config.parts:
        raise ReplayError(f"{config.source}: streams of several venues: replay one venue at a time")
    settings = resolve(settings, config)
    source = open_source(settings)
    try:
        plan(source, config.streams, settings)
    finally:
        source.close()
    kept = []
    for spec in config.consumers:
        if records(spec):
            name = spec.cls.__name__
            log.info("replay: %s (%s) skipped: a replay records nothing", spec.where, name)
        else:
            kept.append(spec)
    return dataclasses.replace(
        config, venue="replay", replay=settings, consumers=tuple(kept), local=None, redis=None
    )
