"""Step 4: steps 1-3 with quantcore, plus a subscriber of your own.

    python examples/04_quantcore.py                   # live, from Binance (needs internet)
    python examples/04_quantcore.py --local --bars 3  # offline, from the local exchange

The config below is the same as a YAML file for ``python -m quantcore run``: one
stream, and three built-in consumers on the event bus: ``history`` (step 2's
DataFrame, without the O(n) appends), ``csv`` (step 3's file, safe across restarts)
and ``console`` (step 1's print, one line per closed bar). The feed behind them
reconnects forever and fills any gap over REST, so no bar is lost or repeated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from quantcore import App, BarEvent, Component, HistoryStore, parse_config


class CloseVsAverage(Component):
    """A custom subscriber: compares each closed bar with the average of the last few.

    Overriding ``on_bar`` is all it takes to receive every closed bar, once, in order.
    ``on_bar_partial`` would get the ``x: false`` updates; ``on_feed_status`` the
    connection events.
    """

    def __init__(self, *, window: int = 5, name: str | None = None) -> None:
        super().__init__(name=name)
        self.window = window

    def on_bar(self, bar: BarEvent) -> None:
        # Components find each other through their context. The HistoryStore is listed
        # before us, so it has already added this bar: subscribers run in that order.
        store = self.context.find(HistoryStore)
        if store is None:
            return
        # frame() is cheap to call on every bar: the store builds the DataFrame only
        # when asked, on top of its numpy columns, and caches it until the next bar.
        closes = store.frame(bar.symbol, bar.interval)["close"].tail(self.window)
        change = bar.close / closes.mean() - 1
        print(
            f"{self.name}: {bar.symbol} {bar.open_time:%H:%M} close {bar.close:.2f} is "
            f"{change:+.3%} vs the mean of the last {len(closes)} closes",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description="Record BTCUSDT 1m bars with quantcore.")
    parser.add_argument(
        "--local",
        action="store_true",
        help="start quantcore's local exchange on 127.0.0.1 (60x speed) instead of Binance",
    )
    parser.add_argument("--bars", type=int, metavar="N", help="stop after N closed bars")
    parser.add_argument(
        "--out", help="CSV path; {symbol} and {interval} are filled in (default: data/...)"
    )
    args = parser.parse_args()
    if args.bars is not None and args.bars < 1:
        parser.error("--bars must be at least 1")
    # Keep generated bars out of the file that holds real ones.
    out = args.out or ("data/local/" if args.local else "data/") + "{symbol}_{interval}.csv"
    raw: dict[str, Any] = {
        # No URLs means Binance; "local" starts the local exchange in-process instead.
        "exchange": {"local": {"speed": 60, "seed": 7}} if args.local else {},
        "streams": [{"symbol": "BTC-USDT", "interval": "1m"}],
        "consumers": [
            {"class": "history"},
            {"class": "csv", "params": {"path": out}},
            {"class": "console"},
        ],
    }
    config = parse_config(raw)  # validates everything before anything connects
    app = App(config, extra_components=[CloseVsAverage(window=5)])
    summary = await app.run(max_bars=args.bars)  # Ctrl-C stops it cleanly too

    store = app.context.find(HistoryStore)
    assert store is not None
    frame = store.frame("BTCUSDT", "1m")
    print(f"HistoryStore: {len(frame)} rows, columns {list(frame.columns)}")
    print(frame.tail(5).to_string())
    print(summary.line())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
