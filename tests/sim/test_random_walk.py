"""The synthetic market: deterministic, a pure function of time, exactly aggregatable."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.sim import RandomWalkSource, aggregate, interval_ms
from quantcore.sim.generator import ORIGIN_MS
from quantcore.sim.klines import DAY_MS, Bar

T0 = 1_725_000_000_000 // DAY_MS * DAY_MS  # 2024-08-30 00:00 UTC


def _check(bar: Bar) -> None:
    assert bar.problem() is None, bar
    assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
    assert bar.volume > 0 and bar.quote_volume > 0 and bar.trades > 0
    assert bar.taker_base <= bar.volume and bar.taker_quote <= bar.quote_volume


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    a = RandomWalkSource("BTCUSDT", seed=7).klines(T0, T0 + DAY_MS)
    b = RandomWalkSource("BTCUSDT", seed=7).klines(T0, T0 + DAY_MS)
    c = RandomWalkSource("BTCUSDT", seed=8).klines(T0, T0 + DAY_MS)
    assert len(a) == 1440
    assert a == b
    assert a != c


def test_bars_do_not_depend_on_the_order_they_are_computed_in() -> None:
    forward = RandomWalkSource("ETHUSDT", seed=1)
    backward = RandomWalkSource("ETHUSDT", seed=1)
    times = [T0 + i * 3_600_000 + 17 * 60_000 for i in range(0, 24 * 40, 7)]
    first = [forward.bar(t) for t in times]
    second = [backward.bar(t) for t in reversed(times)]
    assert first == list(reversed(second))
    assert all(bar is not None for bar in first)


def test_history_reaches_back_to_2017_and_is_continuous() -> None:
    source = RandomWalkSource("BTCUSDT")
    assert source.first_open_ms == ORIGIN_MS
    assert source.next_open_ms(0) == ORIGIN_MS
    bars = source.bars(T0 - 2 * 3_600_000, T0 + 2 * 3_600_000)
    assert len(bars) == 240
    for prev, bar in itertools.pairwise(bars):
        assert bar.open == prev.close  # minute-to-minute (and day-to-day) continuity
        _check(bar)


def test_levels_are_realistic_and_differ_by_symbol() -> None:
    btc = RandomWalkSource("BTCUSDT").klines(T0, T0 + 60_000)[0]
    assert 30_000 < float(btc.close) < 120_000
    other = RandomWalkSource("FOOUSDT").klines(T0, T0 + 60_000)[0]
    assert other.close != btc.close


def test_higher_intervals_are_aggregates_of_1m() -> None:
    minutes = RandomWalkSource("BTCUSDT", seed=3).klines(T0, T0 + 2 * DAY_MS)
    for name in ("5m", "1h", "4h", "1d"):
        native = RandomWalkSource("BTCUSDT", name, seed=3).klines(T0, T0 + 2 * DAY_MS)
        assert native == aggregate(minutes, name), name
        length = interval_ms(name)
        via_source = RandomWalkSource("BTCUSDT", seed=3).aggregated(length, T0, T0 + 2 * DAY_MS)
        assert [b.kline() for b in via_source] == native


@settings(max_examples=25, deadline=None)
@given(
    minute=st.integers(min_value=0, max_value=(T0 - ORIGIN_MS) // 60_000 + 50_000),
    seed=st.integers(min_value=0, max_value=2**32),
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "DOGEUSDT", "ABCBTC", "ZZZUSDT"]),
)
def test_any_bar_is_consistent(minute: int, seed: int, symbol: str) -> None:
    source = RandomWalkSource(symbol, seed=seed)
    t = ORIGIN_MS + minute * 60_000
    bar = source.bar(t)
    assert bar is not None
    assert (bar.open_time, bar.close_time) == (t, t + 59_999)
    _check(bar)
    assert RandomWalkSource(symbol, seed=seed).bar(t) == bar
