"""EventBus: topic publish/subscribe on pyee, with subscriber isolation and in-order delivery.

pyee keeps the listeners; pyee's ``emit`` would let one raising handler abort the
handlers after it and run coroutine handlers as interleaving tasks. The bus delivers
itself, each call isolated (a failure is logged and counted), and gives each coroutine
handler its own bounded queue and worker so it still sees events one at a time, in
publish order, without ever blocking the publisher: ``bar.partial`` keeps the newest
``queue_size`` updates (oldest dropped), every other topic keeps up to ``max_backlog``
events, then drops and logs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyee import EventEmitter

log = logging.getLogger(__name__)

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscription:
    """What :meth:`EventBus.subscribe` returns; pass it back to unsubscribe."""

    topic: str
    name: str
    wrapper: Callable[[Any], None]


class _AsyncWorker:
    """Feeds one coroutine handler from its own bounded queue so its calls never interleave.

    A full queue never blocks the publisher: on a lossy topic the oldest queued event
    is dropped; on any other topic the new event is dropped and the episode logged once.
    """

    def __init__(
        self, bus: EventBus, topic: str, name: str, handler: Handler, limit: int, lossy: bool
    ) -> None:
        self._bus, self.topic, self.name, self._handler = bus, topic, name, handler
        self.limit = limit
        self.lossy = lossy
        self.pending: deque[Any] = deque()
        self.busy = False
        self.dropped = 0
        self._overflowing = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.pending) + self.busy

    def put(self, event: Any) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"bus:{self.topic}:{self.name}"
            )
        if len(self.pending) >= self.limit:
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                log.log(
                    logging.WARNING if self.lossy else logging.ERROR,
                    "subscriber %s is %d events behind on %s: dropping the %s events until "
                    "it catches up",
                    self.name,
                    len(self.pending),
                    self.topic,
                    "oldest" if self.lossy else "new",
                )
            if not self.lossy:
                return
            self.pending.popleft()
        self.pending.append(event)
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._overflowing = False
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            event = self.pending.popleft()
            self.busy = True
            try:
                await self._handler(event)  # type: ignore[misc]
            except Exception as exc:
                self._bus._handler_failed(self.topic, self.name, exc)
            finally:
                self.busy = False

    async def drain(self) -> None:
        await self._idle.wait()

    async def close(self) -> int:
        """Stop the worker now; returns the events it never handled (0 after a drain)."""
        abandoned = len(self)
        self.pending.clear()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        self.busy = False
        self._idle.set()
        return abandoned


class EventBus:
    """Publish/subscribe by topic; one instance per app, used from one asyncio loop.

    Contract: handlers of a topic run in subscription order; a sync handler has
    finished with an event before the next event is published; a failing handler
    never affects the publisher or other handlers (see :attr:`handler_errors`).
    """

    def __init__(
        self,
        queue_size: int = 1_000,
        max_backlog: int = 1_000_000,
        lossy_topics: frozenset[str] = frozenset({"bar.partial"}),
    ) -> None:
        if queue_size < 1 or max_backlog < 1:
            raise ValueError("queue_size and max_backlog must be >= 1")
        self.queue_size = queue_size
        self.max_backlog = max_backlog
        self.lossy_topics = lossy_topics
        self._emitter = EventEmitter()
        self._handlers: dict[str, tuple[Callable[[Any], None], ...]] = {}
        """Per topic, a snapshot of pyee's listeners, refreshed on (un)subscribe: the hot
        path iterates it without pyee's lock and copies, and a handler may (un)subscribe
        mid-delivery."""
        self._names: dict[Callable[..., Any], str] = {}
        self._workers: list[_AsyncWorker] = []
        self.published: defaultdict[str, int] = defaultdict(int)
        """Events per topic (a ``defaultdict``: counting costs half a ``Counter``'s)."""
        self.handler_errors: Counter[str] = Counter()
        self.abandoned: Counter[str] = Counter()
        """Events each coroutine subscriber never handled because :meth:`close` stopped it."""

    def subscribe(self, topic: str, handler: Handler, name: str | None = None) -> Subscription:
        """Call ``handler(event)`` for every event on ``topic``; coroutines are queued.

        Subscribing the same callable twice to one topic delivers once (pyee keys
        handlers by the callable).
        """
        label: str = name or str(getattr(handler, "__qualname__", repr(handler)))
        wrapper: Callable[[Any], None]
        if inspect.iscoroutinefunction(handler):
            lossy = topic in self.lossy_topics
            limit = self.queue_size if lossy else self.max_backlog
            worker = _AsyncWorker(self, topic, label, handler, limit, lossy)
            self._workers.append(worker)
            wrapper = worker.put
        else:
            wrapper = handler  # type: ignore[assignment]
        self._names[wrapper] = label
        self._emitter.add_listener(topic, wrapper)
        self._handlers[topic] = tuple(self._emitter.listeners(topic))
        return Subscription(topic, label, wrapper)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._emitter.remove_listener(subscription.topic, subscription.wrapper)
        self._handlers[subscription.topic] = tuple(self._emitter.listeners(subscription.topic))
        self._names.pop(subscription.wrapper, None)

    def publish(self, topic: str, event: Any) -> None:
        """Deliver ``event`` to the topic's handlers now, in order; a failing one is
        reported and the others still run."""
        self.published[topic] += 1
        for handler in self._handlers.get(topic, ()):
            try:
                handler(event)
            except Exception as exc:
                self._handler_failed(topic, self._names.get(handler, repr(handler)), exc)

    def has_subscribers(self, topic: str) -> bool:
        """Lets publishers skip building events nobody listens to."""
        return bool(self._handlers.get(topic))

    def backlog(self) -> dict[str, int]:
        """Events waiting (or being handled) per coroutine subscriber."""
        return {worker.name: len(worker) for worker in self._workers}

    def dropped(self) -> dict[str, int]:
        """Events dropped on a full queue per coroutine subscriber (see :class:`_AsyncWorker`)."""
        return {worker.name: worker.dropped for worker in self._workers if worker.dropped}

    def lost(self, topic: str) -> int:
        """Events of ``topic`` some subscriber never handled: dropped when full or abandoned."""
        return sum(
            worker.dropped + self.abandoned[worker.name]
            for worker in self._workers
            if worker.topic == topic
        )

    async def drain(self, grace: float | None = None) -> list[str]:
        """Wait until every coroutine handler is idle; returns those still busy after ``grace``."""
        busy = [worker for worker in self._workers if len(worker)]
        waits = {asyncio.ensure_future(worker.drain()): worker for worker in busy}
        if not waits:
            return []
        _, late = await asyncio.wait(waits, timeout=grace)
        for future in late:
            future.cancel()
        return [waits[future].name for future in late]

    async def close(self, grace: float | None = None) -> list[str]:
        """Drain (at most ``grace`` s), then stop the coroutine-handler workers.

        Returns the subscribers that were still busy; what they never handled is
        counted in :attr:`abandoned`.
        """
        stuck = await self.drain(grace)
        for worker in self._workers:
            abandoned = await worker.close()
            if abandoned:
                self.abandoned[worker.name] += abandoned
        return stuck

    def _handler_failed(self, topic: str, name: str, exc: Exception) -> None:
        self.handler_errors[name] += 1
        log.error("subscriber %s failed on %s: %s: %s", name, topic, type(exc).__name__, exc)
        log.debug("subscriber %s traceback", name, exc_info=exc)
