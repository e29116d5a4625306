"""Where the recorded Binance data lives: tests/data in the repository (SOURCES.md there says
where each file came from; the large ones are gzip, read through ``read_data``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from quantcore.sim import ReplaySource
from quantcore.sim.formats import read_data

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
WS_BTC = DATA / "binance_spot_ws_kline_1m_BTCUSDT_2021-04-04.jsonl"
WS_3SYM = DATA / "binance_spot_ws_kline_1m_3sym_2021-04-04.jsonl"
REST_BTC = DATA / "binance_spot_rest_klines_BTCUSDT_1m_2024-09-04.json"
CSV_BTC = DATA / "binance_spot_klines_BTCUSDT_1m_2025-08-01_to_2025-08-11.csv.gz"
CSV_OHLCV = DATA / "binance_spot_ohlcv_BTCUSDT_1m_2024-03-01_to_2024-03-22.csv.gz"
"""SHIBUSDT 1m as the exchange's own strings: 8-decimal prices (0.00001036), 2-decimal volumes."""

CSV_SHIB = DATA / "binance_spot_ohlcv_SHIBUSDT_1m_2024-01-01.csv"
EXCHANGE_INFO = DATA / "binance_spot_rest_exchangeInfo_2023-09-08.json.gz"


def read_frames(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def read_text(path: Path) -> str:
    """A data file's text, gunzipped when it is stored compressed."""
    return read_data(path).decode()


CSV_USDM = DATA / "binance_usdm_klines_BTCUSDT_1m_2023-03-11.csv"
"""Binance USD-M futures BTCUSDT 1m (fapi klines: 1-2 decimal prices, 3-decimal volumes)."""
CSV_COINM = DATA / "binance_coinm_klines_BTCUSD_PERP_1m_2022-10-24.csv"
"""Binance COIN-M futures BTCUSD_PERP 1m (dapi klines: volume in contracts)."""
CSV_COINM_2 = DATA / "binance_coinm_klines_BTCUSD_PERP_1m_2022-10-25.csv"


def replay(path: Path, symbol: str | None = None) -> ReplaySource:
    """``ReplaySource.from_file(path, symbol)``, each file parsed once per test process (the
    11-day BTCUSDT file takes over a second); every call gets a source of its own."""
    source = _parsed(path, symbol)
    return ReplaySource(source.symbol, source.bars(source.first_open_ms, source.end_ms))


@cache
def _parsed(path: Path, symbol: str | None) -> ReplaySource:
    return ReplaySource.from_file(path, symbol)
