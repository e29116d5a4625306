"""BufferedSink: a Component that hands closed bars to storage from its own writer task.

``on_bar`` only queues (it never blocks or raises into the bus), a
:class:`~quantcore.sinks.retry.RetryBuffer` writes batches and retries outages (spilling
to a local journal beyond ``max_buffer``), and every outage or recovery is published on
FEED_STATUS under the sink's name. Each sink is whole on its own: it skips bars at or
before its own last stored row, and whenever its server answers (at start, after an
outage) it checks that row against the next bar it holds and fills the range between
from the feed's history (:mod:`quantcore.sinks.refill`).
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar

import msgspec

from quantcore.backoff import Backoff
from quantcore.component import Component
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.events import FEED_STATUS, BarEvent, FeedState, FeedStatus, utc_text
from quantcore.intervals import interval_ms
from quantcore.sinks.journal import Journal
from quantcore.sinks.refill import HistoryPending
from quantcore.sinks.retry import RetryBuffer

log = logging.getLogger(__name__)

StreamKey = tuple[str, str]

_DECODER = msgspec.json.Decoder(BarEvent)


class SinkSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every buffered sink takes, flat beside its own parameters (YAML ``params``).

    ``max_buffer`` bounds the bars held in memory while storage is down; later ones go
    to a journal file in ``journal_dir`` (default: the CSV recorder's folder, else
    ``data``), read back in order when it returns. ``stop_timeout`` bounds how long
    :meth:`BufferedSink.stop` keeps retrying; ``retry_max`` caps the backoff between
    retries; a bar unwritten for ``behind_after`` seconds makes /health call it behind.
    """

    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 500
    max_delay: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    max_buffer: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    retry_max: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    stop_timeout: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    journal_dir: str = ""
    behind_after: Annotated[float, msgspec.Meta(gt=0)] = 60.0


