"""Component: auto-subscription by overridden handler, lifecycle, the example strategy."""

from __future__ import annotations

import json

import pandas as pd

from quantcore import BAR, BAR_PARTIAL, SIGNAL, BarEvent, Component, Context, EventBus, SignalEvent
from quantcore.feeds.binance.codec import KlineCodec
from strategies.sma_cross import SmaCross
from tests.paths import REST_BTC
from tests.test_history import make_bar


class Recorder(Component):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[BarEvent] = []

    def on_bar(self, bar: BarEvent) -> None:
        self.bars.append(bar)


def test_subscribes_only_overridden_handlers() -> None:
    bus = EventBus()
    recorder = Recorder()
    recorder.attach(Context(bus))
    assert bus.has_subscribers(BAR) and not bus.has_subscribers(BAR_PARTIAL)
    bus.publish(BAR, make_bar(0))
    bus.publish(BAR_PARTIAL, make_bar(1, closed=False))
    assert [b.open for b in recorder.bars] == [50_000.0]
    recorder.detach()
    bus.publish(BAR, make_bar(2))
    assert len(recorder.bars) == 1


def test_sma_cross_signals_equal_pandas() -> None:
    rows = json.loads(REST_BTC.read_text())
    codec = KlineCodec()
    bars = [codec.parse_rest_row("BTCUSDT", "1m", row) for row in rows]
    bus = EventBus()
    strategy = SmaCross(fast=5, slow=20)
    strategy.attach(Context(bus))
    published: list[SignalEvent] = []
    bus.subscribe(SIGNAL, published.append)
    for bar in bars:
        bus.publish(BAR, bar)

    close = pd.Series([b.close for b in bars])
    diff = close.rolling(5).mean() - close.rolling(20).mean()
    prev = diff.shift()
    buys = ((prev <= 0) & (diff > 0)).to_numpy().nonzero()[0]
    sells = ((prev >= 0) & (diff < 0)).to_numpy().nonzero()[0]
    expected = sorted([(i, "buy") for i in buys] + [(i, "sell") for i in sells])
    got = [
        (next(i for i, b in enumerate(bars) if b.close_time == s.time), s.side.value)
        for s in published
    ]
    assert len(expected) > 20
    assert got == expected
    assert published == strategy.signals
