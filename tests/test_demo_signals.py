"""The quick start's demo (``run config/demo.yaml --max-bars 30``) shows SmaCross signals.

The demo plays the seeded random walk from the current minute, so its 30 bars depend on
when it runs; this checks the demo's own SmaCross parameters on 2,000 fixed 30-bar
windows of that walk (measured: no signal in about 0.1% of windows, 5.5 on average),
then runs the demo config itself, from a pinned minute, and compares its signals.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from quantcore import app as app_module
from quantcore.app import App
from quantcore.config import parse_config
from quantcore.events import SIGNAL, BarEvent, SignalEvent
from quantcore.sim.generator import RandomWalkSource
from strategies.sma_cross import SmaCross
from tests.harness import csv_rows
from tests.paths import REPO

DEMO = REPO / "config" / "demo.yaml"
BARS = 30
MINUTE_MS = 60_000


def demo_raw() -> dict[str, object]:
    raw: dict[str, object] = yaml.safe_load(DEMO.read_text())
    return raw


def sma_params() -> dict[str, int]:
    consumers = demo_raw()["consumers"]
    assert isinstance(consumers, list)
    [entry] = [c for c in consumers if c["class"] == "strategies.sma_cross:SmaCross"]
    params: dict[str, int] = entry["params"]
    return params


def count_signals(closes: list[int], fast: int, slow: int) -> int:
    """SmaCross's rule, on the integer closes of the simulator's bars."""
    strategy = SmaCross(fast=fast, slow=slow)
    strategy.publish = lambda topic, event: None  # type: ignore[method-assign]
    for i, close in enumerate(closes):
        strategy.on_bar(bar(i, close))
    return len(strategy.signals)


def bar(i: int, close: int) -> BarEvent:
    opened = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    price = close / 1e8
    return BarEvent(
        "BTCUSDT", "1m", opened, opened + timedelta(seconds=59.999), price, price, price,
        price, 1.0, price, 1, 0.5, price / 2, True, opened,
    )  # fmt: skip


def test_demo_parameters_signal_within_30_bars_almost_always() -> None:
    params = sma_params()
    local = demo_raw()["exchange"]
    assert isinstance(local, dict)
    source = RandomWalkSource("BTCUSDT", "1m", seed=local["local"]["seed"])
    rng = random.Random(1)
    base = 1_790_000_000_000 // MINUTE_MS * MINUTE_MS
    starts = [base + rng.randrange(5 * 365 * 1440) * MINUTE_MS for _ in range(2000)]
    counts = [
        count_signals([b.close for b in source.bars(s, s + BARS * MINUTE_MS)], **params)
        for s in starts
    ]
    silent = sum(c == 0 for c in counts)
    assert silent <= 0.005 * len(counts), f"{silent} of {len(counts)} windows without a signal"
    assert sum(counts) / len(counts) >= 3


async def test_demo_config_prints_signals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo config as is, but played as fast as possible from a fixed minute (the
    market clock is pinned through the resume hint), so the run is deterministic."""
    monkeypatch.chdir(tmp_path)
    raw = demo_raw()
    raw["exchange"]["local"]["speed"] = "max"  # type: ignore[index]
    pinned = 1_893_456_000_000  # 2030-01-01 00:00 UTC, ahead of the wall clock
    original = app_module.start_local_exchange
    monkeypatch.setattr(
        app_module,
        "start_local_exchange",
        lambda local, streams, resume=None: original(local, streams, {streams[0]: pinned}),
    )
    signals: list[SignalEvent] = []
    app = App(parse_config(raw, str(DEMO)))
    app.bus.subscribe(SIGNAL, signals.append)
    with caplog.at_level(logging.INFO, logger="quantcore.console"):
        summary = await app.run(max_bars=BARS)
    assert summary.bars == BARS
    closes = [round(float(row[0]) * 1e8) for row in csv_rows(tmp_path / "data/demo/BTCUSDT_1m.csv")]
    assert len(closes) == BARS
    assert len(signals) == count_signals(closes, **sma_params()) >= 1
    printed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("signal ")]
    assert len(printed) == len(signals)
