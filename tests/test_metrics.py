"""/metrics and /health against a real run: the local exchange under a fault schedule,
python-binance, the CSV recorder, and an HTTP client scraping the app's endpoint.

The scraped numbers are checked against what the CSV holds and what the exchange served
(its ground truth and its own count of REST calls and weight), parsed with
``prometheus_client``'s own text parser. With several venues, one endpoint serves them
all, each venue's series checked against that venue's CSV.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from quantcore.app import App, RunSummary
from quantcore.config import AppConfig, ConfigError, MetricsConfig, parse_config
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.feeds.binance.venues import COINM, SPOT, USDM
from quantcore.metrics import MetricsServer
from quantcore.quality import check_csv
from quantcore.replay.feed import replay_config
from quantcore.replay.settings import ReplaySettings
from quantcore.sim import LocalExchange
from tests.harness import (
    Row,
    app_config,
    caught_up,
    csv_rows,
    inject_faults,
    truth_since,
    wait_until,
)
from tests.paths import CSV_BTC, REPO, replay
from tests.sinks.helpers import make_bar

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
    source = replay(CSV_BTC)
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
    source = replay(CSV_BTC)
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
        async with LocalExchange([replay(CSV_BTC)], speed=60) as exchange:
            config = app_config(
                exchange, str(tmp_path / "{symbol}_{interval}.csv"), metrics={"port": port}
            )
            with pytest.raises(
                ConfigError, match=f"metrics: listening on 127.0.0.1:{port} is already in use"
            ):
                await App(config).run(duration=5)
    # never connected, and the refused start leaves nothing behind (no header-only CSV)
    assert os.listdir(tmp_path) == []


VENUE_FILES = {
    SPOT.name: ("BTCUSDT", Path("BTCUSDT_1m.csv")),
    USDM.name: ("BTCUSDT", Path(USDM.name) / "BTCUSDT_1m.csv"),
    COINM.name: ("BTCUSD_PERP", Path(COINM.name) / "BTCUSD_PERP_1m.csv"),
}


def venues_config(folder: Path, speed: float) -> AppConfig:
    """config/demo_venues.yaml, offline, recording to ``folder``, metrics on any free port."""
    raw = yaml.safe_load((REPO / "config" / "demo_venues.yaml").read_text())
    raw["exchange"]["local"]["speed"] = speed
    raw["consumers"] = [
        {"class": "csv", "params": {"path": str(folder / "{symbol}_{interval}.csv")}}
    ]
    raw["metrics"] = {"port": 0}
    return parse_config(raw, "demo_venues.yaml")


@pytest.mark.timeout(60)
async def test_one_endpoint_serves_every_venue_and_matches_each_csv(tmp_path: Path) -> None:
    """The three-venue offline demo with ``metrics:``: the parent's one endpoint reports
    each venue's stream apart (``venue`` label), equal to that venue's own CSV."""
    app = App(venues_config(tmp_path, speed=300))
    assert all(part.config.metrics is None for part in app.parts)
    run = asyncio.create_task(app.run())
    files = {venue: tmp_path / file for venue, (_, file) in VENUE_FILES.items()}
    try:
        await wait_until(lambda: app.metrics is not None and app.metrics.port != 0, 10, "metrics")
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: all(len(rows_of(f)) > 5 for f in files.values()), 30, "CSVs")
            healthy = await wait_for_status(session, app, 200, 10)
            # The markets play on: a scrape counts only when no venue's CSV grew during it.
            while True:
                before = {venue: rows_of(f) for venue, f in files.items()}
                final = await scrape(session, app)
                if {venue: rows_of(f) for venue, f in files.items()} == before:
                    break
    finally:
        app.stop()
        await asyncio.wait_for(run, 15)

    assert healthy["status"] == "ok"
    assert set(healthy["streams"]) == {f"{v} {s} 1m" for v, (s, _) in VENUE_FILES.items()}
    assert all(v["healthy"] and v["reason"] == "live" for v in healthy["streams"].values())
    for venue, (symbol, _) in VENUE_FILES.items():
        rows = before[venue]
        stream = {"venue": venue, "symbol": symbol, "interval": "1m"}
        assert value(final, "quantcore_bars_total", **stream) == len(rows)
        recorded = value(final, "quantcore_bars_recorded_total", sink="CsvRecorder", **stream)
        assert recorded == len(rows)
        last_open = value(final, "quantcore_bar_last_open_time_seconds", **stream)
        assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_open)) == rows[-1][6]
        assert value(final, "quantcore_stream_healthy", **stream) == 1
        assert value(final, "quantcore_bar_lag_seconds_count", **stream) == len(rows)
        assert value(final, "quantcore_sink_buffered", venue=venue, sink="CsvRecorder") == 0
        assert value(final, "quantcore_rest_weight_spent_total", venue=venue) > 0
    feeds = {SPOT.name: "binance", USDM.name: USDM.name, COINM.name: COINM.name}
    for venue, feed in feeds.items():
        assert value(final, "quantcore_feed_frames_total", venue=venue, feed=feed) > 0
        symbol = VENUE_FILES[venue][0]
        connection = {"venue": venue, "connection": "0", "streams": f"{symbol.lower()}@kline_1m"}
        assert value(final, "quantcore_connection_state", state="live", **connection) == 1
    assert all(dict(labels).get("venue") in VENUE_FILES for _, labels in final)


def rows_of(path: Path) -> list[Row]:
    """The CSV's rows, none before the file holds its header."""
    return csv_rows(path) if path.exists() and path.stat().st_size else []


