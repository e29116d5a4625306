"""Step 2: turn each closed kline into a row and append it to a pandas DataFrame.

    python examples/02_dataframe.py              # live, from Binance (needs internet)
    python examples/02_dataframe.py --local --bars 3

The columns are the backtrader-style table quantcore also uses:
``close, high, low, open, volume, baseVolume, datetime``, where ``volume`` is the
base-asset volume (BTC, Binance ``k.v``) and ``baseVolume`` the quote-asset volume
(USDT, Binance ``k.q``); docs/walkthrough.md explains the names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import pandas as pd
from binance import AsyncClient, BinanceSocketManager

SYMBOL = "BTCUSDT"
INTERVAL = "1m"


def to_row(kline: dict[str, Any]) -> dict[str, Any]:
    """One kline (the message's ``"k"`` object) as a table row.

    Binance sends prices and volumes as decimal strings (no rounding on the wire) and
    times as epoch milliseconds; the bar is labelled by its open time, in UTC.
    """
    return {
        "close": float(kline["c"]),
        "high": float(kline["h"]),
        "low": float(kline["l"]),
        "open": float(kline["o"]),
        "volume": float(kline["v"]),
        "baseVolume": float(kline["q"]),
        "datetime": pd.Timestamp(kline["t"], unit="ms"),
    }


async def collect(bars: int | None, rest_url: str | None, ws_url: str | None) -> pd.DataFrame:
    client = AsyncClient()
    if rest_url is not None:
        client.API_URL = rest_url
    manager = BinanceSocketManager(client, max_queue_size=10_000)
    if ws_url is not None:
        manager.STREAM_URL = ws_url
    frame: pd.DataFrame | None = None
    try:
        async with manager.kline_socket(SYMBOL, interval=INTERVAL) as stream:
            while bars is None or frame is None or len(frame) < bars:
                message: dict[str, Any] = await stream.recv()
                if message.get("e") == "error":
                    print(f"connection problem: {message.get('m')}", file=sys.stderr)
                    continue
                # Only the final version of a bar ("x": true) becomes a row. The ~30
                # "x": false messages before it are snapshots of the same, unfinished
                # minute; appending them too would give 30 rows per bar, all but one stale.
                if not message["k"]["x"]:
                    continue
                row = pd.DataFrame([to_row(message["k"])])
                # The plain way, and why it gets slow: a DataFrame cannot grow in place, so
                # pd.concat allocates a new one and copies every existing row into it. Each
                # append costs O(rows so far); a year of 1m bars (525,600 rows) costs
                # ~10^11 row copies in total. Fine for a few hundred bars; for more, collect
                # rows in a list and build the DataFrame once, or see how quantcore's
                # HistoryStore does it (docs/walkthrough.md).
                frame = row if frame is None else pd.concat([frame, row], ignore_index=True)
                print(f"bar closed; rows in the DataFrame: {len(frame)}, the last ones:")
                print(frame.tail(3).to_string(), flush=True)
    finally:
        await client.close_connection()
    return frame if frame is not None else pd.DataFrame()


async def main() -> None:
    parser = argparse.ArgumentParser(description="Collect BTCUSDT 1m bars in a DataFrame.")
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
        from quantcore.sim import LocalExchange

        async with LocalExchange(symbols=[SYMBOL], seed=7, speed=60) as exchange:
            frame = await collect(args.bars, exchange.rest_url, exchange.ws_url)
    else:
        frame = await collect(args.bars, None, None)
    print(f"done: {len(frame)} rows, columns {list(frame.columns)}")
    print(frame.dtypes.to_string())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
