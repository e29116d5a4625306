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


async def test_slow_subscriber_backlog_is_visible_and_bounded_for_partials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus(queue_size=5)
    seen: dict[str, list[int]] = {"bar": [], "bar.partial": []}
    gate = asyncio.Event()

    async def slow_bar(n: int) -> None:
        await gate.wait()
        seen["bar"].append(n)

    async def slow_partial(n: int) -> None:
        await gate.wait()
        seen["bar.partial"].append(n)

    bus.subscribe("bar", slow_bar, name="slow.on_bar")
    bus.subscribe("bar.partial", slow_partial, name="slow.on_bar_partial")
    with caplog.at_level(logging.WARNING):
        for n in range(100):
            bus.publish("bar.partial", n)
            bus.publish("bar", n)
            await asyncio.sleep(0)
    assert bus.backlog() == {"slow.on_bar": 100, "slow.on_bar_partial": 6}
    assert bus.dropped() == {"slow.on_bar_partial": 94}
    drops = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert drops == [
        "subscriber slow.on_bar_partial is 5 events behind on bar.partial: "
        "dropping the oldest events until it catches up"
    ]
    gate.set()
    assert await bus.drain(5) == []
    assert seen["bar"] == list(range(100))
    assert seen["bar.partial"] == [0, 95, 96, 97, 98, 99]
    assert bus.backlog() == {"slow.on_bar": 0, "slow.on_bar_partial": 0}
    assert bus.lost("bar") == 0
    await bus.close()


async def test_closed_bars_beyond_the_cap_are_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus(max_backlog=10)
    gate = asyncio.Event()

    async def slow(n: int) -> None:
        await gate.wait()

    bus.subscribe("bar", slow, name="slow")
    with caplog.at_level(logging.ERROR):
        for n in range(25):
            bus.publish("bar", n)
    assert bus.dropped() == {"slow": 15} and bus.lost("bar") == 15
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    gate.set()
    await bus.close(5)


async def test_close_gives_up_on_a_stuck_subscriber() -> None:
    bus = EventBus()

    async def stuck(n: int) -> None:
        await asyncio.Event().wait()

    bus.subscribe("bar", stuck, name="stuck")
    for n in range(3):
        bus.publish("bar", n)
    assert await asyncio.wait_for(bus.close(0.2), 2) == ["stuck"]
    assert bus.abandoned == {"stuck": 3} and bus.lost("bar") == 3
