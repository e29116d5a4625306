"""A blast: pre-rendered real BTCUSDT kline frames sent back to back to every client.

The local exchange renders each frame when it plays it, which caps it near the speed of a
fast client; then a client faster than the exchange idles between frames and pays a
wake-up per frame, and per-frame CPU figures stop being comparable. This server renders
the whole blast before it listens (``--bars`` real 1m bars of the 2025-08 recording,
``--updates`` frames per bar ending with the ``x:true``; sent ``--start-delay`` s after
the handshake, so a client's start-up is over before the first frame) and answers the
few REST calls a quantcore App makes (exchangeInfo, time, klines: nothing to backfill),
so every client — quantcore with either transport, the bare loops and the optional peers
(cryptofeed reads exchangeInfo too) — reads the same bytes as fast as it can.

Run (bench/end_to_end.py starts it): python bench/blast_server.py [--bars N] [--updates K]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson
from aiohttp import web

from quantcore.sim import ReplaySource
from quantcore.sim.frames import kline_frame, partial_bar

DATA = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "data"
    / "binance_spot_klines_BTCUSDT_1m_2025-08-01_to_2025-08-11.csv.gz"
)


def render(bars: int, updates: int) -> tuple[list[str], int]:
    """The blast's frames (combined-stream form) and the exchange time after it."""
    source = ReplaySource.from_file(DATA, "BTCUSDT")
    frames: list[str] = []
    trade_id = 1_000_000
    played = source.bars(source.first_open_ms, source.first_open_ms + bars * 60_000)
    for bar in played:
        for step in range(1, updates + 1):
            closed = step == updates
            state = bar if closed else partial_bar(bar, step, updates)
            event = bar.open_time + (60_000 if closed else step * 60_000 // updates) + 1
            payload = kline_frame(event, "BTCUSDT", "1m", state, trade_id, closed)
            frames.append(f'{{"stream":"btcusdt@kline_1m","data":{payload}}}')
        trade_id += bar.trades
    return frames, played[-1].close_time + 120_000


def app(frames: list[str], now_ms: int, start_delay: float) -> web.Application:
    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        await asyncio.sleep(start_delay)  # every client is reading before the blast begins
        for frame in frames:
            await ws.send_str(frame)
        async for _ in ws:
            pass
        return ws

    async def exchange_info(request: web.Request) -> web.Response:
        # quantcore reads symbol and status; the assets and the first filter are what
        # cryptofeed's symbol table needs (bench/peers/cryptofeed_client.py).
        symbol = {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01000000"}],
        }
        body = {"timezone": "UTC", "serverTime": now_ms, "rateLimits": [], "symbols": [symbol]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def server_time(request: web.Request) -> web.Response:
        body = orjson.dumps({"serverTime": now_ms})
        return web.Response(body=body, content_type="application/json")

    async def klines(request: web.Request) -> web.Response:
        return web.Response(body=b"[]", content_type="application/json")

    application = web.Application()
    application.router.add_get("/stream", stream)
    application.router.add_get("/api/v3/exchangeInfo", exchange_info)
    application.router.add_get("/api/v3/time", server_time)
    application.router.add_get("/api/v3/klines", klines)
    return application


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=4_000)
    p.add_argument("--updates", type=int, default=10, help="frames per bar, the last x:true")
    p.add_argument(
        "--start-delay", type=float, default=1.0, help="seconds from handshake to first frame"
    )
    args = p.parse_args()
    frames, now_ms = render(args.bars, args.updates)
    runner = web.AppRunner(app(frames, now_ms, args.start_delay), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"blast: ws=ws://127.0.0.1:{port}/ rest=http://127.0.0.1:{port}/api "
          f"frames={len(frames)}", flush=True)  # fmt: skip
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
