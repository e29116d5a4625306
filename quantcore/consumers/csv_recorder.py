"""CsvRecorder: one append-only CSV per stream, one line per closed bar.

The file is never rewritten: the header is written once, each closed bar is appended
and flushed as one line, and on start the recorder reads only the file's tail to learn
the last bar it holds, so a restart neither repeats nor skips bars (the feed resumes
after :meth:`resume_point`). Each file has one writer (a lock beside it), is checked
to be quantcore's own before anything is changed, and only a torn last line left by a
crash is cut off (and saved beside it); complete rows are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from quantcore.component import Component
from quantcore.consumers.history import COLUMNS
from quantcore.events import BarEvent, GapEvent, datetime_text, epoch_ms, parse_datetime_ms
from quantcore.filelock import FileBusyError, lock_for_writing
from quantcore.gapfile import append_gap

log = logging.getLogger(__name__)

HEADER = ",".join(COLUMNS) + "\n"
_TAIL_BYTES = 4096
_ROW_BYTES = frozenset(b"0123456789.,-+e: infaINF")
_MAX_BATCH = 1024
"""Held lines joined into one ``write`` at most (a backlog after a disk outage)."""


_DATES: dict[int, str] = {}
"""``YYYY-MM-DD `` of recent days (a burst of history formats 1,440 rows per day)."""
_CLOCK = [f"{m // 60:02d}:{m % 60:02d}:00" for m in range(1440)]
"""``HH:MM:00`` of every minute of a day."""


class CsvPathError(ValueError):
    """The path template or a path it produces is unusable; the message names it."""


def format_row(bar: BarEvent, open_ms: int | None = None) -> str:
    """One CSV line holding the exchange's decimal strings verbatim (exact, never an
    exponent: ``0.00001234`` stays ``0.00001234``); a bar built in code without them is
    written from its floats in plain notation (:meth:`BarEvent.decimal_strings`)."""
    if open_ms is None:
        open_ms = bar.open_time_ms
    day, into = divmod(open_ms, 86_400_000)
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) >= 4096:
            _DATES.clear()
        date = _DATES[day] = time.strftime("%Y-%m-%d ", time.gmtime(day * 86_400))
    minute, rest = divmod(into, 60_000)
    stamp = datetime_text(open_ms) if rest else date + _CLOCK[minute]
    d = bar.decimals or bar.decimal_strings()
    return f"{d.close},{d.high},{d.low},{d.open},{d.volume},{d.quote_volume},{stamp}\n"


class _CsvFile:
    """One locked, append-only CSV; bars that cannot be appended wait in order in memory.

    ``written`` counts rows that reached the file; ``lost`` counts accepted bars that
    never will (``max_pending`` exceeded, or still held at :meth:`close`). Each line is
    appended as its bar arrives; lines held through an outage go out together, in order.
    """

    def __init__(self, path: Path, fsync: bool, max_pending: int, retry_interval: float) -> None:
        self.path = path
        self.fsync = fsync
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self.pending: deque[bytes] = deque()
        self.offset = 0
        self.written = 0
        self.lost = 0
        self.overflowed = False
        self.failing_since: float | None = None
        self.deferred = False
        """Inside :meth:`CsvRecorder.batch`: lines are appended ``_MAX_BATCH`` at a time."""
        self._timer: asyncio.TimerHandle | None = None
        self.fd = -1
        path.parent.mkdir(parents=True, exist_ok=True)
        _open_ours(path, repair=False)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self.lock = lock_for_writing(path, self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        try:
            self.last_ms = _open_ours(path, repair=True)
            if os.fstat(self.fd).st_size == 0:
                _write_all(self.fd, HEADER.encode("ascii"))
                self._sync()
        except BaseException:
            if self.fd >= 0:
                os.close(self.fd)
            self.lock.release()
            raise

    def write(self, bar: BarEvent) -> None:
        """Queue the bar's line (unless already held or the file gave up) and try to append."""
        open_ms = bar.open_time_ms
        if self.last_ms is not None and open_ms <= self.last_ms:
            return
        if self.overflowed:
            self.lost += 1
            return
        if len(self.pending) >= self.max_pending:
            self.overflowed = True
            self.lost += 1
            log.error(
                "%s: %d bars held in memory and the file still refuses writes: dropping the bar "
                "of %s and every later one this run (the file stays gap-free; a restart "
                "backfills from its last row)",
                self.path,
                len(self.pending),
                datetime_text(open_ms),
            )
            return
        self.last_ms = open_ms
        self.pending.append(format_row(bar, open_ms).encode("ascii"))
        if not self.deferred or len(self.pending) >= _MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Append held lines in order; a failure starts (or continues) one outage episode."""
        pending = self.pending
        held = len(pending)
        while pending:
            data = pending[0] if len(pending) == 1 else b"".join(islice(pending, _MAX_BATCH))
            try:
                done = self.offset + os.write(self.fd, data[self.offset :] if self.offset else data)
            except OSError as exc:
                self._failed(exc)
                return
            while pending and done >= len(pending[0]):
                done -= len(pending.popleft())
                self.written += 1
            self.offset = done
        try:
            self._sync()
        except OSError as exc:
            self._failed(exc)
            return
        if self.failing_since is not None:
            log.warning(
                "%s: appending again after %.1fs; %d held bars written",
                self.path,
                time.monotonic() - self.failing_since,
                held,
            )
            self.failing_since = None

    def _failed(self, exc: OSError) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.error(
                "%s: cannot append (%s); holding bars in memory (at most %d) and retrying",
                self.path,
                exc.strerror or exc,
                self.max_pending,
            )
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._timer = loop.call_later(self.retry_interval, self._retry)

    def _retry(self) -> None:
        self._timer = None
        if self.fd >= 0 and self.pending:
            self.flush()

    def _sync(self) -> None:
        if self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        """Last attempt to append what is held; whatever remains is counted as lost.

        A line half-written when the disk filled is cut (we hold the lock, so those
        bytes are ours), leaving the file ending in a complete row.
        """
        if self.pending:
            self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.offset:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, os.fstat(self.fd).st_size - self.offset)
            self.offset = 0
        if self.pending:
            self.lost += len(self.pending)
            log.error(
                "%s: stopped with %d bars never written (%d rows written this run)",
                self.path,
                len(self.pending),
                self.written,
            )
            self.pending.clear()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        self.lock.release()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _is_row(line: bytes) -> bool:
    """Whether ``line`` (no newline) is a complete quantcore row: six floats and a datetime."""
    fields = line.split(b",")
    if len(fields) != len(COLUMNS):
        return False
    try:
        for field in fields[:-1]:
            float(field)
        parse_datetime_ms(fields[-1].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _short(data: bytes) -> str:
    return repr(data[:60].decode("ascii", "backslashreplace")) + ("..." if len(data) > 60 else "")


def _open_ours(path: Path, repair: bool) -> int | None:
    """Verify ``path`` is a quantcore CSV before touching it; with ``repair`` cut a torn line.

    Returns the last row's open time. Anything not verifiably ours (another header,
    rows that do not parse, binary data) raises :class:`CsvPathError` and is left as is
    (checked once read-only before the lock is taken, so a foreign file gets no sidecar).
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    header = HEADER.encode("ascii")
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        head = handle.read(len(header))
        line_1 = (head + handle.read(200)).split(b"\n", 1)[0]
        tail_start = max(len(header), size - _TAIL_BYTES)
        handle.seek(tail_start)
        tail = handle.read()
    if head != header:
        if size < len(header) and header.startswith(head):
            if repair:
                _save_torn(path, 0, head)
            return None
        raise CsvPathError(f"{path}: not a quantcore CSV (line 1 is {_short(line_1)}); left as is")
    if tail_start > len(header):
        tail = tail[tail.find(b"\n") + 1 :] if b"\n" in tail else b""
        if b"\n" not in tail:
            raise CsvPathError(f"{path}: not a quantcore CSV (no complete row in its last 4 KiB)")
    cut = tail.rfind(b"\n")
    torn = tail[cut + 1 :]
    if torn and (torn.count(b",") >= len(COLUMNS) or not set(torn) <= _ROW_BYTES):
        raise CsvPathError(f"{path}: last line {_short(torn)} is not a quantcore row; left as is")
    lines = tail[: cut + 1].splitlines()
    for line in lines:
        if not _is_row(line):
            raise CsvPathError(f"{path}: not a quantcore CSV (row {_short(line)}); left as is")
    if torn and repair:
        _save_torn(path, size - len(torn), torn)
    return parse_datetime_ms(lines[-1].rsplit(b",", 1)[1].decode("ascii")) if lines else None


