"""``quantcore history``: one symbol, one year of 1m bars from the local exchange's archive
to CSV, against two baselines measured in the same run.

- quantcore: ``record_history`` (download, SHA-256 check, strict parse, BarEvents on the
  bus, CsvRecorder) with an empty zip cache; REST weight read from the exchange.
- pandas: ``read_csv`` of the same (already downloaded) zips plus one ``to_csv``; no
  checksum, floats instead of the exchange's strings.
- python-binance: ``AsyncClient.get_historical_klines`` against the same exchange (REST
  only, the library's own pacing: it sleeps 1 s after every third request), rows written
  with the csv module; over ``--rest-days`` (default 30) and compared as bars/s, because a
  year of it takes minutes.

The exchange builds its zips before the clock starts (a real archive serves files it
already has). Run: python bench/history.py [--year 2025] [--rest-days 30]
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import tempfile
import time
from pathlib import Path

import aiohttp
import pandas as pd
from _common import Reporter, load_average, parser
from binance import AsyncClient

from quantcore.config import parse_config
from quantcore.consumers.csv_recorder import HEADER
from quantcore.history.archive import file_path
from quantcore.history.command import record_history
from quantcore.sim import LocalExchange

SYMBOL = "BTCUSDT"
DAY = 86_400_000


def year_bounds(year: int) -> tuple[int, int]:
    return (
        calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000,
        calendar.timegm((year + 1, 1, 1, 0, 0, 0)) * 1000,
    )


async def warm(exchange: LocalExchange, year: int) -> None:
    """Have the exchange build (and cache) every monthly zip before anything is timed."""
    async with aiohttp.ClientSession() as session:
        for month in range(1, 13):
            path = file_path(exchange.venue, SYMBOL, "1m", f"{year}-{month:02d}")
            async with session.get(f"{exchange.archive_url}/{path}.CHECKSUM") as response:
                response.raise_for_status()


async def main() -> None:
    p = parser("quantcore history vs pandas and python-binance over a year of 1m bars")
    p.add_argument("--year", type=int, default=2025)
    p.add_argument("--rest-days", type=int, default=30)
    args = p.parse_args()
    report = Reporter("history", args.results)
    report.note(f"load average {load_average()}")
    start, end = year_bounds(args.year)
    bars_expected = (end - start) // 60_000
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        async with LocalExchange(symbols=[SYMBOL], seed=1, speed=None) as exchange:
            await warm(exchange, args.year)
            out = work / "quantcore" / "BTCUSDT_1m.csv"
            config = parse_config({
                "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url,
                             "archive_url": exchange.archive_url},
                "streams": [{"symbol": SYMBOL, "interval": "1m"}],
                "consumers": [{"class": "csv", "params": {"path": str(out)}}],
                "logging": {"level": "WARNING"},
            })  # fmt: skip
            weight_before = exchange.limits.rest_weight
            began = time.perf_counter()
            totals, _, lost = await record_history(config, start, end, work / "cache")
            ours = time.perf_counter() - began
            weight = exchange.limits.rest_weight - weight_before
            rows = out.read_text().count("\n") - 1
            assert lost == 0 and rows == totals.bars == bars_expected, (rows, totals)
            truth = exchange.market.sources[SYMBOL].aggregated(60_000, start, end)
            assert out.read_text().splitlines()[1].split(",")[0] == truth[0].kline().close
            report.add("quantcore history: wall time", f"{ours:.2f}s")
            report.add("quantcore history: bars/s", f"{rows / ours:,.0f}",
                       target="checksums verified, exact strings")  # fmt: skip
            per_day = weight - 3  # the clock (1) and the first-bar probe (2)
            report.add("REST weight", f"{weight} (clock 1 + first-bar probe 2; {per_day} for "
                       f"{totals.archive_days} archived days)", target="0 per archived day",
                       met=per_day == 0)  # fmt: skip

            zips = sorted((work / "cache").rglob("*.zip"))
            began = time.perf_counter()
            frame = pd.concat(pd.read_csv(z, header=None, compression="zip") for z in zips)
            frame.to_csv(work / "pandas.csv", index=False)
            pandas_s = time.perf_counter() - began
            assert len(frame) == bars_expected
            report.add("pandas read_csv + to_csv: wall time", f"{pandas_s:.2f}s",
                       baseline=f"{len(frame) / pandas_s:,.0f} bars/s",
                       ratio=f"quantcore {pandas_s / ours:.2f}x as fast",
                       target="at least as fast as pandas", met=ours <= pandas_s)  # fmt: skip

            rest_end = start + args.rest_days * DAY
            client = AsyncClient()
            client.API_URL = exchange.rest_url
            weight_before = exchange.limits.rest_weight
            began = time.perf_counter()
            try:
                klines = await client.get_historical_klines(SYMBOL, "1m", start, rest_end - 1)
            finally:
                await client.close_connection()
            with (work / "rest.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(HEADER.strip().split(","))
                writer.writerows(klines)
            rest_s = time.perf_counter() - began
            rest_weight = exchange.limits.rest_weight - weight_before
            assert len(klines) == args.rest_days * 1440
            rest_rate = len(klines) / rest_s
            report.add(f"python-binance get_historical_klines ({args.rest_days} days)",
                       f"{rest_s:.2f}s, REST weight {rest_weight}",
                       baseline=f"{rest_rate:,.0f} bars/s "
                                f"(a year: ~{bars_expected / rest_rate:.0f}s)",
                       ratio=f"quantcore {rows / ours / rest_rate:.1f}x as fast",
                       target=">= 10x faster than REST only",
                       met=rows / ours >= 10 * rest_rate)  # fmt: skip
    report.save()


if __name__ == "__main__":
    asyncio.run(main())
