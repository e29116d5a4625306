"""Replay from a real recording: what the recorders wrote comes back as the same bars, in a
stated order, the same every run, from CSV and SQLite alike, and the store is left as it was.

The store is recorded once per module by the App from the local exchange (REST warm-up of
real BTCUSDT 1m and 5m bars into CSV and SQLite), so every value is the exchange's string.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore import BarEvent, Component
from quantcore.app import App
from quantcore.cli import main
from quantcore.config import parse_config
from quantcore.events import SignalEvent
from quantcore.replay.feed import replay_config
from quantcore.replay.settings import ReplaySettings
from quantcore.sim import LocalExchange
from tests.harness import csv_rows
from tests.paths import CSV_BTC, replay

STREAMS = [{"symbol": "BTCUSDT", "interval": "1m"}, {"symbol": "BTCUSDT", "interval": "5m"}]
SMA = {"class": "strategies.sma_cross:SmaCross", "params": {"fast": 5, "slow": 20}}


class Collector(Component):
    """Every closed bar and signal, as published."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[BarEvent] = []
        self.signals: list[SignalEvent] = []

    def on_bar(self, bar: BarEvent) -> None:
        self.bars.append(bar)

    def on_signal(self, signal: SignalEvent) -> None:
        self.signals.append(signal)


