"""backtrader baseline for bench/replay.py: an SMA cross over a quantcore CSV.

Runs in the peers' own venv (backtrader is not a quantcore dependency); reads the CSV with
``GenericCSVData`` in quantcore's column order and prints one JSON line: bars, seconds
(``cerebro.run``, CSV parsing included) and the crossings it saw.
"""

from __future__ import annotations

import argparse
import json
import time

import backtrader as bt


class SmaCross(bt.Strategy):  # type: ignore[misc]
    params = (("fast", 50), ("slow", 200))

    def __init__(self) -> None:
        fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
        slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
        self.cross = bt.indicators.CrossOver(fast, slow)
        self.bars = 0
        self.crossings = 0

    def next(self) -> None:
        self.bars += 1
        if self.cross[0] != 0:
            self.crossings += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--csv", required=True)
    p.add_argument("--fast", type=int, default=50)
    p.add_argument("--slow", type=int, default=200)
    args = p.parse_args()
    cerebro = bt.Cerebro(stdstats=False)
    data = bt.feeds.GenericCSVData(
        dataname=args.csv,
        dtformat="%Y-%m-%d %H:%M:%S",
        timeframe=bt.TimeFrame.Minutes,
        close=0, high=1, low=2, open=3, volume=4, openinterest=-1, datetime=6,
    )  # fmt: skip
    cerebro.adddata(data)
    cerebro.addstrategy(SmaCross, fast=args.fast, slow=args.slow)
    started = time.perf_counter()
    [strategy] = cerebro.run()
    seconds = time.perf_counter() - started
    bars = len(strategy.data)
    print(json.dumps({"bars": bars, "seconds": seconds, "crossings": strategy.crossings,
                      "version": bt.__version__}))  # fmt: skip


if __name__ == "__main__":
    main()
