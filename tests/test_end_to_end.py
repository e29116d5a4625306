"""End to end through real python-binance against the local exchange (no mocks).

What a user relies on: after N closed bars the CSV has exactly those N rows, in order,
equal to the exchange's ground truth, header once; the HistoryStore equals the CSV; the
console printed each bar; a restart appends without duplicating or skipping.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from quantcore import BarEvent, Component
from quantcore.app import App
from quantcore.config import ConfigError
from quantcore.consumers.history import HistoryStore
from quantcore.sim import LocalExchange, ReplaySource
from tests.harness import app_config, as_floats, csv_rows, frame_rows, truth_row, truth_since
from tests.paths import REST_BTC

pytestmark = pytest.mark.timeout(60)


def replay_exchange(**kwargs: object) -> LocalExchange:
    return LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=3, **kwargs)  # type: ignore[arg-type]


async def test_records_ground_truth_then_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    template = str(tmp_path / "{symbol}_{interval}.csv")
    path = tmp_path / "BTCUSDT_1m.csv"
    feed = {"stall_timeout": 2, "transport": transport}
    async with replay_exchange() as exchange:
        app = App(app_config(exchange, template, feed=feed))
        with caplog.at_level(logging.INFO, logger="quantcore.console"):
            summary = await app.run(max_bars=40)
        rows = csv_rows(path)
        assert len(rows) == 40 and summary.bars_recorded == 40
        file_rows = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)]
        assert rows == file_rows[:40]
        store = app.context.find(HistoryStore)
        assert store is not None
        assert frame_rows(store.frame("BTCUSDT", "1m")) == as_floats(rows)
        printed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bar ")]
        assert len(printed) == 40
        assert printed[0].startswith("bar     BTCUSDT 1m 2024-09-04 02:27 UTC  O 56714.00")

        again = App(app_config(exchange, template, feed=feed))
        await again.run(max_bars=25)
        rows = csv_rows(path)
        assert len(rows) == 65
        assert rows == truth_since(exchange, rows[0], 65)
        assert again.feed is not None and again.feed.stats.frames > 0


class Collector(Component):
    """The 'few lines' a user writes to consume bars."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[BarEvent] = []

    def on_bar(self, bar: BarEvent) -> None:
        self.bars.append(bar)


class Broken(Component):
    def on_bar(self, bar: BarEvent) -> None:
        raise RuntimeError("strategy bug")


async def test_subclass_receives_every_bar_and_failing_subscriber_is_isolated(
    tmp_path: Path,
) -> None:
    collector = Collector()
    async with replay_exchange() as exchange:
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"))
        app = App(config, extra_components=[Broken(), collector])
        summary = await app.run(max_bars=30)
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert len(rows) == 30
    assert [b.open_time_ms for b in collector.bars] == [
        1725416820000 + 60_000 * i for i in range(30)
    ]
    assert [b.decimal_strings().close for b in collector.bars] == [r[0] for r in rows]
    assert [b.close for b in collector.bars] == [float(r[0]) for r in rows]
    assert summary.subscriber_errors == 30
    assert app.bus.handler_errors["Broken.on_bar"] == 30


async def test_unknown_symbol_is_a_clear_startup_error(tmp_path: Path) -> None:
    async with replay_exchange() as exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            streams=[{"symbol": "BTCUSDT"}, {"symbol": "NOPEUSDT"}],
        )
        app = App(config)
        with pytest.raises(
            ConfigError,
            match=r"unknown symbol NOPEUSDT: not listed by http://127\.0\.0\.1:\d+/api/v3/exchangeInfo",
        ):
            await app.run(duration=10)
    assert app.feed is not None and app.feed.stats.bars == 0


async def test_unwritable_output_fails_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    async with replay_exchange() as exchange:
        app = App(app_config(exchange, str(tmp_path / "blocker" / "{symbol}_{interval}.csv")))
        with pytest.raises(
            ConfigError, match=r"blocker/BTCUSDT_1m\.csv: cannot open for appending"
        ):
            await app.run(duration=10)
    assert app.feed is None


async def test_resume_after_long_absence_is_bounded_by_backfill_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    template = str(tmp_path / "{symbol}_{interval}.csv")
    async with replay_exchange(history_bars=900) as exchange:
        history = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)]
        old = history[10]
        (tmp_path / "BTCUSDT_1m.csv").write_text(
            "close,high,low,open,volume,baseVolume,datetime\n" + ",".join(old[:6]) + f",{old[6]}\n"
        )
        config = app_config(exchange, template, feed={"backfill_limit": 100})
        with caplog.at_level(logging.WARNING):
            await App(config).run(max_bars=120)
        history = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)]
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert rows[0] == old and len(rows) == 121
    start = history.index(rows[1])
    assert rows[1:] == history[start : start + 120]
    assert start >= 900 - 100
    assert f"exceed backfill_limit=100; starting at {rows[1][6]}+00:00" in caplog.text


async def test_fresh_start_with_warmup_bars(tmp_path: Path) -> None:
    async with replay_exchange(history_bars=500) as exchange:
        config = app_config(
            exchange, str(tmp_path / "{symbol}_{interval}.csv"), feed={"warmup_bars": 50}
        )
        app = App(config)
        await app.run(max_bars=60)
        history = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)]
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    start = history.index(rows[0])
    assert rows == history[start : start + 60]
    assert start >= 500 - 50
    assert app.feed is not None and app.feed.stats.backfilled >= 50
