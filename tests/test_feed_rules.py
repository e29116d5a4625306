"""The feed's rules that need no exchange: limits, the exchange clock, connection planning,
base-URL forms, week alignment; plus the future-resume startup error end to end."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.config import ConfigError, parse_config
from quantcore.feeds.binance.clock import ExchangeClock
from quantcore.feeds.binance.feed import BinanceFeedSettings, BinanceKlineFeed
from quantcore.feeds.binance.limits import (
    ConnectionBudget,
    ConnectLimits,
    RestBudget,
    RestLimits,
    connection_budget,
    rest_budget,
)
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.venues import SPOT
from quantcore.intervals import bar_open_ms, interval_ms
from quantcore.sim import LocalExchange, Realism, ReplaySource
from tests.harness import app_config
from tests.paths import REST_BTC


async def test_connection_budget_spaces_attempts_and_caps_the_window() -> None:
    budget = ConnectionBudget(ConnectLimits(attempts=3, window=0.6, spacing=0.1))
    stamps = []
    for _ in range(5):
        await budget.acquire()
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.09
    # the 4th attempt had to wait for the 1st to leave the 0.6 s window
    assert stamps[3] - stamps[0] >= 0.59
    assert budget.recent <= 3


def test_the_strictest_callers_limits_hold_for_a_host() -> None:
    """Binance counts per IP: a second feed's tighter limits are not lost to the first's."""
    rest = rest_budget("http://127.0.0.1:1/api", RestLimits(weight_per_minute=3000))
    assert rest_budget("http://127.0.0.1:1/fapi", RestLimits(weight_per_minute=500)) is rest
    assert rest_budget("http://127.0.0.1:1/", RestLimits()).limits.weight_per_minute == 500
    ws = connection_budget("ws://127.0.0.1:1/ws", ConnectLimits(attempts=50, window=60))
    connection_budget("ws://127.0.0.1:1/ws", ConnectLimits(attempts=80, window=300, spacing=0))
    assert ws.limits == ConnectLimits(attempts=50, window=300, spacing=0.25)


async def test_connection_budget_honours_a_ban() -> None:
    budget = ConnectionBudget(ConnectLimits(attempts=100, window=10, spacing=0))
    budget.ban(0.3)
    started = time.monotonic()
    await budget.acquire()
    assert time.monotonic() - started >= 0.29


async def test_rest_budget_waits_out_retry_after_for_every_caller() -> None:
    budget = RestBudget(RestLimits(weight_per_minute=6000))
    budget.ban(0.3)
    started = time.monotonic()
    await asyncio.gather(budget.acquire(2), budget.acquire(2), budget.acquire(1))
    assert time.monotonic() - started >= 0.29
    assert budget.rate_limited == 1 and budget.spent == 5


async def test_rest_budget_trusts_the_exchange_count() -> None:
    budget = RestBudget(RestLimits(weight_per_minute=100))
    await budget.acquire(2)
    budget.report_used(99)
    minute = int(time.time() // 60)
    waiter = asyncio.create_task(budget.acquire(2))
    await asyncio.sleep(0.1)
    # the exchange said 99 of 100 are used: the next call waits for the next minute
    assert not waiter.done() or int(time.time() // 60) != minute
    waiter.cancel()


async def test_the_rest_client_sends_nothing_inside_retry_after_after_a_429() -> None:
    """Against the local exchange's weight limit: the client counts by the exchange's
    ``X-MBX-USED-WEIGHT-1M``, a 429 fails the call and bans the host's budget for its
    Retry-After, and the next call waits instead of being sent (no 418 follows)."""
    realism = Realism(weight_limit=10, weight_window=30.0)
    async with LocalExchange(symbols=["BTCUSDT"], speed=1.0, realism=realism) as ex:
        rest = BinanceRest(ex.rest_url, SPOT, RestLimits(weight_per_minute=6000))
        try:
            assert await rest.server_time() == pytest.approx(ex.now_ms, abs=5_000)
            with pytest.raises(BackfillError) as refused:
                for _ in range(10):
                    assert len(await rest.klines("BTCUSDT", "1m", None, None, 2)) == 2
            assert "BTCUSDT 1m klines: HTTP 429 -1003 Too many requests" in str(refused.value)
            assert rest.budget.rate_limited == rest.stats.rate_limited == 1
            assert rest.budget.used_reported == ex.limits.rest_weight == 9
            calls = sum(ex.limits.rest_calls.values())
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(rest.server_time(), 0.5)
            assert sum(ex.limits.rest_calls.values()) == calls and ex.limits.rest_418 == 0
        finally:
            await rest.aclose()


async def test_the_rest_client_names_the_call_and_the_exchange_error() -> None:
    async with LocalExchange(symbols=["BTCUSDT"], speed=1.0) as ex:
        rest = BinanceRest(ex.rest_url, SPOT, RestLimits())
        try:
            with pytest.raises(BackfillError, match=r"^NOPEUSDT 1m klines: HTTP 400 -1121 Inv"):
                await rest.klines("NOPEUSDT", "1m", None, None, 2)
            info = await rest.exchange_info(["BTCUSDT"])
            assert [entry["symbol"] for entry in info["symbols"]] == ["BTCUSDT"]
            assert rest.stats.rest_calls == 2
        finally:
            await rest.aclose()


def test_exchange_clock_learns_the_rate_it_runs_at() -> None:
    clock = ExchangeClock()
    assert clock.rate == 1.0
    clock.observe(1_000_000, at=100.0)
    clock.observe(1_000_000 + 600 * 3_000, at=103.0)  # 3 local s, 30 exchange minutes
    assert clock.rate == pytest.approx(600.0)


def test_connections_stay_under_the_url_and_stream_limits() -> None:
    symbols = [f"S{i:05d}USDT" for i in range(2000)]
    feed = BinanceKlineFeed(EventBus(), [(s, "1m") for s in symbols], BinanceFeedSettings())
    connections = feed.plan_connections()
    base = len(feed.settings.ws_url) + len("stream?streams=")
    for conn in connections:
        url = base + len("/".join(conn.names))
        assert url <= 8000 and len(conn.names) <= 1024
    assert sum(len(c.names) for c in connections) == 2000
    assert len(connections) == 2000 * len("s00000usdt@kline_1m/") // 7900 + 1


@pytest.mark.parametrize(
    ("given", "ws"),
    [
        ("wss://stream.testnet.binance.vision/ws", "wss://stream.testnet.binance.vision/"),
        ("wss://stream.testnet.binance.vision/ws/", "wss://stream.testnet.binance.vision/"),
        ("wss://data-stream.binance.vision", "wss://data-stream.binance.vision/"),
        ("wss://stream.binance.com:9443/stream", "wss://stream.binance.com:9443/"),
    ],
)
def test_documented_ws_base_urls_are_normalized(given: str, ws: str) -> None:
    config = parse_config({"exchange": {"ws_url": given}, "streams": [{"symbol": "BTCUSDT"}]})
    assert config.feed.ws_url == ws


@pytest.mark.parametrize(
    ("given", "rest"),
    [
        ("https://data-api.binance.vision/api", "https://data-api.binance.vision/api"),
        ("https://testnet.binance.vision/api/v3/", "https://testnet.binance.vision/api"),
    ],
)
def test_documented_rest_base_urls_are_normalized(given: str, rest: str) -> None:
    config = parse_config({"exchange": {"rest_url": given}, "streams": [{"symbol": "BTCUSDT"}]})
    assert config.feed.rest_url == rest


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ws_url", "wss://stream.binance.com:9443/ws/btcusdt@kline_1m", "not a stream path"),
        ("rest_url", "https://api.binance.com/", "expected the REST base ending in /api"),
    ],
)
def test_stream_paths_and_wrong_rest_bases_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"exchange.{key}: .*{message}"):
        parse_config({"exchange": {key: value}, "streams": [{"symbol": "BTCUSDT"}]})


def test_monthly_interval_is_refused_clearly() -> None:
    with pytest.raises(
        ConfigError, match=r"streams\[0\]\.interval: '1M' is not a fixed-length .*calendar months"
    ):
        parse_config({"streams": [{"symbol": "BTCUSDT", "interval": "1M"}]})


def test_weekly_bars_open_on_monday() -> None:
    thursday_noon = 1_694_088_000_000  # 2023-09-07 12:00 UTC, a Thursday
    monday = 1_693_785_600_000  # 2023-09-04 00:00 UTC
    assert bar_open_ms(thursday_noon, "1w") == monday
    assert bar_open_ms(monday, "1w") == monday
    assert bar_open_ms(monday - 1, "1w") == monday - interval_ms("1w")
    assert time.gmtime(monday / 1000).tm_wday == 0


@pytest.mark.timeout(30)
async def test_resume_point_in_the_future_is_a_clear_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    async with LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=3) as exchange:
        future = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(exchange.now_ms / 1000 + 3600))
        original = f"close,high,low,open,volume,baseVolume,datetime\n1,1,1,1,1,1,{future}\n"
        path.write_text(original)
        app = App(app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv")))
        with pytest.raises(ConfigError) as caught:
            await app.run(duration=10)
    message = str(caught.value)
    assert message.startswith(f"{path}: BTCUSDT 1m: the last recorded bar ({future} UTC)")
    assert "is in the future of the exchange's clock" in message
    assert path.read_text() == original
    assert app.feed is not None and app.feed.stats.bars == 0
