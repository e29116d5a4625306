"""RetryBuffer: batch by size or delay, retry whole batches in order, bounded overflow."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from quantcore.backoff import Backoff
from quantcore.events import FeedState
from quantcore.sinks.retry import RetryBuffer
from tests.sinks.helpers import wait_until

FAST = Backoff(initial=0.01, maximum=0.02)


class Target:
    """A write target that can be switched down; records every successful batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down = False
        self.reports: list[tuple[FeedState, str]] = []

    async def write(self, batch: list[int]) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("server is down")
        self.batches.append(list(batch))

    def report(self, state: FeedState, detail: str, level: int = logging.INFO) -> None:
        self.reports.append((state, detail))

    @property
    def items(self) -> list[int]:
        return [item for batch in self.batches for item in batch]


async def test_batches_by_size_then_by_delay() -> None:
    target = Target()
    buffer = RetryBuffer("t", target.write, target.report, batch_size=4, max_delay=0.2)
    buffer.start()
    for i in range(10):
        buffer.put(i)
    await wait_until(lambda: len(target.items) == 8, 1.0)
    await asyncio.sleep(0.05)
    assert target.batches == [[0, 1, 2, 3], [4, 5, 6, 7]], "the last 2 wait for max_delay"
    await wait_until(lambda: len(target.items) == 10, 1.0)
    assert target.batches[-1] == [8, 9]
    assert await buffer.close(1.0) == 0


async def test_outage_retries_in_order_without_loss_or_duplicates() -> None:
    target = Target()
    buffer = RetryBuffer("t", target.write, target.report, batch_size=3, max_delay=0, backoff=FAST)
    buffer.start()
    buffer.put(0)
    await wait_until(lambda: target.items == [0])
    target.down = True
    for i in range(1, 20):
        buffer.put(i)
    await wait_until(lambda: buffer.failures >= 3)
    assert not buffer.healthy
    target.down = False
    await wait_until(lambda: len(target.items) == 20)
    assert target.items == list(range(20))
    assert [state for state, _ in target.reports] == [FeedState.ERROR, FeedState.CONNECTED]
    assert await buffer.close(1.0) == 0


async def test_overflow_drops_oldest_and_reports_loudly() -> None:
    target = Target()
    target.down = True
    buffer = RetryBuffer(
        "t", target.write, target.report, batch_size=2, max_delay=0, capacity=5, backoff=FAST
    )
    buffer.start()
    buffer.put(0)
    buffer.put(1)
    await wait_until(lambda: buffer.failures >= 1)
    for i in range(2, 12):
        buffer.put(i)
    assert buffer.dropped == 5
    drops = [detail for state, detail in target.reports if state is FeedState.DROPPED]
    assert drops and "dropped 4 oldest" in drops[-1]
    target.down = False
    await wait_until(lambda: len(target.items) == 7)
    assert target.items == [0, 1, 7, 8, 9, 10, 11], "the batch in flight is never dropped"
    assert await buffer.close(1.0) == 0


async def test_close_flushes_and_counts_what_could_not_be_written() -> None:
    target = Target()
    buffer = RetryBuffer("t", target.write, target.report, batch_size=100, max_delay=60)
    buffer.start()
    for i in range(5):
        buffer.put(i)
    assert await buffer.close(1.0) == 0
    assert target.items == list(range(5)), "close writes without waiting for max_delay"

    down = Target()
    down.down = True
    stuck = RetryBuffer("t", down.write, down.report, batch_size=2, max_delay=0, backoff=FAST)
    stuck.start()
    for i in range(5):
        stuck.put(i)
    assert await stuck.close(0.1) == 5
    assert down.reports[-1][0] is FeedState.ERROR and "5 items never written" in down.reports[-1][1]


async def test_close_gives_up_even_if_a_write_swallows_cancellation() -> None:
    async def stubborn(batch: list[int]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)
        raise ConnectionError("refused")

    target = Target()
    buffer = RetryBuffer("t", stubborn, target.report, batch_size=2, max_delay=0, backoff=FAST)
    buffer.start()
    for i in range(3):
        buffer.put(i)
    assert await asyncio.wait_for(buffer.close(0.05), 2.0) == 3