def _save_torn(path: Path, keep: int, torn: bytes) -> None:
    """Copy the cut bytes beside the file (never lost), then truncate to the last full row."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    saved = path.with_name(f"{path.name}.torn-{stamp}")
    n = 1
    while saved.exists():
        n += 1
        saved = path.with_name(f"{path.name}.torn-{stamp}-{n}")
    with saved.open("xb") as handle:
        handle.write(torn)
        handle.flush()
        os.fsync(handle.fileno())
    os.truncate(path, keep)
    log.warning(
        "%s: cut a partial last line (%d bytes) left by an interrupted write; saved it as %s",
        path,
        len(torn),
        saved.name,
    )


class CsvRecorder(Component):
    """Appends each closed bar to ``path`` formatted with ``{symbol}`` and ``{interval}``.

    ``fsync=True`` makes every line durable before the next bar (costs a disk flush
    per bar); the default flushes to the OS, which survives a process crash. While the
    disk refuses writes, up to ``max_pending`` bars per file wait in memory and are
    retried every ``retry_interval`` seconds and with each new bar.
    """

    venue_params = {"path": "template"}

    def __init__(
        self,
        *,
        path: str = "data/{symbol}_{interval}.csv",
        fsync: bool = False,
        max_pending: int = 100_000,
        retry_interval: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        try:
            path.format(symbol="BTCUSDT", interval="1m")
        except (KeyError, IndexError, ValueError) as exc:
            raise CsvPathError(
                f"path template {path!r} may only use {{symbol}} and {{interval}} ({exc})"
            ) from None
        if max_pending < 1 or not retry_interval > 0:
            raise ValueError(
                "max_pending must be >= 1 and retry_interval > 0 seconds, "
                f"got max_pending={max_pending!r} retry_interval={retry_interval!r}"
            )
        self.template = path
        self.fsync = fsync
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self._files: dict[tuple[str, str], _CsvFile] = {}
        self._closed_written = 0
        self._closed_lost = 0
        self._stopped = False

    @property
    def rows_written(self) -> int:
        """Rows that actually reached the files (held bars count once written)."""
        return self._closed_written + sum(csv.written for csv in self._files.values())

    def rows_by_stream(self) -> dict[tuple[str, str], int]:
        """Rows appended this run per open (symbol, interval) file (for the metrics)."""
        return {key: csv.written for key, csv in self._files.items()}

    @property
    def pending(self) -> int:
        """Bars held in memory because the disk refused them."""
        return sum(len(csv.pending) for csv in self._files.values())

    def unrecorded(self) -> int:
        return self._closed_lost + sum(csv.lost for csv in self._files.values())

    def path_for(self, symbol: str, interval: str) -> Path:
        """The file for one stream; refuses names that would escape the template's folder."""
        for value in (symbol, interval):
            if not value or not value.replace("_", "").isalnum() or value.startswith("_"):
                raise CsvPathError(
                    f"refusing {value!r} in a file name: letters and digits only "
                    "(and _ inside a futures symbol such as BTCUSD_PERP)"
                )
        return Path(self.template.format(symbol=symbol, interval=interval))

    def open(self, symbol: str, interval: str) -> _CsvFile:
        key = (symbol, interval)
        csv = self._files.get(key)
        if csv is None:
            path = self.path_for(symbol, interval)
            try:
                csv = _CsvFile(path, self.fsync, self.max_pending, self.retry_interval)
            except FileBusyError as exc:
                raise CsvPathError(str(exc)) from None
            except OSError as exc:
                raise CsvPathError(f"{path}: cannot open for appending: {exc.strerror}") from None
            self._files[key] = csv
        return csv

    async def start(self) -> None:
        self._stopped = False
        for symbol, interval in self.context.streams:
            self.open(symbol, interval)

    def resume_point(self, symbol: str, interval: str) -> int | None:
        return self.open(symbol, interval).last_ms

    def on_bar(self, bar: BarEvent) -> None:
        csv = self._files.get((bar.symbol, bar.interval))
        if csv is None:
            if self._stopped:  # never reopen a file (and re-take its lock) after stop
                self._closed_lost += 1
                log.error("a bar of %s %s arrived after the CSV recorder stopped: not recorded",
                          bar.symbol, bar.interval)  # fmt: skip
                return
            csv = self.open(bar.symbol, bar.interval)
        csv.write(bar)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Append a burst of bars ``_MAX_BATCH`` lines per write; all written on exit."""
        files = list(self._files.values())
        for csv in files:
            csv.deferred = True
        try:
            yield
        finally:
            for csv in files:
                csv.deferred = False
                if csv.pending and csv.fd >= 0:
                    csv.flush()

    def on_gap(self, gap: GapEvent) -> None:
        """Write the range down in the file's ``.gaps`` sidecar, so ``quantcore check``
        labels that hole with its reason (a failed note is logged, never fatal)."""
        if gap.key not in self._files and gap.key not in set(self.context.streams):
            return
        path = self.open(*gap.key).path
        first, last = gap.first_open, gap.last_open
        try:
            written = append_gap(path, epoch_ms(first), epoch_ms(last), gap.reason.value)
        except OSError as exc:
            log.error("%s: cannot write down the gap %s .. %s (%s): %s",
                      path, first, last, gap.reason.value, exc.strerror or exc)  # fmt: skip
            return
        log.info("%s: %s .. %s %s (noted in %s)", path, first, last, gap.reason.value, written.name)

    async def stop(self) -> None:
        for csv in self._files.values():
            csv.close()
            self._closed_written += csv.written
            self._closed_lost += csv.lost
        self._files.clear()
        self._stopped = True
