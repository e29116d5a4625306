"""The Parquet research store checked like every other sink: string for string.

A recorder test adds :func:`consumer` to its config and ends with :func:`assert_store_holds`:
the store read back with ``quantcore.load(..., exact=True)`` is the CSV's rows (the
exchange's decimal strings, in order, none missing, none twice), and pyarrow's own read
of the files gives every exact column (taker volumes too) as DECIMAL(38, 18), never
through a float, each value and its recorded number of decimals the exchange's final
string, with its close time and trade count. Readers only ever see whole files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

import quantcore
from quantcore.sim import LocalExchange
from quantcore.sinks import parquet_format as fmt
from tests.harness import Row

VALUES = ["close", "high", "low", "open", "volume", "baseVolume"]
EXACT = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "quote_volume": "quote_volume",
    "taker_buy_volume": "taker_buy_base",
    "taker_buy_quote_volume": "taker_buy_quote",
}
"""The store's decimal columns → the exchange kline's fields (its strings)."""


def consumer(root: Path) -> dict[str, Any]:
    """The config entry of a ParquetRecorder writing the store under ``root``."""
    return {"class": "parquet", "params": {"root": str(root)}}


def every_recorder(template: str, root: Path) -> list[dict[str, Any]]:
    """HistoryStore, CsvRecorder (``template``), console and the store under ``root``: the
    consumers an outage test runs, so each asserts on every output it can."""
    return [
        {"class": "history"},
        {"class": "csv", "params": {"path": template}},
        {"class": "console"},
        consumer(root),
    ]


def store_rows(root: Path, symbol: str, venue: str | None = None) -> list[Row]:
    """The store's 1m bars of ``symbol`` as CSV rows: the exact strings ``quantcore.load``
    returns (journal rows not yet compacted included), and the open time."""
    frame = quantcore.load(symbol, "1m", source=root, exact=True, venue=venue)
    stamps = frame["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S")
    values = frame[VALUES].itertuples(index=False, name=None)
    rows = [(*v, s) for v, s in zip(values, stamps, strict=True)]
    assert all(type(value) is str for row in rows for value in row), "not the exact strings"
    return rows


def visible_files(root: Path) -> list[Path]:
    """The ``*.parquet`` files a reader's glob sees (every reader skips ``_`` and ``.``)."""
    return [
        path
        for path in root.rglob("*.parquet")
        if not any(part[0] in "._" for part in path.relative_to(root).parts)
    ]


def assert_whole_files(root: Path) -> int:
    """Every visible Parquet file opens and reads in full with pyarrow (none half-written);
    returns how many there are."""
    files = visible_files(root)
    for path in files:
        assert re.fullmatch(r"\d{4}(-\d{2})?\.parquet", path.name), f"{path}: not a data file"
        with pq.ParquetFile(path) as opened:
            assert opened.read().num_rows == opened.metadata.num_rows > 0, path
    return len(files)


def stored_table(root: Path, symbol: str, venue: str | None) -> pa.Table:
    """pyarrow's own read of the Hive-partitioned store: one stream, ordered by open time."""
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    wanted = (ds.field("symbol") == symbol) & (ds.field("interval") == "1m")
    if venue is not None:
        wanted &= ds.field("venue") == venue
    table = dataset.to_table(filter=wanted)
    return table.take(pc.sort_indices(table, [("open_time", "ascending")]))


def assert_store_holds(
    root: Path,
    symbol: str,
    rows: Sequence[Row],
    exchange: LocalExchange | None,
    venue: str | None = None,
) -> None:
    """After a clean stop: the store equals ``rows`` (the CSV's, already checked against
    the exchange) string for string, every month is compacted into whole files, and each
    stored bar's exact values, close time and trade count are the exchange's final bar's
    (``exchange`` None: the rows only, for tens of thousands of bars)."""
    stored, expected = store_rows(root, symbol, venue), list(rows)
    first = next(
        (n for n, pair in enumerate(zip(stored, expected, strict=False)) if pair[0] != pair[1]),
        None,
    )
    assert stored == expected, (
        f"store {len(stored)} rows, CSV {len(expected)}; first difference at {first}: "
        f"{stored[first] if first is not None else stored[len(expected) :][:2]} vs "
        f"{expected[first] if first is not None else expected[len(stored) :][:2]}"
    )
    assert not list(root.rglob("_*.journal.csv")), "a journal was left uncompacted at stop"
    assert not list(root.rglob(".*.tmp")), "a compaction's temporary file was left"
    assert not list(root.rglob(".*.merged")), "a year merge left a hidden month"
    assert assert_whole_files(root) >= 1
    table = stored_table(root, symbol, venue)
    assert table.num_rows == len(rows)
    opens = table.column("open_time").cast(pa.int64()).to_pylist()
    assert opens == sorted(set(opens)), "a bar stored twice"
    if exchange is None:
        return
    by_open = {k.open_time: k for k in exchange.closed_klines(symbol, "1m", since_ms=opens[0])}
    final = [by_open[open_ms] for open_ms in opens]
    assert table.column("close_time").cast(pa.int64()).to_pylist() == [k.close_time for k in final]
    assert table.column("trades").to_pylist() == [k.trades for k in final]
    scales = table.column("scales").to_pylist()
    for name, field in EXACT.items():
        column = table.column(name)
        assert column.type == pa.decimal128(38, 18), (name, column.type)
        shift = 5 * fmt.EXACT_COLUMNS.index(name)
        texts = column.cast(pa.string()).to_pylist()  # pyarrow writes zero as 0E-18
        stored = [
            (format(Decimal(text), "f") if "E" in text else text, scale >> shift & 31)
            for text, scale in zip(texts, scales, strict=True)
        ]
        wanted = [padded(getattr(k, field)) for k in final]
        wrong = [(k, s, w) for k, s, w in zip(final, stored, wanted, strict=True) if s != w]
        assert not wrong, f"{name}: {len(wrong)} bars differ from the exchange's, first {wrong[0]}"


def padded(text: str) -> tuple[str, int]:
    """An exchange string as pyarrow writes the stored decimal (all 18 decimals), and the
    number of decimals the string has (what the store's ``scales`` must record)."""
    whole, point, fraction = text.partition(".")
    assert whole.isdigit() and (fraction.isdigit() or not point), text
    return f"{whole}.{fraction.ljust(18, '0')}", len(fraction)


def tear_journal(root: Path, symbol: str, back: int, venue: str = "binance-spot") -> int:
    """Leave the stream's newest journal as a kill -9 would that landed while Parquet was
    ``back`` bars behind the CSV, inside the write of the first of them: the last ``back``
    lines gone, half of the first one left. Returns the open time (ms) of the store's last
    whole bar, where a restart must resume."""
    stream = root / f"venue={venue}" / f"symbol={symbol}" / "interval=1m"
    journals = sorted(stream.glob("year=*/_*.journal.csv"))
    assert journals, f"{stream}: no journal after the kill"
    lines = journals[-1].read_bytes().splitlines(keepends=True)
    assert len(lines) > back, f"{journals[-1]}: too few lines to tear"
    kept, torn = lines[:-back], lines[-back]
    journals[-1].write_bytes(b"".join(kept) + torn[: len(torn) // 2])
    return int(kept[-1].split(b",", 1)[0])
