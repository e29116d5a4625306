"""Step 1: subscribe to BTC-USDT 1-minute klines with python-binance and print every message.

    python examples/01_print_klines.py              # live, from Binance (needs internet)
    python examples/01_print_klines.py --local      # offline, from a local exchange
    python examples/01_print_klines.py --local --bars 3

A kline (candlestick) stream sends the bar that is currently forming every time it
changes (Binance: about every 2 s) with ``"x": false``, then once more with
``"x": true`` when the minute is over. That last message is the final bar.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from binance import AsyncClient, BinanceSocketManager

# Binance writes the pair without a dash: BTC-USDT is "BTCUSDT".
SYMBOL = "BTCUSDT"
INTERVAL = "1m"


async def print_klines(bars: int | None, rest_url: str | None, ws_url: str | None) -> None:
    # AsyncClient.create() would first ping Binance's REST API; the plain constructor
    # sends nothing, so we can still change where it points. A stream needs no API key.
    client = AsyncClient()
    if rest_url is not None:
        # python-binance has no constructor argument for its base URLs: set the attributes.
        client.API_URL = rest_url
    # The socket manager buffers messages in a queue between the network and recv().
    # The default holds 100; if your code falls behind and it fills up, python-binance
    # stops reading and every later message is lost. So make it big.
    manager = BinanceSocketManager(client, max_queue_size=10_000)
    if ws_url is not None:
        manager.STREAM_URL = ws_url
    closed = 0
    try:
        async with manager.kline_socket(SYMBOL, interval=INTERVAL) as stream:
            while bars is None or closed < bars:
                message: dict[str, Any] = await stream.recv()
                if message.get("e") == "error":
                    # python-binance reports a dropped connection as a message, not an
                    # exception, and reconnects by itself. Bars that closed meanwhile are lost.
                    print(f"connection problem: {message.get('m')}", file=sys.stderr)
                    continue
                print(message, flush=True)
                if message["k"]["x"]:
                    closed += 1
    finally:
        await client.close_connection()


async def main() -> None:
    parser = argparse.ArgumentParser(description="Print every BTCUSDT 1m kline message.")
    parser.add_argument(
        "--local",
        action="store_true",
        help="use quantcore's local exchange on 127.0.0.1 (60x speed) instead of Binance",
    )
    parser.add_argument("--bars", type=int, metavar="N", help="stop after N closed bars")
    args = parser.parse_args()
    if args.bars is not None and args.bars < 1:
        parser.error("--bars must be at least 1")
    if args.local:
        # The only quantcore import of steps 1-3: a Binance look-alike on 127.0.0.1 that
        # plays generated (seeded, reproducible) BTCUSDT klines, one market minute per
        # second, so you can try this offline without waiting a minute per bar.
        from quantcore.sim import LocalExchange

        async with LocalExchange(symbols=[SYMBOL], seed=7, speed=60) as exchange:
            await print_klines(args.bars, exchange.rest_url, exchange.ws_url)
    else:
        await print_klines(args.bars, None, None)


if __name__ == "__main__":
    # Ctrl-C ends the script quietly; the `async with` blocks above still close everything.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
