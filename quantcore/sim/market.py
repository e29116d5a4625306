"""The market: one clock for the whole exchange and the playback of every kline stream.

Each bar is played as Binance does: `updates_per_bar` in-progress (`x:false`) updates whose
values grow consistently and end on the bar's true values, then one closed (`x:true`)
update. Any bar's state at any market time is a pure function of the sources, so REST,
WebSocket frames and the ground truth always agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from quantcore.feeds.binance.codec import stream_name as stream_name

from .klines import Bar, bucket_start, extend, interval_ms, merge, units_str
from .limits import Limits
from .realism import Realism
from .sources import KlineSource

CLOSE_DELAY_MS = 3
"""The kind closed update's event time is close_time + 1 + this (`Realism.close_delay_ms`
varies it per bar)."""


class FrameSink(Protocol):
    """Where the market delivers frames (the server's subscription hub)."""

    def wants(self, stream: str) -> bool:
        """Whether any connection should receive this stream now (else no frame is built)."""
        ...

    async def publish(self, stream: str, payload: str) -> None:
        """Send the raw payload to every subscriber, awaiting each send."""
        ...

    async def wait_listening(self) -> None:
        """Return once at least one connection is subscribed to a played stream."""
        ...


def kline_frame(
    event_ms: int, symbol: str, interval: str, bar: Bar, first_id: int, closed: bool
) -> str:
    """Binance's raw kline event JSON, byte-compatible in key order and value types."""
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{symbol}","k":{{"t":{bar.open_time},'
        f'"T":{bar.close_time},"s":"{symbol}","i":"{interval}","f":{first_id},'
        f'"L":{first_id + bar.trades - 1},"o":"{units_str(bar.open)}",'
        f'"c":"{units_str(bar.close)}","h":"{units_str(bar.high)}",'
        f'"l":"{units_str(bar.low)}","v":"{units_str(bar.volume)}","n":{bar.trades},'
        f'"x":{"true" if closed else "false"},"q":"{units_str(bar.quote_volume)}",'
        f'"V":"{units_str(bar.taker_base)}","Q":"{units_str(bar.taker_quote)}","B":"0"}}}}'
    )


def _tick(bar: Bar) -> int:
    """Largest power of ten (in units, at most 1.0) dividing all four prices of a bar."""
    tick = 100_000_000
    while tick > 1 and (bar.open % tick or bar.high % tick or bar.low % tick or bar.close % tick):
        tick //= 10
    return tick


