"""``export --to parquet``, ``check`` and ``history`` with the Parquet research store.

Conversions are compared with their source string for string (the real Binance recording
of tests/data, and every field of a SQLite stream); a store a running recorder holds, a
folder that is not a store, bad rows and a stream the store already holds are each one
line, with the store byte for byte as it was; ``check`` finds a planted gap in a store
exactly as in the CSV; ``history`` fills a store with the exchange's own strings.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import quantcore
from quantcore.bus import EventBus
from quantcore.cli import main
from quantcore.consumers.csv_recorder import HEADER
from quantcore.events import GAP, BarEvent, GapEvent, GapReason, epoch_ms
from quantcore.gapfile import STORE_NAME
from quantcore.sim.sources import ReplaySource
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout
from quantcore.sinks.parquet import ParquetRecorder
from quantcore.sinks.parquet_decimals import exact_strings
from quantcore.sinks.sqlite import SqliteRecorder
from tests.harness import Row, csv_rows, truth_row
from tests.paths import CSV_BTC, CSV_SHIB
from tests.sinks.helpers import make_bar, publish, start_all, stop_all

pytestmark = pytest.mark.timeout(120)

BTC_ROWS = 14_401
"""Rows of the real BTCUSDT recording (2025-08-01 00:00 .. 2025-08-11 00:00)."""


def write_csv(path: Path, rows: list[Row]) -> Path:
    path.write_text(HEADER + "".join(",".join(row) + "\n" for row in rows))
    return path


def recording(source: Path, symbol: str | None = None) -> list[Row]:
    """A real Binance recording as the CsvRecorder writes it: the exchange's strings."""
    return [truth_row(k) for k in ReplaySource.from_file(source, symbol).klines()]


def loaded_rows(store: Path, symbol: str) -> list[Row]:
    """The store's stream through ``quantcore.load(exact=True)``, as CSV rows."""
    frame = quantcore.load(symbol, "1m", source=store, exact=True)
    stamps = frame["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S")
    columns = [*(frame[c].tolist() for c in frame.columns[:6]), stamps.tolist()]
    return [tuple(row) for row in zip(*columns, strict=True)]


def export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``quantcore export --to parquet ARGS`` in this process: (exit code, stderr); stdout
    must stay empty."""
    code = main(["export", "--to", "parquet", "--interval", "1m", *args])
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_real_recording_converts_string_for_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real BTCUSDT (10 days) and SHIBUSDT (8-decimal prices) recordings into one store:
    ``load(exact=True)`` gives back every CSV string and ``load()`` the CSV's floats; the
    fields a CSV lacks are null (unknown), not invented; no temporary file is left."""
    store = tmp_path / "store"
    btc = write_csv(tmp_path / "BTCUSDT_1m.csv", recording(CSV_BTC))
    shib = write_csv(tmp_path / "SHIBUSDT_1m.csv", recording(CSV_SHIB, "SHIBUSDT"))
    for path, symbol, rows in ((btc, "BTCUSDT", BTC_ROWS), (shib, "SHIBUSDT", 1000)):
        code, err = export(capsys, "--csv", str(path), "--symbol", symbol, "--out", str(store))
        assert (code, err) == (0, f"export: {rows} bars of {symbol} 1m into {store}\n")
        assert loaded_rows(store, symbol) == csv_rows(path)
        floats = quantcore.load(symbol, "1m", source=store)
        assert floats.equals(quantcore.load(symbol, "1m", source=path))
    assert loaded_rows(store, "SHIBUSDT")[0][:4] == (
        "0.00001035", "0.00001036", "0.00001034", "0.00001036",
    )  # fmt: skip
    year = store / "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2025"
    table = layout.read_part(layout.Part(year, 2025, 8))
    for name in ("trades", "taker_buy_volume", "taker_buy_quote_volume", "event_time"):
        assert table.column(name).null_count == BTC_ROWS, name
    closes = table.column("close_time").cast(pa.int64()).to_numpy()
    opens = table.column("open_time").cast(pa.int64()).to_numpy()
    assert (closes == opens + 59_999).all()
    assert sorted(files(store)) == [
        "_quantcore.json",
        "_venue=binance-spot.lock",
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2025/2025-08.parquet",
        "venue=binance-spot/symbol=SHIBUSDT/interval=1m/year=2024/2024-01.parquet",
    ]


