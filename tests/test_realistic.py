"""The feed on an exchange as unkind as Binance: every CSV equals the exchange's FINAL bars.

The local exchange runs its realistic profile (``Realism.binance``): REST klines lag the
stream (a just-closed bar is served with non-final values), ``x:true`` frames arrive late
or never, a quiet tiny-priced symbol pushes nothing for its zero-trade minutes, connections
live a short (compressed) lifetime and are sometimes announced by ``serverShutdown``, and
connection attempts, REST weight, URL length and incoming messages are limited. On top of
that come the classic faults, restarts just after a close (inside the REST lag) and a
kill -9. Values are compared as the exchange's strings, character for character, in the
CSV and in the Parquet store the same runs record (``{folder}/store``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.app import App
from quantcore.config import parse_config
from quantcore.events import utc_text
from quantcore.sim import Kline, LocalExchange, Realism, ReplaySource, sparse
from tests import parquet_check
from tests.harness import inject_faults, wait_until
from tests.paths import CSV_BTC, CSV_SHIB, EXCHANGE_INFO, replay

MINUTE = 60_000
ExactRow = tuple[str, str, str, str, str, str, str]
"""close, high, low, open, volume, quote volume as the exchange's strings; datetime."""


def quiet_shib(start_ms: int, fraction: float = 0.4, max_run: int = 8) -> ReplaySource:
    """The real SHIBUSDT minutes (tiny prices, huge volumes), moved to start at ``start_ms``
    and thinned into a quiet symbol: a seeded share of minutes have no trades at all."""
    real = replay(CSV_SHIB, "SHIBUSDT")
    shift = start_ms - real.first_open_ms
    moved = [
        bar._replace(open_time=bar.open_time + shift, close_time=bar.close_time + shift)
        for bar in real.bars(real.first_open_ms, real.end_ms)
    ]
    return sparse(ReplaySource("SHIBUSDT", moved), fraction, seed=5, max_run=max_run)


