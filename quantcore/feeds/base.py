"""DataFeed: the contract every market-data source fulfils, and the one place of ordering.

Whatever the transport, subscribers see closed bars strictly increasing in open time
per (symbol, interval), each exactly once; a hole in the sequence is reported to the
concrete feed (which can backfill it) before any later bar is published, and live bars
behind it wait in order (:meth:`DataFeed.hold`), never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from quantcore.backoff import Backoff
from quantcore.bus import EventBus
from quantcore.events import (
    BAR,
    BAR_PARTIAL,
    FEED_STATUS,
    BarEvent,
    FeedState,
    FeedStatus,
    from_epoch_ms,
)
from quantcore.feeds.snapshot import FeedHealth
from quantcore.intervals import interval_ms

log = logging.getLogger(__name__)

StreamKey = tuple[str, str]
"""(symbol, interval), e.g. ("BTCUSDT", "1m")."""


@dataclass(slots=True)
class FeedStats:
    """Counters for the run summary and for tests; all monotonic."""

    frames: int = 0
    bars: int = 0
    partials: int = 0
    backfilled: int = 0
    absent: int = 0
    """Bars declared absent on the exchange (REST served a later bar, never this one)."""
    malformed: int = 0
    duplicates: int = 0
    stale: int = 0
    reconnects: int = 0
    handovers: int = 0
    probes: int = 0
    rest_calls: int = 0
    rate_limited: int = 0
    errors: int = 0

    def summary(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How long to wait between connection attempts; forever unless max_attempts is set."""

    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = None


class StreamSequencer:
    """Order keeper for one stream: the last closed bar that went out, and the live closed
    bars ``held`` in order behind a hole."""

    __slots__ = ("held", "last", "step")

    def __init__(self, interval: str) -> None:
        self.step = timedelta(milliseconds=interval_ms(interval))
        self.last: datetime | None = None
        self.held: list[BarEvent] = []

    def next_open(self) -> datetime | None:
        """Open time of the next closed bar due, or None before anything is known."""
        return None if self.last is None else self.last + self.step

    def anchor(self, open_time: datetime) -> None:
        """Start the sequence just before ``open_time`` if nothing is known yet."""
        if self.last is None:
            self.last = open_time - self.step


