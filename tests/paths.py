"""Where the recorded Binance data lives: ../shared/data beside the repo (never copied in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
WS_BTC = SHARED_DATA / "binance_spot_ws_kline_1m_BTCUSDT_2021-04-04.jsonl"
WS_3SYM = SHARED_DATA / "binance_spot_ws_kline_1m_3sym_2021-04-04.jsonl"
REST_BTC = SHARED_DATA / "binance_spot_rest_klines_BTCUSDT_1m_2024-09-04.json"
CSV_BTC = SHARED_DATA / "binance_spot_klines_BTCUSDT_1m_2025-08-01_to_2025-08-11.csv"
CSV_OHLCV = SHARED_DATA / "binance_spot_ohlcv_BTCUSDT_1m_2024-03-01_to_2024-03-22.csv"
"""SHIBUSDT 1m as the exchange's own strings: 8-decimal prices (0.00001036), 2-decimal volumes."""

CSV_SHIB = SHARED_DATA / "binance_spot_ohlcv_SHIBUSDT_1m_2024-01-01.csv"
EXCHANGE_INFO = SHARED_DATA / "binance_spot_rest_exchangeInfo_2023-09-08.json"


def read_frames(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


CSV_USDM = SHARED_DATA / "binance_usdm_klines_BTCUSDT_1m_2023-03-11.csv"
"""Binance USD-M futures BTCUSDT 1m (fapi klines: 1-2 decimal prices, 3-decimal volumes)."""
CSV_COINM = SHARED_DATA / "binance_coinm_klines_BTCUSD_PERP_1m_2022-10-24.csv"
"""Binance COIN-M futures BTCUSD_PERP 1m (dapi klines: volume in contracts)."""
CSV_COINM_2 = SHARED_DATA / "binance_coinm_klines_BTCUSD_PERP_1m_2022-10-25.csv"
