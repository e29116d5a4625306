"""``quantcore export --to parquet``: a CSV recording or a SQLite stream into a Parquet store.

The source is read and checked whole before the store is touched (every value a plain
decimal, times strictly increasing on the interval's grid; else one line naming the line
or bar, nothing written). The store is opened the way the ParquetRecorder opens it: the
same refusal of a folder that is not a store and the same one-writer lock, so a running
recorder and a conversion never write one venue of a store together. Each month is
written whole (temporary name, fsync, rename), then each finished year is merged into one
file: an interrupted conversion leaves complete months, and running it again adds the rest.

A stream the store already holds: the bars after its last bar are appended, provided
every bar both hold is equal, digit for digit (else refused, nothing written); ``--force``
replaces the stream instead. Values keep the exchange's strings; a CSV has no trades,
taker volumes or event times, so those are null (unknown), never invented. The CSV's
``.gaps`` sidecar, or SQLite's ``<table>_gaps``, goes into the stream's ``_gaps.csv``
(ranges it lacks; ``--force``: all).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from quantcore.consumers.csv_recorder import HEADER
from quantcore.consumers.history import COLUMNS
from quantcore.gapfile import STORE_NAME, GapFileError, KnownGap, merge_into, read_from, read_gaps
from quantcore.intervals import bar_open_ms, interval_ms
from quantcore.progress import progress
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout
from quantcore.sinks import schema
from quantcore.sinks.export import EXIT_BAD_INPUT, EXIT_NO_BARS, EXIT_OK, ExportError, count_bars
from quantcore.sinks.parquet import ParquetRecorder
from quantcore.sinks.rows import ROW_COLUMNS
from quantcore.sinks.sqlite import connect, known_gaps

_PLAIN = r"^[0-9]+(\.[0-9]+)?$"
_STAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
_CSV_NAMES = dict(zip(COLUMNS[:6], ("close", "high", "low", "open", "volume", "quote_volume"),
                      strict=True))  # fmt: skip
"""CSV column → store column (the CSV's ``baseVolume`` is the quote volume, k.q)."""
_UNKNOWN_IN_CSV = ("trades", "taker_buy_volume", "taker_buy_quote_volume", "event_time")
_SIX = len(fmt.FLOAT_COLUMNS)
_SIX_SCALES = (1 << (5 * _SIX)) - 1
"""The bits of ``scales`` that belong to the six values a CSV holds."""


@dataclass(frozen=True, slots=True)
class Source:
    """A checked source: the store's rows in open-time order, and how to name a row."""

    name: str
    table: pa.Table
    where: list[str]
    """Per row, where it came from (``line 17``, ``open_time 1725408000000``)."""
    gaps: list[KnownGap] | None = None
    """Known gaps to carry over (a CSV's ``.gaps`` sidecar, SQLite's ``<table>_gaps``); None:
    the source keeps none."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a conversion did: bars written, source bars the store already held (skipped),
    and of those, bars the store lacks (a hole in the store that only --force fills)."""

    written: int
    held: int
    missing: int


def _first_false(mask: pa.Array | pa.ChunkedArray) -> int | None:
    bad = np.flatnonzero(~np.asarray(pc.fill_null(mask, False), dtype=bool))
    return int(bad[0]) if len(bad) else None


def _check_values(name: str, columns: dict[str, pa.Array], where: list[str]) -> None:
    for column, values in columns.items():
        bad = _first_false(pc.match_substring_regex(values, _PLAIN))
        if bad is not None:
            raise ExportError(
                f"{name}: {where[bad]}: {column} {values[bad].as_py()!r} is not a plain "
                "decimal; nothing written"
            )


def _check_times(name: str, times: np.ndarray, interval: str, where: list[str]) -> None:
    """Strictly increasing open times on the interval's grid, else one line naming the row."""
    step = interval_ms(interval)
    back = np.flatnonzero(np.diff(times) <= 0)
    if len(back):
        i = int(back[0]) + 1
        raise ExportError(
            f"{name}: {where[i]}: {_stamp(times[i])} does not follow {_stamp(times[i - 1])} "
            "(a duplicate or a row out of order; quantcore check lists them); nothing written"
        )
    reference = bar_open_ms(int(times[0]), interval)
    off = np.flatnonzero((times - reference) % step)
    if reference != times[0] or len(off):
        i = 0 if reference != times[0] else int(off[0])
        raise ExportError(
            f"{name}: {where[i]}: {_stamp(times[i])} is not a {interval} bar open time; "
            "nothing written"
        )


def _zero_nulls(kind: pa.DataType, count: int) -> pa.Array:
    """``count`` nulls whose value slots are zero, so a reader that skips the validity
    bitmap sees 0 (a CSV bar replayed has trades 0 and taker volumes "0")."""
    width = 16 if kind == fmt.DECIMAL else 8
    validity = pa.py_buffer(bytes((count + 7) // 8))
    return pa.Array.from_buffers(
        kind, count, [validity, pa.py_buffer(bytes(width * count))], null_count=count
    )


def read_csv(path: Path, interval: str) -> Source:
    """A CsvRecorder CSV as store rows; a last line without its newline (a bar still being
    written, or torn by a crash) is not a bar yet and is left out."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExportError(f"{path}: cannot read: {exc.strerror}") from None
    if not data.startswith(HEADER.encode()):
        raise ExportError(f"{path}: not a quantcore CSV (first line is not {HEADER.strip()!r})")
    try:
        gaps = read_gaps(path)
    except GapFileError as exc:
        raise ExportError(f"{exc}; nothing written") from None
    body = data[len(HEADER) : data.rfind(b"\n") + 1]
    if not body:
        raise ExportError(f"{path}: no bars; nothing written", EXIT_NO_BARS)
    try:
        text = pacsv.read_csv(
            pa.py_buffer(body),
            read_options=pacsv.ReadOptions(column_names=list(COLUMNS)),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(COLUMNS, pa.string())),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"{path}: not a quantcore CSV ({first}); nothing written") from None
    where = [f"line {n}" for n in range(2, text.num_rows + 2)]
    values = {name: text.column(name).combine_chunks() for name in COLUMNS[:6]}
    _check_values(str(path), values, where)
    stamps = text.column("datetime").combine_chunks()
    shaped = pc.match_substring_regex(stamps, _STAMP)
    parsed = pc.strptime(stamps, format="%Y-%m-%d %H:%M:%S", unit="ms", error_is_null=True)
    bad = _first_false(pc.and_(shaped, pc.is_valid(parsed)))
    if bad is not None:
        raise ExportError(
            f"{path}: {where[bad]}: datetime {stamps[bad].as_py()!r} is not "
            "YYYY-MM-DD HH:MM:SS (UTC); nothing written"
        )
    times = parsed.cast(pa.int64()).to_numpy()
    _check_times(str(path), times, interval, where)
    count = len(times)
    closes = times + (interval_ms(interval) - 1)
    journal = {
        "open_time": pa.array(times),
        "close_time": pa.array(closes),
        "event_time": pa.array(closes),
        "trades": pa.array(np.zeros(count, dtype=np.int64)),
        **{_CSV_NAMES[name]: values[name] for name in COLUMNS[:6]},
        "taker_buy_volume": pa.array(["0"] * count, pa.string()),
        "taker_buy_quote_volume": pa.array(["0"] * count, pa.string()),
    }
    table = _store_table(str(path), pa.table([journal[n] for n in fmt.JOURNAL_COLUMNS],
                                             names=list(fmt.JOURNAL_COLUMNS)))  # fmt: skip
    for name in _UNKNOWN_IN_CSV:
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, _zero_nulls(field.type, count))
    return Source(str(path), table, where, gaps)


def read_sqlite(db: Path, table: str, symbol: str, interval: str) -> Source:
    """One stream of a SqliteRecorder table as store rows, every field kept, with the
    exchange gaps the recorder wrote down beside it (``<table>_gaps``)."""
    count_bars(db, symbol, interval, table)
    try:
        conn = connect(db, read_only=True)
        try:
            quoted = schema.table_name(table)
            rows = conn.execute(schema.select_stream(quoted, "?"), (symbol, interval)).fetchall()
            gaps = known_gaps(conn, table, symbol, interval)
        finally:
            conn.close()
    except (sqlite3.Error, ValueError) as exc:
        raise ExportError(f"{db}: {exc}") from None
    times = np.fromiter((int(r[2]) for r in rows), dtype=np.int64, count=len(rows))
    where = [f"open_time {t}" for t in times.tolist()]
    index = {name: i for i, name in enumerate(ROW_COLUMNS)}
    texts = {
        name: pa.array([str(r[index[name]]) for r in rows], pa.string())
        for name in fmt.EXACT_COLUMNS
    }
    _check_values(f"{db}:{table}", texts, where)
    _check_times(f"{db}:{table}", times, interval, where)
    ints = {
        name: pa.array([int(r[index[name]]) for r in rows], pa.int64())
        for name in ("close_time", "event_time", "trades")
    }
    columns = {"open_time": pa.array(times), **ints, **texts}
    journal = pa.table([columns[n] for n in fmt.JOURNAL_COLUMNS], names=list(fmt.JOURNAL_COLUMNS))
    return Source(f"{db}:{table}", _store_table(f"{db}:{table}", journal), where, gaps)


def _store_table(name: str, journal: pa.Table) -> pa.Table:
    try:
        return fmt.to_store_table(journal)
    except fmt.StoreError as exc:
        raise ExportError(f"{name}: {exc}; nothing written") from None


def _open_times(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("open_time").cast(pa.int64()).to_numpy())


def _compare(source: Source, stored: pa.Table, root: Path, label: str) -> int:
    """ExportError at the first bar both hold with other values; returns the source's
    bars up to the store's last that the store lacks."""
    mine = source.table.filter(pc.less_equal(source.table.column("open_time"),
                                             stored.column("open_time")[-1]))  # fmt: skip
    _, i, j = np.intersect1d(_open_times(mine), _open_times(stored), return_indices=True)
    same = np.ones(len(i), dtype=bool)
    for name in fmt.EXACT_COLUMNS[:_SIX]:
        a, b = mine.column(name).take(pa.array(i)), stored.column(name).take(pa.array(j))
        same &= np.asarray(pc.fill_null(pc.equal(a, b), False), dtype=bool)
    scales_a = np.asarray(mine.column("scales").to_numpy())[i] & _SIX_SCALES
    scales_b = np.asarray(stored.column("scales").to_numpy())[j] & _SIX_SCALES
    differ = np.flatnonzero(~same | (scales_a != scales_b))
    if len(differ):
        k = int(i[differ[0]])
        opened = _stamp(int(_open_times(mine)[k]))
        raise ExportError(
            f"{root}: already holds {label} {opened} with other values than {source.name} "
            f"{source.where[k]}; left as is (--force replaces the stream)"
        )
    return int(mine.num_rows) - len(i)


def write_store(
    source: Source, root: Path, venue: str, symbol: str, interval: str, force: bool
) -> Outcome:
    """Write ``source`` into the store's stream, under the ParquetRecorder's own lock (a
    command's work: it releases the lock with ``asyncio.run``, so not from a running loop)."""
    recorder = ParquetRecorder(root=str(root), venue=venue)
    try:
        last = recorder.resume_point(symbol, interval)  # refuses foreign folders, locks
        stream = layout.stream_dir(root, venue, symbol, interval)
        if source.gaps is not None and not force:
            read_from(stream / STORE_NAME)  # a bad gaps file refuses before any bar is written
        new, held, missing = source.table, 0, 0
        if last is not None and not force:
            first = int(_open_times(source.table)[0])
            stored = layout.read_stream(root, symbol, interval, first, last + 1, venue,
                                     [*fmt.EXACT_COLUMNS[:_SIX], "scales"])  # fmt: skip
            if stored.num_rows:
                missing = _compare(source, stored, root, f"{symbol} {interval}")
            keep = pc.greater(source.table.column("open_time"), pa.scalar(last, pa.int64())
                              .cast(fmt.TIME))  # fmt: skip
            new = source.table.filter(keep)
            held = source.table.num_rows - new.num_rows
        written = _write_months(new, stream, replace=force)
        if force:
            _drop_other_parts(stream, written)
        newest = layout.newest_open_ms(stream)
        if newest is not None:
            layout.settle(stream, newest)
        if source.gaps is not None:
            stream.mkdir(parents=True, exist_ok=True)
            merge_into(stream / STORE_NAME, source.gaps, replace=force)
        return Outcome(new.num_rows, held, missing)
    finally:
        asyncio.run(recorder.stop())


def _write_months(table: pa.Table, stream: Path, replace: bool) -> set[layout.Part]:
    """Each month of ``table`` into its file (after the rows there unless ``replace``),
    written whole; returns the months written."""
    if not table.num_rows:
        return set()
    times = _open_times(table)
    months = times.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    cuts = [0, *(np.flatnonzero(np.diff(months)) + 1).tolist(), len(months)]
    written: set[layout.Part] = set()
    with progress(len(cuts) - 1, f"export {stream.parent.name[7:]}", unit="month") as shown:
        for start, stop in pairwise(cuts):
            part = layout.month_of(stream, int(times[start]))
            part.folder.mkdir(parents=True, exist_ok=True)
            rows = table.slice(start, stop - start)
            if not replace and part.data.exists():
                rows = pa.concat_tables([layout.read_part(part), rows])
            fmt.write_atomically(part.data, rows)
            written.add(part)
            shown.update(1)
    return written


def _drop_other_parts(stream: Path, keep: set[layout.Part]) -> None:
    """``--force``: the stream's years and months the source does not have are removed."""
    for part in layout.parts(stream):
        if part in keep:
            continue
        part.data.unlink(missing_ok=True)
        part.journal.unlink(missing_ok=True)
        fmt.fsync_dir(part.folder)
        if not any(part.folder.iterdir()):
            part.folder.rmdir()


def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ms) // 1000))


def run(args: argparse.Namespace) -> int:
    """``export --to parquet``: 0 written, 1 the source has no bars of the stream (nothing
    written), 2 bad input, a refused store or a conflict (one line on stderr)."""
    try:
        if args.out == "-":
            raise ExportError("--to parquet needs --out ROOT (the store's folder)")
        try:
            interval_ms(args.interval)
        except ValueError as exc:
            raise ExportError(f"--interval: {exc}") from None
        if args.csv is not None:
            source = read_csv(Path(args.csv), args.interval)
        else:
            source = read_sqlite(Path(args.db), args.table, args.symbol, args.interval)
        root = Path(args.out)
        done = write_store(source, root, args.venue, args.symbol, args.interval, args.force)
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return exc.code
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # StoreError included: foreign folder, store in use, disk full
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"export: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    line = f"export: {done.written} bars of {args.symbol} {args.interval} into {root}"
    if done.held:
        line += f"; {done.held} already in the store, skipped"
    if done.missing:
        line += f" ({done.missing} of them missing there: --force rewrites the stream)"
    print(line, file=sys.stderr)
    return EXIT_OK
