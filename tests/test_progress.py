"""Long work shows progress on a terminal only; a big startup backfill does not scroll
thousands of bar lines past: the console logs backfilled bars at DEBUG and the feed logs
one ``backfilled N bars`` line per stream."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from quantcore.app import App
from quantcore.feeds.binance import settler as feed_module
from quantcore.progress import progress
from quantcore.sim import LocalExchange
from tests.harness import app_config

pytestmark = pytest.mark.timeout(90)


class Recorded:
    """Stands in for the tqdm bar: remembers its total and updates."""

    made: list[Recorded] = []

    def __init__(self, total: int | None, desc: str, **_: Any) -> None:
        self.total, self.desc, self.done, self.closed = total, desc, 0, False
        Recorded.made.append(self)

    def update(self, n: int) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    with progress(10, "x") as bar:  # pytest captures stderr: not a TTY
        assert bar.disable


async def test_big_startup_backfill_shows_progress_and_summarizes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "progress", Recorded)
    Recorded.made.clear()
    warmup = 3500
    async with LocalExchange(symbols=["BTCUSDT"], speed=None, history_bars=4000) as exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            feed={"warmup_bars": warmup, "backfill_limit": 5000, "settle": 0},
        )
        app = App(config)
        with caplog.at_level(logging.INFO):
            await app.run(max_bars=warmup)
    assert app.feed is not None and app.feed.stats.backfilled == warmup
    [bar] = Recorded.made
    assert bar.desc == "backfill BTCUSDT 1m" and bar.total is not None
    assert bar.total >= warmup and bar.done >= warmup and bar.closed
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.startswith("bar ")], "backfilled bars are DEBUG only"
    assert any(f"BTCUSDT 1m: backfilled {warmup} bars" in m for m in messages), messages[-5:]


async def test_small_backfill_draws_no_bar(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "progress", Recorded)
    Recorded.made.clear()
    async with LocalExchange(symbols=["BTCUSDT"], speed=None, history_bars=100) as exchange:
        config = app_config(
            exchange, str(tmp_path / "{symbol}_{interval}.csv"), feed={"warmup_bars": 50}
        )
        with caplog.at_level(logging.DEBUG, logger="quantcore.console"):
            await App(config).run(max_bars=50)
    assert Recorded.made == []
    backfilled = [r for r in caplog.records if r.getMessage().endswith("(backfilled)")]
    assert len(backfilled) == 50 and all(r.levelno == logging.DEBUG for r in backfilled)
