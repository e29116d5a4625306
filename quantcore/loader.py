"""``quantcore.load``: one stream's recorded bars, from any store, as a HistoryStore DataFrame.

The same call reads a CsvRecorder CSV, a SqliteRecorder database, a PostgresRecorder
table or a ParquetRecorder store, so research code does not care which recorder ran.
Floats are exactly ``float(text)`` of the stored strings (what the live HistoryStore
holds); ``exact=True`` returns the exchange's strings themselves instead.
(This module is not named ``load``: a submodule would shadow the function on the package.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantcore.consumers.history import COLUMNS
from quantcore.decimals import plain
from quantcore.events import DATETIME_FORMAT

TimeLike = datetime | pd.Timestamp | str | int
"""A datetime (naive means UTC), a pandas Timestamp, an ISO text, or epoch milliseconds."""

_VALUES = COLUMNS[:6]
_SOURCE_OF = {
    "close": "close",
    "high": "high",
    "low": "low",
    "open": "open",
    "volume": "volume",
    "baseVolume": "quote_volume",
}
"""HistoryStore column → the stores' column (``baseVolume`` is the quote volume, k.q)."""
_FLOAT_PRECISION: dict[str, Any] = (
    {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
)
_TEXT = pd.Series([], dtype=str).dtype
"""pandas' own string dtype (pandas 3: Arrow-backed ``str``; pandas 2: object), the same
as ``read_csv(dtype=str)`` gives, so exact frames from every source compare equal."""
_SQLITE_MAGIC = b"SQLite format 3\x00"


class LoadError(ValueError):
    """The source is missing, unreadable, or lacks the stream; the message names it."""


def _ms(value: TimeLike | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC)
    return int(stamp.value // 1_000_000)


def load(
    symbol: str,
    interval: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    source: str | Path,
    exact: bool = False,
    venue: str | None = None,
    table: str = "bars",
) -> pd.DataFrame:
    """Bars of (symbol, interval) with ``start <= open time < end``, oldest first.

    ``source``: a CSV file (or a CsvRecorder path template with ``{symbol}`` and
    ``{interval}``), a SQLite file, a PostgreSQL DSN (``postgresql://…``; ``table`` as
    configured) or a Parquet store's root folder (``venue`` needed only when the store
    holds the stream for more than one venue). Columns are the HistoryStore's: six
    float64 columns and ``datetime`` (open time, UTC, tz-naive ``datetime64[ms]``); with
    ``exact=True`` the six hold the exchange's decimal strings (``Decimal(s)`` is exact).
    """
    lo, hi = _ms(start), _ms(end)
    text = str(source)
    if text.startswith(("postgresql://", "postgres://")) or "dbname=" in text:
        return _from_postgres(text, table, symbol, interval, lo, hi, exact)
    path = Path(text.format(symbol=symbol, interval=interval) if "{" in text else text)
    if path.is_dir():
        return _from_parquet(path, symbol, interval, lo, hi, exact, venue)
    if not path.is_file():
        raise LoadError(f"{path}: no such file or store")
    with path.open("rb") as handle:
        magic = handle.read(len(_SQLITE_MAGIC))
    if magic == _SQLITE_MAGIC:
        return _from_sqlite(path, table, symbol, interval, lo, hi, exact)
    return _from_csv(path, lo, hi, exact)


def _frame(times: np.ndarray, values: dict[str, Any]) -> pd.DataFrame:
    columns: dict[str, Any] = {name: values[name] for name in _VALUES}
    columns["datetime"] = np.asarray(times, dtype=np.int64).view("datetime64[ms]")
    return pd.DataFrame(columns, copy=False)


def _from_csv(path: Path, lo: int | None, hi: int | None, exact: bool) -> pd.DataFrame:
    """pandas' C parser; before pandas 3 only its ``round_trip`` mode rounds every float
    correctly (pandas 3 does by default and deprecates the option)."""
    try:
        frame = pd.read_csv(
            path,
            dtype={name: str for name in _VALUES} if exact else dict.fromkeys(_VALUES, "float64"),
            engine="c",
            **_FLOAT_PRECISION,
        )
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise LoadError(f"{path}: not a quantcore CSV ({exc})") from None
    if list(frame.columns) != list(COLUMNS):
        raise LoadError(f"{path}: not a quantcore CSV (columns {list(frame.columns)})")
    stamps = pd.to_datetime(frame["datetime"], format=DATETIME_FORMAT).to_numpy()
    times = stamps.astype("datetime64[ms]").view(np.int64)
    keep = _in_range(times, lo, hi)
    values = {name: frame[name].to_numpy()[keep] for name in _VALUES}
    return _frame(times[keep], values)


def _in_range(times: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    keep = np.ones(len(times), dtype=bool)
    if lo is not None:
        keep &= times >= lo
    if hi is not None:
        keep &= times < hi
    return keep


def _query(table: str, placeholder: str, lo: int | None, hi: int | None) -> str:
    from quantcore.sinks import schema

    names = ", ".join(f'"{_SOURCE_OF[name]}"' for name in _VALUES)
    where = f'symbol = {placeholder} AND "interval" = {placeholder}'
    if lo is not None:
        where += f" AND open_time >= {int(lo)}"
    if hi is not None:
        where += f" AND open_time < {int(hi)}"
    quoted = schema.table_name(table)
    return f"SELECT open_time, {names} FROM {quoted} WHERE {where} ORDER BY open_time"


def _rows_frame(rows: Sequence[Sequence[Any]], exact: bool) -> pd.DataFrame:
    """SQL rows (open_time, six exact values as str or Decimal) → the frame."""
    times = np.fromiter((int(row[0]) for row in rows), dtype=np.int64, count=len(rows))
    values: dict[str, np.ndarray] = {}
    for i, name in enumerate(_VALUES, start=1):
        texts = [value if type(value) is str else plain(value) for value in (r[i] for r in rows)]
        if exact:
            values[name] = np.array(texts, dtype=object)
        else:
            values[name] = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
    return _frame(times, values)


def _from_sqlite(
    path: Path, table: str, symbol: str, interval: str, lo: int | None, hi: int | None, exact: bool
) -> pd.DataFrame:
    from quantcore.sinks.sqlite import connect

    try:
        conn = connect(path, read_only=True)
        try:
            rows = conn.execute(_query(table, "?", lo, hi), (symbol, interval)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LoadError(f"{path}: cannot read table {table!r}: {exc}") from None
    return _rows_frame(rows, exact)


def _from_postgres(
    dsn: str, table: str, symbol: str, interval: str, lo: int | None, hi: int | None, exact: bool
) -> pd.DataFrame:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            rows = conn.execute(_query(table, "%s", lo, hi), (symbol, interval)).fetchall()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LoadError(f"PostgreSQL table {table!r}: {first}") from None
    return _rows_frame(rows, exact)


def _from_parquet(
    root: Path,
    symbol: str,
    interval: str,
    lo: int | None,
    hi: int | None,
    exact: bool,
    venue: str | None,
) -> pd.DataFrame:
    """The year and month files (and journals not yet compacted) overlapping the range.

    Floats go to pandas through Arrow's own conversion, one block per column: a range
    read from one file (a closed year) becomes the frame without a copy."""
    import pyarrow as pa

    from quantcore.sinks import parquet_format as fmt
    from quantcore.sinks import parquet_layout as layout
    from quantcore.sinks.parquet_decimals import exact_strings

    names = [_SOURCE_OF[name] for name in _VALUES]
    wanted = [*names, "scales"] if exact else [f"{name}_float" for name in names]
    try:
        table = layout.read_stream(root, symbol, interval, lo, hi, venue, wanted)
    except fmt.StoreError as exc:
        raise LoadError(str(exc)) from None
    times = table.column("open_time").cast(pa.timestamp("ms"))
    if not exact:
        columns = [table.column(f"{stored}_float") for stored in names]
        frame = pa.table([*columns, times], names=list(COLUMNS))
        loaded: pd.DataFrame = frame.to_pandas(split_blocks=True, coerce_temporal_nanoseconds=False)
        return loaded
    values: dict[str, Any] = {}
    scales = table.column("scales").to_numpy()
    for name, stored in zip(_VALUES, names, strict=True):
        own = (scales >> (5 * fmt.EXACT_COLUMNS.index(stored))) & 31
        values[name] = pd.array(exact_strings(table.column(stored), own), dtype=_TEXT)
    return _frame(times.to_numpy(), values)