def test_a_sqlite_stream_converts_with_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bars over two months, recorded by the SqliteRecorder: every field of every bar
    (times, the eight exact strings, trades) is in the store, each month in its file."""
    db = tmp_path / "bars.sqlite"
    bars = [make_bar(i) for i in [*range(50), *range(39_000, 39_050)]]  # September, October

    async def record() -> None:
        bus, recorder = EventBus(), SqliteRecorder(path=str(db))
        await start_all(bus, [recorder])
        publish(bus, bars)
        await stop_all(bus, [recorder])

    asyncio.run(record())
    store = tmp_path / "store"
    code, err = export(capsys, "--db", str(db), "--symbol", "BTCUSDT", "--out", str(store))
    assert (code, err) == (0, f"export: 100 bars of BTCUSDT 1m into {store}\n")
    assert stored_bars(store, "BTCUSDT") == [fields(bar) for bar in bars]
    names = sorted(str(p.relative_to(store)) for p in store.glob("venue=*/*/*/*/*"))
    assert names == [
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2024/2024-09.parquet",
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2024/2024-10.parquet",
    ]


def test_a_sqlite_stream_s_exchange_gaps_come_along_and_check_labels_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bars 0-9 and 13-19 with 10-12 written down by the SqliteRecorder as an exchange gap:
    the store's ``_gaps.csv`` gets the range, and ``check`` calls the hole known, as it
    does for the database itself."""
    db = tmp_path / "bars.sqlite"
    bars = [make_bar(i) for i in [*range(10), *range(13, 20)]]
    gap = GapEvent("BTCUSDT", "1m", make_bar(10).open_time, make_bar(12).open_time,
                   GapReason.EXCHANGE)  # fmt: skip

    async def record() -> None:
        bus, recorder = EventBus(), SqliteRecorder(path=str(db))
        await start_all(bus, [recorder])
        publish(bus, bars[:10])
        bus.publish(GAP, gap)
        publish(bus, bars[10:])
        await stop_all(bus, [recorder])

    asyncio.run(record())
    store = tmp_path / "store"
    code, err = export(capsys, "--db", str(db), "--symbol", "BTCUSDT", "--out", str(store))
    assert (code, err) == (0, f"export: 17 bars of BTCUSDT 1m into {store}\n")
    gaps = store / "venue=binance-spot/symbol=BTCUSDT/interval=1m" / STORE_NAME
    assert gaps.read_text().splitlines()[1:] == [
        f"2024-09-04 02:37:00,2024-09-04 02:39:00,{GapReason.EXCHANGE.value}"
    ]
    for target in (db, store):
        assert main(["check", str(target)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[1:] == [
            "  known gaps: 1 (3 bars, not counted as problems)",
            "    2024-09-04 02:37:00 .. 2024-09-04 02:39:00 missing (3 bars): "
            f"{GapReason.EXCHANGE.value}",
        ], lines


def fields(bar: BarEvent) -> tuple[object, ...]:
    d = bar.decimals
    assert d is not None
    times = (epoch_ms(bar.open_time), epoch_ms(bar.close_time), epoch_ms(bar.event_time))
    return (*times, bar.trades, d.open, d.high, d.low, d.close, d.volume, d.quote_volume,
            d.taker_buy_volume, d.taker_buy_quote_volume)  # fmt: skip


def stored_bars(store: Path, symbol: str) -> list[tuple[object, ...]]:
    """Every field of every stored bar: times in ms, trades, the eight exact strings."""
    table = layout.read_stream(store, symbol, "1m", None, None, None)
    scales = table.column("scales").to_numpy()
    texts = [
        exact_strings(table.column(name), (scales >> (5 * n)) & 31).to_pylist()
        for n, name in enumerate(fmt.EXACT_COLUMNS)
    ]
    times = [table.column(c).cast(pa.int64()).to_pylist()
             for c in ("open_time", "close_time", "event_time")]  # fmt: skip
    return list(zip(*times, table.column("trades").to_pylist(), *texts, strict=True))


def test_a_stream_the_store_holds_is_continued_only_when_the_shared_bars_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule for a store that holds the stream already: the bars after its last bar are
    appended, the ones it holds are skipped (run again: nothing added, exit 0); a source
    whose shared bars differ by one digit is refused with the store byte for byte; --force
    replaces the stream with the source, months the source lacks included."""
    rows = recording(CSV_BTC)
    store = tmp_path / "store"
    head = write_csv(tmp_path / "head.csv", rows[:5000])
    whole = write_csv(tmp_path / "whole.csv", rows)
    argv = ["--symbol", "BTCUSDT", "--out", str(store)]
    assert export(capsys, "--csv", str(head), *argv)[0] == 0
    code, err = export(capsys, "--csv", str(whole), *argv)
    assert (code, err) == (
        0,
        f"export: {BTC_ROWS - 5000} bars of BTCUSDT 1m into {store}; "
        "5000 already in the store, skipped\n",
    )
    assert loaded_rows(store, "BTCUSDT") == rows
    again = export(capsys, "--csv", str(whole), *argv)
    assert again == (0, f"export: 0 bars of BTCUSDT 1m into {store}; {BTC_ROWS} already in the store, skipped\n")  # fmt: skip

    changed = list(rows)
    changed[4000] = (changed[4000][0][:-1] + "1", *changed[4000][1:])  # close, last digit
    other = write_csv(tmp_path / "other.csv", [*changed, *recording_after(rows, 3)])
    before = files(store)
    code, err = export(capsys, "--csv", str(other), *argv)
    assert (code, err) == (
        2,
        f"export: {store}: already holds BTCUSDT 1m {rows[4000][6]} with other values than "
        f"{other} line 4002; left as is (--force replaces the stream)\n",
    )
    assert files(store) == before

    code, err = export(capsys, "--csv", str(other), *argv, "--force")
    assert (code, err) == (0, f"export: {BTC_ROWS + 3} bars of BTCUSDT 1m into {store}\n")
    assert loaded_rows(store, "BTCUSDT") == csv_rows(other)

    september = write_csv(tmp_path / "september.csv", recording_after(rows, 2, days=31))
    assert export(capsys, "--csv", str(september), *argv, "--force")[0] == 0
    assert loaded_rows(store, "BTCUSDT") == csv_rows(september)
    assert not (
        store / "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2025/2025-08.parquet"
    ).exists()


def recording_after(rows: list[Row], count: int, days: int = 0) -> list[Row]:
    """``count`` more bars after the last of ``rows`` (``days`` later), the last bar's
    strings: rows the source has and the store does not."""
    last = np.datetime64(rows[-1][6], "s") + np.timedelta64(days, "D")
    stamps = [str(last + np.timedelta64(n + 1, "m")).replace("T", " ") for n in range(count)]
    return [(*rows[-1][:6], stamp) for stamp in stamps]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("56000.1,56001,55999,abc,1,2,2025-08-01 00:03:00",
         "line 5: open 'abc' is not a plain decimal"),
        ("56000.1,56001,55999,56000,1,2,2025-08-01 00:01:00",
         "line 5: 2025-08-01 00:01:00 does not follow 2025-08-01 00:02:00 (a duplicate or a "
         "row out of order; quantcore check lists them)"),
        ("56000.1,56001,55999,56000,1,2,2025-08-01 00:03:30",
         "line 5: 2025-08-01 00:03:30 is not a 1m bar open time"),
        ("56000.1,56001,55999,56000,1,2,2025-08-01 25:03:00",
         "line 5: datetime '2025-08-01 25:03:00' is not YYYY-MM-DD HH:MM:SS (UTC)"),
    ],
)  # fmt: skip
def test_a_bad_row_is_one_line_naming_it_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    path.write_text(
        HEADER + "".join(",".join(r) + "\n" for r in recording(CSV_BTC)[:3]) + line + "\n"
    )
    store = tmp_path / "store"
    code, err = export(capsys, "--csv", str(path), "--symbol", "BTCUSDT", "--out", str(store))
    assert (code, err) == (2, f"export: {path}: {message}; nothing written\n")
    assert not store.exists()


def test_refusals_are_one_line_and_touch_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "BTCUSDT_1m.csv", recording(CSV_BTC)[:10])
    argv = ["--symbol", "BTCUSDT"]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me\n")
    for flag in ([], ["--force"]):
        code, err = export(capsys, "--csv", str(csv), *argv, "--out", str(notes), *flag)
        assert (code, err) == (
            2, f"export: {notes}: not a quantcore Parquet store (no _quantcore.json); left as is\n"
        )  # fmt: skip
    assert files(notes) == {"mine.txt": b"keep me\n"}
    empty = write_csv(tmp_path / "empty.csv", [])
    code, err = export(capsys, "--csv", str(empty), *argv, "--out", str(tmp_path / "s"))
    assert (code, err) == (1, f"export: {empty}: no bars; nothing written\n")
    code, err = export(capsys, "--csv", str(csv), *argv)
    assert (code, err) == (2, "export: --to parquet needs --out ROOT (the store's folder)\n")
    code, err = export(capsys, "--csv", str(csv), "--db", "x.sqlite", *argv, "--out", "s")
    assert (code, err) == (2, "export: give --db or --csv, not both\n")
    assert not (tmp_path / "s").exists()


async def test_a_store_a_running_recorder_holds_is_refused_even_with_force(
    tmp_path: Path,
) -> None:
    """A ParquetRecorder (this process) records into the store; ``export`` in its own
    process is refused with the recorder's pid, by the recorder's own lock, and the store
    is byte for byte what it was."""
    import os

    store = tmp_path / "store"
    csv = write_csv(tmp_path / "BTCUSDT_1m.csv", recording(CSV_BTC)[:10])
    bus, recorder = EventBus(), ParquetRecorder(root=str(store))
    await start_all(bus, [recorder])
    try:
        publish(bus, [make_bar(i) for i in range(5)])
        await bus.drain()
        before = files(store)
        for flag in ([], ["--force"]):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "quantcore", "export", "--to", "parquet", "--csv", str(csv),
                "--symbol", "BTCUSDT", "--interval", "1m", "--out", str(store), *flag,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert (process.returncode, out, err.decode()) == (
                2,
                b"",
                f"export: {store}/_venue=binance-spot is being written by another quantcore "
                f"process (pid {os.getpid()})\n",
            )
            assert files(store) == before
    finally:
        await stop_all(bus, [recorder])


def test_check_reports_a_planted_gap_in_a_store_as_in_the_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three bars cut from the real recording: ``check`` of the converted store lists the
    same hole as ``check`` of the CSV (exit 1); bars still in a journal are checked too."""
    rows = recording(CSV_BTC)[:600]
    gapped = write_csv(tmp_path / "BTCUSDT_1m.csv", [*rows[:100], *rows[103:]])
    store = tmp_path / "store"
    assert export(capsys, "--csv", str(gapped), "--symbol", "BTCUSDT", "--out", str(store))[0] == 0
    assert main(["check", str(store), str(gapped)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{store}:binance-spot: BTCUSDT 1m: 597 rows, 2025-08-01 00:00:00 .. 2025-08-01 09:59:00 UTC: 1 problem",
        "  holes: 1 (3 bars missing)",
        "    2025-08-01 01:40:00 .. 2025-08-01 01:42:00 missing (3 bars)",
        f"{gapped}: BTCUSDT 1m: 597 rows, 2025-08-01 00:00:00 .. 2025-08-01 09:59:00 UTC: 1 problem",
        "  holes: 1 (3 bars missing)",
        "    2025-08-01 01:40:00 .. 2025-08-01 01:42:00 missing (3 bars)",
    ]
    month = next(store.glob("venue=*/symbol=*/interval=*/year=*/2025-08.parquet"))
    opened = 1_754_042_400_000  # 2025-08-01 10:00, after the file's last bar: low above open
    (month.parent / "_2025-08.journal.csv").write_text(
        f"{opened},{opened + 59_999},{opened + 60_000},7,1,2,1.5,1,1,1,1,1\n"
    )
    assert main(["check", str(store)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{store}:binance-spot: BTCUSDT 1m: 598 rows, 2025-08-01 00:00:00 .. 2025-08-01 10:00:00 UTC: 3 problems",
        "  holes: 1 (3 bars missing)",
        "    2025-08-01 01:40:00 .. 2025-08-01 01:42:00 missing (3 bars)",
        "  ohlc: 2",
        "    year=2025/2025-08.parquet row 598: 2025-08-01 10:00:00: low 1.5 > open 1",
        "    year=2025/2025-08.parquet row 598: 2025-08-01 10:00:00: low 1.5 > close 1",
    ]


def test_check_of_a_folder_that_is_not_a_store_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"quantcore check: {tmp_path}: not a quantcore Parquet store (no _quantcore.json)\n"
    )


def test_history_fills_a_store_with_the_exchanges_strings_and_resumes_it(tmp_path: Path) -> None:
    """``history`` with a ``class: parquet`` consumer (beside the CSV) over a year's end,
    then again over a longer range: every field of every bar equals the exchange's, none
    twice, the finished year merged into one file and the new year's month in its own;
    the CSV converted by ``export`` holds the same values as the store ``history`` wrote."""
    from quantcore.config import parse_config
    from quantcore.history.command import record_history
    from quantcore.sim import LocalExchange

    store, csv = tmp_path / "store", tmp_path / "BTCUSDT_1m.csv"

    async def fill(since: str, until: str) -> list[tuple[object, ...]]:
        async with LocalExchange(symbols=["BTCUSDT"], seed=11, speed=None) as exchange:
            config = parse_config({
                "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url,
                             "archive_url": exchange.archive_url},
                "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
                "consumers": [{"class": "csv", "params": {"path": str(csv)}},
                              {"class": "parquet", "params": {"root": str(store)}}],
            })  # fmt: skip
            lo, hi = day(since), day(until) + 86_400_000
            _, _, lost = await record_history(config, lo, hi, tmp_path / "cache")
            assert lost == 0
            source = exchange.market.sources["BTCUSDT"]
            return [
                (k.open_time, k.close_time, k.trades, k.open, k.high, k.low, k.close, k.volume,
                 k.quote_volume, k.taker_buy_base, k.taker_buy_quote)
                for k in (bar.kline() for bar in source.aggregated(60_000, lo, hi))
            ]  # fmt: skip

    def without_event_time(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return [(*row[:2], *row[3:]) for row in rows]

    expected = asyncio.run(fill("2024-12-30", "2025-01-01"))
    assert len(expected) == 3 * 1440
    assert without_event_time(stored_bars(store, "BTCUSDT")) == expected
    year = store / "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2024"
    assert sorted(p.name for p in year.iterdir()) == ["2024.parquet"]
    longer = asyncio.run(fill("2024-12-30", "2025-01-02"))
    assert longer[: len(expected)] == expected and len(longer) == 4 * 1440
    assert without_event_time(stored_bars(store, "BTCUSDT")) == longer
    months = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    assert months == [
        "_quantcore.json",
        "_venue=binance-spot.lock",
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2024/2024.parquet",
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2025/2025-01.parquet",
    ]
    converted = tmp_path / "converted"
    argv = ["export", "--to", "parquet", "--csv", str(csv), "--symbol", "BTCUSDT",
            "--interval", "1m", "--out", str(converted)]  # fmt: skip
    assert main(argv) == 0
    assert loaded_rows(converted, "BTCUSDT") == loaded_rows(store, "BTCUSDT") == csv_rows(csv)


def day(text: str) -> int:
    return int(np.datetime64(text, "ms").astype(np.int64))


async def test_replay_of_a_converted_csv_gives_the_csv_replays_events(tmp_path: Path) -> None:
    """Real 1m rows (and a 5m CSV) converted into a store: ``replay --source parquet``
    publishes exactly the events ``replay --source csv`` does (a CSV bar has trades 0 and
    taker volumes "0" in both), and the strategy's signals agree."""
    from tests.test_replay import replayed

    rows = recording(CSV_BTC)[:400]
    write_csv(tmp_path / "BTCUSDT_1m.csv", rows)
    write_csv(tmp_path / "BTCUSDT_5m.csv", rows[::5])
    for interval in ("1m", "5m"):
        code = await asyncio.to_thread(
            main, ["export", "--to", "parquet", "--csv", str(tmp_path / f"BTCUSDT_{interval}.csv"),
                   "--symbol", "BTCUSDT", "--interval", interval, "--out", str(tmp_path / "parquet")]
        )  # fmt: skip
        assert code == 0
    from_csv = await replayed(tmp_path)
    from_store = await replayed(tmp_path, source="parquet", path=str(tmp_path / "parquet"))
    assert len(from_csv.bars) == 480 and from_store.bars == from_csv.bars
    assert from_store.signals == from_csv.signals and from_csv.signals


def test_the_docs_console_example_prints_what_it_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/research.md's ``console`` block, run command by command on the real recording."""
    import shlex

    from tests.paths import REPO

    text = (REPO / "docs" / "research.md").read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "BTCUSDT_1m.csv", recording(CSV_BTC))
    commands = re.findall(r"^\$ quantcore (.*)\n((?:[^$].*\n)*)", blocks[0], re.MULTILINE)
    assert len(commands) == 3
    for command, shown in commands:
        assert main(shlex.split(command)) == 0
        out, err = capsys.readouterr()
        assert out + err == shown, command


def test_an_export_over_a_year_end_merges_the_finished_year_into_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bars from 2024-12-31 23:57 to 2025-01-01 00:02: 2024 is over (a 2025 bar exists), so
    its month becomes ``2024.parquet``; 2025 stays a month file; check reads both."""
    start = [("1.5", "2", "1", "1.25", "10", "12.5", "2024-12-31 23:56:00")]
    rows = recording_after(start, 6)
    csv = write_csv(tmp_path / "BTCUSDT_1m.csv", rows)
    store = tmp_path / "store"
    code, err = export(capsys, "--csv", str(csv), "--symbol", "BTCUSDT", "--out", str(store))
    assert (code, err) == (0, f"export: 6 bars of BTCUSDT 1m into {store}\n")
    assert [name for name in files(store) if name.endswith(".parquet")] == [
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2024/2024.parquet",
        "venue=binance-spot/symbol=BTCUSDT/interval=1m/year=2025/2025-01.parquet",
    ]
    assert loaded_rows(store, "BTCUSDT") == csv_rows(csv)
    assert main(["check", str(store)]) == 0
    assert capsys.readouterr().out == (
        f"{store}:binance-spot: BTCUSDT 1m: 6 rows, 2024-12-31 23:57:00 .. "
        "2025-01-01 00:02:00 UTC: clean\n"
    )
