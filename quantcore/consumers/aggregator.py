"""BarAggregator: higher-interval bars (5m, 15m, 1h, ...) built from closed 1m bars.

Like vnpy's BarGenerator, but published on the same ``bar`` topic as the feed's own bars,
so every consumer (CSV, history, strategies) handles a built 5m bar exactly like a
streamed one. Buckets are aligned like Binance's (to the Unix epoch; weeks to Monday), so
each complete bucket equals the kline Binance serves for it.

Gap rule: a bucket is published only when all of its source bars arrived, when its last
one does. A bucket interrupted by a bar of a later bucket is incomplete and dropped.
quantcore's feed delivers every stream without gaps, so in practice only the first bucket
after start-up is incomplete (the feed started mid-bucket) and it is skipped, as Binance
would never serve a bar that covers only part of its time.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import reduce

from quantcore.bus import Subscription
from quantcore.component import Component
from quantcore.decimals import plain
from quantcore.events import BAR, BarDecimals, BarEvent, from_epoch_ms
from quantcore.intervals import bucket_start, interval_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Target:
    interval: str
    length_ms: int
    count: int
    """Source bars in one complete bucket."""


@dataclass(slots=True)
class _Bucket:
    start_ms: int
    bars: list[BarEvent] = field(default_factory=list)


class BarAggregator(Component):
    """Publishes a closed ``BarEvent`` per complete bucket of each of ``intervals``.

    Consumes only closed bars of ``source_interval`` (so it never re-consumes its own
    output) and skips an output stream the feed already delivers, to avoid duplicates.
    """

    def __init__(
        self,
        *,
        intervals: Sequence[str] | str = ("5m", "15m", "1h"),
        source_interval: str = "1m",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.source_interval = source_interval
        try:
            self.source_ms = interval_ms(source_interval)
        except ValueError as exc:
            raise ValueError(f"source_interval: {exc}") from None
        self.targets = _targets(intervals, source_interval, self.source_ms)
        self.published = 0
        """Aggregated bars published so far."""
        self.incomplete = 0
        """Buckets dropped because source bars were missing (start-up, or a gap)."""
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._seen: set[tuple[str, str]] = set()
        """Streams whose first bucket is behind us: a later incomplete one means a gap."""
        self._from_feed: frozenset[tuple[str, str]] = frozenset()
        self._subscription: Subscription | None = None

    @property
    def intervals(self) -> list[str]:
        return [t.interval for t in self.targets]

    def wants(self, handler: str) -> bool:
        """``on_bar`` is subscribed in :meth:`start` instead, after every other component."""
        return handler != "on_bar"

    async def start(self) -> None:
        """Subscribe last, so every other subscriber sees a source bar before the bar it
        completes (the aggregate is published from within that bar's delivery)."""
        self._from_feed = frozenset(self.context.streams)
        for symbol, interval in self.context.streams:
            if interval in self.intervals:
                log.warning(
                    "%s: %s %s comes from the feed; not aggregating it", self.name, symbol, interval
                )
        if self._subscription is None:
            self._subscription = self.context.bus.subscribe(
                BAR, self.on_bar, name=f"{self.name}.on_bar"
            )

    def detach(self) -> None:
        if self._subscription is not None and self._context is not None:
            self._context.bus.unsubscribe(self._subscription)
        self._subscription = None
        super().detach()

    async def stop(self) -> None:
        """Unfinished buckets are incomplete by definition: they are dropped, not flushed."""
        self._buckets.clear()

    def on_bar(self, bar: BarEvent) -> None:
        if bar.interval != self.source_interval or not bar.closed:
            return
        open_ms = bar.open_time_ms
        for target in self.targets:
            key = (bar.symbol, target.interval)
            if key in self._from_feed:
                continue
            start = bucket_start(open_ms, target.length_ms)
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.start_ms != start:
                if start < bucket.start_ms:
                    continue
                del self._buckets[key]
                self._drop(key, bucket, target)
                bucket = None
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(start)
            elif open_ms <= bucket.bars[-1].open_time_ms:
                continue
            bucket.bars.append(bar)
            if open_ms + self.source_ms == start + target.length_ms:
                del self._buckets[key]
                if len(bucket.bars) == target.count:
                    self._seen.add(key)
                    self.published += 1
                    self.publish(BAR, merge(bucket.bars, target.interval, start, target.length_ms))
                else:
                    self._drop(key, bucket, target)

    def _drop(self, key: tuple[str, str], bucket: _Bucket, target: _Target) -> None:
        self.incomplete += 1
        first = key not in self._seen
        self._seen.add(key)
        log.log(
            logging.DEBUG if first else logging.WARNING,
            "%s: skipping incomplete %s %s bucket at %s (%d of %d bars)%s",
            self.name,
            key[0],
            target.interval,
            from_epoch_ms(bucket.start_ms).strftime("%Y-%m-%d %H:%M"),
            len(bucket.bars),
            target.count,
            " (start-up)" if first else "",
        )


_SUMS = decimal.Context(prec=80)
"""Enough digits that a sum of exchange decimals is never rounded (28, the default, could)."""


def merge(bars: Sequence[BarEvent], interval: str, start_ms: int, length_ms: int) -> BarEvent:
    """One closed bar from consecutive source bars: open first, close last, high max, low
    min, volumes and trades summed; final at its close time, received when the bar
    completing it was.

    Computed on the exact decimal strings (Decimal sums keep the exchange's scale), so the
    result equals, string for string, the kline Binance serves for the bucket; the floats
    are those strings' nearest floats, as the codec would derive them.
    """
    first, last = bars[0], bars[-1]
    exact = [b.decimal_strings() for b in bars]
    high = max(Decimal(d.high) for d in exact)
    low = min(Decimal(d.low) for d in exact)

    def total(name: str) -> str:
        return plain(reduce(_SUMS.add, [Decimal(getattr(d, name)) for d in exact]))

    decimals = BarDecimals(
        exact[0].open,
        next(d.high for d in exact if Decimal(d.high) == high),
        next(d.low for d in exact if Decimal(d.low) == low),
        exact[-1].close,
        total("volume"),
        total("quote_volume"),
        total("taker_buy_volume"),
        total("taker_buy_quote_volume"),
    )
    close_time = from_epoch_ms(start_ms + length_ms - 1)
    return BarEvent(
        symbol=first.symbol,
        interval=interval,
        open_time=from_epoch_ms(start_ms),
        close_time=close_time,
        open=first.open,
        high=float(decimals.high),
        low=float(decimals.low),
        close=last.close,
        volume=float(decimals.volume),
        quote_volume=float(decimals.quote_volume),
        trades=sum(b.trades for b in bars),
        taker_buy_volume=float(decimals.taker_buy_volume),
        taker_buy_quote_volume=float(decimals.taker_buy_quote_volume),
        closed=True,
        event_time=close_time,
        received_ns=last.received_ns,
        decimals=decimals,
    )


def _targets(intervals: Sequence[str] | str, source: str, source_ms: int) -> tuple[_Target, ...]:
    names = [intervals] if isinstance(intervals, str) else list(intervals)
    if not names:
        raise ValueError("intervals: list at least one interval, e.g. [5m, 15m, 1h]")
    targets: list[_Target] = []
    for name in names:
        try:
            length = interval_ms(str(name))
        except ValueError as exc:
            raise ValueError(f"intervals: {exc}") from None
        if length <= source_ms or length % source_ms:
            raise ValueError(
                f"intervals: {name!r} is not a multiple of the source interval {source!r}"
            )
        if any(t.interval == name for t in targets):
            raise ValueError(f"intervals: {name!r} is listed twice")
        targets.append(_Target(str(name), length, length // source_ms))
    return tuple(sorted(targets, key=lambda t: t.length_ms))
