"""Step 3: append one line per closed BTC-USDT 1m bar to a CSV file, so it grows every minute.

    python examples/03_csv.py                   # live, from Binance: data/examples/BTCUSDT_1m.csv
    python examples/03_csv.py --local --bars 3  # offline: data/examples/BTCUSDT_1m_local.csv
    tail -f data/examples/BTCUSDT_1m.csv        # in another terminal, watch it grow

Run it again and it appends to the same file: the header is written only once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from binance import AsyncClient, BinanceSocketManager

SYMBOL = "BTCUSDT"
INTERVAL = "1m"
HEADER = "close,high,low,open,volume,baseVolume,datetime\n"


def to_line(kline: dict[str, Any]) -> str:
    """One CSV line. Prices and volumes are written exactly as Binance sent them (decimal
    strings), so nothing is rounded; the bar is labelled by its open time in UTC."""
    opened = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(kline["t"] // 1000))
    return (
        f"{kline['c']},{kline['h']},{kline['l']},{kline['o']},{kline['v']},{kline['q']},{opened}\n"
    )


def open_csv(path: Path) -> TextIO:
    """Open ``path`` for appending and write the header only if the file is new or empty.

    Mode "a" never rewrites what is already there: every write goes to the end. (A few
    small local file operations like these are fine inside asyncio code; slow or
    networked I/O would block every other task and belongs in an ``await``.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    is_new = not path.exists() or path.stat().st_size == 0
    file = path.open("a", encoding="ascii", newline="")
    if is_new:
        file.write(HEADER)
    return file


async def record(out: Path, bars: int | None, rest_url: str | None, ws_url: str | None) -> None:
    client = AsyncClient()
    if rest_url is not None:
        client.API_URL = rest_url
    manager = BinanceSocketManager(client, max_queue_size=10_000)
    if ws_url is not None:
        manager.STREAM_URL = ws_url
    written = 0
    try:
        with open_csv(out) as file:
            async with manager.kline_socket(SYMBOL, interval=INTERVAL) as stream:
                while bars is None or written < bars:
                    message: dict[str, Any] = await stream.recv()
                    if message.get("e") == "error":
                        print(f"connection problem: {message.get('m')}", file=sys.stderr)
                        continue
                    if not message["k"]["x"]:
                        continue  # still forming: only the final version is a row
                    line = to_line(message["k"])
                    file.write(line)
                    # Without flush() the line may sit in Python's buffer for many minutes
                    # (and be lost if the process is killed); flush() hands it to the OS now.
                    file.flush()
                    written += 1
                    print(f"appended to {out}: {line}", end="", flush=True)
    finally:
        await client.close_connection()
    # What this simple version does not handle (quantcore does, see docs/walkthrough.md):
    # bars that close while the script is stopped or reconnecting are missing from the
    # file; nothing compares a new bar with the file's last row, so running it twice in
    # a row with --local appends bars the first run already wrote (the local market
    # restarts at the current minute); and a crash in the middle of a write leaves half
    # a line that every later reader trips over.


async def main() -> None:
    parser = argparse.ArgumentParser(description="Append BTCUSDT 1m bars to a CSV file.")
    parser.add_argument(
        "--local",
        action="store_true",
        help="use quantcore's local exchange on 127.0.0.1 (60x speed) instead of Binance",
    )
    parser.add_argument("--bars", type=int, metavar="N", help="stop after N closed bars")
    parser.add_argument("--out", type=Path, help="CSV file to append to")
    args = parser.parse_args()
    if args.bars is not None and args.bars < 1:
        parser.error("--bars must be at least 1")
    # Never mix generated and real bars in one file: the default name says which it is.
    name = f"{SYMBOL}_{INTERVAL}{'_local' if args.local else ''}.csv"
    out: Path = args.out or Path("data") / "examples" / name
    if args.local:
        from quantcore.sim import LocalExchange

        async with LocalExchange(symbols=[SYMBOL], seed=7, speed=60) as exchange:
            await record(out, args.bars, exchange.rest_url, exchange.ws_url)
    else:
        await record(out, args.bars, None, None)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
