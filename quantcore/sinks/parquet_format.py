"""The Parquet research store's schema, journal and file writing, shared by every user.

Prices and volumes are ``decimal(38, 18)``: 20 integer and 18 fractional digits hold
every value Binance sends (at most 8 decimals, far below 10**20) exactly; ``scales``
keeps the number of decimals each exchange string had, so the strings themselves come
back digit for digit. Where files go: :mod:`quantcore.sinks.parquet_layout`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
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
FORMAT = {"format": "quantcore-parquet", "version": 1}
"""Each file's schema version, in its footer's metadata (how a file is known as ours)."""
STORE_FORMAT = {**FORMAT, "layout": 2}
"""The store's marker: layout 2 keeps one file per closed year (layout 1, of quantcore
before 2026-12-03, kept ``year=/month=`` folders and is refused with a message)."""
META_KEY = b"quantcore"
META_VALUE = json.dumps(FORMAT, separators=(",", ":")).encode()
STORE_MARKER = json.dumps(STORE_FORMAT, separators=(",", ":")).encode()

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
        pa.field("open_time", TIME, nullable=False),
        pa.field("close_time", TIME, nullable=False),
        *(pa.field(name, DECIMAL, nullable=False) for name in EXACT_COLUMNS[:6]),
        ("trades", pa.int64()),
        *((name, DECIMAL) for name in EXACT_COLUMNS[6:]),
        ("event_time", TIME),
        pa.field("scales", pa.int64(), nullable=False),
        *(pa.field(f"{name}_float", pa.float64(), nullable=False) for name in FLOAT_COLUMNS),
    ],
    metadata={META_KEY: META_VALUE},
)
"""One year or month of one stream; venue, symbol, interval and year are in the path.
Only what a CSV export cannot know (trades, taker volumes, event time) may be null; the
rest is ``required`` in Parquet, which a reader copies without decoding definition
levels (a year's load: ~40 % faster than the same columns ``optional``)."""
_JOURNAL_TYPES = {name: pa.int64() for name in JOURNAL_COLUMNS[:4]} | {
    name: pa.string() for name in EXACT_COLUMNS
}


class StoreError(OSError):
    """A store, file or value quantcore will not touch or cannot hold; the message names it.

    An OSError so that the App reports it like any unusable output path: one line, exit 2."""


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


_COMPRESSION = {f.name: "none" if f.name.endswith("_float") else "zstd" for f in SCHEMA}
_ENCODING = {
    **{name: "DELTA_BINARY_PACKED" for name in ("open_time", "close_time", "event_time")},
    **{name: "DELTA_BINARY_PACKED" for name in ("trades", "scales")},
    **{f"{name}_float": "PLAIN" for name in FLOAT_COLUMNS},
}
"""Chosen for loading speed first (measured, bench/parquet_load.py): the float columns a
load reads are plain and uncompressed (a copy, no decoding: ~10 % less CPU per load than
byte-stream-split + LZ4, for ~10 more bytes a bar), times as deltas, no dictionaries;
the exact decimals, read less often, take zstd. A page holds up to 2**20 rows (8 MB),
so a year of 1m bars reads as one page a column (~10 % faster than 20,000-row pages).
Files written with the earlier encodings read the same (every reader decodes either)."""


_OPTIONS: dict[str, Any] = {
    "compression": _COMPRESSION,
    "use_dictionary": False,
    "column_encoding": _ENCODING,
    "write_statistics": ["open_time"],
    "data_page_size": 8 << 20,
    "max_rows_per_page": 1 << 20,
}


def write_file(path: Path, tables: pa.Table | Iterable[pa.Table]) -> None:
    """Write ``tables`` to ``path`` with the store's settings and fsync it (no rename):
    one table as one row group; an iterable of tables as one row group each, read one at
    a time (a year of 1s bars is merged a month in memory at a time)."""
    with path.open("wb") as handle:
        if isinstance(tables, pa.Table):
            pq.write_table(tables, handle, **_OPTIONS)
        else:
            with pq.ParquetWriter(handle, SCHEMA, **_OPTIONS) as writer:
                for table in tables:
                    writer.write_table(table, row_group_size=max(table.num_rows, 1))
        handle.flush()
        os.fsync(handle.fileno())


def temp_of(path: Path) -> Path:
    """The hidden name ``path`` is written under before its rename (no reader sees it)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomically(path: Path, table: pa.Table) -> None:
    """Write ``path`` under a hidden temporary name, fsync it, rename it into place and
    fsync the folder: a reader sees the old file or the new one, never half of one."""
    temp = temp_of(path)
    write_file(temp, table)
    os.replace(temp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