class BufferedSink(Component, ABC):
    """Subclasses implement :meth:`open`, :meth:`read_last`, :meth:`write_batch`
    (idempotent) and :meth:`close`, and take ``**settings`` (:class:`SinkSettings`, over
    their own :attr:`defaults`)."""

    defaults: ClassVar[Mapping[str, float]] = {}
    """This sink's own defaults for :class:`SinkSettings` fields."""

    def __init__(self, name: str | None, settings: Mapping[str, float | str]) -> None:
        super().__init__(name=name)
        self.settings = msgspec.convert({**self.defaults, **settings}, SinkSettings)
        self.buffer: RetryBuffer[BarEvent] = RetryBuffer(
            self.name,
            self._write,
            self.report,
            batch_size=self.settings.batch_size,
            max_delay=self.settings.max_delay,
            capacity=self.settings.max_buffer,
            backoff=Backoff(initial=0.2, maximum=self.settings.retry_max),
            on_overflow=self._overflowed,
            on_failure=self._unverify,
        )
        self.stop_timeout = self.stop_grace = self.settings.stop_timeout
        self._stored: dict[StreamKey, int] = {}
        """Per stream, the open time (ms) of its own newest stored row, as far as known."""
        self._verified: set[StreamKey] = set()
        """Streams whose stored row was checked against the backlog since the last outage."""
        self.skipped = 0
        """Bars not written because the sink already held them (at or before its last row)."""
        self.refilled = 0
        """Bars of its own missing range fetched from the feed's history and written."""
        self.refilling: str | None = None
        """The range being filled now (for /health), None when none."""
        self.unfillable: dict[StreamKey, int] = {}
        """Per stream, bars missing before the backlog that no history could provide."""

    def report(self, state: FeedState, detail: str = "", level: int = logging.INFO) -> None:
        """Log a status line and publish it on FEED_STATUS as ``FeedStatus(self.name, ...)``."""
        log.log(level, "%s: %s%s", self.name, state.value, f": {detail}" if detail else "")
        if self._context is not None:
            self._context.bus.publish(FEED_STATUS, FeedStatus(self.name, state, detail))

    def on_bar(self, bar: BarEvent) -> None:
        if bar.open_time_ms <= self._stored.get(bar.key, -1):
            self.skipped += 1
            return
        self.buffer.put(bar)

    async def start(self) -> None:
        self.buffer.journal = journal = Journal(self.journal_path(), _encode, _DECODER.decode)
        journal.discard_leftover()
        await self.open()
        for key in self.context.streams:
            point = self.stored_resume_point(*key)
            if point is not None:
                self._stored[key] = point
        self.buffer.start()

    async def stop(self) -> None:
        try:
            await self.buffer.close(self.stop_timeout)
        finally:
            await self.close()

    def unrecorded(self) -> int:
        """Bars refused (memory and journal full), missing bars no history could fill, and,
        after :meth:`stop`, those unwritten: each means exit 3, and the restart resumes
        from this sink's own last row."""
        return self.buffer.dropped + sum(self.unfillable.values()) + self.buffer.unwritten

    def resume_point(self, symbol: str, interval: str) -> int | None:
        """Its own last stored row (None while its server has not answered)."""
        return self._stored.get((symbol, interval))

    def journal_path(self) -> Path:
        """``{name}-{digest of the destination}.journal`` in ``journal_dir``."""
        folder = self.settings.journal_dir
        if not folder:
            csv = self.context.find(CsvRecorder)
            folder = _fixed_folder(csv.template) if csv is not None else "data"
        digest = hashlib.sha256(self.destination().encode()).hexdigest()[:10]
        return Path(folder) / f"{self.name}-{digest}.journal"

    def destination(self) -> str:
        """Where the bars go (no secrets): names this sink's journal."""
        return self.name

    def problem(self) -> str | None:
        """Why this sink is failing, behind or dropping bars (for /health), or None."""
        base = super().problem()
        if base is not None:
            return base
        buffer = self.buffer
        if buffer.dropped:
            return f"dropping bars: {buffer.dropped} not recorded (backlog could not be kept)"
        if not buffer.healthy:
            held = f"{len(buffer)} bars waiting ({buffer.journaled} in the journal)"
            return f"failing: {buffer.last_error}; {held}"
        if self.unfillable:
            gaps = ", ".join(f"{s} {i}: {n}" for (s, i), n in self.unfillable.items())
            return f"behind: bars missing that the feed cannot provide ({gaps})"
        if self.refilling is not None:
            return f"behind: filling its own range {self.refilling}"
        wait = buffer.oldest_wait
        if buffer.journaled or wait > self.settings.behind_after:
            return f"behind: {len(buffer)} bars waiting, the oldest for {wait:.0f}s"
        return None

    def _overflowed(self) -> None:
        """Memory and journal are full: the tail is refused, so stop the run (exit 3);
        the restart resumes from this sink's own last row."""
        if self._context is not None:
            self._context.request_stop()

    def _unverify(self) -> None:
        self._verified.clear()

    async def _write(self, batch: list[BarEvent]) -> None:
        """Check each stream's own last row once per connection, fill the range before the
        batch if it is missing, then write the bars the storage does not hold yet."""
        firsts: dict[StreamKey, int] = {}
        for bar in batch:
            if bar.closed:
                firsts.setdefault(bar.key, bar.open_time_ms)
        for key, first in firsts.items():
            if key not in self._verified:
                await self._verify(key, first)
        stored = self._stored
        fresh = [b for b in batch if not b.closed or b.open_time_ms > stored.get(b.key, -1)]
        self.skipped += len(batch) - len(fresh)
        if fresh:
            await self.write_batch(fresh)
        for bar in fresh:
            if bar.closed:
                stored[bar.key] = max(stored.get(bar.key, -1), bar.open_time_ms)

    async def _verify(self, key: StreamKey, first: int) -> None:
        last = await self.read_last(*key)
        if last is None:
            self._stored.pop(key, None)
        else:
            self._stored[key] = last
            if first > last + interval_ms(key[1]):
                await self._refill(key, last, first)
        self._verified.add(key)

    async def _refill(self, key: StreamKey, last: int, end: int) -> None:
        """Write the exchange's bars after ``last`` and before ``end`` (the next bar held)."""
        symbol, interval = key
        step = interval_ms(interval)
        start = last + step
        span = f"{utc_text(start)} .. {utc_text(end - step)}"
        history = self._context.history if self._context is not None else None
        if history is None:
            if key not in self.unfillable:
                self.unfillable[key] = (end - start) // step
                detail = f"{symbol} {interval}: bars {span} missing, and no history can fill them"
                self.report(FeedState.ERROR, detail, logging.ERROR)
            return
        self.refilling = f"{symbol} {interval} {span}"
        count = 0
        while start < end:
            page = await history.final_bars(symbol, interval, start, end)
            if page.next_ms <= start:
                raise HistoryPending(f"{symbol} {interval}: nothing final after {utc_text(last)}")
            size = self.settings.batch_size
            for n in range(0, len(page.bars), size):
                chunk = page.bars[n : n + size]
                await self.write_batch(chunk)
                self._stored[key] = chunk[-1].open_time_ms
                count += len(chunk)
                self.refilled += len(chunk)
            start = page.next_ms
        self.refilling = None
        log.warning("%s: %s %s: filled its own range %s: %d bars", self.name, *key, span, count)

    def stored_resume_point(self, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the newest bar in storage as read by :meth:`open`, if known."""
        return None

    @abstractmethod
    async def open(self) -> None:
        """Connect and prepare storage; must not raise for an unreachable server."""

    @abstractmethod
    async def read_last(self, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the stream's newest stored bar; raises if unreachable."""

    @abstractmethod
    async def write_batch(self, batch: list[BarEvent]) -> None:
        """Store ``batch``; idempotent, because a failed batch is written again whole."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (called once, after the final flush)."""


def _encode(bar: BarEvent) -> bytes:
    return msgspec.json.encode(bar)


def _fixed_folder(template: str) -> str:
    """The folder of a path template up to its first placeholder (``data/{symbol}/x`` → data)."""
    fixed = template.split("{", 1)[0]
    return str(Path(fixed).parent if not fixed.endswith("/") else Path(fixed)) or "."
