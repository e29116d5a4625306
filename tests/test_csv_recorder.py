"""CsvRecorder: header once, one flushed line per closed bar, resume, torn-line repair."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.component import Context
from quantcore.consumers.csv_recorder import HEADER, CsvPathError, CsvRecorder, format_row
from tests.disk import SmallDisk, small_disk
from tests.harness import wait_until
from tests.paths import CSV_BTC, CSV_OHLCV, CSV_SHIB, read_text
from tests.test_history import make_bar


def recorder(tmp_path: Path, **kwargs: object) -> CsvRecorder:
    rec = CsvRecorder(path=str(tmp_path / "{symbol}_{interval}.csv"), **kwargs)  # type: ignore[arg-type]
    rec.attach(Context(EventBus(), [("BTCUSDT", "1m")]))
    asyncio.run(rec.start())
    return rec


def test_lines_appended_and_flushed(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    path = tmp_path / "BTCUSDT_1m.csv"
    assert path.read_text() == HEADER
    rec.on_bar(make_bar(0))
    assert (
        path.read_text()
        == HEADER + "50000.5,50002.5,49998.75,50000.0,10.0,500000.0,2024-09-04 02:27:00\n"
    )
    rec.on_bar(make_bar(1))
    assert len(path.read_text().splitlines()) == 3
    asyncio.run(rec.stop())


def test_restart_appends_without_duplicates(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    for i in range(3):
        rec.on_bar(make_bar(i))
    asyncio.run(rec.stop())
    again = recorder(tmp_path)
    assert again.resume_point("BTCUSDT", "1m") == make_bar(2).open_time_ms
    for i in range(1, 5):
        again.on_bar(make_bar(i))
    asyncio.run(again.stop())
    lines = (tmp_path / "BTCUSDT_1m.csv").read_text().splitlines()
    assert lines[0] + "\n" == HEADER and lines.count(lines[0]) == 1
    assert [line.rsplit(",", 1)[1][-8:-3] for line in lines[1:]] == [
        "02:27",
        "02:28",
        "02:29",
        "02:30",
        "02:31",
    ]
    assert again.rows_written == 2


def test_a_bar_after_the_stop_is_counted_lost_and_reopens_nothing(tmp_path: Path) -> None:
    """A stopped recorder never reopens its file (nor re-takes the lock, which would be held
    until the process ends): the bar is counted as not recorded, the file stays as it was."""
    rec = recorder(tmp_path)
    rec.on_bar(make_bar(0))
    asyncio.run(rec.stop())
    path = tmp_path / "BTCUSDT_1m.csv"
    before = path.read_bytes()
    rec.on_bar(make_bar(1))
    assert (rec.rows_written, rec.unrecorded()) == (1, 1)
    assert path.read_bytes() == before
    again = recorder(tmp_path)  # the lock is free
    assert again.resume_point("BTCUSDT", "1m") == make_bar(0).open_time_ms
    asyncio.run(again.stop())


def test_torn_last_line_is_repaired(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    for i in range(3):
        rec.on_bar(make_bar(i))
    asyncio.run(rec.stop())
    path = tmp_path / "BTCUSDT_1m.csv"
    complete = path.read_text()
    with path.open("a") as handle:
        handle.write("50003.5,50005.5,49")
    again = recorder(tmp_path)
    assert path.read_text() == complete
    assert again.resume_point("BTCUSDT", "1m") == make_bar(2).open_time_ms
    again.on_bar(make_bar(3))
    asyncio.run(again.stop())
    assert (
        path.read_text()
        == complete + "50003.5,50005.5,50001.75,50003.0,13.0,650039.0,2024-09-04 02:30:00\n"
    )


def test_rejects_symbols_escaping_the_folder(tmp_path: Path) -> None:
    rec = CsvRecorder(path=str(tmp_path / "{symbol}_{interval}.csv"))
    with pytest.raises(CsvPathError, match="letters and digits"):
        rec.path_for("../../etc/passwd", "1m")


def test_bad_template_and_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(CsvPathError, match="may only use"):
        CsvRecorder(path="data/{sym}.csv")
    (tmp_path / "BTCUSDT_1m.csv").write_text("a,b,c\n")
    with pytest.raises(CsvPathError, match="not a quantcore CSV"):
        recorder(tmp_path)


def _foreign_files() -> dict[str, bytes]:
    """Real recorded files (and a compressed one) as a user might point the template at."""
    ohlcv = read_text(CSV_OHLCV).encode()[:20_000]
    ohlcv = ohlcv[: ohlcv.rfind(b"\n")]
    spot = read_text(CSV_BTC).splitlines()[:200]
    dated = ["open,high,low,close,volume,quote_volume,datetime"] + [
        ",".join([*f[1:5], f[5], f[7], f[0][:19]]) for f in (line.split(",") for line in spot[1:])
    ]
    ours = HEADER.encode() + b"".join(format_row(make_bar(i)).encode() for i in range(5))
    return {
        "foreign CSV without final newline": ohlcv,
        "binary file": gzip.compress(read_text(CSV_BTC).encode()[:50_000], mtime=0),
        "foreign CSV whose last column is a date": "\n".join(dated).encode()[:-7],
        "CSV with another header": read_text(CSV_BTC).encode()[:30_000],
        "headerless CSV with CRLF": CSV_SHIB.read_bytes(),
        "our header over foreign rows": HEADER.encode() + read_text(CSV_OHLCV).encode()[40:9_000],
        "our rows then a last line that is not a row": ours + b"hello, world",
    }


@pytest.mark.parametrize("case", list(_foreign_files()))
def test_foreign_files_are_left_byte_for_byte(tmp_path: Path, case: str) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    before = _foreign_files()[case]
    path.write_bytes(before)
    with pytest.raises(CsvPathError) as raised:
        recorder(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "not a quantcore" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BTCUSDT_1m.csv"], "no sidecar files"


def test_torn_line_is_saved_beside_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = recorder(tmp_path)
    for i in range(3):
        rec.on_bar(make_bar(i))
    asyncio.run(rec.stop())
    path = tmp_path / "BTCUSDT_1m.csv"
    complete = path.read_bytes()
    path.write_bytes(complete + b"50003.5,50005.5,49")
    with caplog.at_level(logging.WARNING):
        again = recorder(tmp_path)
    saved = list(tmp_path.glob("BTCUSDT_1m.csv.torn-*"))
    assert len(saved) == 1 and saved[0].read_bytes() == b"50003.5,50005.5,49"
    assert path.read_bytes() == complete
    assert [r.getMessage() for r in caplog.records if "partial last line" in r.getMessage()] == [
        f"{path}: cut a partial last line (18 bytes) left by an interrupted write; "
        f"saved it as {saved[0].name}"
    ]
    asyncio.run(again.stop())


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = recorder(tmp_path)
    path = tmp_path / "BTCUSDT_1m.csv"
    with pytest.raises(CsvPathError) as raised:
        recorder(tmp_path)
    assert str(raised.value) == (
        f"{path} is being written by another quantcore process (pid {os.getpid()})"
    )
    asyncio.run(first.stop())
    asyncio.run(recorder(tmp_path).stop())


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk", monkeypatch) as mounted:
        yield mounted


def rows_on_disk(path: Path) -> list[str]:
    """Complete data rows in the file (a half-written last line is not a row)."""
    data = path.read_text()
    assert data.startswith(HEADER)
    return data[len(HEADER) :].splitlines(keepends=True)[: data.count("\n") - 1]


async def test_disk_full_holds_bars_in_order_until_space_returns(
    disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    rec = CsvRecorder(path=str(disk.root / "{symbol}_{interval}.csv"), retry_interval=0.05)
    rec.attach(Context(EventBus(), [("BTCUSDT", "1m")]))
    await rec.start()
    path = disk.root / "BTCUSDT_1m.csv"
    expected = [format_row(make_bar(i)) for i in range(2000)]
    caplog.set_level(logging.WARNING)
    for i in range(5):
        rec.on_bar(make_bar(i))
    disk.fill()
    n = 5
    while rec.pending == 0:
        assert n < 1000, "the disk never filled"
        rec.on_bar(make_bar(n))
        n += 1
    for _ in range(30):
        rec.on_bar(make_bar(n))
        n += 1
    assert rec.pending >= 30
    assert rows_on_disk(path) == expected[: rec.rows_written]
    assert rec.rows_written + rec.pending == n
    disk.free()
    await wait_until(lambda: rec.pending == 0, 5, "the held bars to be written")
    assert path.read_text() == HEADER + "".join(expected[:n])
    assert rec.rows_written == n
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot append" in m]) == 1, messages
    assert len([m for m in messages if "appending again" in m]) == 1, messages
    await rec.stop()
    assert rec.unrecorded() == 0


async def test_disk_full_beyond_max_pending_and_at_stop_is_counted_not_hidden(
    disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    rec = CsvRecorder(path=str(disk.root / "{symbol}_{interval}.csv"), max_pending=10)
    rec.attach(Context(EventBus(), [("BTCUSDT", "1m")]))
    await rec.start()
    path = disk.root / "BTCUSDT_1m.csv"
    caplog.set_level(logging.WARNING)
    disk.fill()
    for i in range(1000):
        rec.on_bar(make_bar(i))
    assert rec.pending == 10
    assert rec.rows_written + rec.pending + rec.unrecorded() == 1000
    await rec.stop()
    written = rec.rows_written
    assert rec.unrecorded() == 1000 - written
    assert rows_on_disk(path) == [format_row(make_bar(i)) for i in range(written)]
    assert path.read_text().endswith("\n"), "a half-written line is cut at stop"
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "dropping the bar" in m]) == 1, messages
    assert (
        f"{path}: stopped with 10 bars never written ({written} rows written this run)" in messages
    )
    disk.free()
    again = CsvRecorder(path=str(disk.root / "{symbol}_{interval}.csv"))
    again.attach(Context(EventBus(), [("BTCUSDT", "1m")]))
    await again.start()
    assert again.resume_point("BTCUSDT", "1m") == (
        make_bar(written - 1).open_time_ms if written else None
    )
    await again.stop()


def test_gap_events_are_written_down_beside_the_csv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A GapEvent on the bus lands in ``<csv>.gaps`` (header once, one line per range); a
    gap of a stream the recorder does not keep is ignored; a sidecar that cannot be written
    is one error line, never an exception into the feed."""
    from quantcore.events import GAP, GapEvent, GapReason

    rec = recorder(tmp_path)
    bus = rec.context.bus
    first, last = make_bar(0).open_time, make_bar(9).open_time
    bus.publish(GAP, GapEvent("BTCUSDT", "1m", first, last, GapReason.BACKFILL_LIMIT))
    bus.publish(GAP, GapEvent("BTCUSDT", "1m", last, last, GapReason.EXCHANGE))
    bus.publish(GAP, GapEvent("ETHUSDT", "1m", first, last, GapReason.EXCHANGE))
    assert (tmp_path / "BTCUSDT_1m.csv.gaps").read_text() == (
        "first_open,last_open,reason\n"
        "2024-09-04 02:27:00,2024-09-04 02:36:00,skipped by backfill_limit\n"
        "2024-09-04 02:36:00,2024-09-04 02:36:00,exchange gap (no data from Binance)\n"
    )
    assert not (tmp_path / "ETHUSDT_1m.csv").exists()
    (tmp_path / "BTCUSDT_1m.csv.gaps").unlink()
    (tmp_path / "BTCUSDT_1m.csv.gaps").mkdir()
    with caplog.at_level(logging.ERROR):
        bus.publish(GAP, GapEvent("BTCUSDT", "1m", first, last, GapReason.BACKFILL_LIMIT))
    assert "cannot write down the gap" in caplog.text
    assert bus.handler_errors.total() == 0
    asyncio.run(rec.stop())
