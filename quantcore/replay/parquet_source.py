"""The Parquet research store read back as closed bars (``replay.source: parquet``).

Every field the store keeps comes back: the exchange's strings (each decimal column with
the scale it was recorded with), trades, close and event times. Year and month files and
the journal of the month not compacted yet are all read, so a replay sees every stored bar.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from quantcore.events import BarDecimals, BarEvent, utc_text
from quantcore.feeds.base import StreamKey
from quantcore.replay.sources import BarSource, ReplayError, as_bar, register_source


class ParquetSource(BarSource):
    """The ParquetRecorder's store under ``path`` (its ``root``), opened read-only."""

    kind = "parquet"
    recorder = "ParquetRecorder"

    @classmethod
    def settings_of(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"path": params.get("root", "data/parquet")}

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.root = Path(settings.path or "data/parquet")

    def location(self, key: StreamKey | None = None) -> str:
        return f"Parquet store {self.root}"

    def check(self) -> None:
        if not self.root.is_dir():
            raise ReplayError(f"{self.root}: no such Parquet store")

    def _table(self, key: StreamKey, lo: int | None, hi: int | None) -> Any:
        from quantcore.sinks.parquet_format import StoreError
        from quantcore.sinks.parquet_layout import read_stream

        try:
            return read_stream(self.root, key[0], key[1], lo, hi, None)
        except StoreError:
            return None

    def extent(self, key: StreamKey) -> tuple[int, int] | None:
        table = self._table(key, None, None)
        if table is None or table.num_rows == 0:
            return None
        times = table.column("open_time").cast("int64")
        return int(times[0].as_py()), int(times[-1].as_py())

    def bars(self, key: StreamKey, start_ms: int, end_ms: int) -> Iterator[BarEvent]:
        from quantcore.sinks.parquet_decimals import exact_strings
        from quantcore.sinks.parquet_format import EXACT_COLUMNS

        table = self._table(key, start_ms, end_ms)
        if table is None:
            return
        scales = table.column("scales").to_numpy()
        texts = [
            exact_strings(table.column(name), (scales >> (5 * n)) & 31).to_pylist()
            for n, name in enumerate(EXACT_COLUMNS)
        ]
        times = [table.column(c).cast("int64").to_pylist() for c in ("open_time", "close_time")]
        events = table.column("event_time").cast("int64").to_pylist()
        trades = table.column("trades").fill_null(0).to_pylist()  # null: converted from a CSV
        for i, open_ms in enumerate(times[0]):
            decimals = BarDecimals(*(column[i] for column in texts))
            try:
                yield as_bar(key, open_ms, times[1][i], decimals, trades[i], events[i])
            except ValueError as exc:
                where = f"{self.location()}: {key[0]} {key[1]} {utc_text(open_ms)}"
                raise ReplayError(f"{where}: {exc}") from None


register_source(ParquetSource)
