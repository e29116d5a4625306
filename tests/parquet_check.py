"""The Parquet research store checked like every other sink: string for string.

A recorder test adds :func:`consumer` to its config and ends with :func:`assert_store_holds`:
the store read back with ``quantcore.load(..., exact=True)`` is the CSV's rows (the
exchange's decimal strings, in order, none missing, none twice), and pyarrow's own read
of the files gives every exact column (taker volumes too) as Decimal, never through a
float, with the exchange's final bar's close time, trade count and strings. Readers
only ever see whole files.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

import quantcore
from quantcore.sim import Kline, LocalExchange
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
WIDE = Context(prec=40)


def consumer(root: Path) -> dict[str, Any]:
    """The config entry of a ParquetRecorder writing the store under ``root``."""
    return {"class": "parquet", "params": {"root": str(root)}}


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
        assert path.name == "data.parquet", f"{path}: a file readers should never see"
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
    exchange: LocalExchange,
    venue: str | None = None,
) -> None:
    """After a clean stop: the store equals ``rows`` (the CSV's, already checked against
    the exchange) string for string, every month is compacted into whole files, and each
    stored bar's exact values, close time and trade count are the exchange's final bar's."""
    assert store_rows(root, symbol, venue) == list(rows)
    assert not list(root.rglob("_journal.csv")), "a journal was left uncompacted at stop"
    assert not list(root.rglob(".data.parquet.tmp")), "a compaction's temporary file was left"
    assert assert_whole_files(root) >= 1
    table = stored_table(root, symbol, venue)
    assert table.num_rows == len(rows)
    final = {k.open_time: k for k in exchange.closed_klines(symbol, "1m", since_ms=0)}
    opens = table.column("open_time").cast(pa.int64()).to_pylist()
    assert opens == sorted(set(opens)), "a bar stored twice"
    closes = table.column("close_time").cast(pa.int64()).to_pylist()
    trades = table.column("trades").to_pylist()
    scales = table.column("scales").to_pylist()
    exact = {name: table.column(name).to_pylist() for name in EXACT}
    for i, open_ms in enumerate(opens):
        values = {name: column[i] for name, column in exact.items()}
        assert_bar(final[open_ms], closes[i], trades[i], values, scales[i])


def assert_bar(
    kline: Kline, close_ms: int, trades: int, exact: dict[str, Decimal], scales: int
) -> None:
    """One stored bar against the exchange's: each Decimal, written with the decimals its
    ``scales`` entry records (5 bits per column, in the store's column order), is the
    exchange's string, character for character."""
    assert (close_ms, trades) == (kline.close_time, kline.trades), kline
    for name, field in EXACT.items():
        value = exact[name]
        assert type(value) is Decimal and value == Decimal(getattr(kline, field)), (name, kline)
        places = (scales >> 5 * fmt.EXACT_COLUMNS.index(name)) & 31
        text = format(value.quantize(Decimal(1).scaleb(-places), context=WIDE), "f")
        assert text == getattr(kline, field), (name, text, kline)


def tear_journal(root: Path, symbol: str, back: int, venue: str = "binance-spot") -> int:
    """Leave the stream's newest journal as a kill -9 would that landed while Parquet was
    ``back`` bars behind the CSV, inside the write of the first of them: the last ``back``
    lines gone, half of the first one left. Returns the open time (ms) of the store's last
    whole bar, where a restart must resume."""
    stream = root / f"venue={venue}" / f"symbol={symbol}" / "interval=1m"
    journals = sorted(stream.glob("year=*/month=*/_journal.csv"))
    assert journals, f"{stream}: no journal after the kill"
    lines = journals[-1].read_bytes().splitlines(keepends=True)
    assert len(lines) > back, f"{journals[-1]}: too few lines to tear"
    kept, torn = lines[:-back], lines[-back]
    journals[-1].write_bytes(b"".join(kept) + torn[: len(torn) // 2])
    return int(kept[-1].split(b",", 1)[0])
