"""Shared helpers for the local-exchange tests: data paths and python-binance clients."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager

from quantcore.sim import LocalExchange

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data"
WS_BTC = DATA / "binance_spot_ws_kline_1m_BTCUSDT_2021-04-04.jsonl"
WS_3SYM = DATA / "binance_spot_ws_kline_1m_3sym_2021-04-04.jsonl"
REST_BTC = DATA / "binance_spot_rest_klines_BTCUSDT_1m_2024-09-04.json"
CSV_12 = DATA / "binance_spot_klines_BTCUSDT_1m_2025-08-01_to_2025-08-11.csv"
CSV_6 = DATA / "binance_spot_ohlcv_BTCUSDT_1m_2024-03-01_to_2024-03-22.csv"


@pytest.fixture(autouse=True, scope="session")
def _data_present() -> None:
    if not REST_BTC.exists():
        pytest.fail(f"recorded data missing: {DATA} (expected beside the repository)")


@asynccontextmanager
async def binance(ex: LocalExchange) -> AsyncIterator[tuple[AsyncClient, BinanceSocketManager]]:
    """python-binance pointed at the local exchange, exactly as a real client would be."""
    client = AsyncClient()
    client.API_URL = ex.rest_url
    bsm = BinanceSocketManager(client, max_queue_size=100_000)
    bsm.STREAM_URL = ex.ws_url
    try:
        yield client, bsm
    finally:
        await client.close_connection()


def quick_exit(socket: Any) -> Any:
    """Make a python-binance socket close fast even when its stream has gone quiet.

    Its read loop only notices the close request between receives, each waiting up to
    `TIMEOUT` (10 s) for a frame.
    """
    socket.TIMEOUT = 0.2
    return socket


async def recv(socket: Any, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Next message from a python-binance socket, failing fast instead of waiting forever."""
    msg: dict[str, Any] = await asyncio.wait_for(socket.recv(), timeout)
    return msg


async def recv_kline(socket: Any) -> dict[str, Any]:
    """Next kline payload from a raw or multiplex python-binance socket (errors fail)."""
    msg = await recv(socket)
    assert msg.get("e") != "error", msg
    return msg["data"] if "stream" in msg else msg