async def test_health_names_the_venue_of_each_problem_one_venue_as_before(tmp_path: Path) -> None:
    """Before any feed runs every stream is a problem: with several venues /health and
    the gauge name each by venue and stream; one venue's JSON and labels never change."""
    multi = App(venues_config(tmp_path, speed=60))
    csv = {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}}
    single = App(parse_config({"streams": [STREAM], "consumers": [csv], "metrics": {"port": 0}}))
    servers = [MetricsServer(app, MetricsConfig(port=0)) for app in (multi, single)]
    for server in servers:
        await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            answers = []
            for server in servers:
                async with session.get(f"{server.url}/health") as response:
                    answers.append((response.status, await response.json()))
                async with session.get(f"{server.url}/metrics") as response:
                    answers.append((response.status, await response.text()))
    finally:
        for server in servers:
            await server.stop()
    (multi_code, multi_health), (_, multi_text), (code, single_health), (_, text) = answers
    problem = {"healthy": False, "reason": "feed not started"}
    recording = {"healthy": True, "reason": "recording"}
    assert (multi_code, code) == (503, 503)
    assert multi_health == {
        "status": "unhealthy",
        "streams": {f"{v} {s} 1m": problem for v, (s, _) in VENUE_FILES.items()},
        "recorders": {f"{v} CsvRecorder": recording for v in VENUE_FILES},
    }
    assert single_health == {
        "status": "unhealthy",
        "streams": {"BTCUSDT 1m": problem},
        "recorders": {"CsvRecorder": recording},
    }
    assert sample_lines(multi_text) == [
        *(
            f'quantcore_stream_healthy{{interval="1m",symbol="{s}",venue="{v}"}} 0.0'
            for v, (s, _) in VENUE_FILES.items()
        ),
        *(f'quantcore_sink_buffered{{sink="CsvRecorder",venue="{v}"}} 0.0' for v in VENUE_FILES),
        *(
            f'quantcore_recorder_healthy{{recorder="CsvRecorder",venue="{v}"}} 1.0'
            for v in VENUE_FILES
        ),
    ]
    assert sample_lines(text) == [
        'quantcore_stream_healthy{interval="1m",symbol="BTCUSDT"} 0.0',
        'quantcore_sink_buffered{sink="CsvRecorder"} 0.0',
        'quantcore_recorder_healthy{recorder="CsvRecorder"} 1.0',
    ]


def sample_lines(text: str) -> list[str]:
    """The exposition's sample lines, comments left out."""
    return [line for line in text.splitlines() if not line.startswith("#")]


async def test_a_replay_is_judged_by_its_last_bar_alone(tmp_path: Path) -> None:
    """A replay has no connection and no REST budget: /health judges its stream by the
    last bar only (a replay of the past: 503, naming that bar), /metrics counts what it
    replayed and shows no connection. (The replay's settings, probed as if they were
    the Binance feed's, used to fail both.)"""
    template = str(tmp_path / "{symbol}_{interval}.csv")
    bars = [make_bar(i) for i in range(3)]
    (tmp_path / "BTCUSDT_1m.csv").write_text(HEADER + "".join(map(format_row, bars)))
    csv = {"class": "csv", "params": {"path": template}}
    raw = {"streams": [STREAM], "consumers": [csv], "metrics": {"port": 0}}
    app = App(replay_config(parse_config(raw), ReplaySettings(speed=30)))  # a bar per 2 s
    run = asyncio.create_task(app.run())
    try:
        await wait_until(lambda: app.feed is not None and app.feed.stats.bars == 1, 10, "bar 1")
        async with aiohttp.ClientSession() as session:
            code, body = await get_health(session, app)
            samples = await scrape(session, app)
    finally:
        app.stop()
        await asyncio.wait_for(run, 10)
    verdict = body["streams"]["BTCUSDT 1m"]
    assert (code, body["status"], body["recorders"]) == (503, "unhealthy", {})
    assert verdict["last_open"] == f"{bars[0].open_time:%Y-%m-%d %H:%M:%S}"
    assert verdict["reason"].startswith("last closed bar closed ")
    assert verdict["reason"].endswith("s ago (exchange time), more than 130s")
    assert value(samples, "quantcore_bars_total", **STREAM) == 1
    assert value(samples, "quantcore_feed_frames_total", feed="replay") == 1
    assert not [
        name for name, _ in samples if name.startswith(("quantcore_connection", "quantcore_rest"))
    ]
