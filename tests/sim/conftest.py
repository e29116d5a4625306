"""Shared helpers for the local-exchange tests: data paths and python-binance clients."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager

from quantcore.sim import LocalExchange
from tests.paths import CSV_BTC as CSV_12
from tests.paths import CSV_OHLCV as CSV_6
from tests.paths import DATA, REST_BTC, WS_3SYM, WS_BTC
from tests.paths import REPO as REPO_ROOT

__all__ = ["CSV_6", "CSV_12", "DATA", "REPO_ROOT", "REST_BTC", "WS_3SYM", "WS_BTC"]


@pytest.fixture(autouse=True, scope="session")
def _data_present() -> None:
    if not REST_BTC.exists():
        pytest.fail(f"recorded data missing: {DATA} (tests/data is part of the repository)")


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
