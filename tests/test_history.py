"""HistoryStore: exact columns and values, lazy cached frames, snapshots, max_rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from quantcore.consumers.history import COLUMNS, HistoryStore
from quantcore.events import BarEvent

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
