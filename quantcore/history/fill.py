"""One stream's past, in order, onto the bus: archive files for whole days and months, REST
for the rest, every hole either filled or proven an exchange gap.

Rules (the same evidence as the live settler):

- An archive file counts only once verified (:mod:`.archive`); a file that is missing
  (404) or corrupt after its retries gives way, a month to its days, a day to REST, and
  the run says so.
- A REST row is final only when the same answer serves a later bar; a bar REST skips
  while serving a later one is absent on the exchange.
- A hole inside an archive file is asked of REST: what REST has fills it, what it proves
  absent is an *exchange gap* (a :class:`GapEvent`, adjacent ranges merged). Where REST
  and the archive both serve a bar and differ, REST wins (what live recording takes); each
  such bar is counted and logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import aiohttp

from quantcore.backoff import describe
from quantcore.events import BAR, GAP, BarEvent, GapEvent, GapReason, from_epoch_ms, utc_text
from quantcore.feeds.binance.codec import KlineCodec
from quantcore.feeds.binance.history import final_page
from quantcore.feeds.binance.rest import BinanceRest
from quantcore.history.archive import ArchiveCorrupt, ArchiveReader
from quantcore.intervals import interval_ms, month_bounds
from quantcore.sinks.refill import HistoryPending

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(slots=True)
class Totals:
    """What a history run did, for its summary line."""

    archive_days: int = 0
    rest_days: int = 0
    bars: int = 0
    gaps: int = 0
    gap_bars: int = 0
    corrections: int = 0
    bytes: int = 0
    rest_weight: int = 0
    fallbacks: int = 0
    """Archive files that were missing or refused, their range taken from REST instead."""


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


class StreamFill:
    """Publishes the closed bars of one stream in ``[cursor, end_ms)`` on ``publish``.

    ``cursor`` is the first bar due; ``today_ms`` the start of the exchange's current day
    (days before it may be archived), ``month_ms`` the start of its current month.
    """

    def __init__(
        self,
        symbol: str,
        interval: str,
        publish: Callable[[str, object], None],
        reader: ArchiveReader,
        rest: BinanceRest,
        totals: Totals,
        on_progress: Callable[[int], object] = lambda n: None,
        batch: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.symbol, self.interval = symbol, interval
        self.step = interval_ms(interval)
        self.publish = publish
        self.reader = reader
        self.rest = rest
        self.totals = totals
        self.on_progress = on_progress
        self.batch = batch
        self.codec = KlineCodec()
        self.cursor = 0
        self._gap: tuple[int, int] | None = None

    # -- the plan ------------------------------------------------------------------------

    async def run(
        self,
        cursor: int,
        end_ms: int,
        today_ms: int,
        month_ms: int,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Fill ``[cursor, end_ms)``; stops early (logged) where REST proves nothing yet.
        ``pause`` is awaited before each file (lets slower recorders catch up)."""
        self.cursor = cursor
        try:
            while self.cursor < end_ms:
                if pause is not None:
                    await pause()
                t = self.cursor
                start, stop = month_bounds(t)[2:]
                if t == start and stop <= min(end_ms, month_ms):
                    if await self._archive(_month(start), start, stop):
                        continue
                    for day in range(start, stop, DAY_MS):
                        await self._day(day, end_ms)
                    continue
                day = t - t % DAY_MS
                if day + DAY_MS <= today_ms:
                    await self._day(day, end_ms)
                    continue
                await self._rest(t, end_ms)
                break
        except HistoryPending as exc:
            log.warning("%s %s: stopped at %s: %s (a later run continues from there)",
                        self.symbol, self.interval, utc_text(self.cursor), exc)  # fmt: skip
        self._flush_gap()

    async def _day(self, day: int, end_ms: int) -> None:
        if self.cursor >= min(day + DAY_MS, end_ms):
            return
        if not await self._archive(_day(day), day, day + DAY_MS, end_ms):
            await self._rest(self.cursor, min(day + DAY_MS, end_ms))

    # -- archive -------------------------------------------------------------------------

    async def _archive(self, period: str, start: int, stop: int, end_ms: int | None = None
                       ) -> bool:  # fmt: skip
        """Publish a verified file's bars from the cursor on; False if REST must do it."""
        reader = self.reader
        if reader.unreachable is not None:
            return False
        try:
            found = await reader.read(self.symbol, self.interval, period, start, stop)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reader.unreachable = exc
            log.warning("%s %s: the archive cannot be reached (%s); everything from REST",
                        self.symbol, self.interval, describe(exc))  # fmt: skip
            return False
        except ArchiveCorrupt as exc:
            self.totals.fallbacks += 1
            log.warning("%s %s: archive file %s refused (%s); taking it from REST",
                        self.symbol, self.interval, period, exc)  # fmt: skip
            return False
        if found is None:
            if len(period) == 10:
                self.totals.fallbacks += 1
                log.info("%s %s: no archive file for %s; taking it from REST",
                         self.symbol, self.interval, period)  # fmt: skip
            return False
        self.totals.bytes += found.size
        hi = stop if end_ms is None else min(stop, end_ms)
        lo = self.cursor
        bars = [b for b in found.bars if lo <= b.open_time_ms < hi] if (
            found.bars and (found.bars[0].open_time_ms < lo or found.bars[-1].open_time_ms >= hi)
        ) else found.bars  # fmt: skip
        step = self.step
        whole = bool(bars) and bars[0].open_time_ms == lo and (
            bars[-1].open_time_ms == lo + (len(bars) - 1) * step
        ) and bars[-1].open_time_ms + step >= hi  # fmt: skip
        if not whole:
            bars = await self._mend(bars, lo, hi)
        if bars:
            first, last = bars[0].open_time_ms, bars[-1].open_time_ms
            self.totals.archive_days += last // DAY_MS - first // DAY_MS + 1
        self._emit_all(bars)
        if self.cursor < hi:
            self._absent(hi)
        return True

    async def _mend(self, bars: list[BarEvent], lo: int, hi: int) -> list[BarEvent]:
        """Holes of an archive file asked of REST: filled, or proven absent; REST's version
        of any archived bar it also serves replaces the archive's."""
        step = self.step
        out: list[BarEvent] = []
        expected = lo
        index = {b.open_time_ms: n for n, b in enumerate(bars)}
        n = 0
        while expected < hi:
            if n < len(bars) and bars[n].open_time_ms == expected:
                out.append(bars[n])
                n += 1
                expected += step
                continue
            nxt = bars[n].open_time_ms if n < len(bars) else hi
            hole = expected
            while hole < nxt:
                rows, settled = await self._rest_page(hole, (nxt - hole) // step + 1)
                if settled <= hole:
                    raise HistoryPending(f"REST serves no bar after {utc_text(hole)} yet")
                for bar in rows:
                    t = bar.open_time_ms
                    if t < nxt:
                        out.append(bar)
                    elif t in index:
                        self._compare(bars, index[t], bar)
                hole = min(settled, nxt)
            expected = nxt
        return out

    def _compare(self, bars: list[BarEvent], n: int, rest: BarEvent) -> None:
        """REST's version of an archived bar wins where they differ (counted, logged)."""
        mine = bars[n]
        if mine.decimals != rest.decimals or mine.trades != rest.trades:
            self.totals.corrections += 1
            log.warning("%s %s %s: archive and REST differ; REST's bar kept (archive %s, "
                        "REST %s)", self.symbol, self.interval, utc_text(rest.open_time_ms),
                        mine.decimals, rest.decimals)  # fmt: skip
            bars[n] = rest

    # -- REST ----------------------------------------------------------------------------

    async def _rest_page(self, start: int, wanted: int) -> tuple[list[BarEvent], int]:
        """Final bars from ``start`` (asking ``wanted`` + the evidence row), and the open time
        of the answer's last bar: every bar before it is settled (served or absent)."""
        limit = max(2, min(self.rest.venue.klines_limit, wanted + 1))
        self.totals.rest_weight += self.rest.venue.klines_weight(limit)
        return await final_page(self.rest, self.codec, (self.symbol, self.interval), start, limit)

    async def _rest(self, lo: int, hi: int) -> None:
        """Every final bar of ``[lo, hi)`` from REST, paged, within the weight budget."""
        days: set[int] = set()
        page = self.rest.venue.klines_limit
        while self.cursor < hi:
            start = self.cursor
            bars, settled = await self._rest_page(start, min(page, (hi - start) // self.step))
            if settled <= start:
                self.totals.rest_days += len(days)
                raise HistoryPending(f"REST serves no bar after {utc_text(start)} yet")
            bars = [b for b in bars if b.open_time_ms < hi]
            days.update(b.open_time_ms // DAY_MS for b in bars)
            self._emit_all(bars)
            if self.cursor < min(settled, hi):
                self._absent(min(settled, hi))
        self.totals.rest_days += len(days)

    # -- publishing ----------------------------------------------------------------------

    def _emit_all(self, bars: list[BarEvent]) -> None:
        """Publish bars in order from the cursor (earlier ones skipped; a jump is a proven
        exchange gap), inside the recorders' batch."""
        if not bars:
            return
        publish, step = self.publish, self.step
        first, last = bars[0].open_time_ms, bars[-1].open_time_ms
        with self.batch():
            if first == self.cursor and last == first + (len(bars) - 1) * step:
                self._flush_gap()
                for bar in bars:
                    publish(BAR, bar)
                self.cursor = last + step
            else:
                for bar in bars:
                    t = bar.open_time_ms
                    if t < self.cursor:
                        continue
                    if t != self.cursor:
                        self._absent(t)
                    self._flush_gap()
                    publish(BAR, bar)
                    self.cursor = t + step
        self.totals.bars += len(bars)
        self.on_progress(len(bars))

    def _absent(self, until: int) -> None:
        """Bars ``cursor .. until - step`` are proven absent: an exchange gap (merged)."""
        first, last = self.cursor, until - self.step
        if self._gap is not None and self._gap[1] + self.step == first:
            first = self._gap[0]
        self._gap = (first, last)
        self.totals.gap_bars += (until - self.cursor) // self.step
        self.on_progress((until - self.cursor) // self.step)
        self.cursor = until

    def _flush_gap(self) -> None:
        if self._gap is None:
            return
        first, last = self._gap
        self._gap = None
        self.totals.gaps += 1
        log.info("%s %s: exchange gap %s .. %s (neither the archive nor REST has bars)",
                 self.symbol, self.interval, utc_text(first), utc_text(last))  # fmt: skip
        self.publish(GAP, GapEvent(self.symbol, self.interval, from_epoch_ms(first),
                                   from_epoch_ms(last), GapReason.EXCHANGE))  # fmt: skip


def _month(start_ms: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(start_ms // 1000))