class DataFeed(ABC):
    """Publishes BarEvents for a fixed set of streams on a bus until stopped."""

    def __init__(self, bus: EventBus, streams: Iterable[StreamKey], name: str) -> None:
        self.bus = bus
        self.name = name
        self.stats = FeedStats()
        self.stream_bars: Counter[StreamKey] = Counter()
        """Closed bars published per (symbol, interval)."""
        self.stream_backfilled: Counter[StreamKey] = Counter()
        """Of those, bars filled from REST (gaps and catch-up) per (symbol, interval)."""
        self.fatal: str | None = None
        """Why the feed gave up for good (e.g. an unknown symbol); None while healthy."""
        self.fatal_stream: StreamKey | None = None
        """The stream whose history contradicts the exchange, when that is why."""
        self.bar_limit: int | None = None
        """Stop after publishing this many closed bars (``--max-bars``); None: no limit."""
        self.sequencers: dict[StreamKey, StreamSequencer] = {
            (symbol, interval): StreamSequencer(interval) for symbol, interval in streams
        }

    @property
    def streams(self) -> list[StreamKey]:
        return list(self.sequencers)

    @abstractmethod
    async def run(self) -> None:
        """Connect and publish until :meth:`stop` is called; never raises on bad data."""

    @abstractmethod
    def stop(self) -> None:
        """Ask :meth:`run` to return soon (safe to call from a signal handler)."""

    def resume_after(self, key: StreamKey, open_time_ms: int) -> None:
        """Declare bars up to ``open_time_ms`` already delivered (e.g. found in the CSV)."""
        self.sequencers[key].last = from_epoch_ms(open_time_ms)

    def report(
        self,
        state: FeedState,
        detail: str = "",
        level: int = logging.INFO,
        exc: BaseException | None = None,
    ) -> None:
        """Log a status line (with ``exc``'s traceback: an unexpected error) and publish it
        on FEED_STATUS."""
        line = f": {detail}" if detail else ""
        log.log(level, "%s: %s%s", self.name, state.value, line, exc_info=exc)
        self.bus.publish(FEED_STATUS, FeedStatus(self.name, state, detail))

    async def supervise(
        self,
        session: Callable[[], Awaitable[bool]],
        policy: ReconnectPolicy,
        stopping: asyncio.Event,
    ) -> None:
        """Run ``session`` again and again until ``stopping``: the reconnect loop of every feed.

        ``session`` connects, serves and handles its own errors; it returns True when the
        connection was healthy (the backoff starts over). Between sessions: backoff with
        jitter, counted in ``stats.reconnects``, cut short by stop; give up (and stop) after
        ``policy.max_attempts``.
        """
        attempt = 0
        while not stopping.is_set():
            if await session():
                attempt = 0
            if stopping.is_set():
                return
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                self.report(FeedState.STOPPED, f"giving up after {attempt} attempts", logging.ERROR)
                self.stop()
                return
            delay = policy.backoff.delay(attempt)
            attempt += 1
            self.stats.reconnects += 1
            log.info("%s: reconnecting in %.1fs (attempt %d)", self.name, delay, attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    def offer(self, bar: BarEvent) -> datetime | None:
        """Publish ``bar`` if it is next in its stream; otherwise count it and say why.

        Returns None when handled (published or dropped), or the open time of the first
        missing closed bar when ``bar`` is closed and bars are missing before it: the
        caller fills the hole, then publishes ``bar`` with :meth:`publish_closed`.
        """
        sequencer = self.sequencers.get((bar.symbol, bar.interval))
        if sequencer is None or (self.bar_limit is not None and self.limit_reached):
            self.stats.stale += 1
            return None
        if not bar.closed:
            self.offer_partial(sequencer, bar)
            return None
        last = sequencer.last
        if last is not None:
            if bar.open_time <= last:
                self.stats.duplicates += 1
                return None
            due = last + sequencer.step
            if bar.open_time != due:
                return due
        self._emit(sequencer, bar)
        return None

    def offer_partial(self, sequencer: StreamSequencer, bar: BarEvent, anchor: bool = True) -> None:
        """Publish an in-progress update unless its bar already closed (counted as stale);
        the first update of a stream anchors its sequence unless ``anchor`` is False (a
        partial stream read apart from the closed one may overtake a closed bar)."""
        last = sequencer.last
        if last is None:
            if anchor:
                sequencer.anchor(bar.open_time)
        elif bar.open_time <= last:
            self.stats.stale += 1
            return
        self.stats.partials += 1
        self.bus.publish(BAR_PARTIAL, bar)

    def publish_closed(self, bar: BarEvent, *, backfilled: bool) -> bool:
        """Publish a closed bar if it is newer than the last one; True if it went out.

        Used for backfilled bars and for a live bar whose hole the exchange itself
        cannot fill (Binance has a few genuinely missing klines): order is still kept.
        """
        sequencer = self.sequencers[(bar.symbol, bar.interval)]
        if self.limit_reached:
            return False
        if sequencer.last is not None and bar.open_time <= sequencer.last:
            self.stats.duplicates += 1
            return False
        self._emit(sequencer, bar)
        if backfilled:
            self.stats.backfilled += 1
            self.stream_backfilled[bar.key] += 1
        return True

    def hold(self, sequencer: StreamSequencer, bar: BarEvent) -> bool:
        """A live closed bar: published if next, else held in order until the hole before
        it is filled (:meth:`release`); True when it opened the hole."""
        held = sequencer.held
        if not held or bar.open_time == sequencer.next_open():
            if self.offer(bar) is not None:
                held.append(bar)
                return True
            self.release(sequencer)  # if it filled the hole, the held bars behind it follow
        elif bar.open_time > held[-1].open_time:
            held.append(bar)
        elif bar.open_time not in {h.open_time for h in held}:
            held.append(bar)
            held.sort(key=lambda h: h.open_time)
        else:
            self.stats.duplicates += 1
        return False

    def release(self, sequencer: StreamSequencer) -> None:
        """Publish the held bars that are now next in line, stopping at the next hole."""
        held = sequencer.held
        taken = 0
        for bar in held:
            last = sequencer.last
            if last is not None and bar.open_time <= last:
                self.stats.duplicates += 1
            elif bar.open_time == sequencer.next_open():
                self.publish_closed(bar, backfilled=False)
            else:
                break
            taken += 1
        del held[:taken]

    @property
    def limit_reached(self) -> bool:
        return self.bar_limit is not None and self.stats.bars >= self.bar_limit

    def stream_summary(self) -> str:
        """``BTCUSDT 1m=120 ETHUSDT 1m=118 ...``: closed bars published per stream."""
        return " ".join(f"{s} {i}={self.stream_bars[(s, i)]}" for s, i in self.sequencers)

    def exchange_ms(self) -> int:
        """The exchange's time now (epoch ms) as this feed knows it; here this machine's."""
        return int(time.time() * 1000)

    def health_snapshot(self) -> FeedHealth:
        """What /health and /metrics read beyond the counters; here no connection to judge."""
        return FeedHealth()

    def _emit(self, sequencer: StreamSequencer, bar: BarEvent) -> None:
        sequencer.last = bar.open_time
        self.stats.bars += 1
        self.stream_bars[(bar.symbol, bar.interval)] += 1
        self.bus.publish(BAR, bar)
        if self.limit_reached:
            self.stop()
