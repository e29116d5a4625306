"""RetryBuffer: items queue in memory and are written in batches by one task, with backoff.

The producer is the bus, so :meth:`RetryBuffer.put` never blocks and never raises; a
batch leaves the buffer only after ``write`` succeeded, and a failed batch is retried
whole, so ``write`` must be idempotent (the sinks upsert or use idempotent ids). The
backlog stays in order and whole: beyond ``capacity`` items it spills to a
:class:`~quantcore.sinks.journal.Journal`; when even that fails, the item and every
later one are refused (counted in ``dropped``) and ``on_overflow`` is called, so what
was kept never has a hole in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from quantcore.backoff import Backoff, describe
from quantcore.events import FeedState
from quantcore.sinks.journal import Journal

log = logging.getLogger(__name__)

T = TypeVar("T")

Report = Callable[[FeedState, str, int], None]
"""How a buffer tells its owner about outages: (state, detail, logging level)."""


class RetryBuffer(Generic[T]):
    """Bounded in-memory queue drained in batches of ``batch_size`` by one asyncio task.

    A batch is written once ``batch_size`` items wait or the oldest has waited
    ``max_delay`` seconds (0: write as soon as the task runs). While writes fail it keeps
    at most ``capacity`` items in memory plus the batch in flight; later items go to
    ``journal`` until it is drained (so memory always holds the oldest), and are read
    back in order. Without a journal, or when it cannot be written, the newest items are
    refused instead. ``on_failure`` runs after every failed write.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Awaitable[None]],
        report: Report,
        *,
        batch_size: int = 500,
        max_delay: float = 1.0,
        capacity: int = 1_000_000,
        backoff: Backoff | None = None,
        write_timeout: float = 30.0,
        journal: Journal[T] | None = None,
        on_overflow: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        if capacity < batch_size:
            raise ValueError(f"max_buffer ({capacity!r}) must be >= batch_size ({batch_size!r})")
        if write_timeout <= 0:
            raise ValueError(f"write_timeout must be > 0 seconds, got {write_timeout!r}")
        self.name = name
        self._write = write
        self._report = report
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.capacity = capacity
        self.backoff = backoff or Backoff()
        self.write_timeout = write_timeout
        self.journal = journal
        self._on_overflow = on_overflow
        self._on_failure = on_failure
        self.refusing = False
        """True once an item could be kept neither in memory nor in the journal: this and
        every later item are refused (the kept backlog stays gap-free)."""
        self._pending: deque[tuple[float, T]] = deque()
        self._inflight: list[T] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._abandoned = False
        self._down_since = 0.0
        self.healthy = True
        """False from a failed write until the next successful one."""
        self.written = 0
        self.dropped = 0
        """Items refused because neither memory nor the journal could keep them."""
        self.failures = 0
        self.unwritten = 0
        """Items still unwritten when :meth:`close` gave up (they are lost)."""
        self.last_error = ""
        """The last write failure, for /health."""
        self._inflight_since = 0.0

    def __len__(self) -> int:
        return len(self._pending) + len(self._inflight) + self.journaled

    @property
    def journaled(self) -> int:
        """Items waiting in the journal file (not yet read back into memory)."""
        return 0 if self.journal is None else len(self.journal)

    @property
    def oldest_wait(self) -> float:
        """Seconds the oldest unwritten item has waited in memory (0 when none waits)."""
        if self._inflight:
            return time.monotonic() - self._inflight_since
        return time.monotonic() - self._pending[0][0] if self._pending else 0.0

    def put(self, item: T) -> None:
        """Queue ``item``: in memory while there is room and nothing waits in the journal,
        else in the journal; if that fails, refuse it and every later item."""
        if self.refusing:
            self.dropped += 1
            return
        journal = self.journal
        if len(self._pending) < self.capacity and not self.journaled:
            self._pending.append((time.monotonic(), item))
            self._wake.set()
            return
        if journal is None:
            self._overflow(f"memory backlog full ({self.capacity} items) and no journal")
            return
        try:
            journal.append(item)
        except OSError as exc:
            self._overflow(f"journal {journal.path} cannot be written: {describe(exc)}")
            return
        if len(journal) == 1:
            detail = f"memory backlog full ({self.capacity} items): spilling to {journal.path}"
            self._report(FeedState.ERROR, detail, logging.WARNING)

    def mark_down(self, error: str) -> None:
        """The target is known to be unreachable (e.g. at start): unhealthy until a write
        succeeds, which then reports the recovery."""
        if self.healthy:
            self.healthy = False
            self._down_since = time.monotonic()
        self.last_error = error

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self.name}:writer"
            )

    async def close(self, grace: float) -> int:
        """Write what is queued, retrying for at most ``grace`` s; returns the items lost."""
        self._closing = True
        self._wake.set()
        self.start()
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=grace)
        if not done:
            self._abandoned = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        lost = self.unwritten = len(self)
        if self.journal is not None:
            self.journal.remove()
        if lost:
            self._report(FeedState.ERROR, f"stopped with {lost} items never written", logging.ERROR)
        return lost

    async def _run(self) -> None:
        attempt = 0
        while not self._abandoned:
            if not self._inflight and not await self._take():
                if self._closing and not self._pending and not self.journaled:
                    return
                continue
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self._write(self._inflight)
            except Exception as exc:
                self._failed(exc, attempt)
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            self.written += len(self._inflight)
            self._inflight = []
            self._inflight_since = 0.0
            attempt = 0
            if not self.healthy:
                self._recovered()

    async def _take(self) -> bool:
        """Move the next batch into flight once it is due; False if it is not due yet."""
        pending = self._pending
        if self.journaled and len(pending) < self.batch_size:
            assert self.journal is not None
            room = min(self.capacity - len(pending), 10 * self.batch_size)
            due = time.monotonic() - self.max_delay
            pending.extend((due, item) for item in self.journal.read(room))
        if not pending:
            if self._closing:
                return False
            self._wake.clear()
            await self._wake.wait()
            return False
        if not self._closing and len(pending) < self.batch_size:
            wait = pending[0][0] + self.max_delay - time.monotonic()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                return False
        count = min(self.batch_size, len(pending))
        self._inflight_since = pending[0][0]
        self._inflight = [pending.popleft()[1] for _ in range(count)]
        return True

    def _failed(self, exc: Exception, attempt: int) -> None:
        self.failures += 1
        self.last_error = describe(exc)
        if self._on_failure is not None:
            self._on_failure()
        if self.healthy:
            self.healthy = False
            self._down_since = time.monotonic()
            detail = f"write failed, buffering and retrying: {describe(exc)}"
            self._report(FeedState.ERROR, detail, logging.WARNING)
        else:
            log.info(
                "%s: retry %d failed (%d items buffered): %s",
                self.name,
                attempt,
                len(self),
                describe(exc),
            )

    def _recovered(self) -> None:
        self.healthy = True
        down = time.monotonic() - self._down_since
        detail = f"writing again after {down:.1f}s down; {len(self)} items still buffered"
        self._report(FeedState.CONNECTED, detail, logging.WARNING)

    def _overflow(self, reason: str) -> None:
        self.refusing = True
        self.dropped += 1
        detail = f"{reason}: this item and every later one are not kept ({len(self)} kept)"
        self._report(FeedState.DROPPED, detail, logging.ERROR)
        if self._on_overflow is not None:
            self._on_overflow()
