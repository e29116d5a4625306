"""Bars, a status recorder and polling helpers shared by the sink tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.events import BAR, FEED_STATUS, BarDecimals, BarEvent, FeedState, FeedStatus

T0 = datetime(2024, 9, 4, 2, 27, tzinfo=UTC)
STREAM = ("BTCUSDT", "1m")


def make_bar(i: int, *, closed: bool = True, symbol: str = "BTCUSDT", update: int = 0) -> BarEvent:
    """Bar ``i`` minutes after T0, as the codec builds it: exchange-style 8-decimal strings
    (quote volumes with 18+ significant digits, more than a float holds) and their floats."""
    start = T0 + timedelta(minutes=i)
    eight = Decimal("0.00000001")
    price = Decimal(56_000) + i * Decimal("0.37") + update * Decimal("0.01")
    volume = (Decimal("10.1") + Decimal(i) / 3).quantize(eight)
    taker = (Decimal("4.2") + Decimal(i) / 7).quantize(eight)
    values = [
        price,
        price + Decimal("2.51"),
        price - Decimal("1.23"),
        price + Decimal("0.1"),
        volume,
        (volume * price).quantize(eight),
        taker,
        (taker * price).quantize(eight),
    ]
    o, h, lo, c, v, q, tv, tq = (f"{value.quantize(eight)}" for value in values)
    return BarEvent(
        symbol, "1m", start, start + timedelta(milliseconds=59_999),
        float(o), float(h), float(lo), float(c), float(v), float(q),
        100 + i, float(tv), float(tq), closed,
        start + timedelta(seconds=60 if closed else 30, milliseconds=17 + update),
        1_725_416_820_000_000_000 + i * 60_000_000_000 + update,
        BarDecimals(o, h, lo, c, v, q, tv, tq),
    )  # fmt: skip


class StatusLog:
    """Records every FEED_STATUS event, to assert on outages and recoveries."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[FeedStatus] = []
        bus.subscribe(FEED_STATUS, self.events.append, name="status-log")

    def states(self, feed: str) -> list[FeedState]:
        return [e.state for e in self.events if e.feed == feed]


class BarLog:
    """Records every closed bar published on a bus."""

    def __init__(self, bus: EventBus, topic: str = BAR) -> None:
        self.bars: list[BarEvent] = []
        bus.subscribe(topic, self.bars.append, name=f"bar-log:{topic}")


async def start_all(
    bus: EventBus, components: Sequence[Component], streams: Sequence[tuple[str, str]] = (STREAM,)
) -> None:
    context = Context(bus, streams, list(components))
    for component in components:
        component.attach(context)
    for component in components:
        await component.start()


async def stop_all(bus: EventBus, components: Sequence[Component]) -> None:
    await bus.drain()
    for component in reversed(components):
        await component.stop()
    await bus.close()


def publish(bus: EventBus, bars: Sequence[BarEvent]) -> None:
    for bar in bars:
        bus.publish(BAR, bar)


async def wait_until(condition: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` every 10 ms; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or condition}")
        await asyncio.sleep(0.01)
