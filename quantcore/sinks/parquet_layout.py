"""Where a stream's bars live in the Parquet store, and how its months and years are merged.

Layout 2 (Hive-style; every data file sits one level under ``year=``, so pandas, Polars,
DuckDB and Spark read the whole store in one scan)::

    {root}/_quantcore.json                      marks the folder as a store
    {root}/_venue=V.lock                        one writer per venue (quantcore.filelock)
    {stream}/_gaps.csv                          exchange gaps (quantcore.gapfile)
    {stream}/year=YYYY/YYYY.parquet             every bar of a closed year, one file
    {stream}/year=YYYY/YYYY-MM.parquet          a closed month of the year in progress
    {stream}/year=YYYY/_YYYY-MM.journal.csv     the open month's bars, a line each

with ``{stream}`` = ``venue=V/symbol=S/interval=I``. A closed year is one file because a
year is what research loads: one file reads about twice as fast as twelve
(bench/parquet_load.py). Names starting with ``_`` or ``.`` are skipped by every reader,
and only ``*.parquet`` files are data.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quantcore.intervals import interval_ms, month_bounds
from quantcore.sinks.parquet_format import (
    MARKER,
    SCHEMA,
    STORE_FORMAT,
    STORE_MARKER,
    StoreError,
    check_ours,
    fsync_dir,
    open_ours,
    read_journal,
    row_count,
    temp_of,
    to_store_table,
    write_atomically,
    write_file,
)

log = logging.getLogger(__name__)
_MERGED = ".merged"
ONE_GROUP_ROWS = 1 << 21
"""A year up to this many rows (every interval from 1m up) is merged in memory into one
row group, which loads without a copy; a larger one (1s bars: 31.5 million a year) is
written a month at a time, one row group each, so a merge never holds a year in memory."""


@dataclass(frozen=True, slots=True)
class Part:
    """One file's worth of a stream: a whole closed year (``month`` 0) or one month."""

    folder: Path
    year: int
    month: int = 0

    @property
    def name(self) -> str:
        return f"{self.year:04d}-{self.month:02d}" if self.month else f"{self.year:04d}"

    @property
    def data(self) -> Path:
        return self.folder / f"{self.name}.parquet"

    @property
    def journal(self) -> Path:
        return self.folder / f"_{self.name}.journal.csv"

    @property
    def merged(self) -> Path:
        """Where a month file waits, hidden, while its year's file is renamed into place."""
        return self.folder / f".{self.name}.parquet{_MERGED}"

    @property
    def label(self) -> str:
        return f"{self.folder.name}/{self.name}.parquet"

    def bounds(self) -> tuple[int, int]:
        """[first, following) open times in ms of the bars this part may hold."""
        month = self.month or 1
        first = datetime(self.year, month, 1, tzinfo=UTC)
        if self.month:
            following = datetime(self.year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        else:
            following = datetime(self.year + 1, 1, 1, tzinfo=UTC)
        return int(first.timestamp() * 1000), int(following.timestamp() * 1000)


def store_layout(root: Path) -> int:
    """The layout ``root``'s marker names (1 when it names none: the first stores);
    StoreError (naming the file) when ``root`` is not marked as a store at all."""
    marker = root / MARKER
    try:
        found = json.loads(marker.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        raise StoreError(f"{root}: not a quantcore Parquet store (no {MARKER})") from None
    except ValueError:
        found = None
    layout = found.get("layout", 1) if isinstance(found, dict) else None
    if (
        not isinstance(found, dict)
        or found.get("format") != STORE_FORMAT["format"]
        or (not isinstance(layout, int))
    ):
        raise StoreError(f"{marker}: not a quantcore store marker; left as is")
    return layout


def check_store(root: Path) -> None:
    """StoreError unless ``root`` is marked as a store of this layout: a store of another
    layout is refused, never read as if empty."""
    found = store_layout(root)
    if found != STORE_FORMAT["layout"]:
        raise StoreError(
            f"{root / MARKER}: a store of layout {found} (year=/month= folders, "
            f"written by an earlier quantcore); this one reads and writes layout "
            f"{STORE_FORMAT['layout']}: `quantcore upgrade {root}` rewrites it; left as is"
        )


def write_marker(root: Path) -> None:
    """Mark ``root`` as a store of this layout, atomically (temporary name, fsync, rename)."""
    temp = root / f".{MARKER}.{os.getpid()}.tmp"
    temp.write_bytes(STORE_MARKER + b"\n")
    with temp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, root / MARKER)
    fsync_dir(root)


def stream_dir(root: Path, venue: str, symbol: str, interval: str) -> Path:
    for name, value in (("venue", venue), ("symbol", symbol), ("interval", interval)):
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise StoreError(f"refusing {name} {value!r} in a store path: letters, digits, _ and -")
    return root / f"venue={venue}" / f"symbol={symbol}" / f"interval={interval}"


def month_of(stream: Path, open_ms: int) -> Part:
    """The month part a bar opening at ``open_ms`` belongs to."""
    year, month, _, _ = month_bounds(open_ms)
    return Part(stream / f"year={year:04d}", year, month)


def _month_in(name: str, year: int) -> int:
    """The month of ``YYYY-MM.parquet``, ``_YYYY-MM.journal.csv`` or a hidden merged
    month, if ``name`` is one of this year's; else 0."""
    for prefix, suffix in (("", ".parquet"), ("_", ".journal.csv"), (".", f".parquet{_MERGED}")):
        core = name[len(prefix) : len(name) - len(suffix)]
        if (
            name.startswith(prefix)
            and name.endswith(suffix)
            and len(core) == 7
            and core[:5] == f"{year:04d}-"
            and core[5:].isdigit()
            and 1 <= int(core[5:]) <= 12
        ):
            return int(core[5:])
    return 0


def parts(stream: Path) -> list[Part]:
    """The stream's years and months holding bars, oldest first (a year's file before
    any month files added after it). A month hidden by an unfinished year merge counts
    while its year's file is not in place yet (its bars are nowhere else)."""
    found: set[Part] = set()
    for folder in stream.glob("year=*") if stream.is_dir() else ():
        if not (folder.is_dir() and folder.name[5:].isdigit()):
            continue
        year = int(folder.name[5:])
        whole = Part(folder, year)
        names = [path.name for path in folder.iterdir()]
        has_year = whole.data.name in names
        if has_year:
            found.add(whole)
        for name in names:
            month = _month_in(name, year)
            if month and not (has_year and name.endswith(_MERGED)):
                found.add(Part(folder, year, month))
    return sorted(found, key=lambda p: (p.year, p.month))


def read_part(part: Part, columns: list[str] | None = None) -> pa.Table:
    """One part (``columns`` only, if given; ``open_time`` always): its file plus the
    journal rows after it, in open-time order.

    The journal is read before the file: if a compaction renames the new file in between,
    its rows are in that file, and the journal rows it already holds are skipped.
    """
    if columns is not None and "open_time" not in columns:
        columns = ["open_time", *columns]
    try:
        rows = read_journal(part.journal) if part.month else None
    except FileNotFoundError:
        rows = None
    tables = []
    last = -1
    data = part.data
    if part.month and not data.exists() and not Part(part.folder, part.year).data.exists():
        data = part.merged
    if data.exists():
        with open_ours(data) as opened:
            table = opened.read(columns=columns)
        tables.append(table)
        if table.num_rows:
            last = table.column("open_time")[-1].cast(pa.int64()).as_py()
    if rows is not None:
        rows = rows.filter(pc.greater(rows.column("open_time"), last))
        if rows.num_rows:
            new = to_store_table(rows)
            tables.append(new if columns is None else new.select(columns))
    if not tables:
        empty = SCHEMA.empty_table()
        return empty if columns is None else empty.select(columns)
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def last_open_ms(part: Part) -> int | None:
    """Newest open time (ms) in one part: the journal's last row, else the file's maximum."""
    if part.month and part.journal.exists():
        rows = read_journal(part.journal)
        if rows.num_rows:
            return int(rows.column("open_time")[-1].as_py())
    if part.data.exists():
        check_ours(part.data)
        table = pq.read_table(part.data, columns=["open_time"])
        if table.num_rows:
            return int(pc.max(table.column("open_time")).cast(pa.int64()).as_py())
    return None


def newest_open_ms(stream: Path) -> int | None:
    """Open time (ms) of the stream's newest stored bar (journals included), or None."""
    for part in reversed(parts(stream)):
        newest = last_open_ms(part)
        if newest is not None:
            return newest
    return None


def read_stream(
    root: Path,
    symbol: str,
    interval: str,
    lo: int | None,
    hi: int | None,
    venue: str | None,
    columns: list[str] | None = None,
) -> pa.Table:
    """One stream's rows with ``lo <= open_time < hi`` (ms; None: unbounded), in order.

    Only the parts overlapping the range are opened; a file that vanishes while read (a
    merge replacing it) makes the listing start again. StoreError names a root that is not
    a store, a stream it lacks, or a stream held for several venues (pass ``venue``).
    """
    check_store(root)
    venues = [venue] if venue else sorted(p.name[6:] for p in root.glob("venue=*"))
    folders = [stream_dir(root, v, symbol, interval) for v in venues]
    found = [f for f in folders if f.is_dir()]
    if not found:
        raise StoreError(f"{root}: no bars of {symbol} {interval} in this store")
    if len(found) > 1:
        raise StoreError(f"{root}: {symbol} {interval} is held for several venues; pass venue=")
    for attempt in range(3):
        try:
            tables = [
                read_part(part, columns)
                for part in parts(found[0])
                if (hi is None or part.bounds()[0] < hi) and (lo is None or part.bounds()[1] > lo)
            ]
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    empty = SCHEMA.empty_table()
    table = pa.concat_tables(tables) if tables else empty.select(columns or empty.column_names)
    if lo is not None or hi is not None:
        times = table.column("open_time").cast(pa.int64())
        keep = pc.and_(
            pc.greater_equal(times, lo if lo is not None else -(1 << 62)),
            pc.less(times, hi if hi is not None else 1 << 62),
        )
        table = table.filter(keep)
    return table


def compact_month(part: Part) -> int:
    """Merge a month's journal into its file (atomically), then drop the journal.

    Idempotent: journal rows already in the file (a crash between rename and unlink) are
    skipped. Bytes after the journal's last newline (a line torn by kill -9) are dropped:
    that bar was never acknowledged, so the feed fetches it again. Returns rows added.
    """
    try:
        fd = os.open(part.journal, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    finally:
        os.close(fd)
    before = 0
    if part.data.exists():
        check_ours(part.data)
        before = row_count(part.data)
    table = read_part(part)
    added: int = table.num_rows - before
    if added:
        write_atomically(part.data, table)
    if torn:
        log.warning("%s: dropped a torn last line left by an interrupted write", part.journal)
    part.journal.unlink()
    fsync_dir(part.folder)
    return added


def compact_year(folder: Path, year: int) -> int:
    """Merge a closed year's month files into ``YYYY.parquet``; returns the months merged.

    Three atomic steps: the year's file is written and fsynced under a hidden name (in
    memory: the year, or one month at a time of a large one); the month files are hidden
    (``.YYYY-MM.parquet.merged``); the year's file is renamed into place and the hidden
    months deleted. A reader listing the folder between the last two
    steps (microseconds, once a year) misses those months rather than seeing them twice;
    ``quantcore.load`` reads hidden months while the year's file is absent, and
    :func:`recover` finishes a merge a crash interrupted.
    """
    whole = Part(folder, year)
    months = [p for p in parts(folder.parent) if p.year == year and p.month and p.data.exists()]
    if not months:
        return 0
    sources = ([whole] if whole.data.exists() else []) + months
    temp = temp_of(whole.data)
    if sum(row_count(part.data) for part in sources) <= ONE_GROUP_ROWS:
        write_file(temp, pa.concat_tables([read_part(part) for part in sources]))
    else:
        write_file(temp, (read_part(part) for part in sources))
    for month in months:
        os.replace(month.data, month.merged)
    os.replace(temp, whole.data)
    fsync_dir(folder)
    for month in months:
        month.merged.unlink()
    fsync_dir(folder)
    return len(months)


def recover(stream: Path) -> None:
    """Finish what a crash interrupted (called by the store's one writer, at its start):
    a year merge whose months were already hidden completes (its file was fsynced before
    the first month was hidden); temporary files of unfinished writes are deleted."""
    for folder in stream.glob("year=*") if stream.is_dir() else ():
        if not (folder.is_dir() and folder.name[5:].isdigit()):
            continue
        whole = Part(folder, int(folder.name[5:]))
        hidden = sorted(folder.glob(f".*{_MERGED}"))
        if hidden and temp_of(whole.data).exists():
            os.replace(temp_of(whole.data), whole.data)
        for path in hidden:
            if whole.data.exists():
                path.unlink()
            else:
                os.replace(path, path.with_name(path.name[1 : -len(_MERGED)]))
        for path in folder.glob(".*.tmp"):
            path.unlink()
        fsync_dir(folder)


def year_done(stream: Path, year: int, newest_ms: int) -> bool:
    """Whether ``year`` can take no more bars, on evidence: the stream holds a bar of a
    later year, or its newest bar is the year's last (the next one opens after it)."""
    newest_year = month_bounds(newest_ms)[0]
    if year != newest_year:
        return year < newest_year
    try:
        step = interval_ms(stream.name.partition("=")[2])
    except ValueError:
        return False
    return month_bounds(newest_ms + step)[0] > year


def settle(stream: Path, newest_ms: int, *, final: bool = False) -> None:
    """Compact the journals of months before the one of ``newest_ms`` (the newest bar
    written; ``final``: that month's too, the writer has stopped) and merge every finished
    year whose months are all compacted. Idempotent; the writer appends only to that month
    or later meanwhile."""
    current = month_of(stream, newest_ms)
    journals: set[int] = set()
    for part in parts(stream):
        if part.month and part.journal.exists():
            if final or (part.year, part.month) < (current.year, current.month):
                compact_month(part)
            else:
                journals.add(part.year)
    years = {part.year for part in parts(stream) if part.month and part.data.exists()}
    for year in sorted(years - journals):
        if year_done(stream, year, newest_ms):
            compact_year(stream / f"year={year:04d}", year)
