"""EventBus: order, isolation of failing subscribers, coroutine handlers kept in order."""

from __future__ import annotations

import asyncio
import logging

import pytest

from quantcore.bus import EventBus


def test_sync_handlers_in_order_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[tuple[str, int]] = []

    def first(n: int) -> None:
        seen.append(("first", n))

    def broken(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    def last(n: int) -> None:
        seen.append(("last", n))

    bus.subscribe("t", first)
    bus.subscribe("t", broken, name="broken")
    bus.subscribe("t", last)
    with caplog.at_level(logging.ERROR):
        for n in range(3):
            bus.publish("t", n)
    assert seen == [("first", 0), ("last", 0), ("first", 1), ("last", 1), ("first", 2), ("last", 2)]
    assert bus.handler_errors["broken"] == 3
    assert "subscriber broken failed on t: RuntimeError: boom 2" in caplog.text
    assert bus.published["t"] == 3


async def test_async_handlers_keep_order_and_survive_errors() -> None:
    bus = EventBus()
    seen: list[int] = []

    async def slow(n: int) -> None:
        await asyncio.sleep(0.001 * (5 - n))
        if n == 2:
            raise ValueError("bad")
        seen.append(n)

    bus.subscribe("t", slow, name="slow")
    for n in range(5):
        bus.publish("t", n)
    await bus.drain()
    assert seen == [0, 1, 3, 4]
    assert bus.handler_errors["slow"] == 1
    await bus.close()


def test_unsubscribe() -> None:
    bus = EventBus()
    seen: list[int] = []
    sub = bus.subscribe("t", seen.append)
    bus.publish("t", 1)
    bus.unsubscribe(sub)
    bus.publish("t", 2)
    assert seen == [1]
    assert not bus.has_subscribers("t")
