"""Redis Streams fan-out: a publisher on one bus, RedisStreamFeed on another ("process").

Every scenario checks the consuming side saw exactly the closed bars, in order, equal
field for field, through publisher restarts, consumer restarts and a Redis restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from quantcore.backoff import Backoff
from quantcore.bus import EventBus
from quantcore.events import BAR_PARTIAL, BarEvent, FeedState
from quantcore.feeds.redis_stream import RedisStreamFeed
from quantcore.sinks.redis_streams import RedisStreamPublisher, stream_name
from tests.sinks.helpers import (
    STREAM,
    BarLog,
    StatusLog,
    make_bar,
    publish,
    start_all,
    stop_all,
    wait_until,
)
from tests.sinks.servers import RedisServer

FAST = Backoff(initial=0.02, maximum=0.2)


class Consumer:
    """The other process: its own bus, a RedisStreamFeed and a log of what it published."""

    def __init__(self, url: str, prefix: str, *, partials: bool = False) -> None:
        self.bus = EventBus()
        self.log = BarLog(self.bus)
        self.partials = BarLog(self.bus, BAR_PARTIAL)
        self.status = StatusLog(self.bus)
        self.feed = RedisStreamFeed(
            self.bus, [STREAM], group="reader", url=url, prefix=prefix,
            partials=partials, block=0.1, backoff=FAST,
        )  # fmt: skip
        self.task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Consumer]:
        self.task = asyncio.create_task(self.feed.run())
        try:
            await wait_until(lambda: FeedState.LIVE in self.status.states("redis"), 5.0, "LIVE")
            yield self
        finally:
            self.feed.stop()
            await self.task
            await self.bus.close()


def publisher(url: str, prefix: str, **params: object) -> RedisStreamPublisher:
    return RedisStreamPublisher(url=url, prefix=prefix, retry_max=0.2, **params)  # type: ignore[arg-type]


def bars(first: int, last: int) -> list[BarEvent]:
    return [make_bar(i) for i in range(first, last)]


async def received(consumer: Consumer, expected: Sequence[BarEvent]) -> None:
    await wait_until(lambda: len(consumer.log.bars) >= len(expected), 10.0, f"{len(expected)} bars")
    await asyncio.sleep(0.05)
    assert consumer.log.bars == list(expected)


async def test_other_process_receives_exactly_the_closed_bars_in_order(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    pub = publisher(redis_server.url, prefix)
    await start_all(bus, [pub])
    sent = bars(0, 50)
    async with Consumer(redis_server.url, prefix).running() as consumer:
        publish(bus, sent[:20])
        publish(bus, [make_bar(20, closed=False)])
        publish(bus, sent[5:15])
        publish(bus, sent[20:])
        await received(consumer, sent)
        assert consumer.feed.stats.duplicates == 0, "Redis itself refused the replayed bars"
    await stop_all(bus, [pub])
    assert pub.duplicates == 10
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    assert await client.xlen(stream_name(prefix, *STREAM)) == 50
    last: Any = await client.xrevrange(stream_name(prefix, *STREAM), count=1)
    assert last[0][0] == f"{sent[-1].open_time_ms}-0"
    await client.aclose()


async def test_publisher_restart_continues_the_sequence(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    async with Consumer(redis_server.url, prefix).running() as consumer:
        bus = EventBus()
        first = publisher(redis_server.url, prefix)
        await start_all(bus, [first])
        publish(bus, bars(0, 10))
        await stop_all(bus, [first])

        bus = EventBus()
        second = publisher(redis_server.url, prefix)
        await start_all(bus, [second])
        assert second.resume_point(*STREAM) == make_bar(9).open_time_ms
        publish(bus, bars(6, 25))
        await stop_all(bus, [second])
        await received(consumer, bars(0, 25))


async def test_consumer_restart_resumes_without_duplicates(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    pub = publisher(redis_server.url, prefix)
    await start_all(bus, [pub])
    async with Consumer(redis_server.url, prefix).running() as consumer:
        publish(bus, bars(0, 10))
        await received(consumer, bars(0, 10))
    publish(bus, bars(10, 20))
    await bus.drain()
    await wait_until(lambda: pub.buffer.written == 20, 5.0, "publisher flush")

    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    key = stream_name(prefix, *STREAM)
    unacked: Any = await client.xreadgroup("reader", "main", {key: ">"}, count=3)
    assert [entry_id for entry_id, _ in unacked[0][1]] == [
        f"{make_bar(i).open_time_ms}-0" for i in (10, 11, 12)
    ], "3 entries delivered to the consumer before it 'crashed', never acknowledged"

    async with Consumer(redis_server.url, prefix).running() as restarted:
        publish(bus, bars(20, 25))
        await received(restarted, bars(10, 25))
    assert await client.xpending(key, "reader") == {
        "pending": 0, "min": None, "max": None, "consumers": [],
    }  # fmt: skip
    await client.aclose()
    await stop_all(bus, [pub])


async def test_redis_restart_both_sides_reconnect(redis_server: RedisServer, unique: str) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    status = StatusLog(bus)
    pub = publisher(redis_server.url, prefix)
    await start_all(bus, [pub])
    async with Consumer(redis_server.url, prefix).running() as consumer:
        publish(bus, bars(0, 10))
        await received(consumer, bars(0, 10))
        redis_server.restart()
        publish(bus, bars(10, 30))
        await received(consumer, bars(0, 30))
        states = consumer.status.states("redis")
        assert FeedState.DISCONNECTED in states or FeedState.ERROR in states
        assert states.count(FeedState.LIVE) >= 2
    await stop_all(bus, [pub])
    assert pub.buffer.dropped == 0
    assert sum(bus.handler_errors.values()) == 0
    assert status.states(pub.name)[0] is FeedState.CONNECTED


async def test_publisher_buffers_while_redis_is_down(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    status = StatusLog(bus)
    pub = publisher(redis_server.url, prefix)
    await start_all(bus, [pub])
    async with Consumer(redis_server.url, prefix).running() as consumer:
        publish(bus, bars(0, 5))
        await received(consumer, bars(0, 5))
        redis_server.stop()
        try:
            publish(bus, bars(5, 20))
            await wait_until(lambda: not pub.buffer.healthy, 5.0, "the outage")
            assert len(pub.buffer) == 15
        finally:
            redis_server.start()
        await received(consumer, bars(0, 20))
    await stop_all(bus, [pub])
    assert [s for s in status.states(pub.name) if s is not FeedState.CONNECTED] == [FeedState.ERROR]


async def test_partial_updates_reach_the_other_process(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    pub = publisher(redis_server.url, prefix, partials=True)
    await start_all(bus, [pub])
    async with Consumer(redis_server.url, prefix, partials=True).running() as consumer:
        # partial updates are read from "$" (what is new once the reader runs): probe
        # until the reader answers, instead of guessing how long a loaded machine takes
        probe = make_bar(0, closed=False)
        async with asyncio.timeout(10):
            while not consumer.partials.bars:
                bus.publish(BAR_PARTIAL, probe)
                await asyncio.sleep(0.05)
        publish(bus, [make_bar(0)])
        updates = [make_bar(1, closed=False, update=u) for u in range(5)]
        for update in updates:
            bus.publish(BAR_PARTIAL, update)
        publish(bus, [make_bar(1)])
        await received(consumer, bars(0, 2))

        def after_probes() -> list[BarEvent]:  # probes still in flight may land late
            return [bar for bar in consumer.partials.bars if bar != probe]

        await wait_until(lambda: len(after_probes()) == 5, 5.0, "partials")
        assert after_probes() == updates
    await stop_all(bus, [pub])


async def test_malformed_entries_are_reported_acknowledged_and_skipped(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    pub = publisher(redis_server.url, prefix)
    await start_all(bus, [pub])
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    key = stream_name(prefix, *STREAM)
    async with Consumer(redis_server.url, prefix).running() as consumer:
        publish(bus, bars(0, 3))
        await received(consumer, bars(0, 3))
        await client.xadd(
            key, {"symbol": "BTCUSDT", "close": "x"}, id=f"{make_bar(2).open_time_ms}-1"
        )
        publish(bus, bars(3, 6))
        await received(consumer, bars(0, 6))
        assert consumer.feed.stats.malformed == 1
        assert FeedState.MALFORMED in consumer.status.states("redis")
    pending: Any = await client.xpending(key, "reader")
    assert pending["pending"] == 0
    await client.aclose()
    await stop_all(bus, [pub])


async def test_consumer_behind_its_group_backfills_from_the_stream(
    redis_server: RedisServer, unique: str
) -> None:
    prefix = f"t{unique}"
    bus = EventBus()
    pub = publisher(redis_server.url, prefix)
    await start_all(bus, [pub])
    async with Consumer(redis_server.url, prefix).running() as consumer:
        publish(bus, bars(0, 10))
        await received(consumer, bars(0, 10))
    restarted = Consumer(redis_server.url, prefix)
    restarted.feed.resume_after(STREAM, make_bar(4).open_time_ms)
    async with restarted.running():
        publish(bus, bars(10, 15))
        await received(restarted, bars(5, 15))
        assert restarted.feed.stats.backfilled == 5
    await stop_all(bus, [pub])
