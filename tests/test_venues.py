"""Every venue gets spot's reliability tests: the seeded fault schedule, a restart that
resumes, and values equal to the exchange's, exactly (parametrized over the registry's
Binance venues, each played by the local exchange from real data of that venue), in the
CSV and in the Parquet store alike (``tmp_path/store``, the venue's partition).

And a venue can be added from outside the package: a toy venue defined here registers
itself and records bars without any change to quantcore's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.app import App
from quantcore.config import ConfigError, load_config, parse_config
from quantcore.consumers.history import HistoryStore
from quantcore.events import utc_text
from quantcore.feeds import registry
from quantcore.feeds.binance.venues import COINM, SPOT, USDM, VENUES, Venue
from quantcore.sim import LocalExchange, ReplaySource
from tests import parquet_check
from tests.harness import (
    as_floats,
    caught_up,
    csv_rows,
    frame_rows,
    inject_faults,
    truth_row,
    truth_since,
    wait_until,
)
from tests.paths import CSV_BTC, CSV_COINM, CSV_USDM, REPO

BARS = 60
CASES = {
    SPOT.name: ("BTCUSDT", CSV_BTC),
    USDM.name: ("BTCUSDT", CSV_USDM),
    COINM.name: ("BTCUSD_PERP", CSV_COINM),
}


def venue_exchange(venue: Venue, speed: float) -> LocalExchange:
    symbol, data = CASES[venue.name]
    source = ReplaySource.from_file(data, symbol)
    return LocalExchange([source], speed=speed, updates_per_bar=4, venue=venue)


def venue_config(exchange: LocalExchange, tmp_path: Path, **feed: Any) -> Any:
    venue = exchange.venue
    symbol, _ = CASES.get(venue.name, ("BTCUSDT", None))
    raw = {
        "exchange": {"venue": venue.name, "ws_url": exchange.ws_url, "rest_url": exchange.rest_url},
        "streams": [{"symbol": symbol, "interval": "1m"}],
        "feed": {
            "stall_timeout": 0.5,
            "reconnect": {"initial_delay": 0.05, "max_delay": 0.3},
            **feed,
        },
        "consumers": [
            {"class": "history"},
            {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
            parquet_check.consumer(tmp_path / "store"),
        ],
    }
    return parse_config(raw)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", list(CASES))
async def test_every_venue_survives_the_fault_schedule(tmp_path: Path, name: str) -> None:
    venue = VENUES[name]
    symbol, _ = CASES[name]
    rng = random.Random(20240904)
    path = tmp_path / f"{symbol}_1m.csv"
    async with venue_exchange(venue, speed=1200) as exchange:
        app = App(venue_config(exchange, tmp_path))
        run = asyncio.create_task(app.run())
        await wait_until(lambda: len(csv_lines(path)) > 3, 10, "first bars")
        faults = await inject_faults(
            exchange, rng, lambda: len(exchange.closed_klines(symbol, "1m")) >= BARS, symbol
        )
        await wait_until(lambda: caught_up(exchange, path, symbol), 20, "the CSV to catch up")
        app.stop()
        summary = await asyncio.wait_for(run, 10)
        rows = csv_rows(path)
        assert len(rows) >= BARS - 10
        assert rows == truth_since(exchange, rows[0], len(rows), symbol)
        store = app.context.find(HistoryStore)
        assert store is not None and frame_rows(store.frame(symbol, "1m")) == as_floats(rows)
        parquet_check.assert_store_holds(tmp_path / "store", symbol, rows, exchange, venue.name)
        calls = exchange.limits.rest_calls
    assert app.feed is not None and app.feed.stats.backfilled >= 1, faults
    assert summary.bars_recorded == len(rows)
    prefix = f"/{venue.root}/{venue.rest_version}/"
    assert calls[prefix + "klines"] >= 1 and calls[prefix + "exchangeInfo"] >= 1
    assert all(path.startswith(prefix) for path in calls)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
async def test_every_venue_resumes_after_a_restart(tmp_path: Path, name: str) -> None:
    venue = VENUES[name]
    symbol, _ = CASES[name]
    path = tmp_path / f"{symbol}_1m.csv"
    async with venue_exchange(venue, speed=1200) as exchange:
        first = App(venue_config(exchange, tmp_path))
        run = asyncio.create_task(first.run())
        await wait_until(lambda: len(csv_lines(path)) > 10, 15, "10 rows")
        first.stop()
        await asyncio.wait_for(run, 10)
        stopped_at = len(csv_lines(path))
        await asyncio.sleep(0.5)  # bars close while nothing records
        second = App(venue_config(exchange, tmp_path))
        run = asyncio.create_task(second.run())
        await wait_until(lambda: len(csv_lines(path)) > stopped_at + 10, 15, "10 more rows")
        await wait_until(lambda: caught_up(exchange, path, symbol), 20, "the CSV to catch up")
        second.stop()
        await asyncio.wait_for(run, 10)
        rows = csv_rows(path)
        assert rows == truth_since(exchange, rows[0], len(rows), symbol)
        parquet_check.assert_store_holds(tmp_path / "store", symbol, rows, exchange, venue.name)
    assert second.feed is not None and second.feed.stats.backfilled >= 1


def csv_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))


def csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


TOY = replace(
    USDM,
    name="toy-futures",
    ws_url="wss://toy.invalid/",
    rest_url="https://toy.invalid/tapi",
    rest_version="v7",
    klines_limit=40,
    klines_weights=((40, 3),),
    max_streams=2,
    symbol_pattern=r"TOY[A-Z]{3,6}",
)
"""A venue quantcore has never heard of: its own REST root and version, 40-row pages,
two streams per connection, its own symbol rule."""


@pytest.mark.timeout(60)
async def test_a_venue_defined_outside_the_package_records_bars(tmp_path: Path) -> None:
    registry.register(TOY.name, registry.binance_factory(TOY), TOY)
    with pytest.raises(ConfigError, match="not a toy-futures symbol"):
        parse_config({"exchange": {"venue": TOY.name}, "streams": [{"symbol": "BTCUSDT"}]})
    symbols = ["TOYABC", "TOYDEF", "TOYGHI"]
    async with LocalExchange(symbols=symbols, speed=1200, history_bars=100, venue=TOY) as exchange:
        raw = {
            "exchange": {
                "venue": TOY.name,
                "ws_url": exchange.ws_url,
                "rest_url": exchange.rest_url,
            },
            "streams": [{"symbol": s, "interval": "1m"} for s in symbols],
            "feed": {"warmup_bars": 90, "stall_timeout": 1},
            "consumers": [{"class": "csv", "params": {"path": str(tmp_path / "{symbol}.csv")}}],
        }
        app = App(parse_config(raw))
        assert exchange.rest_url.endswith("/tapi")
        run = asyncio.create_task(app.run())
        files = [tmp_path / f"{s}.csv" for s in symbols]
        await wait_until(
            lambda: all(len(csv_lines(f)) > 95 for f in files), 20, "warm-up and live bars"
        )
        app.stop()
        await asyncio.wait_for(run, 10)
        for symbol, file in zip(symbols, files, strict=True):
            rows = csv_rows(file)
            since = exchange.start_ms - 100 * 60_000
            truth = [truth_row(k) for k in exchange.closed_klines(symbol, "1m", since)]
            start = truth.index(rows[0])
            assert rows == truth[start : start + len(rows)]
        calls = exchange.limits.rest_calls
    assert app.feed is not None and len(app.feed.connections) == 2  # two streams each
    assert calls["/tapi/v7/klines"] >= 3 * 3  # 90 bars in pages of 40
    assert set(calls) <= {"/tapi/v7/klines", "/tapi/v7/time", "/tapi/v7/exchangeInfo"}


def test_futures_weigh_klines_by_limit() -> None:
    assert [USDM.klines_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [
        1, 1, 2, 2, 5, 5, 10, 10,
    ]  # fmt: skip
    assert {SPOT.klines_weight(n) for n in (1, 500, 1000)} == {2}


@pytest.mark.parametrize(
    ("file", "venue", "ws", "rest", "symbol"),
    [
        ("usdm.yaml", "binance-usdm", "wss://fstream.binance.com/",
         "https://fapi.binance.com/fapi", "BTCUSDT"),
        ("coinm.yaml", "binance-coinm", "wss://dstream.binance.com/",
         "https://dapi.binance.com/dapi", "BTCUSD_PERP"),
    ],
)  # fmt: skip
def test_futures_configs(file: str, venue: str, ws: str, rest: str, symbol: str) -> None:
    config = load_config(REPO / "config" / file)
    assert config.venue == venue and config.feed.venue.name == venue
    assert (config.feed.ws_url, config.feed.rest_url) == (ws, rest)
    assert config.streams[0][0] == symbol
    assert config.feed.rest_limits is not None
    assert config.feed.rest_limits.weight_per_minute == 1200  # half of 2400


def test_venue_presets_and_errors() -> None:
    config = parse_config(
        {
            "exchange": {"venue": "binance-usdm", "preset": "testnet"},
            "streams": [{"symbol": "BTCUSDT"}],
        }
    )
    assert config.feed.rest_url == "https://testnet.binancefuture.com/fapi"
    with pytest.raises(ConfigError, match=r"exchange\.venue: 'kraken' is not a registered venue"):
        parse_config({"exchange": {"venue": "kraken"}, "streams": [{"symbol": "BTCUSDT"}]})
    with pytest.raises(ConfigError, match="expected the REST base ending in /dapi"):
        parse_config(
            {
                "exchange": {"venue": "binance-coinm", "rest_url": "https://fapi.binance.com/fapi"},
                "streams": [{"symbol": "BTCUSD_PERP"}],
            }
        )
    coin = parse_config(
        {"exchange": {"venue": "binance-coinm"}, "streams": [{"symbol": "btcusd_perp"}]}
    )
    assert coin.streams == (("BTCUSD_PERP", "1m"),)


@pytest.mark.timeout(60)
async def test_demo_records_three_venues_at_once(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "config" / "demo_venues.yaml").read_text())
    raw["exchange"]["local"]["speed"] = 600
    raw["consumers"][1]["params"]["path"] = str(tmp_path / "{symbol}_{interval}.csv")
    raw["consumers"].append({"class": "sqlite", "params": {"path": str(tmp_path / "bars.db")}})
    raw["consumers"].append(parquet_check.consumer(tmp_path / "store"))  # one root, 3 venues
    config = parse_config(raw, "demo_venues.yaml")
    assert [part.venue for part in config.parts] == [SPOT.name, USDM.name, COINM.name]
    app = App(config)
    run = asyncio.create_task(app.run())
    files = [
        tmp_path / "BTCUSDT_1m.csv",
        tmp_path / "binance-usdm" / "BTCUSDT_1m.csv",
        tmp_path / "binance-coinm" / "BTCUSD_PERP_1m.csv",
    ]
    try:
        await wait_until(lambda: all(len(csv_lines(f)) > 5 for f in files), 30, "three CSVs")
    finally:
        app.stop()
        summary = await asyncio.wait_for(run, 15)
    assert summary.bars_recorded == sum(len(csv_rows(f)) for f in files)
    assert csv_files(tmp_path) == sorted(f.relative_to(tmp_path).as_posix() for f in files)
    databases = [tmp_path / "bars.db", tmp_path / USDM.name / "bars.db"]
    databases.append(tmp_path / COINM.name / "bars.db")
    for csv, db in zip(files, databases, strict=True):  # one series per venue, in both
        with contextlib.closing(sqlite3.connect(db)) as conn:
            stored = conn.execute(
                "SELECT close, high, low, open, volume, quote_volume, open_time FROM bars "
                "ORDER BY open_time"
            ).fetchall()
        assert [(*row[:6], utc_text(row[6])[:-4]) for row in stored] == csv_rows(csv)
    for csv, venue in zip(files, (SPOT, USDM, COINM), strict=True):  # each its partition
        symbol = csv.name.removesuffix("_1m.csv")
        assert parquet_check.store_rows(tmp_path / "store", symbol, venue.name) == csv_rows(csv)
    assert parquet_check.assert_whole_files(tmp_path / "store") >= 3
    assert not list((tmp_path / "store").rglob("_*.journal.csv"))
    feeds = [part.feed for part in app.parts]
    assert [f.name for f in feeds if f is not None] == ["binance", USDM.name, COINM.name]


def test_a_second_venue_gets_its_own_files_tables_and_keys() -> None:
    """The same symbol on two venues stays two series in every sink; spot's never move."""
    config = parse_config(
        {
            "streams": [{"symbol": "BTCUSDT"}, {"symbol": "BTCUSDT", "venue": USDM.name}],
            "consumers": [
                {"class": "csv", "params": {"path": "out/{symbol}_{interval}.csv"}},
                {"class": "sqlite", "params": {"path": "out/bars.db"}},
                "sqlite",
                {"class": "postgres", "params": {"dsn": "postgresql://h/db", "table": "s.k"}},
                {"class": "redis", "params": {"url": "redis://h"}},
            ],
        }
    )
    spot, usdm = config.parts
    assert [c.params for c in spot.consumers] == [
        {"path": "out/{symbol}_{interval}.csv"},
        {"path": "out/bars.db"},
        {},
        {"dsn": "postgresql://h/db", "table": "s.k"},
        {"url": "redis://h"},
    ]
    assert [c.params for c in usdm.consumers] == [
        {"path": f"out/{USDM.name}/{{symbol}}_{{interval}}.csv"},
        {"path": f"out/{USDM.name}/bars.db"},
        {"path": f"data/{USDM.name}/bars.sqlite"},
        {"dsn": "postgresql://h/db", "table": "s.k_binance_usdm"},
        {"url": "redis://h", "prefix": f"quantcore:bars:{USDM.name}"},
    ]


