"""The shared pieces: the reconnect loop every feed runs, the log file, frozen events."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from quantcore.backoff import Backoff
from quantcore.bus import EventBus
from quantcore.config import parse_config
from quantcore.events import BarEvent
from quantcore.feeds.base import DataFeed, ReconnectPolicy
from quantcore.logs import configure_logging


class _Feed(DataFeed):
    def __init__(self) -> None:
        super().__init__(EventBus(), [("BTCUSDT", "1m")], "test")
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        return None

    def stop(self) -> None:
        self.stopping.set()


async def test_supervise_backs_off_counts_and_gives_up() -> None:
    feed, sessions = _Feed(), []

    async def session() -> bool:
        sessions.append(1)
        return len(sessions) == 2  # the second one was healthy: the count starts over

    policy = ReconnectPolicy(Backoff(initial=0.001, maximum=0.001), max_attempts=2)
    await asyncio.wait_for(feed.supervise(session, policy, feed.stopping), 5)
    assert len(sessions) == 4
    assert feed.stats.reconnects == 3
    assert feed.stopping.is_set()


async def test_supervise_returns_on_stop_without_reconnecting() -> None:
    feed = _Feed()

    async def session() -> bool:
        feed.stop()
        return False

    await asyncio.wait_for(feed.supervise(session, ReconnectPolicy(), feed.stopping), 5)
    assert feed.stats.reconnects == 0


def test_logging_file_rotates(tmp_path: Path) -> None:
    path = tmp_path / "quantcore.log"
    config = parse_config(
        {
            "streams": [{"symbol": "BTCUSDT"}],
            "logging": {"file": str(path), "max_bytes": 1024, "backups": 2},
        }
    )
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        configure_logging(config.log_level, config.log_file)
        for i in range(100):
            logging.getLogger("quantcore.test").info("line %d %s", i, "x" * 40)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved, level
    assert path.exists() and path.with_name("quantcore.log.1").exists()
    assert not path.with_name("quantcore.log.3").exists()
    assert logging.getLogger("binance").level == logging.WARNING


def test_bar_event_is_frozen_and_copies_with_replace() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    bar = BarEvent("BTCUSDT", "1m", t, t, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 1.0, 1.0, True, t)
    with pytest.raises(AttributeError):
        bar.close = 2.0  # type: ignore[misc]
    assert msgspec.structs.replace(bar, close=2.0).close == 2.0
    assert bar.key == ("BTCUSDT", "1m") and bar.decimals is None
