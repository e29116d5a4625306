"""SqliteRecorder: idempotent upsert, batched WAL commits, resume, CSV export == CsvRecorder."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from quantcore.bus import EventBus
from quantcore.config import ConsumerSpec, import_component
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.feeds.binance.codec import KlineCodec
from quantcore.sinks.export import main as export_main
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
