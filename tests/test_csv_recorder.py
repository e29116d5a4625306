"""CsvRecorder: header once, one flushed line per closed bar, resume, torn-line repair."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.component import Context
from quantcore.consumers.csv_recorder import HEADER, CsvPathError, CsvRecorder
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
