"""``quantcore run`` with the Parquet recorder, as real processes against the local exchange:
kill -9 twice and restart (only whole files visible after each kill), and the store still
equals the CSV and the exchange string for string; a second process on the same store is
refused in one line (exit 2)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

from quantcore.sim import LocalExchange, ReplaySource
from tests import parquet_check
from tests.harness import caught_up, csv_rows, truth_since, wait_until
from tests.paths import CSV_BTC

pytestmark = pytest.mark.timeout(120)


def write_config(tmp_path: Path, exchange: LocalExchange, *, csv: bool) -> Path:
    consumers: list[dict[str, object]] = [
        {"class": "parquet", "params": {"root": str(tmp_path / "store")}}
    ]
    if csv:
        consumers.insert(
            0, {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}}
        )
    config = {
        "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url},
        "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
        "feed": {"stall_timeout": 1, "reconnect": {"initial_delay": 0.05, "max_delay": 0.3}},
        "consumers": consumers,
    }
    path = tmp_path / ("app.yaml" if csv else "store-only.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


async def start_app(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantcore", "run", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def rows_in(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


async def test_kill_9_twice_then_the_store_equals_the_csv_and_the_exchange(
    tmp_path: Path,
) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    store = tmp_path / "store"
    async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=600) as exchange:
        config = write_config(tmp_path, exchange, csv=True)
        for _ in range(2):
            at = rows_in(path)
            process = await start_app(config)
            await wait_until(lambda at=at: rows_in(path) >= at + 15, 30, "15 rows before the kill")
            os.kill(process.pid, signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
            parquet_check.assert_whole_files(store)
            held = parquet_check.store_rows(store, "BTCUSDT")
            assert len(held) >= at + 15 and held == truth_since(exchange, held[0], len(held))
        process = await start_app(config)
        at = rows_in(path)
        await wait_until(lambda: rows_in(path) >= at + 15, 30, "15 more rows after restart")
        await wait_until(lambda: caught_up(exchange, path), 20, "the CSV to catch up")
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, err.decode()
        rows = csv_rows(path)
        assert rows == truth_since(exchange, rows[0], len(rows))
        parquet_check.assert_store_holds(store, "BTCUSDT", rows, exchange)  # compacted on stop


async def test_a_second_process_on_the_same_store_is_refused(tmp_path: Path) -> None:
    async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=600) as exchange:
        config = write_config(tmp_path, exchange, csv=False)
        first = await start_app(config)
        marker = tmp_path / "store" / "_venue=binance-spot.lock"
        await wait_until(marker.exists, 30, "the first process to lock the store")
        second = await start_app(config)
        _, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 2
        assert err.decode() == (
            f"quantcore: ParquetRecorder: {tmp_path / 'store' / '_venue=binance-spot'} is being "
            f"written by another quantcore process (pid {first.pid})\n"
        )
        first.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(first.communicate(), 20)
        assert first.returncode == 0, err.decode()
