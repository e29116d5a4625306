"""BufferedSink: a Component that hands closed bars to storage from its own writer task.

``on_bar`` only queues (it never blocks or raises into the bus), a
:class:`~quantcore.sinks.retry.RetryBuffer` writes batches and retries outages, and
every outage or recovery is published on FEED_STATUS under the sink's name.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec

from quantcore.backoff import Backoff
from quantcore.component import Component
from quantcore.events import FEED_STATUS, BarEvent, FeedState, FeedStatus
from quantcore.sinks.retry import RetryBuffer

log = logging.getLogger(__name__)


class SinkSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every buffered sink takes, flat beside its own parameters (YAML ``params``).

    ``max_buffer`` bounds memory while storage is down (oldest bars dropped beyond it,
    reported as DROPPED); ``stop_timeout`` bounds how long :meth:`BufferedSink.stop`
    keeps retrying; ``retry_max`` caps the backoff between retries.
    """

    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 500
    max_delay: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    max_buffer: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    retry_max: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    stop_timeout: Annotated[float, msgspec.Meta(ge=0)] = 5.0


class BufferedSink(Component, ABC):
    """Subclasses implement :meth:`open`, :meth:`write_batch` (idempotent) and :meth:`close`,
    and take ``**settings`` (:class:`SinkSettings`, over their own :attr:`defaults`)."""

    defaults: ClassVar[Mapping[str, float]] = {}
    """This sink's own defaults for :class:`SinkSettings` fields."""

    def __init__(self, name: str | None, settings: Mapping[str, float]) -> None:
        super().__init__(name=name)
        self.settings = msgspec.convert({**self.defaults, **settings}, SinkSettings)
        self.buffer: RetryBuffer[BarEvent] = RetryBuffer(
            self.name,
            self.write_batch,
            self.report,
            batch_size=self.settings.batch_size,
            max_delay=self.settings.max_delay,
            capacity=self.settings.max_buffer,
            backoff=Backoff(initial=0.2, maximum=self.settings.retry_max),
        )
        self.stop_timeout = self.stop_grace = self.settings.stop_timeout
        self._queued: dict[tuple[str, str], int] = {}

    def report(self, state: FeedState, detail: str = "", level: int = logging.INFO) -> None:
        """Log a status line and publish it on FEED_STATUS as ``FeedStatus(self.name, ...)``."""
        log.log(level, "%s: %s%s", self.name, state.value, f": {detail}" if detail else "")
        if self._context is not None:
            self._context.bus.publish(FEED_STATUS, FeedStatus(self.name, state, detail))

    def on_bar(self, bar: BarEvent) -> None:
        open_ms = bar.open_time_ms
        if open_ms > self._queued.get(bar.key, -1):
            self._queued[bar.key] = open_ms
        self.buffer.put(bar)

    async def start(self) -> None:
        await self.open()
        self.buffer.start()

    async def stop(self) -> None:
        try:
            await self.buffer.close(self.stop_timeout)
        finally:
            await self.close()

    def unrecorded(self) -> int:
        """After :meth:`stop`: bars dropped on overflow plus those it never wrote."""
        return self.buffer.dropped + len(self.buffer)

    def resume_point(self, symbol: str, interval: str) -> int | None:
        points = (self.stored_resume_point(symbol, interval), self._queued.get((symbol, interval)))
        return max((point for point in points if point is not None), default=None)

    def stored_resume_point(self, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the newest bar already in storage, if known."""
        return None

    @abstractmethod
    async def open(self) -> None:
        """Connect and prepare storage; must not raise for an unreachable server."""

    @abstractmethod
    async def write_batch(self, batch: list[BarEvent]) -> None:
        """Store ``batch``; idempotent, because a failed batch is written again whole."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (called once, after the final flush)."""
