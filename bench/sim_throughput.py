"""Throughput of the local exchange (quantcore.sim) as seen by python-binance clients.

1. speed=max, one symbol: frames/s one python-binance kline socket receives, with the
   exchange in a separate process (`python -m quantcore.sim`) and in-process.
2. 2,000 symbols at speed=1 with one update per stream every 2 s (Binance's pace) over two
   combined sockets (1,024 streams max each): frames/s received and event-time lag.

Run: python bench/sim_throughput.py [seconds]
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import warnings
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager

from quantcore.sim import LocalExchange


class _Urls:
    def __init__(self, ws_url: str, rest_url: str) -> None:
        self.ws_url, self.rest_url = ws_url, rest_url


def _manager(urls: Any) -> tuple[AsyncClient, BinanceSocketManager]:
    client = AsyncClient()
    client.API_URL = urls.rest_url
    bsm = BinanceSocketManager(client, max_queue_size=1_000_000)
    bsm.STREAM_URL = urls.ws_url
    return client, bsm


async def _count(socket: Any, seconds: float) -> float:
    await socket.recv()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        await socket.recv()
        n += 1
    return n / elapsed


async def max_speed_subprocess(seconds: float) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantcore.sim", "--speed", "max", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        match = re.search(r"ws=(\S+) rest=(\S+)", line)
        assert match, line
        client, bsm = _manager(_Urls(match.group(1), match.group(2)))
        async with bsm.kline_socket("BTCUSDT") as socket:
            rate = await _count(socket, seconds)
            socket.TIMEOUT = 0.1
        await client.close_connection()
        return rate
    finally:
        proc.terminate()
        await proc.wait()


async def max_speed_in_process(seconds: float) -> float:
    async with LocalExchange(symbols=["BTCUSDT"]) as ex:
        client, bsm = _manager(ex)
        async with bsm.kline_socket("BTCUSDT") as socket:
            rate = await _count(socket, seconds)
            socket.TIMEOUT = 0.1
        await client.close_connection()
        return rate


async def many_symbols(seconds: float, count: int = 2_000) -> tuple[float, float, float]:
    """Steady-state frames/s and worst event-time lag (after a warm-up of the first burst)."""
    symbols = [f"S{i:04d}USDT" for i in range(count)]
    async with LocalExchange(symbols=symbols, speed=1.0, updates_per_bar=30) as ex:
        client, bsm = _manager(ex)
        names = [f"{s.lower()}@kline_1m" for s in symbols]
        sockets = [bsm.multiplex_socket(names[i : i + 1024]) for i in range(0, count, 1024)]
        for socket in sockets:
            await socket.__aenter__()
        started = time.perf_counter()
        warm = 0.0
        received, worst_lag = 0, 0
        end = started + 60.0

        async def drain(socket: Any) -> None:
            nonlocal received, worst_lag, warm, end
            while time.perf_counter() < end:
                msg = await socket.recv()
                if not warm:
                    warm = time.perf_counter() + 2.5  # let the first (cold) burst pass
                    end = warm + seconds
                elif time.perf_counter() >= warm:
                    received += 1
                    worst_lag = max(worst_lag, ex.now_ms - msg["data"]["E"])

        await asyncio.gather(*(drain(s) for s in sockets))
        for socket in sockets:
            socket.TIMEOUT = 0.1
            await socket.__aexit__(None, None, None)
        await client.close_connection()
        return received / seconds, worst_lag / 1000, warm - 2.5 - started


async def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    print(
        f"speed=max, exchange in a subprocess: {await max_speed_subprocess(seconds):,.0f} frames/s"
    )
    print(
        f"speed=max, exchange in-process:      {await max_speed_in_process(seconds):,.0f} frames/s"
    )
    rate, lag, first = await many_symbols(max(seconds, 10.0))
    print(f"2,000 symbols x 1 update/2 s:        {rate:,.0f} frames/s (expected ~1,000), "
          f"worst lag {lag:.2f} s, first frame after {first:.1f} s")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
