"""RetryBuffer: items queue in memory and are written in batches by one task, with backoff.

The producer is the bus, so :meth:`RetryBuffer.put` never blocks and never raises; a
batch leaves the buffer only after ``write`` succeeded, and a failed batch is retried
whole, so ``write`` must be idempotent (the sinks upsert or use idempotent ids).
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

log = logging.getLogger(__name__)

T = TypeVar("T")

Report = Callable[[FeedState, str, int], None]
"""How a buffer tells its owner about outages: (state, detail, logging level)."""


class RetryBuffer(Generic[T]):
    """Bounded in-memory queue drained in batches of ``batch_size`` by one asyncio task.

    A batch is written once ``batch_size`` items wait or the oldest has waited
    ``max_delay`` seconds (0: write as soon as the task runs). While writes fail it keeps
    at most ``capacity`` items plus the batch in flight, dropping the oldest beyond that.
    The sinks' :class:`~quantcore.sinks.base.SinkSettings` bounds batch_size and max_delay.
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
        self.failures = 0

    def __len__(self) -> int:
        return len(self._pending) + len(self._inflight)

    def put(self, item: T) -> None:
        """Queue ``item``; on overflow drop the oldest queued item and say so."""
        if len(self._pending) >= self.capacity:
            self._pending.popleft()
            self._dropped()
        self._pending.append((time.monotonic(), item))
        self._wake.set()

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
        lost = len(self)
        if lost:
            self._report(FeedState.ERROR, f"stopped with {lost} items never written", logging.ERROR)
        return lost

    async def _run(self) -> None:
        attempt = 0
        while not self._abandoned:
            if not self._inflight and not await self._take():
                if self._closing and not self._pending:
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
            attempt = 0
            if not self.healthy:
                self._recovered()

    async def _take(self) -> bool:
        """Move the next batch into flight once it is due; False if it is not due yet."""
        pending = self._pending
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
        self._inflight = [pending.popleft()[1] for _ in range(count)]
        return True

    def _failed(self, exc: Exception, attempt: int) -> None:
        self.failures += 1
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

    def _dropped(self) -> None:
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:
            detail = f"buffer full ({self.capacity} items): dropped {self.dropped} oldest so far"
            self._report(FeedState.DROPPED, detail, logging.ERROR)
