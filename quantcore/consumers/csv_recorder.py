"""CsvRecorder: one append-only CSV per stream, one line per closed bar.

The file is never rewritten: the header is written once, each closed bar is appended
and flushed as one line, and on start the recorder reads only the file's tail to learn
the last bar it holds, so a restart neither repeats nor skips bars (the feed resumes
after :meth:`resume_point`). A partial last line left by a crash is cut off on start;
complete rows are never touched.
"""

from __future__ import annotations

import calendar
import logging
import os
import time
from pathlib import Path
from typing import IO

from quantcore.component import Component
from quantcore.consumers.history import COLUMNS
from quantcore.events import BarEvent

log = logging.getLogger(__name__)

HEADER = ",".join(COLUMNS) + "\n"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TAIL_BYTES = 4096


class CsvPathError(ValueError):
    """The path template or a path it produces is unusable; the message names it."""


def format_row(bar: BarEvent, open_ms: int | None = None) -> str:
    """One CSV line holding the exchange's decimal strings verbatim (exact, never an
    exponent: ``0.00001234`` stays ``0.00001234``); a bar built in code without them is
    written from its floats in plain notation (:meth:`BarEvent.decimal_strings`)."""
    if open_ms is None:
        open_ms = bar.open_time_ms
    stamp = time.strftime(DATETIME_FORMAT, time.gmtime(open_ms // 1000))
    d = bar.decimals or bar.decimal_strings()
    return f"{d.close},{d.high},{d.low},{d.open},{d.volume},{d.quote_volume},{stamp}\n"


def parse_datetime_ms(text: str) -> int:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) → epoch ms."""
    return calendar.timegm(time.strptime(text, DATETIME_FORMAT)) * 1000


class _CsvFile:
    """One open, append-only CSV and the open time of its last complete row."""

    __slots__ = ("fsync", "handle", "last_ms", "path")

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self.last_ms = _repair_and_find_last(path)
        self.handle: IO[str] = path.open("a", encoding="ascii", newline="")
        if self.handle.tell() == 0:
            self.handle.write(HEADER)
            self._sync()

    def write(self, bar: BarEvent) -> bool:
        open_ms = bar.open_time_ms
        if self.last_ms is not None and open_ms <= self.last_ms:
            return False
        self.handle.write(format_row(bar, open_ms))
        self._sync()
        self.last_ms = open_ms
        return True

    def _sync(self) -> None:
        self.handle.flush()
        if self.fsync:
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _repair_and_find_last(path: Path) -> int | None:
    """Cut a torn last line (crash mid-write) and return the last row's open time."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        tail_start = max(0, size - _TAIL_BYTES)
        handle.seek(tail_start)
        tail = handle.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            keep = tail_start + cut + 1 if cut >= 0 else 0
            log.warning(
                "%s: removing a partial last line (%d bytes) left by an interrupted write",
                path,
                size - keep,
            )
            handle.truncate(keep)
            tail = tail[: cut + 1] if cut >= 0 else b""
    lines = tail.decode("ascii", errors="replace").splitlines()
    if not lines or lines[-1] + "\n" == HEADER:
        return None
    if len(lines) == 1 and tail_start == 0 and lines[0] + "\n" != HEADER:
        raise CsvPathError(f"{path}: not a quantcore CSV (header is {lines[0]!r})")
    last = lines[-1].rsplit(",", 1)[-1]
    try:
        return parse_datetime_ms(last)
    except ValueError:
        raise CsvPathError(f"{path}: last row has a bad datetime {last!r}") from None


class CsvRecorder(Component):
    """Appends each closed bar to ``path`` formatted with ``{symbol}`` and ``{interval}``.

    ``fsync=True`` makes every line durable before the next bar (costs a disk flush
    per bar); the default flushes to the OS, which survives a process crash.
    """

    def __init__(
        self,
        *,
        path: str = "data/{symbol}_{interval}.csv",
        fsync: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        try:
            path.format(symbol="BTCUSDT", interval="1m")
        except (KeyError, IndexError, ValueError) as exc:
            raise CsvPathError(
                f"path template {path!r} may only use {{symbol}} and {{interval}} ({exc})"
            ) from None
        self.template = path
        self.fsync = fsync
        self._files: dict[tuple[str, str], _CsvFile] = {}
        self.rows_written = 0

    def path_for(self, symbol: str, interval: str) -> Path:
        """The file for one stream; refuses names that would escape the template's folder."""
        for value in (symbol, interval):
            if not value or not value.isalnum():
                raise CsvPathError(f"refusing {value!r} in a file name: letters and digits only")
        return Path(self.template.format(symbol=symbol, interval=interval))

    def open(self, symbol: str, interval: str) -> _CsvFile:
        key = (symbol, interval)
        csv = self._files.get(key)
        if csv is None:
            path = self.path_for(symbol, interval)
            try:
                csv = self._files[key] = _CsvFile(path, self.fsync)
            except OSError as exc:
                raise CsvPathError(f"{path}: cannot open for appending: {exc.strerror}") from None
        return csv

    async def start(self) -> None:
        for symbol, interval in self.context.streams:
            self.open(symbol, interval)

    def resume_point(self, symbol: str, interval: str) -> int | None:
        return self.open(symbol, interval).last_ms

    def on_bar(self, bar: BarEvent) -> None:
        if self.open(bar.symbol, bar.interval).write(bar):
            self.rows_written += 1

    async def stop(self) -> None:
        for csv in self._files.values():
            csv.close()
        self._files.clear()
