"""``quantcore check``: every hole, duplicate, disorder and OHLC fault planted in files built
from real Binance rows (tests/data) is found; clean files are clean.

The CLI is run as a real process, so exit codes and printed reports are what users get.
"""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
from pathlib import Path

from quantcore.consumers.csv_recorder import HEADER
from quantcore.quality import check_csv, check_sqlite
from quantcore.quality_report import Hole
from quantcore.sinks import schema
from quantcore.sinks.sqlite import connect, create_table
from tests.paths import CSV_BTC, read_text

MINUTE = 60_000
BinanceRow = dict[str, str]


def real_rows(count: int) -> list[BinanceRow]:
    reader = csv.DictReader(read_text(CSV_BTC).splitlines())
    return [row for _, row in zip(range(count), reader, strict=False)]


def csv_line(row: BinanceRow) -> str:
    """A Binance kline row as quantcore writes it (its strings, verbatim)."""
    stamp = row["open_time"][:19]
    fields = ("close", "high", "low", "open", "volume", "quote_volume")
    return ",".join(row[f] for f in fields) + f",{stamp}\n"


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(lines))
    return path


def open_ms(row: BinanceRow) -> int:
    from quantcore.events import parse_datetime_ms

    return parse_datetime_ms(row["open_time"][:19])


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_clean_recording_is_clean(tmp_path: Path) -> None:
    rows = real_rows(300)
    path = write_csv(tmp_path / "BTCUSDT_1m.csv", [csv_line(r) for r in rows])
    report = check_csv(path)
    assert report.clean, report.lines()
    assert report.rows == 300 and report.first_ms == open_ms(rows[0])
    assert report.last_ms == open_ms(rows[-1])
    done = run_check(str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"{path}: BTCUSDT 1m: 300 rows, 2025-08-01 00:00:00 .. 2025-08-01 04:59:00 UTC: clean\n"
    )


def test_every_planted_fault_is_found(tmp_path: Path) -> None:
    rows = real_rows(300)
    lines = [csv_line(r) for r in rows]
    bad = dict(rows[200])
    bad["low"] = bad["high"]  # low above open and close: the real high is above both here
    assert bad["high"] not in (bad["open"], bad["close"])
    lines[200] = csv_line(bad)
    lines[150], lines[151] = lines[151], lines[150]  # out of order
    lines.insert(101, lines[100])  # an exact duplicate right after the original
    del lines[50:53]  # a hole of 3 bars
    del lines[10]  # a hole of 1 bar
    path = write_csv(tmp_path / "BTCUSDT_1m.csv", lines)

    report = check_csv(path)
    assert report.holes == [
        Hole(open_ms(rows[10]), 1, MINUTE),
        Hole(open_ms(rows[50]), 3, MINUTE),
    ]
    # line = list index + 2 (header is line 1); 4 lines deleted before, 1 inserted after row 100
    assert report.problems["duplicates"] == [
        "line 99: 2025-08-01 01:40:00 again (same values as line 98)"
    ]
    assert report.problems["out of order"] == [
        "line 150: 2025-08-01 02:30:00 after 2025-08-01 02:31:00"
    ]
    ohlc = report.problems["ohlc"]
    assert all(p.startswith("line 199: 2025-08-01 03:20:00: low ") for p in ohlc) and ohlc
    assert set(report.problems) == {"duplicates", "out of order", "ohlc"}
    assert report.rows == 297 and not report.clean

    done = run_check(str(path))
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert f"{path}: BTCUSDT 1m: 297 rows, 2025-08-01 00:00:00 .. 2025-08-01 04:59:00 UTC" in out
    assert "  holes: 2 (4 bars missing)" in out
    assert "    2025-08-01 00:10:00 .. 2025-08-01 00:10:00 missing (1 bar)" in out
    assert "    2025-08-01 00:50:00 .. 2025-08-01 00:52:00 missing (3 bars)" in out


def test_torn_and_unparseable_lines_and_off_grid_times(tmp_path: Path) -> None:
    rows = real_rows(20)
    lines = [csv_line(r) for r in rows]
    lines[5] = lines[5].replace(":00\n", ":30\n")  # 00:05:30: not a 1m open time
    lines[7] = "1.0,2.0,nan,1.5,3,4,2025-08-01 00:07:00\n"
    lines[-1] = lines[-1][:20]  # torn last line, no newline
    path = write_csv(tmp_path / "BTCUSDT_1m.csv", lines)
    report = check_csv(path)
    assert report.problems["off grid"] == ["line 7: 2025-08-01 00:05:30 is not a 1m bar open time"]
    bad = report.problems["bad rows"]
    assert bad[0].startswith("line 9: ") and "incomplete last line" in bad[1]
    assert run_check(str(path)).returncode == 1


