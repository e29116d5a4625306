"""The Parquet store's closed years: merged into one file on evidence, read by every reader,
and a merge a crash interrupted is finished (or undone) at the next start, nothing lost."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quantcore
from quantcore.cli import main
from quantcore.events import BarEvent
from quantcore.filelock import lock_for_writing
from quantcore.quality_parquet import check_store
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout
from quantcore.sinks.parquet import ParquetRecorder
from quantcore.sinks.parquet_format import StoreError
from tests.sinks.helpers import STREAM, make_bar, publish, stop_all
from tests.sinks.test_parquet import at, running

STREAM_DIR = "venue=binance-spot/symbol=BTCUSDT/interval=1m"
MOMENTS = [
    datetime(2024, 11, 30, 23, 59, tzinfo=UTC),
    datetime(2024, 12, 15, 12, 0, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 58, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, tzinfo=UTC),
    datetime(2025, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2025, 1, 1, 0, 1, tzinfo=UTC),
]
BARS = [at(make_bar(i), moment) for i, moment in enumerate(MOMENTS)]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def exact_opens(root: Path) -> list[str]:
    return list(quantcore.load(*STREAM, source=root, exact=True)["open"])


def strings(bars: list[BarEvent]) -> list[str]:
    return [b.decimal_strings().open for b in bars]


async def record(root: Path, bars: list[BarEvent]) -> ParquetRecorder:
    recorder, bus = await running(root)
    publish(bus, bars)
    await stop_all(bus, [recorder])
    return recorder


async def test_a_closed_year_is_one_file_that_pandas_polars_and_duckdb_read(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    recorder, bus = await running(root)
    publish(bus, BARS)
    await bus.drain()
    for future in recorder._compactions:
        future.result(timeout=10)
    stream = root / STREAM_DIR
    # The first bar of 2025 is the evidence: 2024's two months became one file.
    assert names(stream / "year=2024") == ["2024.parquet"]
    assert names(stream / "year=2025") == ["_2025-01.journal.csv"]
    assert exact_opens(root) == strings(BARS)
    await stop_all(bus, [recorder])
    assert names(stream / "year=2025") == ["2025-01.parquet"]
    assert exact_opens(root) == strings(BARS)
    december = quantcore.load(*STREAM, start="2024-12-01", end="2025-01-01", source=root)
    assert [str(t) for t in december["datetime"]] == [
        "2024-12-15 12:00:00", "2024-12-31 23:58:00", "2024-12-31 23:59:00",
    ]  # fmt: skip

    frame = pd.read_parquet(root)
    assert sorted(frame["open_time"].dt.year.tolist()) == [2024] * 4 + [2025] * 2
    polars = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True).collect()
    assert polars.group_by("year").len().sort("year").rows() == [(2024, 4), (2025, 2)]
    counts = duckdb.sql(
        f"SELECT year, count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning = "
        "true) GROUP BY year ORDER BY year"
    ).fetchall()
    assert counts == [(2024, 4), (2025, 2)]
    (report,) = check_store(root)
    assert report.rows == len(BARS) and report.problems == {}


async def test_the_last_bar_of_a_year_closes_it_when_the_recorder_stops(tmp_path: Path) -> None:
    root = tmp_path / "store"
    await record(root, BARS[:3])
    year = root / STREAM_DIR / "year=2024"
    assert names(year) == ["2024-11.parquet", "2024-12.parquet"]  # 23:58 is not the last bar
    await record(root, BARS[:4])
    assert names(year) == ["2024.parquet"]
    assert exact_opens(root) == strings(BARS[:4])


async def test_a_year_too_large_for_memory_is_merged_a_month_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``ONE_GROUP_ROWS`` (a year of 1s bars) each month becomes its own row group,
    streamed, so the merge never holds the year; the bars read back the same."""
    monkeypatch.setattr(layout, "ONE_GROUP_ROWS", 2)
    root = tmp_path / "store"
    await record(root, BARS)
    year = root / STREAM_DIR / "year=2024"
    assert names(year) == ["2024.parquet"]
    assert pq.ParquetFile(year / "2024.parquet").num_row_groups == 2
    assert exact_opens(root) == strings(BARS)
    assert len(pd.read_parquet(root)) == len(BARS)


def hide_months(year: Path, months: list[layout.Part]) -> None:
    for month in months:
        month.data.rename(month.merged)