def test_futures_default_csv_path_holds_the_venue() -> None:
    config = parse_config(
        {"exchange": {"venue": "binance-usdm"}, "streams": [{"symbol": "BTCUSDT"}]}
    )
    csv = next(spec for spec in config.consumers if spec.cls.__name__ == "CsvRecorder")
    assert csv.params["path"] == "data/binance-usdm/{symbol}_{interval}.csv"
    spot = parse_config({"streams": [{"symbol": "BTCUSDT"}]})
    csv = next(spec for spec in spot.consumers if spec.cls.__name__ == "CsvRecorder")
    assert not csv.params  # spot keeps data/{symbol}_{interval}.csv


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", [USDM.name, COINM.name])
async def test_futures_on_the_realistic_profile_record_the_final_bars(
    tmp_path: Path, name: str
) -> None:
    """Spot's realistic profile (REST lag, late and withheld closes, short connection
    lifetimes with serverShutdown, the venue's weight limit) plus faults and a restart
    inside the REST lag: the CSV equals the venue's final bars, exactly."""
    from quantcore.sim import Realism
    from tests.test_realistic import assert_final_bars, assert_within_limits, just_after_close
    from tests.test_realistic import caught_up as settled_in

    venue = VENUES[name]
    symbol, data = CASES[name]
    lag_ms = 20_000
    profile = Realism.binance(
        seed=20241101,
        rest_lag_ms=lag_ms,
        close_delay_ms=(70, lag_ms // 2),
        missing_close=0.08,
        weight_limit=venue.weight_per_minute,
        connection_lifetime=2.0,
        shutdown_lead=0.3,
    )
    source = ReplaySource.from_file(data, symbol)
    rng = random.Random(1101)
    async with LocalExchange(
        [source], speed=600, updates_per_bar=4, history_bars=3, realism=profile, venue=venue
    ) as exchange:
        config = venue_config(
            exchange, tmp_path, settle=40, poll=0.05, healthy_after=1.0, max_connection_age=1.5
        )
        for _ in range(1):
            app = App(config)
            run = asyncio.create_task(app.run())
            before = len(exchange.closed_klines(symbol, "1m"))
            await inject_faults(
                exchange,
                rng,
                lambda b=before: len(exchange.closed_klines(symbol, "1m")) >= b + 30,
                symbol,
                extra=("shutdown",),
            )
            await just_after_close(exchange, lag_ms // 2)
            app.stop()
            await asyncio.wait_for(run, 15)
        final = App(config)
        run = asyncio.create_task(final.run())
        await wait_until(lambda: settled_in(exchange, tmp_path, symbol, 60_000), 30, "catch up")
        final.stop()
        await asyncio.wait_for(run, 15)
        rows = assert_final_bars(exchange, tmp_path, symbol)
        assert_within_limits(exchange)
    assert len(rows) >= 35
