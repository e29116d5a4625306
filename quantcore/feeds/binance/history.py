"""Final closed bars of a past range from REST: a row is final only when REST also serves a
later bar (its view has moved past that row's close), never because a clock ran out."""

from __future__ import annotations

import time

from quantcore.events import BarEvent, utc_text
from quantcore.feeds.binance.codec import KlineCodec
from quantcore.feeds.binance.feed import BinanceKlineFeed
from quantcore.feeds.binance.rest import BinanceRest
from quantcore.sinks.refill import HistoryPage, HistoryPending


async def final_page(
    rest: BinanceRest, codec: KlineCodec, key: tuple[str, str], start_ms: int, limit: int,
    end_ms: int | None = None,
) -> tuple[list[BarEvent], int]:  # fmt: skip
    """The final bars of one ``limit``-row answer from ``start_ms``, and the open time of
    its last row: every bar before it is settled (served, or absent on the exchange)."""
    symbol, interval = key
    rows = await rest.klines(symbol, interval, start_ms, end_ms, limit)
    received = time.time_ns()
    bars = [codec.parse_rest_row(symbol, interval, row, received) for row in rows]
    bars = [bar for bar in bars if bar.open_time_ms >= start_ms]
    if not bars:
        raise HistoryPending(
            f"{symbol} {interval}: REST serves nothing from {utc_text(start_ms)} yet"
        )
    return bars[:-1], bars[-1].open_time_ms


class RestHistory:
    """Pages ``GET klines`` from ``start_ms`` through ``end_ms`` (inclusive: the bar at
    ``end_ms``, already published, is the evidence that everything before it is final)."""

    def __init__(self, feed: BinanceKlineFeed) -> None:
        self.rest = feed.rest
        self.codec = KlineCodec()

    async def final_bars(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> HistoryPage:
        page = self.rest.venue.klines_limit
        bars, last = await final_page(
            self.rest, self.codec, (symbol, interval), start_ms, page, end_ms
        )
        if last >= end_ms:
            return HistoryPage([bar for bar in bars if bar.open_time_ms < end_ms], end_ms)
        return HistoryPage(bars, last)
