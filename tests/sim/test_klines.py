"""Kline value form, interval arithmetic and exact aggregation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from quantcore.sim import INTERVALS, Kline, aggregate, bucket_start, interval_ms, normalize
from quantcore.sim.klines import Bar, to_units, units_str

ROW = [
    1725416820000,
    "56714.00000000",
    "56714.01000000",
    "56634.00000000",
    "56642.00000000",
    "11.02444000",
    1725416879999,
    "624782.95032640",
    1425,
    "2.24261000",
    "127055.79808400",
    "0",
]


def test_interval_table_matches_binance() -> None:
    assert list(INTERVALS) == [
        "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
        "1w",
    ]  # fmt: skip
    assert interval_ms("1m") == 60_000
    assert interval_ms("1w") == 604_800_000
    with pytest.raises(ValueError, match="1M"):
        interval_ms("1M")
    with pytest.raises(ValueError, match="'7m' is not a fixed-length Binance interval"):
        interval_ms("7m")


def test_buckets_align_to_epoch_and_weeks_to_monday() -> None:
    t = int(datetime(2024, 9, 4, 19, 7, 31, tzinfo=UTC).timestamp() * 1000)
    assert bucket_start(t, interval_ms("5m")) == int(
        datetime(2024, 9, 4, 19, 5, tzinfo=UTC).timestamp() * 1000
    )
    week = bucket_start(t, interval_ms("1w"))
    monday = datetime.fromtimestamp(week / 1000, UTC)
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 0, 0)
    assert monday.date().isoformat() == "2024-09-02"


def test_numbers_are_normalised_exactly() -> None:
    assert normalize("115729.0") == "115729.00000000"
    assert normalize("1e-05") == "0.00001000"
    assert normalize("1374354.6403012") == "1374354.64030120"
    assert units_str(to_units("0.00000001")) == "0.00000001"
    with pytest.raises(ValueError, match="more than 8 decimals"):
        to_units("0.000000001")
    with pytest.raises(ValueError):
        to_units("-1")


def test_units_are_printed_as_the_exact_decimal_on_both_sides_of_one_unit() -> None:
    """The sliced fast path (from 1.00000000 on) and the divided one agree with Decimal."""
    edges = [0, 1, 99_999_999, 100_000_000, 100_000_001, 999_999_999, 1_000_000_000]
    values = [*edges, *range(0, 10**17, 7_777_777_777_777), 5_671_400_000_000, 10**20 + 3]
    for units in values:
        assert units_str(units) == f"{Decimal(units).scaleb(-8):.8f}", units
        assert to_units(units_str(units)) == units
    with pytest.raises(ValueError):
        to_units("abc")


def test_kline_round_trips_the_rest_array() -> None:
    kline = Kline.from_rest(ROW)
    assert kline.to_rest() == ROW
    assert kline.interval_ms == 60_000
    assert kline.units().kline() == kline


def test_aggregation_is_exact() -> None:
    bars = [
        Bar(0, 59_999, 100, 150, 90, 120, 5, 600, 3, 2, 240),
        Bar(60_000, 119_999, 120, 130, 80, 110, 7, 800, 4, 1, 110),
        Bar(120_000, 179_999, 110, 200, 100, 105, 1, 100, 1, 0, 0),
        Bar(180_000, 239_999, 105, 106, 104, 106, 3, 318, 2, 3, 318),
    ]
    klines = [b.kline() for b in bars]
    three = aggregate(klines, "3m")
    assert [k.open_time for k in three] == [0, 180_000]
    first = three[0]
    assert first.close_time == 179_999
    assert (first.open, first.high, first.low, first.close) == (
        units_str(100),
        units_str(200),
        units_str(80),
        units_str(105),
    )
    assert first.volume == units_str(13)
    assert first.quote_volume == units_str(1500)
    assert first.trades == 8
    assert (first.taker_buy_base, first.taker_buy_quote) == (units_str(3), units_str(350))
    assert three[1] == Kline(
        open_time=180_000,
        open=units_str(105),
        high=units_str(106),
        low=units_str(104),
        close=units_str(106),
        volume=units_str(3),
        close_time=359_999,
        quote_volume=units_str(318),
        trades=2,
        taker_buy_base=units_str(3),
        taker_buy_quote=units_str(318),
    )
