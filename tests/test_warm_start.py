"""Warm start: a component declaring ``warmup = N`` gets N past bars before the first bar
the feed delivers — from the store when it holds them (marked replayed, written by no
recorder), else from REST through the feed's catch-up — and every CSV stays duplicate-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantcore import BarEvent, Component
from quantcore.app import App
from quantcore.config import parse_config
from quantcore.consumers.history import HistoryStore
from quantcore.sim import LocalExchange
from strategies.sma_cross import SmaCross
from tests.harness import csv_rows
from tests.paths import CSV_BTC, replay


class Probe(Component):
    """Every closed bar it gets, and how full the HistoryStore was at the first feed bar."""

    def __init__(self, warmup: int, strategy: SmaCross | None = None) -> None:
        super().__init__()
        self.warmup = warmup
        self.strategy = strategy
        self.bars: list[BarEvent] = []
        self.history_at_first: int | None = None
        self.strategy_ready = False
        """SmaCross had a previous average difference when the first feed bar came: it
        compares on that very bar (a cross there is signalled)."""

    def on_bar(self, bar: BarEvent) -> None:
        if not bar.replayed and self.history_at_first is None:
            store = self.context.find(HistoryStore)
            assert store is not None
            self.history_at_first = len(store.frame(bar.symbol, bar.interval)) - 1
            if self.strategy is not None:
                self.strategy_ready = bar.key in self.strategy._previous
        self.bars.append(bar)


def exchange(speed: float = 60) -> LocalExchange:
    return LocalExchange([replay(CSV_BTC)], updates_per_bar=2, history_bars=600, speed=speed)


def config(ex: LocalExchange, folder: Path, **feed: Any) -> Any:
    return parse_config(
        {
            "exchange": {"ws_url": ex.ws_url, "rest_url": ex.rest_url},
            "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
            "feed": {"stall_timeout": 2, **feed},
            "consumers": [
                {"class": "history"},
                {"class": "csv", "params": {"path": str(folder / "{symbol}_{interval}.csv")}},
            ],
        }
    )


def stamps(bars: list[BarEvent]) -> list[str]:
    return [f"{b.open_time:%Y-%m-%d %H:%M:%S}" for b in bars]


def assert_contiguous(rows: list[tuple[str, ...]]) -> None:
    times = [row[6] for row in rows]
    assert len(times) == len(set(times)), "a bar was written twice"
    assert times == sorted(times)


async def test_stored_bars_warm_up_sma_200_and_are_not_written_again(tmp_path: Path) -> None:
    async with exchange() as ex:
        await App(config(ex, tmp_path, warmup_bars=250)).run(max_bars=250)
        stored = csv_rows(tmp_path / "BTCUSDT_1m.csv")
        strategy = SmaCross(fast=50, slow=200, warmup=200)
        probe = Probe(warmup=10, strategy=strategy)
        app = App(config(ex, tmp_path), [strategy, probe])
        await app.run(max_bars=3)
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert rows[:250] == stored and len(rows) >= 253
    assert_contiguous(rows)
    warm = [b for b in probe.bars if b.replayed]
    assert stamps(warm) == [row[6] for row in stored[-200:]]
    assert [b.decimal_strings().close for b in warm] == [row[0] for row in stored[-200:]]
    assert probe.bars[: len(warm)] == warm, "warm-up bars came after a feed bar"
    assert stamps(probe.bars[200:]) == [row[6] for row in rows[250 : 250 + len(probe.bars) - 200]]
    assert probe.history_at_first == 200, "the HistoryStore did not start filled"
    assert strategy.warmup == 200 and probe.strategy_ready
    assert app.feed is not None and app.feed.stats.rest_calls >= 1


async def test_fresh_start_warms_up_from_rest_and_records_those_bars_once(tmp_path: Path) -> None:
    async with exchange(speed=600) as ex:
        probe = Probe(warmup=60)
        app = App(config(ex, tmp_path), [probe])
        await app.run(max_bars=63)
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert_contiguous(rows)
    assert stamps(probe.bars) == [row[6] for row in rows]
    assert app.feed is not None and app.feed.stats.backfilled >= 60
    assert not any(b.replayed for b in probe.bars)


async def test_short_store_is_completed_from_rest_without_duplicates(tmp_path: Path) -> None:
    async with exchange(speed=600) as ex:
        await App(config(ex, tmp_path, warmup_bars=20)).run(max_bars=20)
        stored = csv_rows(tmp_path / "BTCUSDT_1m.csv")
        probe = Probe(warmup=60)
        await App(config(ex, tmp_path), [probe]).run(max_bars=60 + 3)
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert rows[:20] == stored and len(rows) > 20
    assert_contiguous(rows)
    last_stored = stored[-1][6]
    before = [s for s in stamps(probe.bars) if s <= last_stored]
    assert len(before) == 60, "the strategy did not get 60 bars up to the stored last one"
    assert stamps(probe.bars) == sorted(set(stamps(probe.bars)))
