"""The Parquet research store's layout, schema and conversions, shared by recorder and loader.

Layout (Hive-style, read as is by pandas, Polars, DuckDB and Spark)::

    {root}/_quantcore.json                      marks the folder as a store
    {root}/_venue=V.lock                        one writer per venue (quantcore.filelock)
    {root}/venue=V/symbol=S/interval=I/year=YYYY/month=MM/data.parquet
    {root}/venue=V/symbol=S/interval=I/year=YYYY/month=MM/_journal.csv  (bars not yet compacted)

Names starting with ``_`` or ``.`` are skipped by every Parquet reader, so the journal,
the lock and a compaction's temporary file are never seen as data. Prices and volumes are
``decimal128(38, 18)``: 20 integer and 18 fractional digits hold every value Binance sends
(at most 8 decimals, far below 10**20) exactly; ``scales`` keeps the number of
decimals each exchange string had, so the strings themselves come back digit for digit.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from quantcore.events import BarEvent
from quantcore.sinks.rows import DECIMAL_COLUMNS

MARKER = "_quantcore.json"
DATA = "data.parquet"
JOURNAL = "_journal.csv"
TEMP = ".data.parquet.tmp"
FORMAT = {"format": "quantcore-parquet", "version": 1}
META_KEY = b"quantcore"
META_VALUE = json.dumps(FORMAT, separators=(",", ":")).encode()

PRECISION, SCALE = 38, 18
DECIMAL = pa.decimal128(PRECISION, SCALE)
TIME = pa.timestamp("ms", tz="UTC")
EXACT_COLUMNS = DECIMAL_COLUMNS
"""Decimal columns, in the order their scales are packed into ``scales`` (5 bits each)."""
FLOAT_COLUMNS = EXACT_COLUMNS[:6]
"""Also stored as float64 (``open_float`` …): exactly ``float(text)``, so a load reads plain
doubles instead of decoding and correctly rounding decimals (slower than parsing a CSV)."""
JOURNAL_COLUMNS = ("open_time", "close_time", "event_time", "trades", *EXACT_COLUMNS)
SCHEMA = pa.schema(
    [
        ("open_time", TIME),
        ("close_time", TIME),
        *((name, DECIMAL) for name in EXACT_COLUMNS[:6]),
        ("trades", pa.int64()),
        *((name, DECIMAL) for name in EXACT_COLUMNS[6:]),
        ("event_time", TIME),
        ("scales", pa.int64()),
        *((f"{name}_float", pa.float64()) for name in FLOAT_COLUMNS),
    ],
    metadata={META_KEY: META_VALUE},
)
"""One month of one stream; symbol, interval, venue, year and month are in the path."""
_JOURNAL_TYPES = {name: pa.int64() for name in JOURNAL_COLUMNS[:4]} | {
    name: pa.string() for name in EXACT_COLUMNS
}


class StoreError(OSError):
    """A store, file or value quantcore will not touch or cannot hold; the message names it.

    An OSError so that the App reports it like any unusable output path: one line, exit 2."""


def stream_dir(root: Path, venue: str, symbol: str, interval: str) -> Path:
    for name, value in (("venue", venue), ("symbol", symbol), ("interval", interval)):
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise StoreError(f"refusing {name} {value!r} in a store path: letters, digits, _ and -")
    return root / f"venue={venue}" / f"symbol={symbol}" / f"interval={interval}"


def month_dir(stream: Path, year: int, month: int) -> Path:
    return stream / f"year={year:04d}" / f"month={month:02d}"


def months(stream: Path) -> list[Path]:
    """The stream's month folders, oldest first."""
    if not stream.is_dir():
        return []
    found = [m for y in stream.glob("year=*") for m in y.glob("month=*") if m.is_dir()]
    return sorted(found, key=lambda p: (p.parent.name, p.name))


def journal_line(bar: BarEvent, open_ms: int) -> bytes:
    """One journal row in :data:`JOURNAL_COLUMNS` order: times in ms, the exchange's strings.

    The recorder builds the same line inline (its hot path); tests hold the two equal."""
    d = bar.decimals or bar.decimal_strings()
    close_ms = open_ms + (bar.close_time - bar.open_time) // _MS
    event_ms = (bar.event_time - _EPOCH) // _MS
    return (
        f"{open_ms},{close_ms},{event_ms},{bar.trades},{d.open},{d.high},{d.low},{d.close},"
        f"{d.volume},{d.quote_volume},{d.taker_buy_volume},{d.taker_buy_quote_volume}\n"
    ).encode("ascii")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def read_journal(path: Path) -> pa.Table:
    """A journal's complete rows as a table of :data:`JOURNAL_COLUMNS` (strings for decimals)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end == 0:
        return pa.table({n: pa.array([], t) for n, t in _JOURNAL_TYPES.items()})
    try:
        return pacsv.read_csv(
            pa.py_buffer(data[:end]),
            read_options=pacsv.ReadOptions(column_names=list(JOURNAL_COLUMNS), use_threads=False),
            convert_options=pacsv.ConvertOptions(column_types=_JOURNAL_TYPES),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StoreError(f"{path}: not a quantcore journal ({exc}); left as is") from None


def _scales(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Decimals after the point of each plain decimal string (0 without a point); the
    journal is ASCII, so byte lengths are character lengths."""
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
    points = pc.find_substring(column, ".").to_numpy(zero_copy_only=False)
    return np.where(points < 0, 0, lengths - points - 1).astype(np.int64)


