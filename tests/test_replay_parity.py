"""Parity: a strategy run live on the realistic local exchange (reconnects, REST-filled
bars, late and missing closes) and then replayed from what that run recorded decides the
same: identical SignalEvents, byte-identical signals CSVs, the same ``signal`` console lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.app import App
from quantcore.config import parse_config
from quantcore.events import SignalEvent
from quantcore.replay.feed import replay_config
from quantcore.replay.settings import ReplaySettings
from strategies.sma_cross import SmaCross
from tests.harness import inject_faults, wait_until
from tests.paths import REPO
from tests.test_realistic import caught_up, feed_settings, realistic_exchange


def consumers(folder: Path, signals: str) -> list[dict[str, Any]]:
    return [
        {"class": "history"},
        {"class": "csv", "params": {"path": str(folder / "{symbol}_{interval}.csv")}},
        {"class": "sqlite", "params": {"path": str(folder / "bars.sqlite")}},
        {"class": "console"},
        {"class": "strategies.sma_cross:SmaCross", "params": {"fast": 3, "slow": 8, "warmup": 8}},
        {"class": "signals", "params": {"path": str(folder / signals)}},
    ]


def signal_lines(text: str) -> list[str]:
    """The console's ``signal …`` lines, without the log timestamp."""
    return [line[line.index("signal  ") :] for line in text.splitlines() if "signal  " in line]


async def replay_signals(config: dict[str, Any], **settings: Any) -> list[SignalEvent]:
    app = App(replay_config(parse_config(config), ReplaySettings(**settings)))
    await app.run()
    [strategy] = [c for c in app.components if isinstance(c, SmaCross)]
    return strategy.signals


@pytest.mark.timeout(150)
async def test_live_run_and_its_replay_give_the_same_signals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(23)
    async with realistic_exchange(
        speed=600, lag_ms=20_000, connection_lifetime=2.0, shutdown_lead=0.3
    ) as exchange:
        raw = {
            "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url},
            "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
            "feed": feed_settings(40, max_connection_age=1.5),
            "consumers": consumers(tmp_path, "live_signals.csv"),
        }
        app = App(parse_config(raw))
        with caplog.at_level(logging.INFO, logger="quantcore.console"):
            run = asyncio.create_task(app.run())
            start = len(exchange.closed_klines("BTCUSDT", "1m"))
            await inject_faults(
                exchange,
                rng,
                lambda: len(exchange.closed_klines("BTCUSDT", "1m")) >= start + 70,
                extra=("shutdown",),
            )
            await wait_until(
                lambda: caught_up(exchange, tmp_path, "BTCUSDT", 60_000), 30, "the CSV"
            )
            app.stop()
            await asyncio.wait_for(run, 15)
        live_console = signal_lines(caplog.text)
    assert app.feed is not None
    stats = app.feed.stats
    assert stats.reconnects > 0 and stats.backfilled > 0, stats.summary()
    [live] = [c for c in app.components if isinstance(c, SmaCross)]
    assert len(live.signals) >= 3, "too few signals to compare"

    replay_raw = {**raw, "consumers": consumers(tmp_path, "replay_signals.csv")}
    assert await replay_signals(replay_raw) == live.signals
    sqlite = {"source": "sqlite", "path": str(tmp_path / "bars.sqlite")}
    assert await replay_signals(replay_raw, **sqlite) == live.signals
    assert len(live_console) == len(live.signals)

    (tmp_path / "replay_signals.csv").unlink()
    config = tmp_path / "replay.yaml"
    config.write_text(yaml.safe_dump(replay_raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "quantcore", "replay", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert signal_lines(done.stdout) == live_console
    live_file = (tmp_path / "live_signals.csv").read_bytes()
    assert live_file.count(b"\n") == len(live.signals) + 1
    assert (tmp_path / "replay_signals.csv").read_bytes() == live_file