def realistic_exchange(speed: float, lag_ms: int, **overrides: Any) -> LocalExchange:
    btc = replay(CSV_BTC)
    profile = Realism.binance(
        seed=20241101,
        rest_lag_ms=lag_ms,
        close_delay_ms=(70, lag_ms // 2),
        missing_close=0.08,
        exchange_info=EXCHANGE_INFO,
        **overrides,
    )
    return LocalExchange(
        [btc, quiet_shib(btc.first_open_ms)],
        speed=speed,
        updates_per_bar=4,
        history_bars=3,
        realism=profile,
    )


def feed_settings(settle_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "stall_timeout": 0.5,
        "settle": settle_s,
        "poll": 0.05,
        "healthy_after": 1.0,
        "reconnect": {"initial_delay": 0.05, "max_delay": 0.3},
        **extra,
    }


def raw_config(exchange: LocalExchange, folder: Path, feed: dict[str, Any]) -> dict[str, Any]:
    return {
        "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url},
        "streams": [
            {"symbol": "BTCUSDT", "interval": "1m"},
            {"symbol": "SHIBUSDT", "interval": "1m"},
        ],
        "feed": feed,
        "consumers": [
            {"class": "csv", "params": {"path": str(folder / "{symbol}_{interval}.csv")}},
            {"class": "console"},
            parquet_check.consumer(folder / "store"),
        ],
    }


def exact_rows(path: Path) -> list[ExactRow]:
    lines = path.read_text().splitlines()
    assert lines[0] == "close,high,low,open,volume,baseVolume,datetime"
    rows = []
    for line in lines[1:]:
        *values, stamp = line.split(",")
        c, h, lo, o, v, q = values
        rows.append((c, h, lo, o, v, q, stamp))
    return rows


def truth(kline: Kline) -> ExactRow:
    from time import gmtime, strftime

    stamp = strftime("%Y-%m-%d %H:%M:%S", gmtime(kline.open_time // 1000))
    return (
        kline.close, kline.high, kline.low, kline.open, kline.volume, kline.quote_volume, stamp
    )  # fmt: skip


def assert_final_bars(exchange: LocalExchange, folder: Path, symbol: str) -> list[ExactRow]:
    """The CSV is a contiguous run of the exchange's final bars: none missing, none twice;
    the Parquet store (``folder/store``, compacted at stop) holds the same rows exactly."""
    rows = assert_final_rows(exchange, exact_rows(folder / f"{symbol}_1m.csv"), symbol)
    parquet_check.assert_store_holds(folder / "store", symbol, rows, exchange)
    return rows


def assert_final_rows(exchange: LocalExchange, rows: list[ExactRow], symbol: str) -> list[ExactRow]:
    """``rows`` are a contiguous run of the exchange's final bars: none missing, none twice."""
    assert rows, f"{symbol}: nothing recorded"
    final = [truth(k) for k in exchange.closed_klines(symbol, "1m", since_ms=0)]
    start = next(i for i, row in enumerate(final) if row[6] == rows[0][6])
    stamps = [row[6] for row in rows]
    missing = sorted({t[6] for t in final[start:] if t[6] <= stamps[-1]} - set(stamps))
    assert not missing, f"{symbol}: {len(missing)} bars missing, first {missing[:5]}"
    assert len(stamps) == len(set(stamps)), f"{symbol}: duplicated bars"
    wrong = [(r, t) for r, t in zip(rows, final[start:], strict=False) if r != t]
    assert not wrong, f"{symbol}: {len(wrong)} rows differ from the final bars, first {wrong[0]}"
    assert rows == final[start : start + len(rows)]
    return rows


def assert_within_limits(exchange: LocalExchange) -> None:
    limits = exchange.limits
    assert limits.rest_429 == 0 and limits.rest_418 == 0, limits
    assert limits.ws_refused_429 == 0 and limits.ws_refused_418 == 0, limits
    assert limits.max_attempts_in_window < 300, limits
    assert limits.url_refused == 0 and limits.rate_disconnects == 0, limits


async def just_after_close(exchange: LocalExchange, within_ms: int) -> None:
    """Wait until the market clock is less than ``within_ms`` past a bar's close."""
    while exchange.now_ms % MINUTE >= within_ms:  # noqa: ASYNC110 (the market clock)
        await asyncio.sleep(0.001)


def caught_up(exchange: LocalExchange, folder: Path, symbol: str, settle_ms: int) -> bool:
    """The CSV holds every bar that has been settled (closed ``settle_ms`` ago) by now."""
    path = folder / f"{symbol}_1m.csv"
    final = exchange.closed_klines(symbol, "1m", since_ms=0)
    settled = [k for k in final if k.close_time < exchange.now_ms - settle_ms]
    if not path.exists() or not settled:
        return False
    lines = path.read_text().splitlines()
    return len(lines) > 1 and lines[-1].rsplit(",", 1)[-1] >= truth(settled[-1])[6]


@pytest.mark.timeout(150)
async def test_fault_schedule_on_the_realistic_exchange_records_the_final_bars(
    tmp_path: Path, transport: str
) -> None:
    """Restarts land just after a close, inside the REST lag, where a REST row is still
    partial; drops, stalls, server restarts, shutdown notices and bad frames come at
    seeded random times. Both CSVs must equal the final bars, exactly."""
    rng = random.Random(1101)
    lag_ms = 20_000
    async with realistic_exchange(
        speed=600, lag_ms=lag_ms, connection_lifetime=2.0, shutdown_lead=0.3
    ) as exchange:
        config = parse_config(
            raw_config(
                exchange, tmp_path, feed_settings(40, max_connection_age=1.5, transport=transport)
            )
        )
        apps: list[App] = []
        faults: list[str] = []
        for _ in range(3):
            app = App(config)
            apps.append(app)
            run = asyncio.create_task(app.run())
            bars_before = len(exchange.closed_klines("BTCUSDT", "1m"))
            faults += await inject_faults(
                exchange,
                rng,
                lambda b=bars_before: len(exchange.closed_klines("BTCUSDT", "1m")) >= b + 55,
                symbol="BTCUSDT",
                extra=("shutdown",),
            )
            await just_after_close(exchange, lag_ms // 2)
            app.stop()
            await asyncio.wait_for(run, 15)
        final = App(config)
        run = asyncio.create_task(final.run())
        await wait_until(
            lambda: (
                caught_up(exchange, tmp_path, "BTCUSDT", 60_000)
                and caught_up(exchange, tmp_path, "SHIBUSDT", 60_000)
            ),
            30,
            "both CSVs to catch up",
        )
        final.stop()
        await asyncio.wait_for(run, 15)
        btc = assert_final_bars(exchange, tmp_path, "BTCUSDT")
        shib = assert_final_bars(exchange, tmp_path, "SHIBUSDT")
        assert_within_limits(exchange)
        withheld = exchange.limits.closes_withheld
    assert len(btc) >= 160 and len(shib) >= 160
    assert any(Decimal(row[4]) == 0 for row in shib), "no zero-trade bar was recorded"
    assert any(row[0].startswith("0.0000") for row in shib), "no tiny price was recorded"
    stats = [a.feed.stats for a in [*apps, final] if a.feed is not None]
    assert sum(s.handovers for s in stats) >= 3
    assert sum(s.backfilled for s in stats) >= withheld > 0
    assert {"drop", "stall", "restart", "shutdown"} <= set(faults), faults


@pytest.mark.timeout(60)
async def test_quiet_symbol_for_ten_minutes_causes_no_reconnect(tmp_path: Path) -> None:
    """Ten market minutes without a single frame from a quiet symbol: the supervisor asks
    REST, sees the market did not move, and keeps the connection; the zero-trade bars are
    still recorded (from REST, once settled)."""
    real = quiet_shib(0, fraction=0.0)
    start = real.first_open_ms
    bars = real.bars(start, real.end_ms)[:40]
    flat = bars[5].close
    quiet = [
        bar._replace(open=flat, high=flat, low=flat, close=flat, volume=0, quote_volume=0,
                     trades=0, taker_base=0, taker_quote=0) if 6 <= i < 16 else bar
        for i, bar in enumerate(bars)
    ]  # fmt: skip
    exchange = LocalExchange(
        [ReplaySource("SHIBUSDT", quiet)],
        speed=120,
        updates_per_bar=4,
        history_bars=2,
        realism=Realism.binance(seed=3, rest_lag_ms=2_000, missing_close=0.0),
    )
    async with exchange:
        raw = raw_config(exchange, tmp_path, feed_settings(5, stall_timeout=0.5))
        raw["streams"] = [{"symbol": "SHIBUSDT", "interval": "1m"}]
        app = App(parse_config(raw))
        run = asyncio.create_task(app.run())
        await wait_until(lambda: exchange.now_ms >= start + 19 * MINUTE, 30, "19 market minutes")
        await wait_until(lambda: caught_up(exchange, tmp_path, "SHIBUSDT", 10_000), 10, "the CSV")
        app.stop()
        await asyncio.wait_for(run, 10)
        rows = assert_final_bars(exchange, tmp_path, "SHIBUSDT")
        assert_within_limits(exchange)
    assert app.feed is not None
    stats = app.feed.stats
    assert stats.reconnects == 0 and stats.probes >= 3, stats
    assert sum(1 for row in rows if Decimal(row[4]) == 0) >= 10


@pytest.mark.timeout(60)
async def test_silent_but_connected_server_is_detected(tmp_path: Path, transport: str) -> None:
    """The server keeps the connection and answers pings but stops pushing while BTCUSDT
    trades on: REST shows the market moved, so the feed reconnects, and nothing is lost."""
    async with realistic_exchange(speed=600, lag_ms=3_000) as exchange:
        raw = raw_config(exchange, tmp_path, feed_settings(10, transport=transport))
        raw["streams"] = [{"symbol": "BTCUSDT", "interval": "1m"}]
        app = App(parse_config(raw))
        run = asyncio.create_task(app.run())
        await wait_until(lambda: (tmp_path / "BTCUSDT_1m.csv").exists(), 10, "the CSV")
        await asyncio.sleep(0.5)
        exchange.stall(2.5)
        await asyncio.sleep(3.0)
        await wait_until(lambda: caught_up(exchange, tmp_path, "BTCUSDT", 20_000), 20, "the CSV")
        app.stop()
        await asyncio.wait_for(run, 10)
        assert_final_bars(exchange, tmp_path, "BTCUSDT")
        assert_within_limits(exchange)
    assert app.feed is not None
    assert app.feed.stats.reconnects >= 1 and app.feed.stats.probes >= 1


@pytest.mark.timeout(120)
async def test_kill_9_inside_the_rest_lag_then_restart_records_the_final_bars(
    tmp_path: Path,
) -> None:
    """kill -9 a recording process just after a close and restart it at once, while REST
    still serves that bar with non-final values: the CSV ends up equal to the final bars.
    (120x: the 3-minute REST lag and the 4-minute settle are 1.5 s and 2 s in real time.)"""
    lag_ms = 180_000
    async with realistic_exchange(speed=120, lag_ms=lag_ms) as exchange:
        raw = raw_config(exchange, tmp_path, feed_settings(240))
        config = tmp_path / "realistic.yaml"
        config.write_text(yaml.safe_dump(raw))
        path = tmp_path / "BTCUSDT_1m.csv"

        def rows() -> int:
            return len(path.read_text().splitlines()) - 1 if path.exists() else 0

        first = await start(config)
        await wait_until(lambda: rows() >= 6, 40, "6 rows before the kill")
        await just_after_close(exchange, 2_000)
        os.kill(first.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        resume_ms = after_the_kill(exchange, tmp_path)
        second = await start(config)
        killed_at = rows()
        await wait_until(lambda: rows() >= killed_at + 6, 40, "6 more rows after the restart")
        second.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(second.communicate(), 20)
        assert second.returncode == 0, err.decode()
        assert_final_bars(exchange, tmp_path, "BTCUSDT")
        assert_final_bars(exchange, tmp_path, "SHIBUSDT")
        assert_within_limits(exchange)
    logs = out.decode() + err.decode()
    assert "Traceback" not in logs
    assert f"BTCUSDT 1m: resuming after {utc_text(resume_ms)}" in logs


def after_the_kill(exchange: LocalExchange, folder: Path) -> int:
    """The Parquet store just after a kill -9: only whole files visible, BTCUSDT a run of
    final bars. Then its journal is left as a kill inside the write of its newest bar
    would leave it (that bar torn), so the restart must resume from the store's own last
    whole bar, inside the REST lag; returns that bar's open time (ms)."""
    store = folder / "store"
    parquet_check.assert_whole_files(store)
    assert_final_rows(exchange, parquet_check.store_rows(store, "BTCUSDT"), "BTCUSDT")
    return parquet_check.tear_journal(store, "BTCUSDT", back=1)


async def start(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantcore", "run", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.timeout(60)
async def test_halted_symbol_is_warned_about_and_never_mistaken_for_a_stall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A BREAK symbol sends nothing, ever: one warning at start, then no probe, no
    reconnect and no klines call for it, however long the silence."""
    exchange = realistic_exchange(speed=600, lag_ms=3_000, halted=frozenset({"SHIBUSDT"}))
    async with exchange:
        raw = raw_config(exchange, tmp_path, feed_settings(10, stall_timeout=0.3))
        raw["streams"] = [{"symbol": "SHIBUSDT", "interval": "1m"}]
        app = App(parse_config(raw))
        with caplog.at_level(logging.WARNING):
            await app.run(duration=3.0)
        klines = exchange.limits.rest_calls["/api/v3/klines"]
        assert_within_limits(exchange)
    assert "SHIBUSDT is BREAK, not TRADING" in caplog.text
    assert app.feed is not None
    assert app.feed.stats.reconnects == 0 and app.feed.stats.bars == 0
    assert klines == 0


def lagging_exchange(speed: float) -> LocalExchange:
    """The realistic exchange with REST minutes behind the stream (70-120 s, per request):
    recent bars are served as they stood then, still forming, the newest not at all."""
    btc = replay(CSV_BTC)
    profile = Realism.lagging_rest(seed=20241201, missing_close=0.08, exchange_info=EXCHANGE_INFO)
    return LocalExchange(
        [btc, quiet_shib(btc.first_open_ms)],
        speed=speed,
        updates_per_bar=4,
        history_bars=3,
        realism=profile,
    )


@pytest.mark.timeout(240)
async def test_rest_minutes_behind_with_kill_9_restarts_and_reconnects_records_the_final_bars(
    tmp_path: Path,
) -> None:
    """REST lags 70-120 s and shows the newest bars still forming. With kill -9 just after
    a close, reconnects, an exchange restart and a graceful restart inside the lag, every
    recorded row must equal the exchange's final bar: a REST row is trusted only once REST
    serves a later bar (with the default settings: no ``settle``), never on a timer; the
    zero-trade bars of the quiet symbol are still recorded (REST's next bar is the proof)."""
    async with lagging_exchange(speed=120) as exchange:
        feed = {k: v for k, v in feed_settings(0).items() if k != "settle"}
        config = tmp_path / "lagging.yaml"
        config.write_text(yaml.safe_dump(raw_config(exchange, tmp_path, feed)))
        path = tmp_path / "BTCUSDT_1m.csv"

        def rows() -> int:
            return len(path.read_text().splitlines()) - 1 if path.exists() else 0

        first = await start(config)
        await wait_until(lambda: rows() >= 8, 60, "8 rows before the kill")
        await just_after_close(exchange, 2_000)
        os.kill(first.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        resume_ms = after_the_kill(exchange, tmp_path)
        second = await start(config)
        killed_at = rows()
        for _ in range(3):
            await asyncio.sleep(1.5)
            await exchange.drop_connections()
        await exchange.restart(down_seconds=0.3)
        await wait_until(lambda: rows() >= killed_at + 20, 90, "20 more rows after the restart")
        await just_after_close(exchange, 2_000)
        second.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(second.communicate(), 20)
        assert second.returncode == 0, err.decode()
        third = await start(config)
        stopped_at = rows()
        await wait_until(lambda: rows() >= stopped_at + 5, 60, "5 more rows after the restart")
        await wait_until(
            lambda: (
                caught_up(exchange, tmp_path, "BTCUSDT", 240_000)
                and caught_up(exchange, tmp_path, "SHIBUSDT", 240_000)
            ),
            60,
            "both CSVs to catch up",
        )
        third.send_signal(signal.SIGTERM)
        out3, err3 = await asyncio.wait_for(third.communicate(), 20)
        assert third.returncode == 0, err3.decode()
        btc = assert_final_bars(exchange, tmp_path, "BTCUSDT")
        shib = assert_final_bars(exchange, tmp_path, "SHIBUSDT")
        assert_within_limits(exchange)
    assert len(btc) >= 30 and len(shib) >= 30
    assert any(Decimal(row[4]) == 0 for row in shib), "no zero-trade bar was recorded"
    logs = (out + err + out3 + err3).decode()
    assert "Traceback" not in logs
    assert f"BTCUSDT 1m: resuming after {utc_text(resume_ms)}" in (out + err).decode()
    assert "live bars held until REST serves a bar after" in logs
