"""HistoryStore: every closed bar per stream, served as a backtrader-style DataFrame.

Appending a row to a DataFrame is O(n) (pandas copies), so bars go into a flat
``array('d')`` (8 bytes a value, as compact as the DataFrame), are flushed in chunks
into growable numpy columns, and the DataFrame is built on views of those columns only
when asked for, then cached until the next bar. Each bar is copied once; a read after
every append costs one small DataFrame construction.
"""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

from quantcore.component import Component
from quantcore.events import BarEvent

COLUMNS = ("close", "high", "low", "open", "volume", "baseVolume", "datetime")
"""Exactly the backtrader-style columns, in order. ``volume`` is the base-asset volume
(Binance ``k.v``), ``baseVolume`` the quote volume (``k.q``), ``datetime`` the bar's
open time in UTC (tz-naive ``datetime64[ms]``, printed ``YYYY-MM-DD HH:MM:SS``)."""

_VALUE_COLUMNS = COLUMNS[:6]
_ROW = 7
"""Values per pending row: the six value columns, then the open time (ms, exact as a
float below 2**53)."""
_FLUSH_ROWS = 4096
_MIN_CAPACITY = 64


class _StreamHistory:
    """Columns for one (symbol, interval): numpy storage plus a small pending tail."""

    __slots__ = ("_frame", "capacity", "max_rows", "pending", "size", "times", "values")

    def __init__(self, max_rows: int | None) -> None:
        self.max_rows = max_rows
        self.capacity = 0
        self.values = np.empty((6, 0))
        self.times = np.empty(0, dtype=np.int64)
        self.size = 0
        self.pending = array("d")
        self._frame: pd.DataFrame | None = None

    def append(self, bar: BarEvent) -> None:
        self.pending.extend(
            (
                bar.close,
                bar.high,
                bar.low,
                bar.open,
                bar.volume,
                bar.quote_volume,
                bar.open_time_ms,
            )
        )
        self._frame = None
        if len(self.pending) >= _FLUSH_ROWS * _ROW:
            self.flush()

    def __len__(self) -> int:
        return min(self.size + len(self.pending) // _ROW, self.max_rows or 1 << 62)

    def flush(self) -> None:
        """Move pending rows into the numpy columns (growing or trimming as needed)."""
        if not self.pending:
            return
        rows = np.frombuffer(self.pending, dtype=np.float64).reshape(-1, _ROW)
        count = len(rows)
        self._reserve(count)
        end = self.size + count
        self.values[:, self.size : end] = rows[:, :6].T
        self.times[self.size : end] = rows[:, 6]
        self.size = end
        del rows
        self.pending = array("d")

    def _reserve(self, count: int) -> None:
        needed = self.size + count
        if needed <= self.capacity:
            return
        keep = self.size
        if self.max_rows is not None:
            keep = min(keep, max(0, self.max_rows - count))
        capacity = max(_MIN_CAPACITY, int((keep + count) * 1.5))
        if self.max_rows is not None:
            capacity = min(capacity, max(2 * self.max_rows, keep + count))
        # Fresh arrays rather than in-place moves: frames handed out earlier are views
        # of the old arrays and must not change under their holders.
        values = np.empty((6, capacity))
        times = np.empty(capacity, dtype=np.int64)
        values[:, :keep] = self.values[:, self.size - keep : self.size]
        times[:keep] = self.times[self.size - keep : self.size]
        self.values, self.times, self.capacity, self.size = values, times, capacity, keep

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self.flush()
            start = 0 if self.max_rows is None else max(0, self.size - self.max_rows)
            columns: dict[str, np.ndarray] = {
                name: self.values[i, start : self.size] for i, name in enumerate(_VALUE_COLUMNS)
            }
            columns["datetime"] = self.times[start : self.size].view("datetime64[ms]")
            self._frame = pd.DataFrame(columns, copy=False)
        return self._frame


class HistoryStore(Component):
    """Closed-bar history per (symbol, interval), plus the bar currently forming.

    ``max_rows`` bounds each stream's history (oldest rows dropped); None keeps all.
    Frames returned by :meth:`frame` are read-only snapshots: later bars never
    change a frame you already hold. The forming bar comes from the feed on request
    (``context.forming``); ``partials: true`` subscribes to ``bar.partial`` instead, for
    a feed that keeps none (the redis feed): every update then costs a BarEvent.
    """

    def __init__(
        self, *, max_rows: int | None = None, partials: bool = False, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer or null, got {max_rows!r}")
        self.max_rows = max_rows
        self.partials = partials
        self._streams: dict[tuple[str, str], _StreamHistory] = {}
        self._current: dict[tuple[str, str], BarEvent] = {}

    def on_bar(self, bar: BarEvent) -> None:
        key = (bar.symbol, bar.interval)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _StreamHistory(self.max_rows)
        stream.append(bar)
        current = self._current.get(key)
        if current is not None and current.open_time <= bar.open_time:
            del self._current[key]

    def wants(self, handler: str) -> bool:
        return handler != "on_bar_partial" or self.partials

    def on_bar_partial(self, bar: BarEvent) -> None:
        self._current[(bar.symbol, bar.interval)] = bar

    def frame(self, symbol: str, interval: str) -> pd.DataFrame:
        """Closed bars as a DataFrame with :data:`COLUMNS`; empty if none yet."""
        stream = self._streams.get((symbol, interval))
        if stream is None:
            return pd.DataFrame({name: pd.Series(dtype="float64") for name in COLUMNS}).astype(
                {"datetime": "datetime64[ms]"}
            )
        return stream.frame()

    def current(self, symbol: str, interval: str) -> BarEvent | None:
        """The latest in-progress update of the bar still forming, if one arrived (one
        handed to :meth:`on_bar_partial`, else the feed's, converted now)."""
        bar = self._current.get((symbol, interval))
        context = self._context
        if bar is None and context is not None and context.forming is not None:
            return context.forming(symbol, interval)
        return bar

    def count(self, symbol: str, interval: str) -> int:
        stream = self._streams.get((symbol, interval))
        return 0 if stream is None else len(stream)

    @property
    def streams(self) -> list[tuple[str, str]]:
        return list(self._streams)