def store_raw(folder: Path, extra: list[Any] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "streams": STREAMS,
        "consumers": [
            {"class": "history"},
            {"class": "csv", "params": {"path": str(folder / "{symbol}_{interval}.csv")}},
            {"class": "sqlite", "params": {"path": str(folder / "bars.sqlite")}},
            {"class": "parquet", "params": {"root": str(folder / "parquet")}},
            *extra,
        ],
    }


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in the store's folder and its SHA-256: what 'untouched' means."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(autouse=True)
def own_logging() -> Iterator[None]:
    """``main`` installs quantcore's log handlers on this test's captured stdout; put the
    root logger back so later tests do not log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("store")

    async def record() -> None:
        exchange = LocalExchange([replay(CSV_BTC)], updates_per_bar=2, history_bars=1500, speed=60)
        async with exchange:
            raw = store_raw(folder)
            raw["exchange"] = {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url}
            raw["feed"] = {"warmup_bars": 250, "stall_timeout": 2}
            await App(parse_config(raw)).run(max_bars=500)

    asyncio.run(record())
    return folder


async def replayed(folder: Path, **settings: Any) -> Collector:
    config = parse_config(store_raw(folder, [SMA]))
    collector = Collector()
    app = App(replay_config(config, ReplaySettings(**settings)), [collector])
    await app.run()
    return collector


async def test_csv_replay_is_the_recording_in_close_time_order(store: Path) -> None:
    before = snapshot(store)
    got = await replayed(store)
    one = [b for b in got.bars if b.interval == "1m"]
    five = [b for b in got.bars if b.interval == "5m"]
    for bars, name in ((one, "BTCUSDT_1m.csv"), (five, "BTCUSDT_5m.csv")):
        rows = csv_rows(store / name)
        assert len(bars) == len(rows) == 250
        as_rows = [
            (d.close, d.high, d.low, d.open, d.volume, d.quote_volume,
             f"{b.open_time:%Y-%m-%d %H:%M:%S}")
            for b in bars
            if (d := b.decimal_strings())
        ]  # fmt: skip
        assert as_rows == rows
    assert all(b.replayed and b.closed and b.received_ns == 0 for b in got.bars)
    keys = [(b.close_time, 0 if b.interval == "1m" else 1) for b in got.bars]
    assert keys == sorted(keys), "not in close-time order, 1m before 5m on a tie"
    ties = [
        n for n in range(1, len(got.bars)) if got.bars[n].close_time == got.bars[n - 1].close_time
    ]
    assert ties and all(got.bars[n].interval == "5m" for n in ties)
    assert got.signals
    assert snapshot(store) == before


async def test_two_runs_publish_identical_events(store: Path) -> None:
    first, second = await replayed(store), await replayed(store)
    assert first.bars == second.bars and first.signals == second.signals
    sqlite_a = await replayed(store, source="sqlite")
    sqlite_b = await replayed(store, source="sqlite")
    assert sqlite_a.bars == sqlite_b.bars and sqlite_a.signals == sqlite_b.signals


async def test_csv_and_sqlite_give_identical_events(store: Path) -> None:
    """Every field a CSV holds is identical; SQLite also keeps trades, taker volumes and
    the event time, which a CSV row does not have (its bars carry 0 and the close time)."""
    before = snapshot(store)
    from_csv = await replayed(store)
    from_sqlite = await replayed(store, source="sqlite", path=str(store / "bars.sqlite"))
    assert snapshot(store) == before, "a replay changed the store's folder"
    assert len(from_csv.bars) == len(from_sqlite.bars) == 500
    common = ("symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
              "volume", "quote_volume", "closed", "replayed", "received_ns")  # fmt: skip
    for a, b in zip(from_csv.bars, from_sqlite.bars, strict=True):
        assert [getattr(a, f) for f in common] == [getattr(b, f) for f in common]
        da, db = a.decimal_strings(), b.decimal_strings()
        assert (da.open, da.high, da.low, da.close, da.volume, da.quote_volume) == (
            db.open, db.high, db.low, db.close, db.volume, db.quote_volume
        )  # fmt: skip
    assert any(b.trades > 0 for b in from_sqlite.bars)
    assert from_csv.signals == from_sqlite.signals and from_csv.signals


async def test_parquet_and_sqlite_give_identical_events(store: Path) -> None:
    """Both keep every field of a bar: the replayed events are equal, field for field,
    the exact strings included, and so are the signals."""
    before = snapshot(store)
    from_parquet = await replayed(store, source="parquet", path=str(store / "parquet"))
    from_sqlite = await replayed(store, source="sqlite", path=str(store / "bars.sqlite"))
    assert snapshot(store) == before, "a replay changed the store's folder"
    assert len(from_parquet.bars) == 500 and from_parquet.bars == from_sqlite.bars
    assert [b.decimal_strings() for b in from_parquet.bars] == [
        b.decimal_strings() for b in from_sqlite.bars
    ]
    assert from_parquet.signals == from_sqlite.signals and from_parquet.signals


async def test_range_and_paced_speed(store: Path) -> None:
    """``from``/``to`` pick open times [from, to); speed 1200 plays 9 market minutes in ~0.45 s."""
    rows = csv_rows(store / "BTCUSDT_1m.csv")
    start, end = rows[100][6], rows[110][6]
    started = time.monotonic()
    got = await replayed(store, start=start, end=end, speed=1200.0)
    elapsed = time.monotonic() - started
    one = [b for b in got.bars if b.interval == "1m"]
    assert [f"{b.open_time:%Y-%m-%d %H:%M:%S}" for b in one] == [r[6] for r in rows[100:110]]
    assert 0.4 <= elapsed < 5, elapsed


def write_config(path: Path, raw: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("source", ["csv", "sqlite"])
def test_bad_input_is_one_line_and_exit_2(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    config = write_config(tmp_path / "c.yaml", store_raw(store))
    missing = str(tmp_path / "gone" / ("{symbol}.csv" if source == "csv" else "bars.sqlite"))
    other = store_raw(store)
    other["streams"] = [*STREAMS, {"symbol": "ETHUSDT", "interval": "1m"}]
    eth = write_config(tmp_path / "eth.yaml", other)
    cases = [
        ([config, "--source", source, "--from", "2030-01-01"], "no bars from 2030-01-01"),
        ([config, "--source", source, "--path", missing], "no such"),
        ([eth, "--source", source], "ETHUSDT 1m is not in the store"),
        ([config, "--source", source, "--from", "yesterday"], "from: 'yesterday' is not a UTC"),
    ]
    before = snapshot(store)
    for argv, expected in cases:
        assert main(["replay", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("quantcore: ") and expected in err, err
    assert snapshot(store) == before


def test_run_with_the_replay_venue_skips_recorders(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``exchange.replay`` in a run config: recorders are left out (the CSV they would
    append to is the store read), the signals recorder writes its own file."""
    raw = store_raw(store, [SMA, {"class": "signals", "params": {"path": str(tmp_path / "s.csv")}}])
    raw["exchange"] = {"replay": {"source": "csv", "from": "2025-08-01 06:00"}}
    before = snapshot(store)
    assert main(["run", write_config(tmp_path / "r.yaml", raw)]) == 0
    assert snapshot(store) == before
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "time,symbol,interval,side,price,reason,source" and len(lines) > 2
    assert all(line.split(",")[0] >= "2025-08-01 06:00" for line in lines[1:])


async def test_a_torn_last_line_is_not_replayed(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash mid-write leaves a line without its newline: the replay ends before it
    (the next recording run repairs it) and leaves the file as it found it."""
    for name in ("BTCUSDT_1m.csv", "BTCUSDT_5m.csv"):
        (tmp_path / name).write_bytes((store / name).read_bytes())
    torn = tmp_path / "BTCUSDT_1m.csv"
    with torn.open("ab") as file:
        file.write(b"115000.01,115001.00,114990.0")
    before = torn.read_bytes()
    whole = await replayed(store)
    got = await replayed(tmp_path)
    assert got.bars == whole.bars
    assert torn.read_bytes() == before
    assert "torn last line (a crash mid-write) not replayed" in caplog.text