@pytest.mark.parametrize("crash", ["writing the year", "months hidden", "before the unlink"])
async def test_a_year_merge_a_crash_interrupted_is_completed_or_undone_at_the_next_start(
    tmp_path: Path, crash: str
) -> None:
    """The states a kill -9 can leave between a merge's steps: every one loads the same bars
    before the restart, and the restart ends with one year file and nothing hidden."""
    root = tmp_path / "store"
    await record(root, BARS[:3])
    year = root / STREAM_DIR / "year=2024"
    months = [layout.Part(year, 2024, 11), layout.Part(year, 2024, 12)]
    whole = layout.Part(year, 2024)
    table = pa.concat_tables([layout.read_part(m) for m in months])
    if crash == "writing the year":
        fmt.temp_of(whole.data).write_bytes(b"PAR1 half a file")
    else:
        fmt.write_file(fmt.temp_of(whole.data), table)
        hide_months(year, months)
        if crash == "before the unlink":
            fmt.temp_of(whole.data).rename(whole.data)
    assert exact_opens(root) == strings(BARS[:3])

    await record(root, BARS)
    assert names(year) == ["2024.parquet"]
    assert names(root / STREAM_DIR / "year=2025") == ["2025-01.parquet"]
    assert exact_opens(root) == strings(BARS)
    assert len(pd.read_parquet(root)) == len(BARS)


def test_a_store_of_the_month_folder_layout_is_refused_with_its_layout_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    old = json.dumps({"format": "quantcore-parquet", "version": 1}).encode()
    (root / fmt.MARKER).write_bytes(old)
    month = root / STREAM_DIR / "year=2024" / "month=09"
    month.mkdir(parents=True)
    (month / "data.parquet").write_bytes(b"PAR1 a layout-1 file")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    named = r"_quantcore\.json: a store of layout 1 \(year=/month="
    with pytest.raises(StoreError, match=named):
        ParquetRecorder(root=str(root)).resume_point(*STREAM)
    with pytest.raises(quantcore.LoadError, match=named):  # never read as an empty store
        quantcore.load(*STREAM, source=root)
    assert main(["check", str(root)]) == 2
    assert re.search(named, capsys.readouterr().err)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def as_layout_1(root: Path) -> None:
    """Rewrite a store as quantcore wrote it before layout 2: ``year=/month=/data.parquet``
    with nullable columns, and a marker without a layout."""
    for path in sorted(root.glob("venue=*/symbol=*/interval=*/year=*/*.parquet")):
        month = path.stem.split("-")[1]
        folder = path.parent / f"month={month}"
        folder.mkdir()
        old = pa.schema([field.with_nullable(True) for field in fmt.SCHEMA],
                        metadata=fmt.SCHEMA.metadata)  # fmt: skip
        fmt.write_file(folder / "data.parquet", pq.read_table(path).cast(old))
        path.unlink()
    (root / fmt.MARKER).write_text(json.dumps(fmt.FORMAT))


async def test_upgrade_rewrites_a_layout_1_store_in_place_every_bar_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Month folders (one with a journal the old recorder left, one a journal only) become
    month files, the finished year one file, the marker layout 2; every exact value is
    kept, also of a month an interrupted upgrade left half moved. A venue being written,
    or a file that is not ours in a month folder, refuses it (exit 2, nothing lost) and
    a rerun finishes it."""
    root = tmp_path / "store"
    await record(root, BARS[:3])
    as_layout_1(root)
    stream = root / STREAM_DIR
    (stream / "year=2024/month=12/_journal.csv").write_bytes(
        fmt.journal_line(BARS[3], BARS[3].open_time_ms)
    )
    (stream / "year=2025/month=01").mkdir(parents=True)
    (stream / "year=2025/month=01/_journal.csv").write_bytes(
        b"".join(fmt.journal_line(bar, bar.open_time_ms) for bar in BARS[4:])
    )
    # December as a crash in an earlier upgrade left it: its month file written and the old
    # file deleted, the old journal (23:59) still there.
    december = stream / "year=2024/month=12"
    fmt.write_atomically(layout.Part(stream / "year=2024", 2024, 12).data,
                         pq.read_table(december / "data.parquet").cast(fmt.SCHEMA))  # fmt: skip
    (december / "data.parquet").unlink()
    stranger = stream / "year=2025/month=01/notes.txt"
    stranger.write_text("mine")
    assert main(["upgrade", str(root)]) == 2
    assert "year=2025/month=01" in capsys.readouterr().err
    assert stranger.read_text() == "mine"
    stranger.unlink()

    busy = lock_for_writing(root / "_venue=binance-spot")
    assert main(["upgrade", str(root)]) == 2
    assert "_venue=binance-spot is being written" in capsys.readouterr().err
    busy.release()

    assert main(["upgrade", str(root)]) == 0
    assert capsys.readouterr().err.startswith(f"upgrade: {root}: layout 2, ")
    assert json.loads((root / fmt.MARKER).read_bytes())["layout"] == 2
    assert names(stream / "year=2024") == ["2024.parquet"]
    assert names(stream / "year=2025") == ["2025-01.parquet"]
    assert exact_opens(root) == strings(BARS)
    frame = quantcore.load(*STREAM, source=root, exact=True)
    assert list(frame["baseVolume"]) == [b.decimal_strings().quote_volume for b in BARS]
    assert main(["upgrade", str(root)]) == 0
    assert capsys.readouterr().err == f"upgrade: {root}: layout 2, 0 months moved\n"
