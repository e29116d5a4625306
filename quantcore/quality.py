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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path

from quantcore.consumers.csv_recorder import HEADER
from quantcore.events import datetime_text, parse_datetime_ms
from quantcore.gapfile import GapFileError, KnownGap, read_gaps
from quantcore.intervals import INTERVAL_MS, bar_open_ms, interval_ms
from quantcore.sinks import schema
from quantcore.sinks.sqlite import connect

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2
SQLITE_MAGIC = b"SQLite format 3\x00"

Values = tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]
"""open, high, low, close, volume, quote volume."""


class CheckError(ValueError):
    """The file cannot be checked at all (missing, not quantcore's); one line."""


@dataclass(frozen=True, slots=True)
class Hole:
    """``bars`` consecutive bars missing, the first opening at ``first_ms``."""

    first_ms: int
    bars: int
    step_ms: int

    def text(self) -> str:
        last = self.first_ms + (self.bars - 1) * self.step_ms
        plural = "s" if self.bars != 1 else ""
        span = f"{datetime_text(self.first_ms)} .. {datetime_text(last)}"
        return f"{span} missing ({self.bars} bar{plural})"


@dataclass(slots=True)
class SeriesReport:
    """Everything found in one (symbol, interval) series of one file."""

    source: str
    label: str
    step_ms: int | None
    rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    holes: list[Hole] = field(default_factory=list)
    known: list[tuple[Hole, str]] = field(default_factory=list)
    """Missing bars explained by the ``.gaps`` sidecar: (range, reason); not problems."""
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Kind (duplicate, out of order, off grid, ohlc, bad row) → one line per finding."""

    def add(self, kind: str, text: str) -> None:
        self.problems.setdefault(kind, []).append(text)

    @property
    def clean(self) -> bool:
        return not self.holes and not any(self.problems.values())

    @property
    def missing_bars(self) -> int:
        return sum(h.bars for h in self.holes)

    def lines(self, max_list: int = 20) -> list[str]:
        """The report: one summary line, then up to ``max_list`` findings per kind."""
        span = "no bars"
        if self.first_ms is not None and self.last_ms is not None:
            span = f"{datetime_text(self.first_ms)} .. {datetime_text(self.last_ms)} UTC"
        count = sum(len(v) for v in self.problems.values()) + len(self.holes)
        verdict = "clean" if self.clean else f"{count} problem{'s' if count != 1 else ''}"
        out = [f"{self.source}: {self.label}: {self.rows} rows, {span}: {verdict}"]
        kinds: list[tuple[str, list[str]]] = []
        if self.known:
            bars = sum(h.bars for h, _ in self.known)
            plural = "s" if bars != 1 else ""
            title = f"known gaps: {len(self.known)} ({bars} bar{plural}, not counted as problems)"
            kinds.append((title, [f"{h.text()}: {reason}" for h, reason in self.known]))
        if self.holes:
            title = f"holes: {len(self.holes)} ({self.missing_bars} bars missing)"
            kinds.append((title, [h.text() for h in self.holes]))
        for kind, found in self.problems.items():
            kinds.append((f"{kind}: {len(found)}", found))
        for title, found in kinds:
            out.append(f"  {title}")
            out.extend(f"    {line}" for line in found[:max_list])
            if len(found) > max_list:
                out.append(f"    ... and {len(found) - max_list} more")
        return out


def analyze(
    report: SeriesReport, rows: Iterable[tuple[str, int, Values | None]], interval: str | None
) -> SeriesReport:
    """Fill ``report`` from rows in stored order: (where, open time ms, values or None).

    Holes are judged on the set of open times (so a row out of place is not a hole);
    duplicates, disorder and grid against the rows in their stored order.
    """
    seen: dict[int, tuple[str, Values | None]] = {}
    previous: int | None = None
    for where, open_ms, values in rows:
        report.rows += 1
        stamp = datetime_text(open_ms)
        first = seen.get(open_ms)
        if first is not None:
            same = "same values" if first[1] == values else "different values"
            report.add("duplicates", f"{where}: {stamp} again ({same} as {first[0]})")
        elif previous is not None and open_ms < previous:
            report.add("out of order", f"{where}: {stamp} after {datetime_text(previous)}")
        if interval is not None and first is None and bar_open_ms(open_ms, interval) != open_ms:
            report.add("off grid", f"{where}: {stamp} is not a {interval} bar open time")
        if values is not None:
            for problem in ohlc_problems(values):
                report.add("ohlc", f"{where}: {stamp}: {problem}")
        if first is None:
            seen[open_ms] = (where, values)
        previous = open_ms
    if seen:
        report.first_ms, report.last_ms = min(seen), max(seen)
    step = report.step_ms
    if step:
        times = sorted(seen)
        for before, after in pairwise(times):
            if after - before > step:
                report.holes.append(Hole(before + step, (after - before) // step - 1, step))
    return report


def ohlc_problems(values: Values) -> list[str]:
    """What is inconsistent in one bar: low above open/close/high, high below them,
    non-positive prices, negative volumes."""
    o, h, low, c, volume, quote = values
    found = []
    for name, value in (("open", o), ("close", c)):
        if low > value:
            found.append(f"low {low} > {name} {value}")
        if h < value:
            found.append(f"high {h} < {name} {value}")
    if low > h:
        found.append(f"low {low} > high {h}")
    if min(o, h, low, c) <= 0:
        found.append("a price is not positive")
    if volume < 0 or quote < 0:
        found.append("a volume is negative")
    return found


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


def explain(report: SeriesReport, gaps: list[KnownGap]) -> None:
    """Move the parts of ``report``'s holes that ``gaps`` cover into ``report.known``."""
    if not gaps or not report.step_ms:
        return
    step = report.step_ms
    holes: list[Hole] = []
    for hole in report.holes:
        cursor, end = hole.first_ms, hole.first_ms + hole.bars * step
        for gap in gaps:
            lo, hi = max(cursor, gap.first_ms), min(end, gap.last_ms + step)
            if lo >= hi:
                continue
            if lo > cursor:
                holes.append(Hole(cursor, (lo - cursor) // step, step))
            report.known.append((Hole(lo, (hi - lo) // step, step), gap.reason))
            cursor = hi
        if cursor < end:
            holes.append(Hole(cursor, (end - cursor) // step, step))
    report.holes = holes


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
        streams = conn.execute(
            f'SELECT DISTINCT symbol, "interval" FROM {quoted} ORDER BY 1, 2'
        ).fetchall()
        reports = []
        for symbol, interval in streams:
            step = interval_ms(interval)
            report = SeriesReport(f"{path}:{table}", f"{symbol} {interval}", step)
            rows = conn.execute(schema.select_stream(quoted, "?"), (symbol, interval))
            reports.append(analyze(report, _sqlite_rows(report, rows, step), interval))
            explain(report, _sqlite_gaps(conn, table, symbol, interval))
        return reports
    except (sqlite3.Error, ValueError) as exc:
        raise CheckError(f"{path}: {table}: {exc}") from None
    finally:
        conn.close()


def _sqlite_gaps(conn: sqlite3.Connection, table: str, symbol: str, interval: str
                 ) -> list[KnownGap]:  # fmt: skip
    """The known gaps the SqliteRecorder wrote down beside ``table`` (none: no such table)."""
    gaps = schema.gaps_table(table)
    try:
        query = (
            f'SELECT first_open, last_open, reason FROM {gaps} WHERE symbol = ? AND "interval" = ?'
        )
        rows = conn.execute(f"{query} ORDER BY first_open", (symbol, interval))
    except sqlite3.OperationalError:
        return []
    return [KnownGap(int(first), int(last), str(reason)) for first, last, reason in rows]


def _sqlite_rows(
    report: SeriesReport, rows: Iterable[tuple[object, ...]], step: int
) -> Iterator[tuple[str, int, Values | None]]:
    for row in rows:
        open_ms, close_ms = int(str(row[2])), int(str(row[3]))
        where = f"open_time {open_ms}"
        values = _decimals([str(row[i]) for i in (4, 5, 6, 7, 8, 9)])
        if values is None:
            report.add("bad rows", f"{where}: values {row[4:10]!r}")
        if close_ms != open_ms + step - 1:
            report.add("bad rows", f"{where}: close_time {close_ms} is not open + {step} - 1")
        yield where, open_ms, values


def check_paths(paths: Iterable[str], interval: str | None = None) -> list[SeriesReport]:
    """Reports for every file; CheckError for the first file that cannot be checked."""
    reports: list[SeriesReport] = []
    for name in paths:
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
            reports.extend(check_sqlite(path))
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
        "files", nargs="+", metavar="FILE", help="recorded CSV or SQLite files, Parquet store roots"
    )
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
            reports = check_paths([name], args.interval)
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
    values = _decimals([open_, high, low, close, volume, quote])
    return None if values is None else (open_ms, values)


def _decimals(texts: list[str]) -> Values | None:
    try:
        values = [Decimal(t) for t in texts]
    except InvalidOperation:
        return None
    if not all(v.is_finite() for v in values):
        return None
    o, h, low, c, v, q = values
    return (o, h, low, c, v, q)


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
