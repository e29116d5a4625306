"""RestHistory: a Binance feed's past bars for a sink filling its own range (``BarHistory``).

It goes through the feed's own REST client (its weight budget, Retry-After handling and
counters), so a sink's catch-up shares the process's REST
budget with the feed. A row is final only on evidence: REST also serves a later bar of
the stream (its view has moved past that row's close), never because a clock ran out.
"""

from __future__ import annotations

import time

from quantcore.feeds.binance.codec import KlineCodec
from quantcore.feeds.binance.feed import BinanceKlineFeed
from quantcore.sinks.refill import HistoryPage, HistoryPending


class RestHistory:
    """Pages ``GET klines`` from ``start_ms`` through ``end_ms`` (inclusive: the bar at
    ``end_ms``, already published, is the evidence that everything before it is final)."""

    def __init__(self, feed: BinanceKlineFeed) -> None:
        self._feed = feed
        self._codec = KlineCodec()

    async def final_bars(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> HistoryPage:
        feed = self._feed
        rows = await feed.rest.klines(symbol, interval, start_ms, end_ms, feed.venue.klines_limit)
        received = time.time_ns()
        bars = [self._codec.parse_rest_row(symbol, interval, row, received) for row in rows]
        bars = [bar for bar in bars if bar.open_time_ms >= start_ms]
        if not bars:
            raise HistoryPending(f"{symbol} {interval}: REST serves nothing from {start_ms} yet")
        if bars[-1].open_time_ms >= end_ms:
            return HistoryPage([bar for bar in bars if bar.open_time_ms < end_ms], end_ms)
        return HistoryPage(bars[:-1], bars[-1].open_time_ms)
