"""/metrics and /health against a real run: the local exchange under a fault schedule,
python-binance, the CSV recorder, and an HTTP client scraping the app's endpoint.

The scraped numbers are checked against what the CSV holds and what the exchange served
(its ground truth and its own count of REST calls and weight), parsed with
``prometheus_client``'s own text parser.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quantcore.app import App, RunSummary
from quantcore.config import ConfigError, parse_config
from quantcore.quality import check_csv
from quantcore.sim import LocalExchange, ReplaySource
from tests.harness import app_config, caught_up, csv_rows, inject_faults, truth_since, wait_until
from tests.paths import CSV_BTC

BARS = 150
STREAM = {"symbol": "BTCUSDT", "interval": "1m"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, app: App) -> Samples:
    """Every sample of /metrics, keyed by (name, labels)."""
    assert app.metrics is not None
    async with session.get(f"{app.metrics.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def get_health(session: aiohttp.ClientSession, app: App) -> tuple[int, Any]:
    assert app.metrics is not None
    async with session.get(f"{app.metrics.url}/health") as response:
        return response.status, await response.json()


async def start_with_metrics(
    exchange: LocalExchange, folder: Path
) -> tuple[App, asyncio.Task[RunSummary]]:
    """An App recording to ``folder`` with metrics on an ephemeral port, once it serves."""
    config = app_config(
        exchange,
        str(folder / "{symbol}_{interval}.csv"),
        feed={"stall_timeout": 0.5, "reconnect": {"initial_delay": 0.05, "max_delay": 0.3}},
        metrics={"port": 0},
    )
    app = App(config)
    run = asyncio.create_task(app.run())
    await wait_until(lambda: app.metrics is not None and app.metrics.port != 0, 10, "metrics")
    return app, run


@pytest.mark.timeout(120)
async def test_metrics_match_the_csv_and_the_exchange_under_faults(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "BTCUSDT_1m.csv"
    source = ReplaySource.from_file(CSV_BTC)
    async with LocalExchange([source], speed=1200, updates_per_bar=4) as exchange:
        app, run = await start_with_metrics(exchange, tmp_path)
        async with aiohttp.ClientSession() as session:
            scrapes: list[Samples] = []

            async def keep_scraping() -> None:
                while True:
                    scrapes.append(await scrape(session, app))
                    await asyncio.sleep(0.2)

            scraper = asyncio.create_task(keep_scraping())
            await wait_until(lambda: path.exists() and len(csv_text(path)) > 3, 10, "first bars")
            faults = await inject_faults(
                exchange, rng, lambda: len(exchange.closed_klines("BTCUSDT", "1m")) >= BARS
            )
            await wait_until(lambda: caught_up(exchange, path), 20, "the CSV to catch up")
            scraper.cancel()
            await asyncio.gather(scraper, return_exceptions=True)
            # The market plays on: a scrape counts only when no bar reached the CSV
            # during it, so the counters and the file describe the same moment.
            while True:
                before = len(csv_rows(path))
                final = await scrape(session, app)
                if len(csv_rows(path)) == before:
                    break
        feed = app.feed
        assert feed is not None
        rest_calls_served = sum(exchange.limits.rest_calls.values())
        weight_served = exchange.limits.rest_weight
        app.stop()
        summary = await asyncio.wait_for(run, 10)

        rows = csv_rows(path)
        assert rows == truth_since(exchange, rows[0], len(rows))
    assert summary.bars_recorded == len(rows)
    rows = rows[:before]

    stream = {"symbol": "BTCUSDT", "interval": "1m"}
    assert value(final, "quantcore_bars_total", **stream) == len(rows)
    recorded = value(final, "quantcore_bars_recorded_total", sink="CsvRecorder", **stream)
    assert recorded == len(rows)
    last_open = value(final, "quantcore_bar_last_open_time_seconds", **stream)
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_open)) == rows[-1][6]
    backfilled = value(final, "quantcore_bars_backfilled_total", **stream)
    assert backfilled == feed.stats.backfilled and 0 < backfilled < len(rows)
    assert value(final, "quantcore_bar_lag_seconds_count", **stream) == len(rows)

    binance = {"feed": "binance"}
    reconnects = value(final, "quantcore_feed_reconnects_total", **binance)
    assert reconnects >= faults.count("drop") + faults.count("restart") > 0
    assert value(final, "quantcore_connection_reconnects_total", connection="0",
                 streams="btcusdt@kline_1m") == reconnects  # fmt: skip
    assert value(final, "quantcore_feed_malformed_total", **binance) >= 1
    assert value(final, "quantcore_feed_duplicates_total", **binance) >= 1
    # The feed counts requests it sent; the exchange those it received (a restart can
    # swallow one in flight), so the feed's numbers bound the exchange's from above.
    assert value(final, "quantcore_feed_rest_calls_total", **binance) >= rest_calls_served > 0
    assert value(final, "quantcore_rest_weight_spent_total") >= weight_served > 0
    assert value(final, "quantcore_rest_weight_used") == feed.rest_budget.used_reported > 0
    assert value(final, "quantcore_rest_weight_limit") == 3000
    assert value(final, "quantcore_sink_buffered", sink="CsvRecorder") == 0

    assert len(scrapes) >= 3
    counters = [name for name, labels in final if name.endswith("_total")]
    for earlier, later in zip(scrapes, [*scrapes[1:], final], strict=True):
        for key, number in earlier.items():
            if key[0] in counters:
                assert later[key] >= number, key

    report = check_csv(path)
    assert report.clean, report.lines()
    assert report.rows == summary.bars_recorded


def csv_text(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.timeout(90)
async def test_health_is_503_during_a_stall_and_200_again_after(tmp_path: Path) -> None:
    source = ReplaySource.from_file(CSV_BTC)
    async with LocalExchange([source], speed=60, updates_per_bar=4) as exchange:
        app, run = await start_with_metrics(exchange, tmp_path)
        async with aiohttp.ClientSession() as session:
            first = await wait_for_status(session, app, 200, 20)
            assert first["streams"]["BTCUSDT 1m"]["healthy"] is True
            exchange.stall(5.0)
            stalled_at = time.monotonic()
            during = await wait_for_status(session, app, 503, 5)
            assert time.monotonic() - stalled_at < 5.0
            verdict = during["streams"]["BTCUSDT 1m"]
            assert during["status"] == "unhealthy" and verdict["healthy"] is False
            assert "btcusdt@kline_1m" in verdict["reason"], verdict
            after = await wait_for_status(session, app, 200, 15)
            assert time.monotonic() - stalled_at > 5.0
            assert after["streams"]["BTCUSDT 1m"]["reason"] == "live"
            samples = await scrape(session, app)
        labels = {"connection": "0", "streams": "btcusdt@kline_1m"}
        assert value(samples, "quantcore_connection_stalls_total", **labels) >= 1
        assert value(samples, "quantcore_connection_state", state="live", **labels) == 1
        assert value(samples, "quantcore_stream_healthy", **STREAM) == 1
        app.stop()
        await asyncio.wait_for(run, 10)


async def wait_for_status(
    session: aiohttp.ClientSession, app: App, status: int, seconds: float
) -> Any:
    """Poll /health every 50 ms until it answers ``status``; returns that JSON body."""
    deadline = time.monotonic() + seconds
    seen: list[tuple[int, Any]] = []
    while time.monotonic() < deadline:
        code, body = await get_health(session, app)
        if code == status:
            return body
        seen.append((code, body))
        await asyncio.sleep(0.05)
    raise AssertionError(f"/health never answered {status} in {seconds}s; last: {seen[-1:]}")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "metrics.port: missing"),
        ({"port": 70000}, "metrics.port: 70000 is not an integer <= 65535"),
        ({"port": -1}, "metrics.port: -1 is not an integer >= 0"),
        ({"port": 0, "host": ""}, "metrics.host: '' is not a string of length >= 1"),
        ({"port": 0, "path": "/m"}, "metrics.path: unknown setting"),
    ],
)
def test_bad_metrics_section_is_a_config_error(section: dict[str, Any], message: str) -> None:
    raw = {"streams": [STREAM], "metrics": section}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw)


def test_metrics_are_off_when_absent_and_loopback_by_default() -> None:
    assert parse_config({"streams": [STREAM]}).metrics is None
    config = parse_config({"streams": [STREAM], "metrics": {"port": 9464}}).metrics
    assert config is not None and (config.host, config.port) == ("127.0.0.1", 9464)


@pytest.mark.timeout(30)
async def test_metrics_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=60) as exchange:
            config = app_config(
                exchange, str(tmp_path / "{symbol}_{interval}.csv"), metrics={"port": port}
            )
            with pytest.raises(
                ConfigError, match=f"metrics: listening on 127.0.0.1:{port} is already in use"
            ):
                await App(config).run(duration=5)
    assert (tmp_path / "BTCUSDT_1m.csv").read_text().count("\n") <= 1  # no bar: never connected