def partial_bar(bar: Bar, num: int, den: int) -> Bar:
    """State of `bar` after the fraction num/den of its time: monotone, within its range.

    Volumes and trades grow linearly (floored); the high only rises and the low only falls,
    reaching the true extremes at a per-bar point; num >= den gives the bar itself.
    """
    if num >= den:
        return bar
    o = bar.open
    mix = (bar.open_time // 1000 * 2_654_435_761) & 0xFFFFFFFF
    at_high = 200 + mix % 801  # permille of the bar at which the true high is reached
    at_low = 200 + (mix >> 12) % 801
    tick = _tick(bar)
    scaled = num * 1000
    if scaled >= at_high * den:
        high = bar.high
    else:
        high = o + (bar.high - o) * scaled // (den * at_high) // tick * tick
    if scaled >= at_low * den:
        low = bar.low
    else:
        low = o - (o - bar.low) * scaled // (den * at_low) // tick * tick
    close = o + (bar.close - o) * num // den // tick * tick
    close = min(max(close, low), high)
    return Bar(
        bar.open_time,
        bar.close_time,
        o,
        high,
        low,
        close,
        bar.volume * num // den,
        bar.quote_volume * num // den,
        bar.trades * num // den,
        bar.taker_base * num // den,
        bar.taker_quote * num // den,
    )


def bucket_bar(source: KlineSource, bucket: int, length: int, at_ms: int) -> Bar | None:
    """The bar of `length` opening at `bucket` as it stands at market time `at_ms`."""
    bars = source.bars(bucket, min(at_ms + 1, bucket + length))
    if not bars:
        return None
    last = bars[-1]
    if last.close_time > at_ms:
        bars[-1] = partial_bar(last, at_ms - last.open_time + 1, source.interval_ms)
    return merge(bars, bucket, bucket + length - 1)


@dataclass(eq=False, slots=True)
class _Stream:
    """One played stream plus its incremental state for the bar being played."""

    name: str
    symbol: str
    interval: str
    length: int
    source: KlineSource
    bucket: int = -1
    folded_to: int = 0
    acc: Bar | None = None
    id_bucket: int = -1
    first_id: int = 0
    pushed: Bar | None = None
    halted: bool = False


@dataclass(eq=False, slots=True)
class _Group:
    """Streams of one interval: they share event times, so one event serves them all."""

    length: int
    updates: int
    streams: list[_Stream]

    def event_time(self, bucket: int, step: int) -> int:
        """Event time of in-progress update `step` (< updates); closes are per stream."""
        return bucket + (step + 1) * self.length // self.updates - 1

    def next_bucket(self, t_ms: int) -> int | None:
        """First bucket at or after t_ms in which some stream has data."""
        opens = [o for s in self.streams if (o := s.source.next_open_ms(t_ms)) is not None]
        return bucket_start(min(opens), self.length) if opens else None


class Market:
    """Market clock plus kline playback for a set of symbols and intervals.

    `start_ms` defaults to a replay's first bar plus `history_bars` bars (those are already
    closed history), or for generators to wall-clock now aligned down to the finest interval.
    """

    def __init__(
        self,
        sources: Sequence[KlineSource],
        intervals: Sequence[str] | None = None,
        *,
        speed: float | None = None,
        start_ms: int | None = None,
        history_bars: int = 0,
        updates_per_bar: int | None = None,
        realism: Realism | None = None,
        limits: Limits | None = None,
    ) -> None:
        if not sources:
            raise ValueError("the market needs at least one symbol")
        if speed is not None and not 0 < speed < math.inf:
            raise ValueError(f"speed must be positive or None (max), got {speed}")
        if updates_per_bar is not None and updates_per_bar < 1:
            raise ValueError(f"updates_per_bar must be at least 1, got {updates_per_bar}")
        if history_bars < 0:
            raise ValueError(f"history_bars must be >= 0, got {history_bars}")
        self.sources: dict[str, KlineSource] = {}
        for src in sources:
            if src.symbol in self.sources:
                raise ValueError(f"symbol {src.symbol} given twice")
            self.sources[src.symbol] = src
        names = (
            list(intervals) if intervals else sorted({s.interval for s in sources}, key=interval_ms)
        )
        self.intervals = sorted(dict.fromkeys(names), key=interval_ms)
        self.speed = speed
        self.realism = realism or Realism()
        self.limits = limits or Limits()
        self.streams: dict[str, _Stream] = {}
        self._groups: list[_Group] = []
        for name in self.intervals:
            length = interval_ms(name)
            for src in sources:
                self.check_interval(src.symbol, name)
            default = 3 if speed is None else max(1, length // 2000)
            updates = min(updates_per_bar or default, max(1, length // 100))
            members = [
                _Stream(
                    stream_name(src.symbol, name),
                    src.symbol,
                    name,
                    length,
                    src,
                    halted=src.symbol in self.realism.halted,
                )
                for src in sources
            ]
            self.streams.update((m.name, m) for m in members)
            self._groups.append(_Group(length, updates, members))
        if start_ms is None:
            wall = int(time.time() * 1000)
            finest = interval_ms(self.intervals[0])
            starts = [
                bucket_start(wall, finest)
                if src.end_ms is None
                else src.first_open_ms + history_bars * src.interval_ms
                for src in sources
            ]
            start_ms = min(starts)
        self.start_ms = start_ms
        self._now = start_ms
        self._wall0: float | None = None
        self._frozen = False
        self._anchors = {
            s.symbol: (bucket_start(start_ms, s.interval_ms), _base_trade_id(s.symbol))
            for s in sources
        }
        self.finished = asyncio.Event()
        """Set when every replayed source has been played to its end (never for generators)."""

    # -- clock -----------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """Market time in ms: authoritative for REST `serverTime` and for what has closed."""
        if self._wall0 is None or self.speed is None or self._frozen:
            return self._now
        return self._now + int((time.monotonic() - self._wall0) * 1000.0 * self.speed)

    def start_clock(self) -> None:
        """Anchor the clock to the wall clock now (finite speeds); later calls do nothing."""
        if self._wall0 is None:
            self._wall0 = time.monotonic()

    def _freeze(self) -> None:
        self._now = self.now_ms
        self._frozen = True

    # -- queries ---------------------------------------------------------------------------

    def check_interval(self, symbol: str, interval: str) -> int:
        """Length of `interval` if the symbol's source can serve it; ValueError otherwise."""
        length = interval_ms(interval)
        base = self.sources[symbol].interval_ms
        if length < base or length % base:
            name = self.sources[symbol].interval
            raise ValueError(f"{symbol}: interval {interval} cannot be built from {name} bars")
        return length

    def bar_at(self, symbol: str, interval: str, bucket: int, at_ms: int) -> Bar | None:
        """State at `at_ms` of the bar opening at `bucket` (None when it has no data)."""
        length = self.check_interval(symbol, interval)
        return bucket_bar(self.sources[symbol], bucket, length, at_ms)

    def closed_bars(self, symbol: str, interval: str, since_ms: int | None = None) -> list[Bar]:
        """True closed bars up to market now, from the bar containing since_ms (default:
        the playback start)."""
        length = self.check_interval(symbol, interval)
        since = self.start_ms if since_ms is None else since_ms
        lo = bucket_start(since, length)
        return self.sources[symbol].aggregated(length, lo, bucket_start(self.now_ms, length))

    def rest_klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
        as_of_ms: int | None = None,
    ) -> list[Bar]:
        """`GET /api/v3/klines` semantics: bars opened by now, the last possibly partial.

        `as_of_ms` answers as of an earlier market time (the REST lag: a just-closed bar is
        then still partial and younger bars are absent); default: market now.
        """
        length = self.check_interval(symbol, interval)
        src = self.sources[symbol]
        now = self.now_ms if as_of_ms is None else as_of_ms
        hi = now if end_ms is None else min(end_ms, now)
        if hi < 0:
            return []
        current = bucket_start(now, length)
        first = bucket_start(src.first_open_ms, length)
        top = bucket_start(hi, length)
        closed_end = min(top + length, current)
        with_current = top == current
        if start_ms is not None:
            lo = bucket_start(max(start_ms, first), length)
            if lo < start_ms:
                lo += length
            out = src.aggregated(length, lo, min(closed_end, lo + limit * length))
            if len(out) < limit and with_current and current >= lo:
                bar = bucket_bar(src, current, length, now)
                if bar is not None:
                    out.append(bar)
            return out[:limit]
        lo = max(closed_end - limit * length, first)
        out = src.aggregated(length, lo, closed_end) if closed_end > lo else []
        if with_current:
            bar = bucket_bar(src, current, length, now)
            if bar is not None:
                out.append(bar)
        return out[-limit:]

    def closed_frame(self, symbol: str, interval: str, bar: Bar) -> str:
        """The exact `x:true` frame the market sends (or sent) for a closed bar."""
        stream = self.streams[stream_name(symbol, interval)]
        first_id = self._trade_id(symbol, bar.open_time)
        return kline_frame(
            self.close_event_ms(stream.name, bar.open_time, bar.close_time),
            stream.symbol,
            interval,
            bar,
            first_id,
            True,
        )

    def close_event_ms(self, stream: str, open_ms: int, close_ms: int) -> int:
        """`E` of the x:true frame of a bar: close_time + 1 + its seeded delay."""
        return close_ms + 1 + self.realism.close_delay(stream, open_ms)

    async def wait_for_closed(
        self,
        symbol: str,
        interval: str,
        target: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Bar:
        """Wait until a bar has closed by the market clock and return it.

        `target` >= 1e11 is an open time; smaller values count bars from the playback start
        (1 = the bar containing start_ms).
        """
        length = self.check_interval(symbol, interval)
        bucket = (
            target
            if target >= 10**11
            else bucket_start(self.start_ms, length) + (target - 1) * length
        )
        async with asyncio.timeout(timeout):
            while self.now_ms < bucket + length:
                if self.finished.is_set():
                    raise LookupError(
                        f"{symbol} {interval} bar {bucket} never closes: replay ended"
                    )
                await asyncio.sleep(0.005)
        bar = self.bar_at(symbol, interval, bucket, bucket + length - 1)
        if bar is None:
            raise LookupError(f"{symbol} {interval}: no bar opens at {bucket}")
        return bar

    # -- playback --------------------------------------------------------------------------

    def _trade_id(self, symbol: str, t_ms: int) -> int:
        """Id of the first trade at or after t_ms: ids rise by each bar's trade count."""
        anchor, anchor_id = self._anchors[symbol]
        src = self.sources[symbol]
        if t_ms >= anchor:
            first = anchor_id + sum(b.trades for b in src.bars(anchor, t_ms))
            self._anchors[symbol] = (t_ms, first)
            return first
        return anchor_id - sum(b.trades for b in src.bars(t_ms, anchor))

    def _stream_bar(self, st: _Stream, bucket: int, at_ms: int) -> Bar | None:
        """Incremental `bucket_bar` for playback, where time only moves forward."""
        base = st.source.interval_ms
        end = bucket + st.length
        if st.bucket != bucket:
            st.bucket, st.folded_to, st.acc = bucket, bucket, None
        full_end = min(at_ms - base + 2, end)
        if full_end > st.folded_to:
            for bar in st.source.bars(st.folded_to, full_end):
                if st.acc is None:
                    st.acc = Bar(bucket, end - 1, *bar[2:])
                else:
                    st.acc = extend(st.acc, bar, end - 1)
            st.folded_to = full_end
        current = bucket_start(at_ms, base)
        if current < st.folded_to or current >= end:
            return st.acc
        forming = st.source.bar(current)
        if forming is None:
            return st.acc
        part = partial_bar(forming, at_ms - current + 1, base)
        if st.acc is None:
            return Bar(bucket, end - 1, *part[2:])
        return extend(st.acc, part, end - 1)

    def _frame(self, st: _Stream, bucket: int, event_ms: int, closed: bool) -> str | None:
        """The frame to push now, or None when the realism profile sends nothing."""
        if st.halted:
            return None
        if closed and self.realism.close_withheld(st.name, bucket):
            self.limits.closes_withheld += 1
            return None
        at = bucket + st.length - 1 if closed else event_ms
        bar = self._stream_bar(st, bucket, at)
        if bar is None:
            return None
        if self.realism.quiet:
            if bar.volume == 0 or (not closed and bar == st.pushed):
                self.limits.quiet_frames_skipped += 1
                return None
            st.pushed = bar
        if st.id_bucket != bucket:
            st.id_bucket, st.first_id = bucket, self._trade_id(st.symbol, bucket)
        return kline_frame(event_ms, st.symbol, st.interval, bar, st.first_id, closed)

    async def run(self, sink: FrameSink) -> None:
        """Play every stream in market-time order until all replays end (or forever).

        Heap entries are (event ms, group, bucket, step, members): in-progress steps serve
        the whole group (members empty); the close step serves the members whose x:true
        falls at that time (per-stream delays split a group's closes).
        """
        self.start_clock()
        heap: list[tuple[int, int, int, int, tuple[int, ...]]] = []

        def schedule(index: int, bucket: int, step: int) -> None:
            group = self._groups[index]
            if step < group.updates:
                heapq.heappush(heap, (group.event_time(bucket, step), index, bucket, step, ()))
                return
            at: dict[int, list[int]] = {}
            close = bucket + group.length - 1
            for i, st in enumerate(group.streams):
                at.setdefault(self.close_event_ms(st.name, bucket, close), []).append(i)
            for event, members in at.items():
                heapq.heappush(heap, (event, index, bucket, step, tuple(members)))
            nxt = group.next_bucket(bucket + group.length)
            if nxt is not None:
                schedule(index, nxt, 0)

        for index, group in enumerate(self._groups):
            bucket = group.next_bucket(bucket_start(self.start_ms, group.length))
            if bucket is None:
                continue
            step = 0
            while step < group.updates and group.event_time(bucket, step) < self.start_ms:
                step += 1
            schedule(index, bucket, step)
        speed = self.speed
        while heap:
            event_ms, index, bucket, step, members = heapq.heappop(heap)
            group = self._groups[index]
            if speed is None:
                await sink.wait_listening()
                self._now = max(self._now, event_ms)
            else:
                while (lag := event_ms - self.now_ms) > 0:  # noqa: ASYNC110 (a clock)
                    await asyncio.sleep(lag / 1000.0 / speed)
            closed = step == group.updates
            streams = [group.streams[i] for i in members] if closed else group.streams
            for st in streams:
                if sink.wants(st.name):
                    payload = self._frame(st, bucket, event_ms, closed)
                    if payload is not None:
                        await sink.publish(st.name, payload)
            if not closed:
                schedule(index, bucket, step + 1)
            await asyncio.sleep(0)
        self._freeze()
        self.finished.set()


def _base_trade_id(symbol: str) -> int:
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return 100_000_000 + int.from_bytes(digest, "big") % 900_000_000
