"""``run``'s startup catch-up after a long outage takes whole archived days from the public
archive (verified, no REST weight) and the rest from REST, with the same exact result."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quantcore.app import App
from quantcore.feeds.binance.feed import BinanceKlineFeed
from quantcore.sim import LocalExchange
from tests.harness import app_config, csv_rows, truth_row

MINUTE = 60_000
DAY = 86_400_000
THIRTY_DAYS = 30 * 1440


@pytest.mark.timeout(180)
async def test_thirty_days_away_whole_days_from_the_archive_rest_from_rest(
    tmp_path: Path,
) -> None:
    """The CSV's last row is 30 days old: the restart records every bar exactly, the whole
    days before today come from daily zips (counted by the exchange; the first from the
    resume point on), today from REST, in a few klines requests where REST alone needs 44."""
    async with LocalExchange(symbols=["BTCUSDT"], speed=None, updates_per_bar=2) as exchange:
        start = exchange.start_ms
        since = start - (THIRTY_DAYS + 1) * MINUTE
        truth = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=since)]
        path = tmp_path / "BTCUSDT_1m.csv"
        path.write_text("close,high,low,open,volume,baseVolume,datetime\n"
                        + ",".join(truth[0]) + "\n")  # fmt: skip
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"))
        config = type(config)(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                                 "archive_url": exchange.archive_url})  # fmt: skip
        app = App(config)
        await app.run(max_bars=THIRTY_DAYS + 30)
        truth = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=since)]
        downloads = dict(exchange.archive.downloads)
        klines_calls = exchange.limits.rest_calls["/api/v3/klines"]
    rows = csv_rows(path)
    assert len(rows) == 1 + THIRTY_DAYS + 30
    assert rows == truth[: len(rows)]
    today = start - start % DAY
    resume_from = since + MINUTE
    first_day = resume_from - resume_from % DAY
    archived_days = (today - first_day) // DAY  # the first one from the resume point on
    assert archived_days == 30
    # the market clock runs while bars are read: near midnight the exchange's today may
    # already be the next day when the catch-up asks, making one more day archived
    assert len(downloads) in (archived_days, archived_days + 1)
    assert set(downloads.values()) == {1}
    days = [first_day + n * DAY for n in range(len(downloads))]
    assert sorted(downloads) == [
        f"spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{time.strftime('%Y-%m-%d', time.gmtime(d // 1000))}.zip"
        for d in days
    ]
    feed = app.feed
    assert isinstance(feed, BinanceKlineFeed) and feed.stats.backfilled >= THIRTY_DAYS
    # REST alone pages 44 times; these are today's bars (up to 2 pages) and, when a loaded
    # machine falls behind the fast market clock, the live bars settled over REST
    assert klines_calls <= 8, klines_calls
