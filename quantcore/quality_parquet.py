"""``quantcore check ROOT``: the data-quality report of every stream of a Parquet store.

The same report as for a CSV or a SQLite table (:mod:`quantcore.quality`): holes,
duplicates, order, grid and OHLC sanity on the exact values (each decimal with the scale
it was recorded with), plus what only a store can get wrong: a ``close_time`` that is not
open + interval - 1 ms, a bar filed in another year's or month's file, a file that
cannot be read. Year and month files and the journal of a month not compacted yet are read,
so the report covers every recorded bar; the stream's ``_gaps.csv`` labels known gaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from quantcore.gapfile import STORE_NAME, GapFileError, read_from
from quantcore.intervals import interval_ms
from quantcore.quality_report import CheckError, SeriesReport, Values, analyze, explain
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout
from quantcore.sinks.parquet_decimals import exact_strings

_SIX = list(fmt.FLOAT_COLUMNS)
"""open, high, low, close, volume, quote_volume: the order of ``quality_report.Values``."""


def check_store(root: Path) -> list[SeriesReport]:
    """One report per (venue, symbol, interval) of the store under ``root``, sorted;
    CheckError when ``root`` is not a store."""
    try:
        layout.check_store(root)
    except fmt.StoreError as exc:
        raise CheckError(str(exc)) from None
    reports = []
    for stream in sorted(root.glob("venue=*/symbol=*/interval=*")):
        if not stream.is_dir():
            continue
        venue, symbol, interval = (
            p.name.partition("=")[2] for p in (stream.parent.parent, stream.parent, stream)
        )
        try:
            step: int | None = interval_ms(interval)
        except ValueError:
            step = None
        report = SeriesReport(f"{root}:{venue}", f"{symbol} {interval}", step)
        analyze(report, _rows(report, stream, step), interval if step else None)
        try:
            explain(report, read_from(stream / STORE_NAME))
        except GapFileError as exc:
            report.add("bad gaps file", str(exc))
        reports.append(report)
    return reports


def _rows(
    report: SeriesReport, stream: Path, step: int | None
) -> Iterator[tuple[str, int, Values | None]]:
    """Every stored bar, file by file in stored order: (where, open ms, exact values)."""
    for part in layout.parts(stream):
        label = part.label
        try:
            table = layout.read_part(part, [*_SIX, "close_time", "scales"])
        except (OSError, pa.ArrowException) as exc:
            report.add("unreadable files", f"{label}: {exc}")
            continue
        opens = table.column("open_time").cast(pa.int64()).to_numpy()
        closes = table.column("close_time").cast(pa.int64()).to_numpy()
        scales = table.column("scales").to_numpy()
        texts = [
            exact_strings(table.column(name), (scales >> (5 * i)) & 31).to_pylist()
            for i, name in enumerate(_SIX)
        ]
        first, following = part.bounds()
        for n, open_ms in enumerate(opens.tolist()):
            where = f"{label} row {n + 1}"
            if not first <= open_ms < following:
                report.add("bad rows", f"{where}: open time {open_ms} is not in this file's "
                           f"{'month' if part.month else 'year'}")  # fmt: skip
            if step is not None and closes[n] != open_ms + step - 1:
                report.add("bad rows", f"{where}: close_time {closes[n]} is not open + {step} - 1")
            o, h, low, c, v, q = (Decimal(column[n]) for column in texts)
            yield where, open_ms, (o, h, low, c, v, q)
