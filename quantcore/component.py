"""Component: the base class of every consumer and strategy.

A subclass overrides the handlers it cares about (``on_bar``, ``on_bar_partial``,
``on_feed_status``, ``on_signal``, ``on_gap``) and is subscribed to exactly those topics when it
is attached, so adding a consumer is one subclass plus one line of YAML.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from quantcore.bus import EventBus, Subscription
from quantcore.events import (
    BAR,
    BAR_PARTIAL,
    FEED_STATUS,
    GAP,
    SIGNAL,
    BarEvent,
    FeedStatus,
    GapEvent,
    SignalEvent,
)

if TYPE_CHECKING:
    from quantcore.sinks.refill import BarHistory

log = logging.getLogger(__name__)

C = TypeVar("C", bound="Component")
VenueRule = Literal["template", "folder", "table", "key", "partition"]

HANDLER_TOPICS: dict[str, str] = {
    "on_bar": BAR,
    "on_bar_partial": BAR_PARTIAL,
    "on_feed_status": FEED_STATUS,
    "on_signal": SIGNAL,
    "on_gap": GAP,
}
"""Handler method name → the topic it is subscribed to when overridden."""


@dataclass(slots=True)
class Context:
    """What an attached component can reach: the bus, the streams, its peers."""

    bus: EventBus
    streams: Sequence[tuple[str, str]] = ()
    components: list[Component] = field(default_factory=list)
    history: BarHistory | None = None
    """The feed's past bars, for a recorder filling its own range (set once the feed exists)."""
    forming: Callable[[str, str], BarEvent | None] | None = None
    """The feed's bar still forming for (symbol, interval), converted on request (set once
    the feed exists; None: the feed keeps none, only ``bar.partial`` carries it)."""
    request_stop: Callable[[], None] = field(default=lambda: None)
    """Stops the whole run gracefully (the App's ``stop``), e.g. when a recorder can no
    longer keep what it is handed."""

    def find(self, kind: type[C]) -> C | None:
        """The first attached component of ``kind`` (e.g. the HistoryStore), if any."""
        for component in self.components:
            if isinstance(component, kind):
                return component
        return None


class Component:
    """Lifecycle plus topic auto-subscription; override only what you need.

    Handlers run synchronously in the event loop and must be quick; do slow I/O in
    ``async def`` handlers (the bus queues those per subscriber, keeping order).
    """

    warmup: int = 0
    """Closed bars per stream this component needs before the first live bar: ``run``
    hands it that many past bars (marked ``replayed``) from the store or REST first."""

    stop_grace: float = 0.0
    """Seconds :meth:`stop` may take beyond the App's ``stop_timeout`` (its own retries)."""

    venue_params: dict[str, VenueRule] = {}
    """Parameters saying where it writes, and how they name the venue when a config
    records several (applied by :mod:`quantcore.config_venues`)."""

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self._context: Context | None = None
        self._subscriptions: list[Subscription] = []
        self.refused = 0
        """Closed bars this recorder refused by raising in ``on_bar``, or never got after
        that on the same stream: not recorded (the run exits 3)."""
        self._refused_streams: set[tuple[str, str]] = set()

    @property
    def is_recorder(self) -> bool:
        """A component that holds bars (it has a resume point) is a recorder: a bar it
        refuses is not recorded, and /health watches it."""
        return type(self).resume_point is not Component.resume_point

    @property
    def context(self) -> Context:
        if self._context is None:
            raise RuntimeError(f"{self.name} is not attached to a bus yet")
        return self._context

    def attach(self, context: Context) -> None:
        """Subscribe every overridden handler to its topic on ``context.bus``."""
        self._context = context
        for method, topic in HANDLER_TOPICS.items():
            overridden = getattr(type(self), method) is not getattr(Component, method)
            if overridden and self.wants(method):
                handler = getattr(self, method)
                if method == "on_bar" and self.is_recorder:
                    handler = self._recording(handler)
                self._subscriptions.append(
                    context.bus.subscribe(topic, handler, name=f"{self.name}.{method}")
                )

    def _recording(self, handler: Callable[[BarEvent], Any]) -> Callable[[BarEvent], Any]:
        """``on_bar`` that, once it raised for a stream, hands it no later bar of that
        stream: what the recorder holds stays gap-free, and the restart fills the rest.
        A replayed bar (already stored) is never handed to a recorder."""
        refused = self._refused_streams

        def failed(bar: BarEvent) -> None:
            refused.add(bar.key)
            self.refused += 1
            log.error(
                "%s refused the %s %s bar of %s: it and every later bar of the stream are "
                "not recorded this run (exit 3; a restart fills them from its last row)",
                self.name, bar.symbol, bar.interval, bar.open_time,
            )  # fmt: skip

        if inspect.iscoroutinefunction(handler):
            coroutine: Callable[[BarEvent], Awaitable[None]] = handler

            async def guarded_async(bar: BarEvent) -> None:
                if bar.replayed:
                    return
                if bar.key in refused:
                    self.refused += 1
                    return
                try:
                    await coroutine(bar)
                except Exception:
                    failed(bar)
                    raise

            return guarded_async

        def guarded(bar: BarEvent) -> None:
            if bar.replayed:
                return
            if bar.key in refused:
                self.refused += 1
                return
            try:
                handler(bar)
            except Exception:
                failed(bar)
                raise

        return guarded

    def problem(self) -> str | None:
        """Why this recorder is failing, behind or dropping bars (for /health), or None."""
        if self.refused:
            return f"failing: refused {self.refused} bars (on_bar raised); not recorded"
        return None

    def wants(self, handler: str) -> bool:
        """Whether to subscribe an overridden ``handler``; lets options switch topics off."""
        return True

    def detach(self) -> None:
        if self._context is not None:
            for subscription in self._subscriptions:
                self._context.bus.unsubscribe(subscription)
        self._subscriptions.clear()

    def publish(self, topic: str, event: Any) -> None:
        """Publish on the bus this component is attached to (e.g. a SignalEvent)."""
        self.context.bus.publish(topic, event)

    async def start(self) -> None:
        """Called once after attaching, before the feed connects."""

    async def stop(self) -> None:
        """Called once after the feed stopped: flush and release resources here."""

    def resume_point(self, symbol: str, interval: str) -> int | None:
        """Open time (ms) of the last closed bar this component already holds, if any.

        The feed resumes from the earliest resume point of all components and
        backfills from there, so a restarted recorder neither misses nor repeats bars.
        """
        return None

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """A burst of past bars follows (``quantcore history``): a recorder may hold its
        writes until the block ends, and must have written them all when it does."""
        return contextlib.nullcontext()

    def unrecorded(self) -> int:
        """Closed bars this component accepted but could not store; non-zero fails the run."""
        return 0

    def on_bar(self, bar: BarEvent) -> None:
        """A closed bar."""

    def on_bar_partial(self, bar: BarEvent) -> None:
        """An in-progress update of the forming bar."""

    def on_feed_status(self, status: FeedStatus) -> None:
        """A feed lifecycle or error event."""

    def on_signal(self, signal: SignalEvent) -> None:
        """A strategy signal."""

    def on_gap(self, gap: GapEvent) -> None:
        """A range of bars the feed will never publish (skipped by a cap, or the exchange
        has none): recorders write it down so ``quantcore check`` can explain the hole."""
