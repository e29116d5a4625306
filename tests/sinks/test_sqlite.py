"""SqliteRecorder: idempotent upsert, batched WAL commits, resume, CSV export == CsvRecorder."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.cli import main as quantcore_main
from quantcore.config import ConsumerSpec, import_component
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.feeds.binance.codec import KlineCodec
from quantcore.sinks.export import main as export_main
from quantcore.sinks.schema import FloatTableError
from quantcore.sinks.sqlite import SqliteRecorder
from tests.paths import REST_BTC
from tests.sinks.helpers import STREAM, make_bar, publish, start_all, stop_all, wait_until


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM bars").fetchone()[0])


async def test_same_bars_twice_store_one_row_each(tmp_path: Path) -> None:
    db = tmp_path / "bars.sqlite"
    bars = [make_bar(i) for i in range(30)]
    bus = EventBus()
    recorder = SqliteRecorder(path=str(db), batch_size=7)
    await start_all(bus, [recorder])
    assert recorder.resume_point(*STREAM) is None
    publish(bus, bars)
    publish(bus, bars[10:20])
    await stop_all(bus, [recorder])
    assert count_rows(db) == 30

    bus = EventBus()
    again = SqliteRecorder(path=str(db))
    await start_all(bus, [again])
    assert again.resume_point(*STREAM) == bars[-1].open_time_ms
    publish(bus, [*bars, make_bar(30)])
    await stop_all(bus, [again])
    assert count_rows(db) == 31
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        keys = conn.execute("SELECT count(DISTINCT open_time) FROM bars").fetchone()[0]
    assert keys == 31


async def test_commits_when_batch_is_full_or_delay_elapsed(tmp_path: Path) -> None:
    db = tmp_path / "bars.sqlite"
    bus = EventBus()
    recorder = SqliteRecorder(path=str(db), batch_size=5, max_delay=0.3)
    await start_all(bus, [recorder])
    publish(bus, [make_bar(i) for i in range(7)])
    await wait_until(lambda: count_rows(db) == 5, 2.0, "the full batch")
    assert count_rows(db) == 5, "the 2 others wait for max_delay"
    await wait_until(lambda: count_rows(db) == 7, 2.0, "max_delay")
    publish(bus, [make_bar(7)])
    await stop_all(bus, [recorder])
    assert count_rows(db) == 8, "stop flushes"


async def test_export_equals_csv_recorder_byte_for_byte(tmp_path: Path) -> None:
    codec = KlineCodec()
    rows = json.loads(REST_BTC.read_text())
    bars = [codec.parse_rest_row("BTCUSDT", "1m", row) for row in rows]
    bars += [make_bar(i) for i in range(-3, 0)]
    bars.sort(key=lambda bar: bar.open_time)
    db = tmp_path / "bars.sqlite"
    bus = EventBus()
    csv = CsvRecorder(path=str(tmp_path / "{symbol}_{interval}.csv"))
    recorder = SqliteRecorder(path=str(db), batch_size=64)
    await start_all(bus, [csv, recorder])
    publish(bus, bars)
    await stop_all(bus, [csv, recorder])

    out = tmp_path / "export.csv"
    argv = ["--db", str(db), "--symbol", "BTCUSDT", "--interval", "1m", "--out", str(out)]
    assert export_main(argv) == 0
    expected = (tmp_path / "BTCUSDT_1m.csv").read_bytes()
    assert len(expected.splitlines()) == len(bars) + 1
    assert out.read_bytes() == expected
    via_cli = tmp_path / "via_cli.csv"
    assert quantcore_main(["export", *argv[:-1], str(via_cli)]) == 0
    assert via_cli.read_bytes() == expected


def test_export_cli_errors(tmp_path: Path) -> None:
    missing = ["--db", str(tmp_path / "none.sqlite"), "--symbol", "BTCUSDT", "--interval", "1m"]
    assert export_main(missing) == 2
    assert not (tmp_path / "none.sqlite").exists()


def test_constructible_from_yaml_params(tmp_path: Path) -> None:
    cls = import_component("quantcore.sinks.sqlite:SqliteRecorder", "consumers[0].class")
    params = {"path": str(tmp_path / "x.sqlite"), "batch_size": 100, "max_delay": 0.5}
    recorder = ConsumerSpec(cls, params, "consumers[0]").build()
    assert isinstance(recorder, SqliteRecorder)
    assert recorder.buffer.batch_size == 100


OLD_SCHEMA = (
    'CREATE TABLE bars (symbol TEXT NOT NULL, "interval" TEXT NOT NULL, open_time INTEGER NOT '
    "NULL, close_time INTEGER NOT NULL, open REAL NOT NULL, high REAL NOT NULL, low REAL NOT "
    "NULL, close REAL NOT NULL, volume REAL NOT NULL, quote_volume REAL NOT NULL, trades INTEGER"
    " NOT NULL, taker_buy_volume REAL NOT NULL, taker_buy_quote_volume REAL NOT NULL, "
    'event_time INTEGER NOT NULL, PRIMARY KEY (symbol, "interval", open_time)) WITHOUT ROWID'
)
"""The table quantcore made before exact decimals: prices as REAL (floats)."""


async def test_tiny_prices_and_huge_volumes_are_stored_and_exported_exactly(
    tmp_path: Path,
) -> None:
    codec = KlineCodec()
    row = [1704067200000, "0.00001036", "0.00001036", "0.00001034", "0.00001035",
           "1311851438.00", 1704067259999, "6732223209.87654307", 9, "0.00001234", "0", "0"]  # fmt: skip
    db = tmp_path / "bars.sqlite"
    bus = EventBus()
    recorder = SqliteRecorder(path=str(db))
    await start_all(bus, [recorder])
    publish(bus, [codec.parse_rest_row("SHIBUSDT", "1m", row)])
    await stop_all(bus, [recorder])
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT open, low, volume, quote_volume, taker_buy_volume FROM bars")
        assert stored.fetchall() == [
            ("0.00001036", "0.00001034", "1311851438.00", "6732223209.87654307", "0.00001234")
        ]
    out = tmp_path / "export.csv"
    argv = ["--db", str(db), "--symbol", "SHIBUSDT", "--interval", "1m", "--out", str(out)]
    assert export_main(argv) == 0
    assert out.read_text().splitlines()[1] == (
        "0.00001035,0.00001036,0.00001034,0.00001036,1311851438.00,6732223209.87654307,"
        "2024-01-01 00:00:00"
    )


async def test_a_float_table_from_an_older_quantcore_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bars.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(OLD_SCHEMA)
    recorder = SqliteRecorder(path=str(db))
    with pytest.raises(FloatTableError, match=r'table "bars" stores prices as REAL') as info:
        await start_all(EventBus(), [recorder])
    assert "\n" not in str(info.value) and str(db) in str(info.value)
    argv = ["--db", str(db), "--symbol", "BTCUSDT", "--interval", "1m"]
    assert export_main(argv) == 2
    assert 'table "bars" stores prices as REAL' in capsys.readouterr().err