def test_foreign_or_missing_files_exit_2(tmp_path: Path) -> None:
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b,c\n1,2,3\n")
    done = run_check(str(foreign), str(tmp_path / "missing.csv"))
    assert done.returncode == 2
    assert "not a quantcore CSV" in done.stderr and "missing.csv: cannot read" in done.stderr


def test_sqlite_holes_and_ohlc(tmp_path: Path) -> None:
    rows = real_rows(120)
    db = tmp_path / "bars.sqlite"
    conn = connect(db)
    create_table(conn, '"bars"', db)
    kept = rows[:30] + rows[32:]  # a 2-bar hole
    bad = dict(kept[60])
    bad["high"] = bad["low"]
    kept[60] = bad
    with conn:
        conn.executemany(schema.insert('"bars"', "?"), [sql_row(r) for r in kept])
        conn.executemany(schema.insert('"bars"', "?"), [sql_row(r, "ETHUSDT") for r in rows[:10]])
    conn.close()
    btc, eth = check_sqlite(db)
    assert eth.clean and eth.label == "ETHUSDT 1m" and eth.rows == 10
    assert btc.label == "BTCUSDT 1m" and btc.rows == 118
    assert btc.holes == [Hole(open_ms(rows[30]), 2, MINUTE)]
    assert set(btc.problems) == {"ohlc"}
    assert all("high " in p for p in btc.problems["ohlc"])
    done = run_check(str(db))
    assert done.returncode == 1
    assert f"{db}:bars: ETHUSDT 1m: 10 rows" in done.stdout and ": clean" in done.stdout


def sql_row(row: BinanceRow, symbol: str = "BTCUSDT") -> tuple[object, ...]:
    start = open_ms(row)
    return (
        symbol, "1m", start, start + MINUTE - 1, row["open"], row["high"], row["low"],
        row["close"], row["volume"], row["quote_volume"], int(row["trade_count"]),
        row["taker_buy_base"], row["taker_buy_quote"], start + MINUTE,
    )  # fmt: skip


def test_sqlite_missing_table_exits_2(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.close()
    done = run_check(str(db))
    assert done.returncode == 2 and "no such table" in done.stderr


def test_gaps_sidecar_labels_the_holes_it_covers_and_only_those(tmp_path: Path) -> None:
    """Holes covered by the ``.gaps`` sidecar become known gaps with their reason (not
    problems); the part of a hole the sidecar does not cover is still a hole."""
    from quantcore.gapfile import append_gap, format_gap

    rows = real_rows(100)
    kept = rows[:10] + rows[20:50] + rows[60:]
    path = write_csv(tmp_path / "BTCUSDT_1m.csv", [csv_line(r) for r in kept])
    append_gap(path, open_ms(rows[10]), open_ms(rows[19]), "skipped by backfill_limit")
    append_gap(path, open_ms(rows[55]), open_ms(rows[59]), "exchange gap (no data from Binance)")
    assert (tmp_path / "BTCUSDT_1m.csv.gaps").read_text().splitlines()[1] + "\n" == format_gap(
        open_ms(rows[10]), open_ms(rows[19]), "skipped by backfill_limit"
    )
    report = check_csv(path)
    assert report.holes == [Hole(open_ms(rows[50]), 5, MINUTE)]
    assert report.known == [
        (Hole(open_ms(rows[10]), 10, MINUTE), "skipped by backfill_limit"),
        (Hole(open_ms(rows[55]), 5, MINUTE), "exchange gap (no data from Binance)"),
    ]
    result = run_check(str(path))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": 1 problem")
    assert lines[1] == "  known gaps: 2 (15 bars, not counted as problems)"
    assert lines[2].endswith("missing (10 bars): skipped by backfill_limit")
    assert lines[3].endswith("missing (5 bars): exchange gap (no data from Binance)")
    assert lines[4:6] == [
        "  holes: 1 (5 bars missing)",
        f"    {Hole(open_ms(rows[50]), 5, MINUTE).text()}",
    ]


def test_unreadable_gaps_sidecar_is_a_problem_named_by_line(tmp_path: Path) -> None:
    rows = real_rows(30)
    path = write_csv(tmp_path / "BTCUSDT_1m.csv", [csv_line(r) for r in rows])
    sidecar = tmp_path / "BTCUSDT_1m.csv.gaps"
    sidecar.write_text("first_open,last_open,reason\nyesterday,today,who knows\n")
    report = check_csv(path)
    assert report.problems == {
        "bad gaps file": [f"{sidecar}: line 2: 'yesterday,today,who knows' is not a gap"]
    }
    assert run_check(str(path)).returncode == 1
