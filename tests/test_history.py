"""HistoryStore: exact columns and values, lazy cached frames, snapshots, max_rows."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.consumers.history import COLUMNS, HistoryStore
from quantcore.events import BAR_PARTIAL, BarEvent
from quantcore.sim import LocalExchange, ReplaySource
from tests.harness import app_config, csv_rows
from tests.paths import REST_BTC

T0 = datetime(2024, 9, 4, 2, 27, tzinfo=UTC)


def make_bar(i: int, closed: bool = True, symbol: str = "BTCUSDT") -> BarEvent:
    start = T0 + timedelta(minutes=i)
    price = 50_000.0 + i
    return BarEvent(
        symbol,
        "1m",
        start,
        start + timedelta(milliseconds=59_999),
        price,
        price + 2.5,
        price - 1.25,
        price + 0.5,
        10.0 + i,
        (10.0 + i) * price,
        100 + i,
        4.0,
        4.0 * price,
        closed,
        start + timedelta(minutes=1),
    )


def test_columns_values_and_dtypes() -> None:
    store = HistoryStore()
    for i in range(3):
        store.on_bar(make_bar(i))
    df = store.frame("BTCUSDT", "1m")
    assert tuple(df.columns) == COLUMNS
    assert df["close"].tolist() == [50_000.5, 50_001.5, 50_002.5]
    assert df["high"].tolist() == [50_002.5, 50_003.5, 50_004.5]
    assert df["low"].tolist() == [49_998.75, 49_999.75, 50_000.75]
    assert df["open"].tolist() == [50_000.0, 50_001.0, 50_002.0]
    assert df["volume"].tolist() == [10.0, 11.0, 12.0]
    assert df["baseVolume"].tolist() == [500_000.0, 11 * 50_001.0, 12 * 50_002.0]
    assert df["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S").tolist() == [
        "2024-09-04 02:27:00",
        "2024-09-04 02:28:00",
        "2024-09-04 02:29:00",
    ]
    assert str(df["datetime"].dtype) == "datetime64[ms]"
    assert store.count("BTCUSDT", "1m") == 3


def test_frame_cached_until_next_bar_and_snapshots_stay_put() -> None:
    store = HistoryStore()
    for i in range(5000):
        store.on_bar(make_bar(i))
    first = store.frame("BTCUSDT", "1m")
    assert store.frame("BTCUSDT", "1m") is first
    store.on_bar(make_bar(5000))
    second = store.frame("BTCUSDT", "1m")
    assert second is not first and len(first) == 5000 and len(second) == 5001
    assert first["open"].iloc[-1] == 54_999.0
    for i in range(5001, 20_000):
        store.on_bar(make_bar(i))
    assert len(first) == 5000 and first["open"].iloc[0] == 50_000.0
    full = store.frame("BTCUSDT", "1m")
    np.testing.assert_array_equal(full["open"].to_numpy(), 50_000.0 + np.arange(20_000))


def test_max_rows_keeps_latest() -> None:
    store = HistoryStore(max_rows=1000)
    for i in range(10_500):
        store.on_bar(make_bar(i))
    df = store.frame("BTCUSDT", "1m")
    assert len(df) == 1000 and store.count("BTCUSDT", "1m") == 1000
    np.testing.assert_array_equal(df["open"].to_numpy(), 50_000.0 + np.arange(9_500, 10_500))
    assert df["datetime"].iloc[-1] == pd.Timestamp("2024-09-04 02:27") + pd.Timedelta(
        minutes=10_499
    )


def test_current_partial_and_per_stream_separation() -> None:
    store = HistoryStore()
    store.on_bar(make_bar(0))
    partial = make_bar(1, closed=False)
    store.on_bar_partial(partial)
    assert store.current("BTCUSDT", "1m") is partial
    store.on_bar(make_bar(1))
    assert store.current("BTCUSDT", "1m") is None
    store.on_bar(make_bar(0, symbol="ETHUSDT"))
    assert store.count("BTCUSDT", "1m") == 2 and store.count("ETHUSDT", "1m") == 1
    empty = store.frame("DOTUSDT", "1m")
    assert tuple(empty.columns) == COLUMNS and len(empty) == 0


def test_current_is_asked_of_the_feed_without_a_partial_subscription() -> None:
    """By default nobody subscribes to ``bar.partial`` for the store: the feed keeps its
    forming bars and converts one only when :meth:`HistoryStore.current` asks."""
    asked: list[tuple[str, str]] = []
    forming = make_bar(5, closed=False)

    def feed_forming(symbol: str, interval: str) -> BarEvent | None:
        asked.append((symbol, interval))
        return forming if symbol == "BTCUSDT" else None

    bus = EventBus()
    store = HistoryStore()
    store.attach(Context(bus, forming=feed_forming))
    assert not bus.has_subscribers(BAR_PARTIAL)
    assert store.current("BTCUSDT", "1m") is forming
    assert store.current("ETHUSDT", "1m") is None
    assert asked == [("BTCUSDT", "1m"), ("ETHUSDT", "1m")]
    subscribed = HistoryStore(partials=True)
    subscribed.attach(Context(EventBus()))
    assert subscribed.context.bus.has_subscribers(BAR_PARTIAL)


class _Sampler(Component):
    """Reads ``HistoryStore.current`` every few ms while the App runs, and notes the last
    closed bar published at each read."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[BarEvent, int | None]] = []
        self.last_closed: int | None = None
        self._task: asyncio.Task[None] | None = None

    def on_bar(self, bar: BarEvent) -> None:
        self.last_closed = bar.open_time_ms

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        store = self.context.find(HistoryStore)
        assert store is not None
        while True:
            await asyncio.sleep(0.003)
            bar = store.current("BTCUSDT", "1m")
            if bar is not None:
                self.samples.append((bar, self.last_closed))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def test_current_end_to_end_is_the_forming_bar_with_the_exchange_strings(
    tmp_path: Path,
) -> None:
    """Against the local exchange, no ``bar.partial`` subscriber: every bar ``current``
    returns is still forming (newer than the last closed bar), opened at the price its
    closed bar shows in the CSV, and within that bar's final range (exact decimals)."""
    sampler = _Sampler()
    async with LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=20) as exchange:
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"))
        app = App(config, extra_components=[sampler])
        await app.run(max_bars=30)
    assert not app.bus.has_subscribers(BAR_PARTIAL)
    closed = {
        int(pd.Timestamp(row[6]).timestamp() * 1000): row
        for row in csv_rows(tmp_path / "BTCUSDT_1m.csv")
    }
    checked = 0
    for bar, last_closed in sampler.samples:
        assert not bar.closed
        assert last_closed is None or bar.open_time_ms > last_closed
        row = closed.get(bar.open_time_ms)
        if row is None:
            continue  # a bar still forming when the run ended
        exact = bar.decimal_strings()
        h, lo, o = (Decimal(v) for v in row[1:4])
        assert exact.open == row[3]
        assert lo <= Decimal(exact.low) <= Decimal(exact.high) <= h
        assert lo <= Decimal(exact.close) <= h and Decimal(exact.volume) <= Decimal(row[4])
        assert bar.close == float(exact.close) and bar.open == float(o)
        checked += 1
    # the run lasts a fraction of a second at the exchange's pace: how many 3 ms samples
    # land on bars that then closed depends on the machine's load (12 to 30 seen)
    assert checked >= 5, (checked, len(sampler.samples))