def to_store_table(journal: pa.Table) -> pa.Table:
    """Journal rows → the store's :data:`SCHEMA` (exact decimals, UTC times, packed scales).

    StoreError names the column when a value does not fit ``decimal128(38, 18)`` or is
    not a plain decimal; nothing is rounded.
    """
    columns: dict[str, Any] = {}
    packed = np.zeros(journal.num_rows, dtype=np.int64)
    for i, name in enumerate(EXACT_COLUMNS):
        text = journal.column(name)
        try:
            columns[name] = pc.cast(text, DECIMAL)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StoreError(
                f"column {name}: a value does not fit decimal(38, 18): {exc}"
            ) from None
        scales = _scales(text)
        if len(scales) and (scales.max() > SCALE or scales.min() < 0):
            raise StoreError(f"column {name}: more than {SCALE} decimals")
        packed |= scales << (5 * i)
    for name in ("open_time", "close_time", "event_time"):
        columns[name] = pc.cast(journal.column(name), pa.timestamp("ms")).cast(TIME)
    columns["trades"] = journal.column("trades")
    columns["scales"] = pa.array(packed)
    for name in FLOAT_COLUMNS:
        # Arrow parses decimal text correctly rounded: the same float as float(text).
        columns[f"{name}_float"] = pc.cast(journal.column(name), pa.float64())
    return pa.table({field.name: columns[field.name] for field in SCHEMA}, schema=SCHEMA)


def open_ours(path: Path) -> pq.ParquetFile:
    """``path`` opened (memory-mapped) if it is a Parquet file of this store; else
    StoreError naming it (its metadata must carry the quantcore key)."""
    try:
        opened = pq.ParquetFile(path, memory_map=True)
        meta = opened.schema_arrow.metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"{path}: not a quantcore Parquet file ({exc}); left as is") from None
    if meta.get(META_KEY) != META_VALUE:
        raise StoreError(
            f"{path}: not a quantcore Parquet file (no quantcore metadata); left as is"
        )
    return opened


def check_ours(path: Path) -> None:
    """StoreError unless ``path`` is a Parquet file written by this store."""
    open_ours(path).close()


def row_count(path: Path) -> int:
    """Rows in one Parquet file, from its footer."""
    return int(pq.ParquetFile(path).metadata.num_rows)


