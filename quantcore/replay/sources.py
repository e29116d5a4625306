"""Recorded stores read back as closed bars: one small class per kind of store.

A :class:`BarSource` answers three questions (is the store there, which streams and
which range it holds, the bars of one stream in a range, in open-time order) and opens
nothing for writing: CSV files are opened read-only, SQLite in ``mode=ro``. A new kind
(Parquet, say) is one subclass naming the recorder whose store it reads, plus
:func:`register_source`; :class:`PostgresSource` is one such class.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from quantcore.config_errors import ConfigError
from quantcore.decimals import NOT_PLAIN, plain, to_floats
from quantcore.events import BarDecimals, BarEvent, from_epoch_ms, utc_text
from quantcore.feeds.base import StreamKey
from quantcore.intervals import interval_ms
from quantcore.replay.settings import ReplaySettings
from quantcore.sinks import schema
from quantcore.sinks.rows import ROW_COLUMNS

log = logging.getLogger(__name__)

_UTC = "+00:00"
_EPOCH = from_epoch_ms(0)


class ReplayError(ConfigError):
    """The store, a stream or the range cannot be replayed; ``str()`` is the one line shown."""


class BarSource(ABC):
    """A recorded store of closed bars, read-only."""

    kind: ClassVar[str]
    """``replay.source`` value."""
    recorder: ClassVar[str]
    """Class name of the recorder whose store this reads (found among a config's consumers)."""

    @classmethod
    def settings_of(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """The replay settings (``path``, ``table``, ``dsn``) of that recorder's params."""
        return {"path": params.get("path"), "table": params.get("table")}

    def __init__(self, settings: ReplaySettings) -> None:
        self.settings = settings

    @abstractmethod
    def location(self, key: StreamKey | None = None) -> str:
        """What a message names: the store, or where it keeps ``key``."""

    @abstractmethod
    def check(self) -> None:
        """ReplayError if the store itself is missing or unreadable."""

    @abstractmethod
    def extent(self, key: StreamKey) -> tuple[int, int] | None:
        """Open times (ms) of the stream's first and last stored bar; None: not stored."""

    @abstractmethod
    def bars(self, key: StreamKey, start_ms: int, end_ms: int) -> Iterator[BarEvent]:
        """The stream's bars opening in ``[start_ms, end_ms)``, ascending, ``replayed``."""

    def close(self) -> None:  # noqa: B027 (optional hook: most sources hold nothing open)
        """Release what the source holds open."""


_SOURCES: dict[str, type[BarSource]] = {}


def register_source(source: type[BarSource]) -> None:
    """Make ``replay.source: <source.kind>`` read with ``source``."""
    _SOURCES[source.kind] = source


def sources() -> list[type[BarSource]]:
    """The registered source classes, in registration order."""
    return list(_SOURCES.values())


def open_source(settings: ReplaySettings) -> BarSource:
    """The source the settings name, checked to exist (ReplayError otherwise)."""
    factory = _SOURCES.get(settings.source or "")
    if factory is None:
        raise ReplayError(
            f"replay.source: {settings.source!r} is not a store kind (one of {', '.join(_SOURCES)})"
        )
    source = factory(settings)
    source.check()
    return source


def _at(ms: int) -> datetime:
    """Epoch ms → aware UTC datetime, exactly (:func:`from_epoch_ms` without its keyword
    ``timedelta``, which costs more than the rest of a bar's decoding)."""
    return _EPOCH + timedelta(0, ms // 1000, ms % 1000 * 1000)


def as_bar(
    key: StreamKey,
    open_ms: int,
    close_ms: int,
    d: BarDecimals,
    trades: int,
    event_ms: int | None,
) -> BarEvent:
    """A stored bar as the feed would publish it, marked ``replayed`` (``received_ns`` 0,
    so two replays publish identical events)."""
    fo, fh, fl, fc, fv, fq, ftv, ftq = to_floats(
        d.open, d.high, d.low, d.close, d.volume, d.quote_volume,
        d.taker_buy_volume, d.taker_buy_quote_volume,
    )  # fmt: skip
    opened = _at(open_ms)
    closes = _at(close_ms)
    return BarEvent(
        key[0], key[1], opened, closes, fo, fh, fl, fc, fv, fq, trades, ftv, ftq, True,
        closes if event_ms is None else _at(event_ms), 0, d, True,
    )  # fmt: skip


class CsvSource(BarSource):
    """The CsvRecorder's files, one per stream (``path`` holds ``{symbol}``/``{interval}``).

    A CSV row holds the open time, OHLC, volume and quote volume only: a bar replayed
    from it has ``trades=0``, taker volumes ``"0"`` and the event time at the close
    (as a REST-filled bar), which no strategy input (the closes, the HistoryStore's
    columns) depends on.
    """

    kind = "csv"
    recorder = "CsvRecorder"

    def __init__(self, settings: ReplaySettings) -> None:
        super().__init__(settings)
        self.template = settings.path or "data/{symbol}_{interval}.csv"

    def path(self, key: StreamKey) -> Path:
        return Path(self.template.format(symbol=key[0], interval=key[1]))

    def location(self, key: StreamKey | None = None) -> str:
        return str(self.path(key)) if key is not None else f"CSV files {self.template}"

    def check(self) -> None:
        folder = Path(self.template).parent
        if "{" not in str(folder) and not folder.is_dir():
            raise ReplayError(f"{self.template}: no such store (folder {folder} is missing)")

    def extent(self, key: StreamKey) -> tuple[int, int] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        with path.open("rb") as file:
            file.readline()
            first = file.readline()
            if not first.endswith(b"\n"):
                return None
            size = os.fstat(file.fileno()).st_size
            file.seek(max(0, size - 4096))
            tail = file.read()
        complete = tail[: tail.rfind(b"\n")].splitlines()
        return _stamp_ms(first, path), _stamp_ms(complete[-1], path)

    def bars(self, key: StreamKey, start_ms: int, end_ms: int) -> Iterator[BarEvent]:
        path = self.path(key)
        span = timedelta(milliseconds=interval_ms(key[1]) - 1)
        previous = -1
        stamps = _Stamps()
        with path.open("r", encoding="ascii", newline="") as file:
            file.readline()
            for number, line in enumerate(file, start=2):
                if not line.endswith("\n"):
                    log.warning(
                        "%s:%d: torn last line (a crash mid-write) not replayed", path, number
                    )
                    return
                c, h, lo, o, v, q, stamp = _fields(line, path, number)
                try:
                    open_ms = stamps.ms(stamp)
                except ValueError:
                    raise ReplayError(
                        f"{path}:{number}: datetime {stamp!r} is not a UTC time"
                    ) from None
                if open_ms <= previous:
                    raise ReplayError(f"{path}:{number}: {stamp} does not follow the row before")
                previous = open_ms
                if open_ms < start_ms:
                    continue
                if open_ms >= end_ms:
                    return
                try:
                    fc, fh, fl, fo, fv, fq = _six_floats(line[: line.rfind(",")])
                except ValueError as exc:
                    raise ReplayError(f"{path}:{number}: {exc}") from None
                opened = _at(open_ms)
                yield BarEvent(
                    key[0], key[1], opened, opened + span, fo, fh, fl, fc, fv, fq, 0, 0.0, 0.0,
                    True, opened + span, 0, BarDecimals(o, h, lo, c, v, q, "0", "0"), True,
                )  # fmt: skip


_decode_six = msgspec.json.Decoder(tuple[float, float, float, float, float, float]).decode


def _six_floats(values: str) -> tuple[float, float, float, float, float, float]:
    """A CSV row's six value columns (``c,h,l,o,v,q``) → floats, in C; ValueError unless
    they are plain decimals (the rule of :func:`quantcore.decimals.to_floats`)."""
    if "e" in values or "E" in values or "-" in values or " " in values or "\t" in values:
        raise ValueError(NOT_PLAIN)
    try:
        return _decode_six(f"[{values}]")
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ValueError(NOT_PLAIN) from None


class _Stamps:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) → epoch ms, the day parsed once per day (hot path:
    three small ints per row instead of a datetime); ValueError for anything else."""

    __slots__ = ("day", "day_ms")

    def __init__(self) -> None:
        self.day = ""
        self.day_ms = 0

    def ms(self, stamp: str) -> int:
        day = stamp[:10]
        if day != self.day:
            self.day_ms = int(datetime.fromisoformat(day + "T00:00:00" + _UTC).timestamp()) * 1000
            self.day = day
        if len(stamp) != 19 or stamp[10] != " " or stamp[13] != ":" or stamp[16] != ":":
            raise ValueError(stamp)
        hours, minutes, seconds = int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])
        if hours > 23 or minutes > 59 or seconds > 59 or not stamp[11:].replace(":", "").isdigit():
            raise ValueError(stamp)
        return self.day_ms + hours * 3_600_000 + minutes * 60_000 + seconds * 1000


def _fields(line: str, path: Path, number: int) -> list[str]:
    fields = line.rstrip("\r\n").split(",")
    if len(fields) != 7:
        raise ReplayError(
            f"{path}:{number}: {len(fields)} fields, expected 7 (a quantcore CSV?)"
        ) from None
    return fields


def _stamp_ms(line: bytes, path: Path) -> int:
    stamp = line.decode("ascii", "replace").rstrip("\r\n").rsplit(",", 1)[-1]
    try:
        return int(datetime.fromisoformat(stamp + _UTC).timestamp()) * 1000
    except ValueError:
        raise ReplayError(
            f"{path}: datetime {stamp!r} is not a UTC time (a quantcore CSV?)"
        ) from None


class SqliteSource(BarSource):
    """The SqliteRecorder's table, opened read-only (the file is never written)."""

    kind = "sqlite"
    recorder = "SqliteRecorder"

    def __init__(self, settings: ReplaySettings) -> None:
        super().__init__(settings)
        self.file = Path(settings.path or "data/bars.sqlite")
        self.table = schema.table_name(settings.table)
        self._conn: sqlite3.Connection | None = None

    def location(self, key: StreamKey | None = None) -> str:
        return f"{self.file} table {self.settings.table}"

    def check(self) -> None:
        if not self.file.is_file():
            raise ReplayError(f"{self.file}: no such SQLite store")
        try:
            self._conn = sqlite3.connect(f"{self.file.resolve().as_uri()}?{self._mode()}", uri=True)
            self._conn.execute(f"SELECT 1 FROM {self.table} LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise ReplayError(f"{self.location()}: cannot be read: {exc}") from None

    def _mode(self) -> str:
        """Read-only. Without a ``-wal`` file beside it no writer has the database open
        (a WAL writer keeps one), so it is opened ``immutable``: SQLite then creates no
        ``-wal``/``-shm`` files either, and the store's folder is left exactly as it was."""
        wal = self.file.with_name(self.file.name + "-wal")
        return "mode=ro" if wal.exists() else "mode=ro&immutable=1"

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.check()
        assert self._conn is not None
        return self._conn

    def extent(self, key: StreamKey) -> tuple[int, int] | None:
        row = self.conn.execute(
            f"SELECT min(open_time), max(open_time) FROM {self.table} "
            'WHERE symbol = ? AND "interval" = ?',
            key,
        ).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def bars(self, key: StreamKey, start_ms: int, end_ms: int) -> Iterator[BarEvent]:
        names = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
        cursor = self.conn.execute(
            f'SELECT {names} FROM {self.table} WHERE symbol = ? AND "interval" = ? '
            "AND open_time >= ? AND open_time < ? ORDER BY open_time",
            (*key, start_ms, end_ms),
        )
        for row in cursor:
            decimals = BarDecimals(row[4], row[5], row[6], row[7], row[8], row[9], row[11], row[12])
            try:
                yield as_bar(key, int(row[2]), int(row[3]), decimals, int(row[10]), int(row[13]))
            except ValueError as exc:
                where = f"{self.location()}: {key[0]} {key[1]} {utc_text(int(row[2]))}"
                raise ReplayError(f"{where}: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresSource(BarSource):
    """The PostgresRecorder's table (``dsn``), read in a read-only transaction; NUMERIC
    values come back as Decimals with the scale they were stored with, i.e. the strings."""

    kind = "postgres"
    recorder = "PostgresRecorder"

    @classmethod
    def settings_of(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"dsn": params.get("dsn"), "table": params.get("table")}

    def __init__(self, settings: ReplaySettings) -> None:
        super().__init__(settings)
        self.table = schema.table_name(settings.table)
        self._conn: Any = None

    def location(self, key: StreamKey | None = None) -> str:
        return f"PostgreSQL table {self.settings.table}"

    def check(self) -> None:
        import psycopg

        if not self.settings.dsn:
            raise ReplayError("replay.dsn: missing; the PostgreSQL store is named by its DSN")
        try:
            self._conn = psycopg.connect(self.settings.dsn, connect_timeout=5)
            self._conn.read_only = True
            self._conn.execute(f"SELECT 1 FROM {self.table} LIMIT 1").fetchall()
        except psycopg.Error as exc:
            self.close()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ReplayError(f"{self.location()}: cannot be read: {first}") from None

    def extent(self, key: StreamKey) -> tuple[int, int] | None:
        row = self._conn.execute(
            f"SELECT min(open_time), max(open_time) FROM {self.table} "
            'WHERE symbol = %s AND "interval" = %s',
            key,
        ).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def bars(self, key: StreamKey, start_ms: int, end_ms: int) -> Iterator[BarEvent]:
        names = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
        with self._conn.cursor() as cursor:
            cursor.execute(
                f'SELECT {names} FROM {self.table} WHERE symbol = %s AND "interval" = %s '
                "AND open_time >= %s AND open_time < %s ORDER BY open_time",
                (*key, start_ms, end_ms),
            )
            for row in cursor:
                decimals = BarDecimals(*(plain(row[i]) for i in (4, 5, 6, 7, 8, 9, 11, 12)))
                yield as_bar(key, int(row[2]), int(row[3]), decimals, int(row[10]), int(row[13]))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


register_source(CsvSource)
register_source(SqliteSource)
register_source(PostgresSource)
