"""ParquetRecorder: closed bars in a Hive-partitioned Parquet store that research tools read.

Each bar is appended as one line to its month's hidden journal (as cheap as a CSV line,
and a process crash loses nothing the OS accepted). A month's journal is compacted into
that month's file when the month closes, when the recorder stops, and at the next start
after a crash; when a year closes, its months are merged into one file. Both run in a
background thread and write under a hidden temporary name, fsync and rename, so readers
only ever see whole files. Layout: :mod:`quantcore.sinks.parquet_layout`; schema:
:mod:`quantcore.sinks.parquet_format`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quantcore.component import Component
from quantcore.events import BarEvent, GapEvent, epoch_ms, utc_text
from quantcore.filelock import FileBusyError, WriterLock, lock_for_writing
from quantcore.gapfile import STORE_NAME, append_to
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout
from quantcore.sinks.parquet_format import StoreError

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class _Stream:
    """One (symbol, interval): its folder, the open journal of the current month, its last bar.

    Slotted, and :meth:`write` kept to one comparison, one line and one ``write`` a bar:
    at live rates each bar runs with cold caches, so every instruction on this path counts
    (the line is :func:`~quantcore.sinks.parquet_format.journal_line`'s, inlined).
    """

    __slots__ = ("_below", "end_ms", "failed", "fd", "folder", "fsync", "last_ms", "lost",
                 "month", "retired", "size", "start_ms", "written")  # fmt: skip

    def __init__(self, folder: Path, fsync: bool) -> None:
        self.folder = folder
        self.fsync = fsync
        self.fd = -1
        self.month: layout.Part | None = None
        self.start_ms = self.end_ms = 0
        self.written = 0
        self.lost = 0
        self.size = 0
        self.failed = self.retired = False
        layout.recover(folder)
        for part in layout.parts(folder):
            layout.compact_month(part)
        self.last_ms = layout.newest_open_ms(folder)
        if self.last_ms is not None:
            layout.settle(folder, self.last_ms)  # a year a crash left unmerged
        self._below = 0
        self._floor()

    def _floor(self) -> None:
        """Open times below ``_below`` leave the fast path: the month's start or the bar
        after the last one, whichever is later (a failed stream takes none)."""
        after = -(1 << 62) if self.last_ms is None else self.last_ms + 1
        self._below = (1 << 62) if self.failed or self.retired else max(self.start_ms, after)

    def write(self, bar: BarEvent) -> layout.Part | None:
        """Append the bar's journal line; returns the month it opened, if it opened one
        (what came before it is then closed: :func:`~.parquet_layout.settle` it).

        After a failed append the stream appends nothing more this run (each later bar is
        counted lost, so the run ends non-zero): the journal stays gap-free and a restart
        backfills from its last row. A partly written line is cut off first.
        """
        open_ms = (bar.open_time - _EPOCH) // _MS
        if not self._below <= open_ms < self.end_ms:
            return self._write_other(bar, open_ms)
        d = bar.decimals or bar.decimal_strings()
        line = (
            f"{open_ms},{open_ms + (bar.close_time - bar.open_time) // _MS},"
            f"{(bar.event_time - _EPOCH) // _MS},{bar.trades},{d.open},{d.high},{d.low},{d.close},"
            f"{d.volume},{d.quote_volume},{d.taker_buy_volume},{d.taker_buy_quote_volume}\n"
        ).encode("ascii")
        try:
            done = os.write(self.fd, line)
            if done != len(line):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
            if self.fsync:
                os.fsync(self.fd)
        except OSError as exc:
            self._failed(open_ms, exc)
            return None
        self.size += done
        self.last_ms = open_ms
        self._below = open_ms + 1
        self.written += 1
        return None

    def _write_other(self, bar: BarEvent, open_ms: int) -> layout.Part | None:
        """A bar off the fast path: already held, after a failure, or in another month."""
        if self.last_ms is not None and open_ms <= self.last_ms:
            return None
        if self.failed or self.retired:
            self.lost += 1
            if self.retired:
                log.error("%s: the bar of %s arrived while the recorder stopped: not recorded "
                          "(a restart fetches it)", self.folder, utc_text(open_ms))  # fmt: skip
            return None
        try:
            self._open_month(open_ms)
        except OSError as exc:
            self._failed(open_ms, exc)
            return None
        self._floor()
        self.write(bar)
        return self.month

    def _failed(self, open_ms: int, exc: OSError) -> None:
        self.failed = True
        self.lost += 1
        self._floor()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
        log.error(
            "%s: cannot append the bar of %s to the journal (%s); recording of this stream "
            "stops here (gap-free), a restart backfills from its last bar",
            self.folder,
            utc_text(open_ms),
            exc.strerror or exc,
        )

    def _open_month(self, open_ms: int) -> None:
        self.close()
        self.month = month = layout.month_of(self.folder, open_ms)
        self.start_ms, self.end_ms = month.bounds()
        month.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            month.journal,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )
        try:
            self.size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self.fd = fd

    def retire(self) -> None:
        """The recorder stops: the journal is closed and every later bar counted lost, so a
        compaction never races an append (and no closed descriptor is written to)."""
        self.retired = True
        self._floor()
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class ParquetRecorder(Component):
    """Records closed bars under ``root`` in ``venue=/symbol=/interval=/year=`` folders.

    ``venue`` names the partition (the config's venue name); ``fsync=True`` makes each
    journal line durable against power loss (a disk flush per bar); the default survives
    a process crash. One process writes a venue of a store at a time (``_venue=V.lock``).
    """

    venue_params = {"venue": "partition"}

    def __init__(
        self,
        *,
        root: str = "data/parquet",
        venue: str = "binance-spot",
        fsync: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.root = Path(root)
        self.venue = venue
        layout.stream_dir(self.root, venue, "BTCUSDT", "1m")
        self.fsync = fsync
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._lock: WriterLock | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._compactions: list[Future[None]] = []
        self._closed_lost = self._closed_written = 0
        self._stopped = False
        self.stop_grace = 30.0

    def _open_store(self) -> None:
        """Verify ``root`` is empty or a store of ours, mark it, then lock this venue in it.

        One writer per venue of a store (``_venue=V.lock``): venues write disjoint folders,
        so one process per venue may share a root; the marker is written atomically first.
        """
        if self._lock is not None:
            return
        marker = self.root / fmt.MARKER
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: not a folder; left as is")
        if marker.exists():
            layout.check_store(self.root)
        elif self.root.is_dir() and any(not p.name.startswith(".") for p in self.root.iterdir()):
            raise StoreError(
                f"{self.root}: not a quantcore Parquet store (no {fmt.MARKER}); left as is"
            )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            layout.write_marker(self.root)
        try:
            self._lock = lock_for_writing(self.root / f"_venue={self.venue}")
        except FileBusyError as exc:
            raise StoreError(str(exc)) from None

    def _stream(self, symbol: str, interval: str) -> _Stream:
        key = (symbol, interval)
        stream = self._streams.get(key)
        if stream is None:
            self._open_store()
            folder = layout.stream_dir(self.root, self.venue, symbol, interval)
            stream = self._streams[key] = _Stream(folder, self.fsync)
        return stream

    async def start(self) -> None:
        self._stopped = False
        self._open_store()
        for symbol, interval in self.context.streams:
            self._stream(symbol, interval)

    def resume_point(self, symbol: str, interval: str) -> int | None:
        return self._stream(symbol, interval).last_ms

    def on_bar(self, bar: BarEvent) -> None:
        stream = self._streams.get((bar.symbol, bar.interval))
        if stream is None:
            if self._stopped:  # never reopen the store (and re-take its lock) after stop
                self._closed_lost += 1
                log.error("%s: a bar of %s %s arrived after the recorder stopped: not recorded",
                          self.root, bar.symbol, bar.interval)  # fmt: skip
                return
            stream = self._stream(bar.symbol, bar.interval)
        if stream.write(bar) is not None:
            self._settle_later(stream.folder, stream.last_ms)

    def on_gap(self, gap: GapEvent) -> None:
        """Write the range down in the stream folder's ``_gaps.csv`` (the CSV sidecar's
        format), so ``quantcore check`` labels that hole (a failed note is logged, never fatal)."""
        if gap.key not in self._streams and gap.key not in set(self.context.streams):
            return
        folder = self._stream(*gap.key).folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            append_to(folder / STORE_NAME, epoch_ms(gap.first_open), epoch_ms(gap.last_open),
                      gap.reason.value, self.fsync)  # fmt: skip
        except OSError as exc:
            log.error("%s: cannot write down the gap %s .. %s (%s): %s", folder, gap.first_open,
                      gap.last_open, gap.reason.value, exc.strerror or exc)  # fmt: skip

    def _settle_later(self, folder: Path, newest_ms: int | None) -> None:
        """Compact the months before the one of ``newest_ms`` and merge the finished years
        in the background thread (the loop never waits on it; jobs run one at a time)."""
        if newest_ms is None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="parquet-compact")
        self._compactions = [f for f in self._compactions if not f.done()]
        self._compactions.append(self._executor.submit(self._settle_logged, folder, newest_ms))

    @staticmethod
    def _settle_logged(folder: Path, newest_ms: int, final: bool = False) -> None:
        try:
            layout.settle(folder, newest_ms, final=final)
        except (OSError, ValueError) as exc:
            log.error("%s: compaction failed (%s); its files are kept for the next start",
                      folder, exc)  # fmt: skip

    def compact_all(self) -> None:
        """Close every journal, compact the current months and merge a year their last
        bars finished (on stop; synchronous)."""
        for stream in self._streams.values():
            stream.close()
            if stream.month is not None and stream.last_ms is not None:
                self._settle_logged(stream.folder, stream.last_ms, final=True)

    def unrecorded(self) -> int:
        return self._closed_lost + sum(s.lost for s in self._streams.values())

    @property
    def rows_written(self) -> int:
        """Bars appended to the journals (durable against a process crash), this run."""
        return self._closed_written + sum(s.written for s in self._streams.values())

    async def stop(self) -> None:
        """Retire the streams (a bar arriving from now on is counted lost, not written),
        wait for background compactions, compact each current month, release the lock."""
        for stream in self._streams.values():
            stream.retire()
        try:
            for future in self._compactions:
                await asyncio.wrap_future(future)
            await asyncio.to_thread(self.compact_all)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._compactions.clear()
            self._closed_lost += sum(s.lost for s in self._streams.values())
            self._closed_written += sum(s.written for s in self._streams.values())
            self._streams.clear()
            self._stopped = True
            if self._lock is not None:
                self._lock.release()
                self._lock = None
