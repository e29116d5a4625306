"""EventBus: topic publish/subscribe on pyee, with subscriber isolation and in-order delivery.

pyee alone lets one raising handler abort ``emit`` (skipping the handlers after it)
and runs coroutine handlers as interleaving tasks. The bus wraps every handler so a
failure is logged and counted instead, and gives each coroutine handler its own queue
and worker so it still sees events one at a time, in publish order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyee import EventEmitter

log = logging.getLogger(__name__)

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]


class _IsolatingEmitter(EventEmitter):
    """pyee's synchronous emitter, delivering with each handler call isolated.

    ``_call_handlers`` is the step of pyee's ``emit`` that runs the listeners (its
    asyncio and Twisted emitters override the same hooks). This one skips the lock
    (quantcore publishes from one event loop, never from threads), copies the listeners
    so a handler may (un)subscribe mid-delivery, and reports a failing handler instead
    of letting it abort the others.
    """

    def __init__(self, on_error: Callable[[Callable[..., Any], Exception], None]) -> None:
        super().__init__()
        self._on_error = on_error

    def _call_handlers(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        listeners = self._events.get(event)
        if not listeners:
            return False
        for handler in tuple(listeners.values()):
            try:
                handler(*args)
            except Exception as exc:
                self._on_error(handler, exc)
        return True


@dataclass(frozen=True, slots=True)
class Subscription:
    """What :meth:`EventBus.subscribe` returns; pass it back to unsubscribe."""

    topic: str
    name: str
    wrapper: Callable[[Any], None]


class _AsyncWorker:
    """Feeds one coroutine handler from its own queue so its calls never interleave."""

    def __init__(self, bus: EventBus, topic: str, name: str, handler: Handler) -> None:
        self._bus, self._topic, self._name, self._handler = bus, topic, name, handler
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def put(self, event: Any) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"bus:{self._topic}:{self._name}"
            )
        self.queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self._handler(event)  # type: ignore[misc]
            except Exception as exc:
                self._bus._handler_failed(self._topic, self._name, exc)
            finally:
                self.queue.task_done()

    async def close(self) -> None:
        if self.task is not None:
            await self.queue.join()
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


class EventBus:
    """Publish/subscribe by topic; one instance per app, used from one asyncio loop.

    Contract: handlers of a topic run in subscription order; a sync handler has
    finished with an event before the next event is published; a failing handler
    never affects the publisher or other handlers (see :attr:`handler_errors`).
    """

    def __init__(self) -> None:
        self._emitter = _IsolatingEmitter(self._delivery_failed)
        self._names: dict[Callable[..., Any], str] = {}
        self._topic = ""
        self._workers: list[_AsyncWorker] = []
        self.published: Counter[str] = Counter()
        self.handler_errors: Counter[str] = Counter()

    def subscribe(self, topic: str, handler: Handler, name: str | None = None) -> Subscription:
        """Call ``handler(event)`` for every event on ``topic``; coroutines are queued.

        Subscribing the same callable twice to one topic delivers once (pyee keys
        handlers by the callable).
        """
        label: str = name or str(getattr(handler, "__qualname__", repr(handler)))
        wrapper: Callable[[Any], None]
        if inspect.iscoroutinefunction(handler):
            worker = _AsyncWorker(self, topic, label, handler)
            self._workers.append(worker)
            wrapper = worker.put
        else:
            wrapper = handler  # type: ignore[assignment]
        self._names[wrapper] = label
        self._emitter.add_listener(topic, wrapper)
        return Subscription(topic, label, wrapper)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._emitter.remove_listener(subscription.topic, subscription.wrapper)
        self._names.pop(subscription.wrapper, None)

    def publish(self, topic: str, event: Any) -> None:
        """Deliver ``event`` to the topic's handlers now, in order."""
        self.published[topic] += 1
        outer, self._topic = self._topic, topic
        self._emitter.emit(topic, event)
        self._topic = outer

    def has_subscribers(self, topic: str) -> bool:
        """Lets publishers skip building events nobody listens to."""
        return bool(self._emitter.listeners(topic))

    async def drain(self) -> None:
        """Wait until every queued coroutine handler has processed what was published."""
        for worker in self._workers:
            await worker.queue.join()

    async def close(self) -> None:
        """Drain and stop the coroutine-handler workers."""
        for worker in self._workers:
            await worker.close()

    def _delivery_failed(self, handler: Callable[..., Any], exc: Exception) -> None:
        self._handler_failed(self._topic, self._names.get(handler, repr(handler)), exc)

    def _handler_failed(self, topic: str, name: str, exc: Exception) -> None:
        self.handler_errors[name] += 1
        log.error("subscriber %s failed on %s: %s: %s", name, topic, type(exc).__name__, exc)
