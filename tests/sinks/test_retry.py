"""RetryBuffer: batch by size or delay, retry whole batches in order, spill to a journal,
and refuse only the newest items when even that fails (never a hole in the middle)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from quantcore.backoff import Backoff
from quantcore.events import FeedState
from quantcore.sinks.journal import Journal
from quantcore.sinks.retry import RetryBuffer
from tests.disk import small_disk
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


async def test_overflow_without_journal_refuses_the_newest_and_stops_once() -> None:
    target = Target()
    target.down = True
    stops: list[int] = []
    buffer = RetryBuffer(
        "t", target.write, target.report, batch_size=2, max_delay=0, capacity=5, backoff=FAST,
        on_overflow=lambda: stops.append(1),
    )  # fmt: skip
    buffer.start()
    buffer.put(0)
    buffer.put(1)
    await wait_until(lambda: buffer.failures >= 1)
    for i in range(2, 12):
        buffer.put(i)
    assert buffer.dropped == 5 and buffer.refusing and stops == [1]
    drops = [detail for state, detail in target.reports if state is FeedState.DROPPED]
    assert len(drops) == 1 and "every later one are not kept" in drops[0]
    target.down = False
    await wait_until(lambda: len(target.items) == 7)
    assert target.items == list(range(7)), "what was kept is whole: no hole in the middle"
    assert await buffer.close(1.0) == 0


def bar_journal(path: Path) -> Journal[int]:
    return Journal(path, lambda n: str(n).encode(), lambda line: int(line))


async def test_spills_to_a_journal_in_order_and_removes_it_when_drained(tmp_path: Path) -> None:
    target = Target()
    target.down = True
    path = tmp_path / "sink.journal"
    buffer = RetryBuffer(
        "t", target.write, target.report, batch_size=2, max_delay=0, capacity=5, backoff=FAST,
        journal=bar_journal(path),
    )  # fmt: skip
    buffer.start()
    buffer.put(0)
    buffer.put(1)
    await wait_until(lambda: buffer.failures >= 1)
    for i in range(2, 100):
        buffer.put(i)
    assert buffer.dropped == 0 and len(buffer) == 100
    assert buffer.journaled == 93, "memory holds the batch in flight plus capacity, no more"
    assert path.read_text().split() == [str(i) for i in range(7, 100)]
    spill = [d for state, d in target.reports if "spilling to" in d]
    assert spill == [f"memory backlog full (5 items): spilling to {path}"]
    target.down = False
    for i in range(100, 150):  # arrive while the journal drains: they queue behind it
        buffer.put(i)
        await asyncio.sleep(0)
    await wait_until(lambda: len(target.items) == 150)
    assert target.items == list(range(150))
    assert not path.exists() and buffer.journaled == 0
    buffer.put(150)
    await wait_until(lambda: len(target.items) == 151)
    assert not path.exists(), "once drained, bars stay in memory again"
    assert await buffer.close(1.0) == 0


async def test_journal_that_cannot_be_written_refuses_the_tail_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = Target()
    target.down = True
    stops: list[int] = []
    with small_disk(tmp_path / "disk", monkeypatch) as disk:
        path = disk.root / "sink.journal"
        buffer = RetryBuffer(
            "t", target.write, target.report, batch_size=2, max_delay=0, capacity=5,
            backoff=FAST, journal=bar_journal(path), on_overflow=lambda: stops.append(1),
        )  # fmt: skip
        buffer.start()
        buffer.put(0)
        buffer.put(1)
        await wait_until(lambda: buffer.failures >= 1)
        for i in range(2, 10):
            buffer.put(i)
        assert buffer.journaled == 3
        disk.fill()
        try:
            refused = 10  # the journal's last page may still take a few lines
            while not buffer.refusing and refused < 5000:
                buffer.put(refused)
                refused += 1
            refused -= 1
            buffer.put(5000)
        finally:
            disk.free()
        assert stops == [1] and buffer.refusing and buffer.dropped == 2
        buffer.put(5001)
        assert buffer.dropped == 3, "refused from the first failure on, even with room again"
        drops = [detail for state, detail in target.reports if state is FeedState.DROPPED]
        assert len(drops) == 1 and f"journal {path} cannot be written" in drops[0]
        lines = path.read_text().split("\n")
        assert lines == [str(i) for i in range(7, refused)] + [""], "no torn line is left"
        target.down = False
        await wait_until(lambda: len(target.items) == refused)
        assert target.items == list(range(refused))
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
