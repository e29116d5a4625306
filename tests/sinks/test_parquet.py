"""ParquetRecorder: exact decimals, month and year files, resume, one writer, foreign files refused."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quantcore
from quantcore.bus import EventBus
from quantcore.config import parse_config
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.consumers.history import HistoryStore
from quantcore.events import BarDecimals, BarEvent
from quantcore.sim.formats import read_data
from quantcore.sinks import parquet as parquet_module
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks.parquet import ParquetRecorder
from quantcore.sinks.parquet_decimals import exact_strings
from quantcore.sinks.parquet_format import StoreError
from tests.harness import csv_rows
from tests.paths import DATA
from tests.sinks.helpers import STREAM, make_bar, publish, start_all, stop_all

YEAR_FOLDER = "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2024"
MONTH_FILE = f"{YEAR_FOLDER}/2024-09.parquet"
JOURNAL = f"{YEAR_FOLDER}/_2024-09.journal.csv"


async def running(root: Path) -> tuple[ParquetRecorder, EventBus]:
    """A started ParquetRecorder of the store under ``root`` and the bus it listens on."""
    recorder, bus = ParquetRecorder(root=str(root)), EventBus()
    await start_all(bus, [recorder], [STREAM])
    return recorder, bus


def at(bar: BarEvent, open_time: datetime, interval: str = "1m") -> BarEvent:
    """``bar`` moved to ``open_time`` (same values), for month boundaries."""
    span = bar.close_time - bar.open_time
    return msgspec.structs.replace(
        bar,
        interval=interval,
        open_time=open_time,
        close_time=open_time + span,
        event_time=open_time + span + timedelta(milliseconds=1),
    )


def with_values(i: int, values: list[str]) -> BarEvent:
    """Bar ``i`` carrying the eight given strings as its prices and volumes."""
    floats = [float(v) for v in values]
    return msgspec.structs.replace(
        make_bar(i),
        open=floats[0],
        high=floats[1],
        low=floats[2],
        close=floats[3],
        volume=floats[4],
        quote_volume=floats[5],
        taker_buy_volume=floats[6],
        taker_buy_quote_volume=floats[7],
        decimals=BarDecimals(*values),
    )


def exact_rows(frame: object) -> list[tuple[str, ...]]:
    assert hasattr(frame, "itertuples")
    rows = []
    for row in frame.itertuples(index=False, name=None):
        *values, stamp = row
        rows.append((*values, stamp.strftime("%Y-%m-%d %H:%M:%S")))
    return rows


async def test_same_bars_as_the_csv_string_for_string_and_floats_as_the_history(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    bars = [make_bar(i) for i in range(50)]
    bus = EventBus()
    csv = CsvRecorder(path=str(tmp_path / "{symbol}_{interval}.csv"))
    recorder = ParquetRecorder(root=str(root))
    await start_all(bus, [csv, recorder], [STREAM])
    publish(bus, [*bars, *bars[10:20]])
    await stop_all(bus, [csv, recorder])
    history = HistoryStore()
    for bar in bars:
        history.on_bar(bar)

    exact = quantcore.load(*STREAM, source=root, exact=True)
    assert exact_rows(exact) == csv_rows(tmp_path / "BTCUSDT_1m.csv")
    floats = quantcore.load(*STREAM, source=root)
    assert floats.equals(history.frame(*STREAM))
    assert recorder.rows_written == 50 and recorder.unrecorded() == 0

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["_quantcore.json", "_venue=binance-spot.lock", MONTH_FILE]
    table = pq.read_table(root / MONTH_FILE)
    assert table.schema.field("quote_volume").type == pa.decimal128(38, 18)
    assert table.schema.field("open_time").type == pa.timestamp("ms", tz="UTC")
    assert table.column("quote_volume")[7].as_py() == Decimal(
        bars[7].decimal_strings().quote_volume
    )
    assert table.column("trades").to_pylist() == [b.trades for b in bars]
    assert table.column("event_time")[0].as_py() == bars[0].event_time
    assert table.column("close_time")[0].as_py() == bars[0].close_time


async def test_resumes_after_its_last_bar_and_appends_without_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "store"
    bars = [make_bar(i) for i in range(40)]
    recorder, bus = await running(root)
    assert recorder.resume_point(*STREAM) is None
    publish(bus, bars[:25])
    await stop_all(bus, [recorder])

    again, bus = await running(root)
    assert again.resume_point(*STREAM) == bars[24].open_time_ms
    publish(bus, bars)
    assert again.resume_point(*STREAM) == bars[-1].open_time_ms
    await stop_all(bus, [again])
    frame = quantcore.load(*STREAM, source=root, exact=True)
    assert list(frame["close"]) == [b.decimal_strings().close for b in bars]
    assert frame["datetime"].is_monotonic_increasing and frame["datetime"].is_unique


async def test_a_month_that_closes_is_compacted_into_its_own_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    last_of_august = datetime(2024, 8, 31, 23, 58, tzinfo=UTC)
    bars = [at(make_bar(i), last_of_august + timedelta(minutes=i)) for i in range(5)]
    recorder, bus = await running(root)
    publish(bus, bars)
    for future in recorder._compactions:
        future.result(timeout=10)
    stream = root / "venue=binance-spot/symbol=BTCUSDT/interval=1m"
    year = stream / "year=2024"
    assert pq.read_table(year / "2024-08.parquet").num_rows == 2
    assert not (year / "_2024-08.journal.csv").exists()
    assert (year / "_2024-09.journal.csv").read_bytes() == b"".join(
        fmt.journal_line(bar, bar.open_time_ms) for bar in bars[2:]
    )
    assert not (year / "2024-09.parquet").exists()
    # The month still open is read from its journal: load() always sees every bar.
    during = quantcore.load(*STREAM, source=root, exact=True)
    assert list(during["open"]) == [b.decimal_strings().open for b in bars]
    await stop_all(bus, [recorder])
    assert pq.read_table(year / "2024-09.parquet").num_rows == 3
    september_only = quantcore.load(*STREAM, start="2024-09-01", source=root)
    assert list(september_only["datetime"].dt.day) == [1, 1, 1]
    one = quantcore.load(*STREAM, start="2024-08-31 23:59", end="2024-09-01 00:01", source=root)
    assert [str(t) for t in one["datetime"]] == ["2024-08-31 23:59:00", "2024-09-01 00:00:00"]


async def test_journal_lines_are_journal_line_s_for_bars_with_and_without_strings(
    tmp_path: Path,
) -> None:
    """The recorder builds its lines inline (hot path): byte for byte fmt.journal_line's,
    also for bars built in code (no exchange strings); a bar seen again adds nothing."""
    root = tmp_path / "store"
    bars = [make_bar(0), msgspec.structs.replace(make_bar(1), decimals=None), make_bar(2)]
    recorder, bus = await running(root)
    publish(bus, [*bars, bars[1]])
    await bus.drain()
    expected = b"".join(fmt.journal_line(bar, bar.open_time_ms) for bar in bars)
    assert (root / JOURNAL).read_bytes() == expected
    assert b",10.43333333," in expected.splitlines()[1]
    await stop_all(bus, [recorder])
    assert recorder.rows_written == 3


def test_decimal_38_18_holds_every_binance_tick_step_limit_and_huge_volume() -> None:
    """Every price and quantity filter value of the real exchangeInfo (tick and step sizes,
    min and max price and quantity), and quote volumes of 18 significant digits, go
    through the journal and the Parquet column and come back as the same strings."""
    info = json.loads(read_data(DATA / "binance_spot_rest_exchangeInfo_2023-09-08.json.gz"))
    keys = ("tickSize", "minPrice", "maxPrice", "stepSize", "minQty", "maxQty")
    values = sorted(
        {
            rule[key]
            for symbol in info["symbols"]
            for rule in symbol["filters"]
            for key in keys
            if key in rule
        }
    )
    assert len(values) > 40 and "0.00000001" in values and "92141578.00000000" in values
    values += [
        "6732223209.87654307",
        "1311851438.00",
        "0",
        "99999999999999999999.999999999999999999",
    ]
    rows = [values[i : i + 8] for i in range(0, len(values) - 7, 8)]
    rows.append((values * 8)[len(values) - len(values) % 8 :][:8])
    journal = b"".join(
        fmt.journal_line(with_values(n, row), n * 60_000) for n, row in enumerate(rows)
    )
    table = fmt.to_store_table(
        fmt.pacsv.read_csv(
            pa.py_buffer(journal),
            read_options=fmt.pacsv.ReadOptions(column_names=list(fmt.JOURNAL_COLUMNS)),
            convert_options=fmt.pacsv.ConvertOptions(
                column_types={n: pa.string() for n in fmt.EXACT_COLUMNS}
            ),
        )
    )
    scales = table.column("scales").to_numpy()
    for position, name in enumerate(fmt.EXACT_COLUMNS):
        stored = table.column(name)
        own = (scales >> (5 * position)) & 31
        texts = exact_strings(stored, own).to_pylist()
        assert list(texts) == [row[position] for row in rows], name
        assert stored.to_pylist() == [Decimal(row[position]) for row in rows]
        if name in fmt.FLOAT_COLUMNS:
            floats = table.column(f"{name}_float").to_pylist()
            assert floats == [float(row[position]) for row in rows], name


def test_a_value_that_does_not_fit_is_refused_not_rounded() -> None:
    for text in ("0.0000000000000000001", "123456789012345678901"):
        journal = fmt.journal_line(with_values(0, [text] * 8), 0)
        table = fmt.pacsv.read_csv(
            pa.py_buffer(journal),
            read_options=fmt.pacsv.ReadOptions(column_names=list(fmt.JOURNAL_COLUMNS)),
            convert_options=fmt.pacsv.ConvertOptions(
                column_types={n: pa.string() for n in fmt.EXACT_COLUMNS}
            ),
        )
        with pytest.raises(StoreError, match="column open: "):
            fmt.to_store_table(table)


async def test_one_writer_per_store_and_foreign_folders_and_files_are_refused(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    first, bus = await running(root)
    with pytest.raises(
        StoreError, match=rf"_venue=binance-spot is being written .*pid {os.getpid()}"
    ):
        await ParquetRecorder(root=str(root)).start()
    await stop_all(bus, [first])

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StoreError, match="photos: not a quantcore Parquet store"):
        ParquetRecorder(root=str(foreign)).resume_point(*STREAM)
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]

    (root / YEAR_FOLDER).mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), root / MONTH_FILE)
    (root / JOURNAL).write_bytes(fmt.journal_line(make_bar(0), make_bar(0).open_time_ms))
    with pytest.raises(StoreError, match=r"2024-09\.parquet: not a quantcore Parquet file"):
        ParquetRecorder(root=str(root)).resume_point(*STREAM)
    assert pq.read_table(root / MONTH_FILE).column_names == ["x"]
    assert (root / JOURNAL).exists()


async def test_a_torn_journal_line_is_dropped_and_that_bar_is_fetched_again(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    bars = [make_bar(i) for i in range(6)]
    recorder, bus = await running(root)
    publish(bus, bars[:5])
    journal = root / JOURNAL
    with journal.open("ab") as handle:
        handle.write(fmt.journal_line(bars[5], bars[5].open_time_ms)[:30])
    recorder._streams[STREAM].close()  # as a kill -9 leaves it: journal not compacted
    recorder._lock.release()  # type: ignore[union-attr]

    again = ParquetRecorder(root=str(root))
    assert again.resume_point(*STREAM) == bars[4].open_time_ms
    assert not journal.exists()
    bus = EventBus()
    await start_all(bus, [again], [STREAM])
    publish(bus, bars)
    await stop_all(bus, [again])
    frame = quantcore.load(*STREAM, source=root, exact=True)
    assert list(frame["volume"]) == [b.decimal_strings().volume for b in bars]


def test_constructible_from_yaml_params_and_bad_names_refused(tmp_path: Path) -> None:
    config = parse_config(
        {
            "streams": [{"symbol": "BTCUSDT"}],
            "consumers": [{"class": "parquet", "params": {"root": str(tmp_path), "venue": "x-y"}}],
        }
    )
    component = config.consumers[0].build()
    assert isinstance(component, ParquetRecorder) and component.venue == "x-y"
    with pytest.raises(StoreError, match=r"refusing venue '\.\./x'"):
        ParquetRecorder(root=str(tmp_path), venue="../x")


async def test_a_failed_append_stops_the_stream_gap_free_and_a_restart_fills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    bars = [make_bar(i) for i in range(10)]
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if b",105," in data:  # bar 5 (trades 105): part of its line lands, then the disk is full
            return real_write(fd, data[:10])
        return real_write(fd, data)

    monkeypatch.setattr(parquet_module.os, "write", full_disk)
    recorder, bus = await running(root)
    publish(bus, bars)
    await bus.drain()
    journal = root / JOURNAL
    assert journal.read_bytes().endswith(fmt.journal_line(bars[4], bars[4].open_time_ms))
    await stop_all(bus, [recorder])
    assert (recorder.rows_written, recorder.unrecorded()) == (5, 5)
    monkeypatch.setattr(parquet_module.os, "write", real_write)

    again = ParquetRecorder(root=str(root))
    assert again.resume_point(*STREAM) == bars[4].open_time_ms
    bus = EventBus()
    await start_all(bus, [again], [STREAM])
    publish(bus, bars)
    await stop_all(bus, [again])
    frame = quantcore.load(*STREAM, source=root, exact=True)
    assert list(frame["open"]) == [b.decimal_strings().open for b in bars]


async def test_two_venues_share_a_store_one_writer_each(tmp_path: Path) -> None:
    root = tmp_path / "store"
    spot, usdm = (
        ParquetRecorder(root=str(root)),
        ParquetRecorder(root=str(root), venue="binance-usdm"),
    )
    bus = EventBus()
    await start_all(bus, [spot, usdm], [STREAM])
    with pytest.raises(StoreError, match="_venue=binance-usdm is being written"):
        await ParquetRecorder(root=str(root), venue="binance-usdm").start()
    publish(bus, [make_bar(i) for i in range(3)])
    await stop_all(bus, [spot, usdm])
    with pytest.raises(quantcore.LoadError, match="held for several venues; pass venue="):
        quantcore.load(*STREAM, source=root)
    frame = quantcore.load(*STREAM, source=root, venue="binance-usdm", exact=True)
    assert list(frame["close"]) == [make_bar(i).decimal_strings().close for i in range(3)]


async def test_a_bar_that_reaches_a_stopping_recorder_is_counted_lost_never_half_written(
    tmp_path: Path,
) -> None:
    """A bar arriving while the journal is compacted (or after the stop) is not appended to
    a journal being merged or closed, nor does it reopen the store: it is counted as not
    recorded, and the store holds exactly the bars before the stop."""
    root = tmp_path / "store"
    bars = [make_bar(i) for i in range(7)]
    recorder, bus = await running(root)
    publish(bus, bars[:5])
    await bus.drain()
    stopping = asyncio.create_task(recorder.stop())
    await asyncio.sleep(0)  # the stop has begun: its compaction runs in a thread now
    recorder.on_bar(bars[5])
    await stopping
    recorder.on_bar(bars[6])
    assert (recorder.rows_written, recorder.unrecorded()) == (5, 2)
    frame = quantcore.load(*STREAM, source=root, exact=True)
    assert list(frame["open"]) == [b.decimal_strings().open for b in bars[:5]]
    assert not (root / JOURNAL).exists()
    assert ParquetRecorder(root=str(root)).resume_point(*STREAM) == bars[4].open_time_ms
