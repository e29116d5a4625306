"""BarAggregator: 1m bars → 5m/15m/1h bars equal to what Binance (the local exchange) serves.

Unit tests pin the bucket rules on hand-made bars; the end-to-end test replays recorded
1m data through the local exchange and real python-binance and compares every aggregated
bar with the exchange's own 5m/15m/1h klines built from the same 1m history.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from quantcore import BarDecimals, BarEvent, Component
from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.component import Context
from quantcore.config import ConfigError, load_config, parse_config
from quantcore.consumers.aggregator import BarAggregator
from quantcore.consumers.history import HistoryStore
from quantcore.intervals import bucket_start
from quantcore.sim import Kline, LocalExchange, ReplaySource
from tests.harness import app_config, csv_rows
from tests.paths import REPO, REST_BTC

pytestmark = pytest.mark.timeout(60)

T0 = 1_725_408_000_000
"""2024-09-04 00:00 UTC: a 1h (and 5m, 15m) boundary."""
MIN = 60_000


def ms_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def one_minute(i: int, symbol: str = "BTCUSDT", interval: str = "1m") -> BarEvent:
    """The bar opening ``i`` minutes after T0, with values derived from ``i``."""
    base = 100.0 + i
    return BarEvent(
        symbol=symbol,
        interval=interval,
        open_time=ms_dt(T0 + i * MIN),
        close_time=ms_dt(T0 + (i + 1) * MIN - 1),
        open=base,
        high=base + 2 + (i % 3),
        low=base - 1 - (i % 2),
        close=base + 0.5,
        volume=1.0 + i,
        quote_volume=100.0 * (1 + i),
        trades=10 + i,
        taker_buy_volume=0.5 + i,
        taker_buy_quote_volume=50.0 + i,
        closed=True,
        event_time=ms_dt(T0 + (i + 1) * MIN + 3),
        received_ns=1_000 + i,
    )


class Collector(Component):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[BarEvent] = []

    def on_bar(self, bar: BarEvent) -> None:
        self.bars.append(bar)

    def of(self, interval: str) -> list[BarEvent]:
        return [b for b in self.bars if b.interval == interval]


async def attached(
    *components: Component, streams: tuple[tuple[str, str], ...] = (("BTCUSDT", "1m"),)
) -> EventBus:
    """Attach then start, as the App does (the aggregator subscribes in ``start``)."""
    bus = EventBus()
    context = Context(bus, streams, list(components))
    for component in components:
        component.attach(context)
    for component in components:
        await component.start()
    return bus


async def test_buckets_from_hand_made_bars() -> None:
    aggregator = BarAggregator(intervals=["5m", "15m"])
    collector = Collector()
    bus = await attached(aggregator, collector)
    for i in range(3, 31):  # 00:03 .. 00:30: the 00:00 buckets are incomplete
        bus.publish("bar", one_minute(i))

    five = collector.of("5m")
    assert [b.open_time_ms for b in five] == [T0 + m * MIN for m in (5, 10, 15, 20, 25)]
    first = five[0]
    assert first == BarEvent(
        symbol="BTCUSDT",
        interval="5m",
        open_time=ms_dt(T0 + 5 * MIN),
        close_time=ms_dt(T0 + 10 * MIN - 1),
        open=105.0,
        high=max(100.0 + i + 2 + i % 3 for i in range(5, 10)),
        low=min(100.0 + i - 1 - i % 2 for i in range(5, 10)),
        close=109.5,
        volume=sum(1.0 + i for i in range(5, 10)),
        quote_volume=sum(100.0 * (1 + i) for i in range(5, 10)),
        trades=sum(10 + i for i in range(5, 10)),
        taker_buy_volume=sum(0.5 + i for i in range(5, 10)),
        taker_buy_quote_volume=sum(50.0 + i for i in range(5, 10)),
        closed=True,
        event_time=ms_dt(T0 + 10 * MIN - 1),
        received_ns=1_009,
        decimals=BarDecimals("105.0", "112.0", "103.0", "109.5", "40.0", "4000.0", "37.5", "285.0"),
    )
    assert first.close_time.microsecond == 999_000
    fifteen = collector.of("15m")
    assert [b.open_time_ms for b in fifteen] == [T0 + 15 * MIN]
    assert fifteen[0].open == 115.0 and fifteen[0].close == 129.5
    assert fifteen[0].trades == sum(10 + i for i in range(15, 30))
    # Its own output reached the bus but was not aggregated again.
    assert len(collector.of("1m")) == 28 and len(collector.bars) == 28 + 5 + 1
    assert aggregator.published == 6 and aggregator.incomplete == 2


async def test_other_subscribers_see_the_completing_bar_before_the_aggregate() -> None:
    collector = Collector()
    bus = await attached(BarAggregator(intervals="5m"), collector)
    for i in range(5):
        bus.publish("bar", one_minute(i))
    assert [(b.interval, b.open_time_ms) for b in collector.bars[-2:]] == [
        ("1m", T0 + 4 * MIN),
        ("5m", T0),
    ]


async def test_gap_drops_the_bucket_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    aggregator = BarAggregator(intervals=["5m"])
    collector = Collector()
    bus = await attached(aggregator, collector)
    minutes = [*range(0, 5), 5, 6, 8, 9, *range(10, 15)]  # 00:07 never arrives
    with caplog.at_level(logging.WARNING, logger="quantcore.consumers.aggregator"):
        for i in minutes:
            bus.publish("bar", one_minute(i))
    assert [b.open_time_ms for b in collector.of("5m")] == [T0, T0 + 10 * MIN]
    assert aggregator.incomplete == 1
    assert [r.getMessage() for r in caplog.records] == [
        "BarAggregator: skipping incomplete BTCUSDT 5m bucket at 2024-09-04 00:05 (4 of 5 bars)"
    ]


async def test_gap_at_the_end_of_a_bucket_is_noticed_by_the_next_bucket() -> None:
    aggregator = BarAggregator(intervals=["5m"])
    collector = Collector()
    bus = await attached(aggregator, collector)
    for i in [*range(0, 9), *range(10, 15)]:  # 00:09, the last of its bucket, is missing
        bus.publish("bar", one_minute(i))
    assert [b.open_time_ms for b in collector.of("5m")] == [T0, T0 + 10 * MIN]


async def test_streams_symbols_apart_and_ignores_duplicates_and_other_intervals() -> None:
    aggregator = BarAggregator(intervals=["5m"])
    collector = Collector()
    bus = await attached(aggregator, collector)
    for i in range(5):
        bus.publish("bar", one_minute(i, "BTCUSDT"))
        bus.publish("bar", one_minute(i, "ETHUSDT"))
        bus.publish("bar", one_minute(i, "BTCUSDT"))  # duplicate: ignored
        bus.publish("bar", one_minute(i, "BTCUSDT", interval="3m"))  # not the source
    assert [(b.symbol, b.trades) for b in collector.of("5m")] == [
        ("BTCUSDT", sum(10 + i for i in range(5))),
        ("ETHUSDT", sum(10 + i for i in range(5))),
    ]


async def test_does_not_duplicate_a_stream_the_feed_already_delivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = Collector()
    with caplog.at_level(logging.WARNING, logger="quantcore.consumers.aggregator"):
        bus = await attached(
            BarAggregator(intervals=["5m"]),
            collector,
            streams=(("BTCUSDT", "1m"), ("BTCUSDT", "5m")),
        )
    for i in range(5):
        bus.publish("bar", one_minute(i, "BTCUSDT"))
        bus.publish("bar", one_minute(i, "ETHUSDT"))
    assert [b.symbol for b in collector.of("5m")] == ["ETHUSDT"]
    assert "BTCUSDT 5m comes from the feed; not aggregating it" in caplog.text


def test_weekly_buckets_open_on_monday_others_on_the_epoch() -> None:
    wednesday = 1_725_408_000_000  # 2024-09-04 00:00 UTC
    assert ms_dt(bucket_start(wednesday, 604_800_000)) == datetime(2024, 9, 2, tzinfo=UTC)
    assert bucket_start(wednesday + 7 * MIN, 5 * MIN) == wednesday + 5 * MIN
    assert bucket_start(wednesday, 3 * 86_400_000) % (3 * 86_400_000) == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"intervals": ["7m"]}, r"intervals: '7m' is not a fixed-length Binance interval"),
        ({"intervals": ["1m"]}, r"intervals: '1m' is not a multiple of the source interval '1m'"),
        ({"intervals": ["5m"], "source_interval": "3m"}, r"intervals: '5m' is not a multiple of"),
        ({"intervals": ["5m", "5m"]}, r"intervals: '5m' is listed twice"),
        ({"intervals": []}, r"intervals: list at least one interval"),
        ({"intervals": ["1M"]}, r"intervals: '1M' is not a fixed-length"),
        ({"source_interval": "2m"}, r"source_interval: '2m' is not a fixed-length"),
    ],
)
def test_bad_params_are_one_line_config_errors(params: dict[str, object], message: str) -> None:
    raw = {
        "streams": [{"symbol": "BTCUSDT"}],
        "consumers": [
            {"class": "history"},
            {"class": "quantcore.consumers.aggregator:BarAggregator", "params": params},
        ],
    }
    config = parse_config(raw)
    with pytest.raises(ConfigError, match=r"^<config>: consumers\[1\]\.params: " + message):
        App(config)


def assert_same_bars(built: list[BarEvent], truth: list[Kline], interval: str) -> None:
    assert [b.open_time_ms for b in built] == [k.open_time for k in truth]
    for bar, kline in zip(built, truth, strict=True):
        assert bar.interval == interval and bar.closed
        assert bar.close_time.timestamp() * 1000 == kline.close_time
        strings = (kline.open, kline.high, kline.low, kline.close, kline.volume,
                   kline.quote_volume, kline.taker_buy_base, kline.taker_buy_quote)  # fmt: skip
        assert bar.decimals == BarDecimals(*strings)
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.quote_volume,
                bar.taker_buy_volume, bar.taker_buy_quote_volume) == tuple(map(float, strings))  # fmt: skip
        assert bar.trades == kline.trades


async def test_replayed_1m_bars_aggregate_to_the_exchanges_own_klines(tmp_path: Path) -> None:
    collector = Collector()
    aggregator = BarAggregator(intervals=["5m", "15m", "1h"])
    async with LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=3) as exchange:
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"))
        app = App(config, extra_components=[aggregator, collector])
        await app.run(max_bars=160)  # 02:27 .. 05:06: complete hours 03:00 and 04:00

        minutes = collector.of("1m")
        assert len(minutes) == 160
        first_ms, end_ms = minutes[0].open_time_ms, minutes[-1].open_time_ms + MIN
        assert first_ms == 1_725_416_820_000  # 02:27, mid-bucket for every interval
        for interval, length, count in (
            ("5m", 5 * MIN, 31),
            ("15m", 15 * MIN, 10),
            ("1h", 60 * MIN, 2),
        ):
            truth = [
                k
                for k in exchange.closed_klines("BTCUSDT", interval, since_ms=0)
                if k.open_time >= first_ms and k.open_time + length <= end_ms
            ]
            assert len(truth) == count
            assert_same_bars(collector.of(interval), truth, interval)

    # Downstream consumers take the new intervals like any stream.
    store = app.context.find(HistoryStore)
    assert store is not None and store.count("BTCUSDT", "15m") == 10
    rows = csv_rows(tmp_path / "BTCUSDT_1h.csv")
    assert [r[6] for r in rows] == ["2024-09-04 03:00:00", "2024-09-04 04:00:00"]
    hour = collector.of("1h")[0].decimal_strings()
    assert rows[0][:6] == (
        hour.close, hour.high, hour.low, hour.open, hour.volume, hour.quote_volume
    )  # fmt: skip


async def test_multi_config_runs_offline_with_a_csv_per_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config/multi.yaml as shipped: 3 symbols x (1m, 5m) on one combined stream, plus 15m
    bars aggregated from 1m; the embedded exchange generates every symbol at 600x."""
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "config" / "multi.yaml")
    symbols = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
    assert config.streams == tuple((s, i) for s in symbols for i in ("1m", "5m"))
    app = App(config)
    summary = await app.run(max_bars=150, duration=30)  # ~40 market minutes: ~4 s
    assert summary.bars == 150 and summary.subscriber_errors == 0
    assert app.feed is not None and app.feed.stats.reconnects == 0

    folder = tmp_path / "data" / "multi"
    for symbol in symbols:
        minutes = csv_rows(folder / f"{symbol}_1m.csv")
        fives = csv_rows(folder / f"{symbol}_5m.csv")
        assert len(minutes) >= 35 and len(fives) >= 6
        # A bucket of the exchange's 5m stream agrees with the 1m bars in it.
        five = fives[1]
        start = next(i for i, row in enumerate(minutes) if row[6] == five[6])
        inside = minutes[start : start + 5]
        assert five[3] == inside[0][3] and five[0] == inside[-1][0]
        assert five[1] == max((r[1] for r in inside), key=Decimal)
        assert five[2] == min((r[2] for r in inside), key=Decimal)
        assert Decimal(five[4]) == sum(Decimal(r[4]) for r in inside)
        # 15m bars built by the aggregator from the same 1m bars, written by the same CSV.
        fifteens = csv_rows(folder / f"{symbol}_15m.csv")
        assert fifteens
        start = next(i for i, row in enumerate(minutes) if row[6] == fifteens[0][6])
        inside = minutes[start : start + 15]
        assert len(inside) == 15 and inside[0][6].endswith(("00:00", "15:00", "30:00", "45:00"))
        assert fifteens[0][:4] == (
            inside[-1][0],
            max((r[1] for r in inside), key=Decimal),
            min((r[2] for r in inside), key=Decimal),
            inside[0][3],
        )
        assert Decimal(fifteens[0][4]) == sum(Decimal(r[4]) for r in inside)
        assert Decimal(fifteens[0][5]) == sum(Decimal(r[5]) for r in inside)
    csvs = sorted(f"{s}_{i}.csv" for s in symbols for i in ("1m", "5m", "15m"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(csvs + [f"{c}.lock" for c in csvs])
    # Per-stream stats: every feed stream counted, the counts add up to the total and
    # match what each stream's CSV holds.
    per_stream = app.feed.stream_bars
    assert set(per_stream) == set(config.streams) and sum(per_stream.values()) == 150
    for symbol, interval in config.streams:
        assert per_stream[(symbol, interval)] == len(csv_rows(folder / f"{symbol}_{interval}.csv"))
    assert "BTCUSDT 1m=" in app.feed.stream_summary()