def read_month(folder: Path, columns: list[str] | None = None) -> pa.Table:
    """One month (``columns`` only, if given; ``open_time`` always): its compacted file
    plus the journal rows after it, in open-time order.

    The journal is read before the file: if a compaction renames the new file in between,
    its rows are in that file, and the journal rows it already holds are skipped.
    """
    if columns is not None and "open_time" not in columns:
        columns = ["open_time", *columns]
    try:
        rows = read_journal(folder / JOURNAL)
    except FileNotFoundError:
        rows = None
    parts = []
    data = folder / DATA
    last = -1
    if data.exists():
        with open_ours(data) as opened:
            table = opened.read(columns=columns)
        parts.append(table)
        if table.num_rows:
            last = table.column("open_time")[-1].cast(pa.int64()).as_py()
    if rows is not None:
        rows = rows.filter(pc.greater(rows.column("open_time"), last))
        if rows.num_rows:
            new = to_store_table(rows)
            parts.append(new if columns is None else new.select(columns))
    if not parts:
        empty = SCHEMA.empty_table()
        return empty if columns is None else empty.select(columns)
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def last_open_ms(folder: Path) -> int | None:
    """Newest open time (ms) in one month: the journal's last row, else the file's maximum."""
    journal = folder / JOURNAL
    if journal.exists():
        rows = read_journal(journal)
        if rows.num_rows:
            return int(rows.column("open_time")[-1].as_py())
    data = folder / DATA
    if data.exists():
        check_ours(data)
        table = pq.read_table(data, columns=["open_time"])
        if table.num_rows:
            return int(pc.max(table.column("open_time")).cast(pa.int64()).as_py())
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

    Only the months overlapping the range are opened. StoreError names a root that is
    not a store, a stream it lacks, or a stream held for several venues (pass ``venue``).
    """
    if not (root / MARKER).is_file():
        raise StoreError(f"{root}: not a quantcore Parquet store (no {MARKER})")
    venues = [venue] if venue else sorted(p.name[6:] for p in root.glob("venue=*"))
    folders = [stream_dir(root, v, symbol, interval) for v in venues]
    found = [f for f in folders if f.is_dir()]
    if not found:
        raise StoreError(f"{root}: no bars of {symbol} {interval} in this store")
    if len(found) > 1:
        raise StoreError(f"{root}: {symbol} {interval} is held for several venues; pass venue=")
    wanted = []
    for folder in months(found[0]):
        year, month = int(folder.parent.name[5:]), int(folder.name[6:])
        first = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
        following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if (hi is not None and first >= hi) or (
            lo is not None and following.timestamp() * 1000 <= lo
        ):
            continue
        wanted.append(folder)
    parts = [read_month(folder, columns) for folder in wanted]  # pyarrow decodes in parallel
    empty = SCHEMA.empty_table()
    table = pa.concat_tables(parts) if parts else empty.select(columns or empty.column_names)
    times = table.column("open_time").cast(pa.int64())
    if lo is not None or hi is not None:
        keep = pc.and_(
            pc.greater_equal(times, lo if lo is not None else -(1 << 62)),
            pc.less(times, hi if hi is not None else 1 << 62),
        )
        table = table.filter(keep)
    return table


_COMPRESSION = {f.name: "none" if f.name.endswith("_float") else "zstd" for f in SCHEMA}
_ENCODING = {
    **{name: "DELTA_BINARY_PACKED" for name in ("open_time", "close_time", "event_time")},
    **{name: "DELTA_BINARY_PACKED" for name in ("trades", "scales")},
    **{f"{name}_float": "PLAIN" for name in FLOAT_COLUMNS},
}
"""Chosen for loading speed first (measured, bench/parquet_load.py): the float columns a
load reads are plain and uncompressed (a copy, no decoding: ~10 % less CPU per load than
byte-stream-split + LZ4, for ~10 more bytes a bar), times as deltas, no dictionaries;
the exact decimals, read less often, take zstd. Files written with the earlier
encodings read the same (every reader decodes either)."""


def write_atomically(folder: Path, table: pa.Table) -> None:
    """Write ``data.parquet`` under a hidden temporary name, fsync it, rename it into place
    and fsync the folder: a reader sees the old file or the new one, never half of one."""
    temp = folder / TEMP
    with temp.open("wb") as handle:
        pq.write_table(
            table,
            handle,
            compression=_COMPRESSION,
            use_dictionary=False,
            column_encoding=_ENCODING,
            write_statistics=["open_time"],
            data_page_size=8 << 20,
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, folder / DATA)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unscaled(values: pa.Array, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Each decimal(38, 18) value as the integer ``m = value * 10**scale`` (exact when the
    value has at most ``scale`` decimals) and whether ``m`` fits 64 bits.

    The 128-bit integers are divided by ``10**(18 - scale)`` in 32-bit limbs (long
    division by at most ``10**9`` a step, so every partial fits 64 bits), all in numpy.
    """
    count = len(values)
    words = np.frombuffer(values.buffers()[1], dtype=np.uint64, count=2 * (values.offset + count))
    words = words[2 * values.offset :].reshape(-1, 2)
    low, high = words[:, 0], words[:, 1]
    limbs = [high >> _32, high & _MASK, low >> _32, low & _MASK]
    shift = SCALE - scale
    while shift:
        step = min(shift, 9)
        divisor = np.uint64(10**step)
        rest = np.zeros(count, dtype=np.uint64)
        quotients = []
        for limb in limbs:
            partial = (rest << _32) | limb
            quotients.append(partial // divisor)
            rest = partial % divisor
        limbs, shift = quotients, shift - step
    return (limbs[2] << _32) | limbs[3], (limbs[0] == 0) & (limbs[1] == 0)


_WIDE = Context(prec=PRECISION + 2)
_32 = np.uint64(32)
_MASK = np.uint64(0xFFFFFFFF)


def _whole(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def exact_strings(column: pa.ChunkedArray, scales: np.ndarray) -> pa.Array:
    """A decimal column as the exchange's strings (an Arrow string array, in row order):
    each value with the decimals it came with, built column-wise in Arrow and numpy."""
    values = _whole(column)
    groups, positions = [], []
    for scale in (int(s) for s in np.unique(scales)):
        rows = np.flatnonzero(scales == scale)
        taken = values.take(pa.array(rows))
        unscaled, fits = _unscaled(taken, scale)
        if scale:
            unit = np.uint64(10**scale)
            whole = pa.array(unscaled // unit).cast(pa.string())
            fraction = pc.ascii_lpad(pa.array(unscaled % unit).cast(pa.string()), scale, "0")
            digits = pc.binary_join_element_wise(whole, fraction, ".")
        else:
            digits = pa.array(unscaled).cast(pa.string())
        wide = np.flatnonzero(~fits)
        if len(wide):
            step = Decimal(1).scaleb(-scale)
            texts = [format(taken[int(i)].as_py().quantize(step, context=_WIDE), "f") for i in wide]
            mask = np.zeros(len(rows), dtype=bool)
            mask[wide] = True
            digits = pc.replace_with_mask(digits, pa.array(mask), pa.array(texts))
        groups.append(digits)
        positions.append(rows)
    if len(groups) == 1:
        return groups[0]
    if not groups:
        return pa.array([], pa.string())
    order = np.argsort(np.concatenate(positions), kind="stable")
    return pa.concat_arrays(groups).take(pa.array(order))
