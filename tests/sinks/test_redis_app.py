"""One recorder, many strategy processes: an App reading ``exchange.redis`` receives
exactly the closed bars another App recorded from the exchange, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quantcore.app import App
from quantcore.config import load_config, parse_config
from quantcore.sim import LocalExchange, ReplaySource
from tests.harness import app_config, csv_rows, wait_until
from tests.paths import REPO, REST_BTC
from tests.sinks.servers import RedisServer


def test_example_config_loads() -> None:
    config = load_config(REPO / "config" / "from_redis.yaml")
    assert config.redis is not None and config.redis.group == "sma-strategy"


@pytest.mark.timeout(60)
async def test_strategy_process_reads_what_the_recorder_published(
    tmp_path: Path, redis_server: RedisServer, unique: str
) -> None:
    prefix = f"qc:{unique}"
    async with LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=3) as exchange:
        recorder = App(
            app_config(
                exchange,
                str(tmp_path / "recorder_{symbol}_{interval}.csv"),
                consumers=[
                    {
                        "class": "csv",
                        "params": {"path": str(tmp_path / "recorder_{symbol}_{interval}.csv")},
                    },
                    {"class": "redis", "params": {"url": redis_server.url, "prefix": prefix}},
                ],
            )
        )
        reader = App(
            parse_config(
                {
                    "exchange": {
                        "redis": {"url": redis_server.url, "group": "g1", "prefix": prefix}
                    },
                    "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
                    "consumers": [
                        {
                            "class": "csv",
                            "params": {"path": str(tmp_path / "reader_{symbol}_{interval}.csv")},
                        },
                    ],
                }
            )
        )
        reading = asyncio.create_task(reader.run())
        await recorder.run(max_bars=60)
        reader_csv = tmp_path / "reader_BTCUSDT_1m.csv"
        await wait_until(
            lambda: reader_csv.exists() and len(csv_rows(reader_csv)) >= 60, 20, "the reader"
        )
        reader.stop()
        await asyncio.wait_for(reading, 20)
    recorded = csv_rows(tmp_path / "recorder_BTCUSDT_1m.csv")
    assert len(recorded) == 60
    assert csv_rows(reader_csv) == recorded
