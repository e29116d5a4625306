"""Data-quality check of recorded bars: ``quantcore check FILE...`` (CSV, SQLite, Parquet store).

Reports per series the rows, first and last bar, and every problem: holes (missing bars,
with their length), duplicate open times, rows out of order (time going backwards),
times off the interval's grid, OHLC inconsistencies and unreadable rows. A hole written
down in the CSV's ``.gaps`` sidecar ("skipped by backfill_limit", "exchange gap (no data
from Binance)") is listed with that reason as a known gap, not as a problem. Prices are
compared as :class:`decimal.Decimal` of the stored strings, exactly as the exchange sent
them (a Parquet store: :mod:`quantcore.quality_parquet`). Exit codes: 0 every series
clean, 1 problems found, 2 a file could not be checked.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from quantcore.consumers.csv_recorder import HEADER
from quantcore.events import parse_datetime_ms
from quantcore.gapfile import GapFileError, read_gaps
from quantcore.intervals import INTERVAL_MS, interval_ms
from quantcore.quality_report import (
    CheckError,
    SeriesReport,
    Values,
    analyze,
    decimals,
    explain,
    sql_rows,
)
from quantcore.sinks import schema
from quantcore.sinks.sqlite import connect, known_gaps

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_csv(path: Path, interval: str | None = None) -> SeriesReport:
    """Check one quantcore CSV (header ``close,high,low,open,volume,baseVolume,datetime``).

    The interval is ``interval``, else the file name's ``_<interval>`` suffix, else the
    most common step between rows.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckError(f"{path}: cannot read: {exc.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    if not text.startswith(HEADER):
        raise CheckError(f"{path}: not a quantcore CSV (first line is not {HEADER.strip()!r})")
    symbol, named = _name_parts(path)
    interval = interval or named
    lines = text[len(HEADER) :].split("\n")
    torn = lines.pop() if lines else ""
    report = SeriesReport(str(path), "", None)
    parsed: list[tuple[str, int, Values | None]] = []
    for number, line in enumerate(lines, start=2):
        row = _parse_csv_row(line)
        if row is None:
            report.add("bad rows", f"line {number}: {line[:80]!r}")
        else:
            parsed.append((f"line {number}", *row))
    if torn:
        report.add("bad rows", f"line {len(lines) + 2}: incomplete last line {torn[:80]!r}")
    if interval is None:
        interval = _guess_interval([ms for _, ms, _ in parsed])
    report.step_ms = interval_ms(interval) if interval else None
    report.label = f"{symbol or '?'} {interval or '(interval unknown)'}"
    analyze(report, parsed, interval)
    try:
        explain(report, read_gaps(path))
    except GapFileError as exc:
        report.add("bad gaps file", str(exc))
    return report


def check_sqlite(path: Path, table: str = "bars") -> list[SeriesReport]:
    """Check every (symbol, interval) series of a quantcore SQLite table.

    The primary key rules out duplicates and disorder there; holes, grid, OHLC and
    ``close_time`` (open + interval - 1 ms) are checked.
    """
    try:
        quoted = schema.table_name(table)
        conn = connect(path, read_only=True)
    except (ValueError, sqlite3.Error) as exc:
        raise CheckError(f"{path}: {exc}") from None
    try:
        streams = conn.execute(schema.select_streams(quoted)).fetchall()
        reports = []
        for symbol, interval in streams:
            step = interval_ms(interval)
            report = SeriesReport(f"{path}:{table}", f"{symbol} {interval}", step)
            rows = conn.execute(schema.select_stream(quoted, "?"), (symbol, interval))
            reports.append(analyze(report, sql_rows(report, rows, step), interval))
            explain(report, known_gaps(conn, table, symbol, interval))
        return reports
    except (sqlite3.Error, ValueError) as exc:
        raise CheckError(f"{path}: {table}: {exc}") from None
    finally:
        conn.close()


def check_paths(
    paths: Iterable[str], interval: str | None = None, table: str = "bars"
) -> list[SeriesReport]:
    """Reports for every file, store or PostgreSQL DSN (``table`` of a database);
    CheckError for the first that cannot be checked."""
    from quantcore.quality_postgres import check_postgres, is_dsn

    reports: list[SeriesReport] = []
    for name in paths:
        if is_dsn(name):
            reports.extend(check_postgres(name, table))
            continue
        path = Path(name)
        if path.is_dir():
            reports.extend(_check_store(path))
            continue
        try:
            with path.open("rb") as handle:
                magic = handle.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise CheckError(f"{path}: cannot read: {exc.strerror}") from None
        if magic == SQLITE_MAGIC:
            reports.extend(check_sqlite(path, table))
        else:
            reports.append(check_csv(path, interval))
    return reports


def _check_store(root: Path) -> list[SeriesReport]:
    """A Parquet store folder (pyarrow is the optional ``[parquet]`` extra)."""
    try:
        from quantcore.quality_parquet import check_store
    except ImportError as exc:
        raise CheckError(f"{root}: reading a Parquet store needs {exc.name} "
                         "(pip install 'quantcore[parquet]')") from None  # fmt: skip
    return check_store(root)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="recorded CSV or SQLite files, Parquet store roots, PostgreSQL DSNs",
    )
    parser.add_argument("--table", default="bars", help="SQLite/PostgreSQL table (default bars)")
    parser.add_argument("--interval", help="bar interval of the CSVs (default: from the name)")
    parser.add_argument(
        "--max-list", type=int, default=20, help="findings listed per kind (default 20)"
    )


def main(args: argparse.Namespace) -> int:
    """Print every report; exit 0 clean, 1 problems found, 2 a file could not be checked."""
    if args.interval is not None:
        try:
            interval_ms(args.interval)
        except ValueError as exc:
            print(f"quantcore check: --interval: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
    status = EXIT_CLEAN
    for name in args.files:
        try:
            reports = check_paths([name], args.interval, args.table)
        except CheckError as exc:
            print(f"quantcore check: {exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        for report in reports:
            print("\n".join(report.lines(args.max_list)))
            if not report.clean and status == EXIT_CLEAN:
                status = EXIT_PROBLEMS
    return status


def _parse_csv_row(line: str) -> tuple[int, Values | None] | None:
    parts = line.split(",")
    if len(parts) != 7:
        return None
    try:
        open_ms = parse_datetime_ms(parts[6])
    except ValueError:
        return None
    close, high, low, open_, volume, quote = parts[:6]
    values = decimals([open_, high, low, close, volume, quote])
    return None if values is None else (open_ms, values)


def _name_parts(path: Path) -> tuple[str | None, str | None]:
    """``BTCUSDT_1m.csv`` → ("BTCUSDT", "1m"); Nones when the name does not say."""
    symbol, _, interval = path.stem.rpartition("_")
    try:
        interval_ms(interval)
    except ValueError:
        return (path.stem or None, None)
    return (symbol or None, interval)


def _guess_interval(times: list[int]) -> str | None:
    steps = Counter(b - a for a, b in pairwise(times) if b > a)
    if not steps:
        return None
    step = steps.most_common(1)[0][0]
    return next((name for name, ms in INTERVAL_MS.items() if ms and ms == step), None)
