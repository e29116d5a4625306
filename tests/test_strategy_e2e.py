"""The example strategy end to end: recorded bars → local exchange → python-binance → App.

SmaCross's signals must equal the crossovers pandas finds offline on the same bars, and
the console must show each one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from quantcore.app import App
from quantcore.consumers.history import HistoryStore
from quantcore.events import Side
from quantcore.sim import LocalExchange, ReplaySource
from strategies.sma_cross import SmaCross
from tests.harness import app_config
from tests.paths import REST_BTC

pytestmark = pytest.mark.timeout(60)

BARS = 300
FAST, SLOW = 10, 30


def offline_signals(closes: pd.Series[float]) -> list[tuple[int, Side]]:
    """(bar index, side) where SMA(FAST) - SMA(SLOW) changes sign, computed with pandas."""
    diff = closes.rolling(FAST).mean() - closes.rolling(SLOW).mean()
    previous = diff.shift(1)
    # Far from zero everywhere, so float summation order cannot flip a sign.
    assert diff.dropna().abs().min() > 1e-6
    buys = (previous <= 0) & (diff > 0)
    sells = (previous >= 0) & (diff < 0)
    return sorted(
        [(int(i), Side.BUY) for i in diff.index[buys]]
        + [(int(i), Side.SELL) for i in diff.index[sells]]
    )


async def test_sma_cross_signals_match_pandas_and_are_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=3) as exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            consumers=[
                {"class": "history"},
                {"class": "console"},
                {"class": "strategies.sma_cross:SmaCross", "params": {"fast": FAST, "slow": SLOW}},
            ],
        )
        app = App(config)
        with caplog.at_level(logging.INFO, logger="quantcore.console"):
            await app.run(max_bars=BARS)
        truth = exchange.closed_klines("BTCUSDT", "1m", since_ms=0)[:BARS]

    store = app.context.find(HistoryStore)
    strategy = app.context.find(SmaCross)
    assert store is not None and strategy is not None
    closes = pd.Series([float(k.close) for k in truth])
    assert store.frame("BTCUSDT", "1m")["close"].tolist() == closes.tolist()

    expected = offline_signals(closes)
    assert len(expected) == 12  # 6 buys, 6 sells in these 300 minutes
    got = [
        (s.symbol, s.interval, s.side, s.price, s.time, s.reason, s.source)
        for s in strategy.signals
    ]
    want = [
        (
            "BTCUSDT",
            "1m",
            side,
            float(truth[i].close),
            datetime.fromtimestamp(truth[i].close_time / 1000, UTC),
            f"SMA{FAST} crossed {'above' if side is Side.BUY else 'below'} SMA{SLOW}",
            "SmaCross",
        )
        for i, side in expected
    ]
    assert got == want

    printed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("signal")]
    assert printed == [
        f"signal  BTCUSDT 1m {stamp:%Y-%m-%d %H:%M} {side.value.upper()} at {price:.2f} "
        f"({reason}) by SmaCross"
        for _, _, side, price, stamp, reason, _ in want
    ]
    assert printed[0].startswith("signal  BTCUSDT 1m 2024-09-04 ")
