"""Every outage filled: a recorder restarted after days away records every missing bar,
exactly; a user's ``backfill_limit`` writes the skipped range down for ``quantcore check``;
live bars in flight during a catch-up are never dropped; the "future" check is for resume
points read from files only.

All of it on the local exchange through the real client code paths; rows are compared as
the exchange's strings.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.consumers.csv_recorder import format_row
from quantcore.events import BAR, BarEvent, from_epoch_ms
from quantcore.feeds.binance.feed import BinanceFeedSettings, BinanceKlineFeed
from quantcore.gapfile import HEADER as GAPS_HEADER
from quantcore.sim import LocalExchange, Realism, ReplaySource
from tests import parquet_check
from tests.harness import Row, app_config, csv_rows, truth_row, wait_until
from tests.paths import CSV_BTC, REPO, replay

MINUTE = 60_000
THREE_DAYS = 3 * 1440
THIRTY_DAYS = 30 * 1440


def write_resume_csv(path: Path, row: Row) -> None:
    """A CSV whose last (only) row is ``row``: the recorder resumes after it."""
    path.write_text("close,high,low,open,volume,baseVolume,datetime\n" + ",".join(row) + "\n")


def as_row(bar: BarEvent) -> Row:
    """A published bar as the CSV would hold it."""
    c, h, lo, o, v, q, stamp = format_row(bar).rstrip("\n").split(",")
    return (c, h, lo, o, v, q, stamp)


def history(exchange: LocalExchange, since_ms: int) -> list[Row]:
    return [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=since_ms)]


@pytest.mark.timeout(120)
async def test_restart_after_three_days_records_all_4320_bars_exactly(tmp_path: Path) -> None:
    """The CSV's last row is 3 days old (4,320 closed 1m bars since): the restart records
    every one of them from REST, then goes on live, the whole file equal to the exchange's
    bars string for string; nothing is capped, skipped or written down as a gap."""
    source = replay(CSV_BTC)
    async with LocalExchange(
        [source], speed=None, history_bars=THREE_DAYS + 5, updates_per_bar=3
    ) as exchange:
        start = exchange.start_ms
        resume = history(exchange, start - (THREE_DAYS + 1) * MINUTE)[0]
        path = tmp_path / "BTCUSDT_1m.csv"
        write_resume_csv(path, resume)
        app = App(app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv")))
        await app.run(max_bars=THREE_DAYS + 40)
        truth = history(exchange, 0)
    rows = csv_rows(path)
    first = truth.index(resume)
    assert len(rows) == 1 + THREE_DAYS + 40
    assert rows == truth[first : first + len(rows)]
    assert rows[THREE_DAYS][6] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start / 1000 - 60))
    assert app.feed is not None and app.feed.stats.backfilled >= THREE_DAYS
    assert not (tmp_path / "BTCUSDT_1m.csv.gaps").exists()


@pytest.mark.timeout(180)
async def test_restart_after_thirty_days_records_all_43200_bars_exactly(tmp_path: Path) -> None:
    """30 days away (43,200 bars, 44 REST pages, ~88 weight): every bar recorded, exactly,
    within the weight budget, and the live bars that arrive meanwhile follow in order."""
    async with LocalExchange(symbols=["BTCUSDT"], speed=None, updates_per_bar=2) as exchange:
        start = exchange.start_ms
        resume = history(exchange, start - (THIRTY_DAYS + 1) * MINUTE)[0]
        path = tmp_path / "BTCUSDT_1m.csv"
        write_resume_csv(path, resume)
        template = str(tmp_path / "{symbol}_{interval}.csv")
        store = tmp_path / "store"
        app = App(
            app_config(
                exchange,
                template,
                consumers=parquet_check.every_recorder(template, store),
            )
        )
        began = time.monotonic()
        await app.run(max_bars=THIRTY_DAYS + 30)
        seconds = time.monotonic() - began
        truth = history(exchange, start - (THIRTY_DAYS + 1) * MINUTE)
        limits = exchange.limits
        rows = csv_rows(path)
        parquet_check.assert_store_holds(store, "BTCUSDT", rows[1:], None)  # all it fetched
    assert len(rows) == 1 + THIRTY_DAYS + 30
    assert rows == truth[: len(rows)]
    assert parquet_check.assert_whole_files(store) >= 2, "30 days span two month files"
    feed = app.feed
    assert isinstance(feed, BinanceKlineFeed) and feed.stats.backfilled >= THIRTY_DAYS
    assert limits.rest_429 == 0 and limits.rest_418 == 0
    assert feed.rest_budget.spent < 200, feed.rest_budget.spent
    print(f"43,200-bar catch-up and 30 live bars: {seconds:.1f}s")


@pytest.mark.timeout(60)
async def test_backfill_limit_writes_the_skipped_range_down_for_check(tmp_path: Path) -> None:
    """A user-set cap skips what lies beyond it; the range goes to the CSV's ``.gaps``
    sidecar, and ``quantcore check`` labels that hole "skipped by backfill_limit"."""
    source = replay(CSV_BTC)
    async with LocalExchange([source], speed=None, history_bars=900, updates_per_bar=3) as exchange:
        old = history(exchange, 0)[10]
        path = tmp_path / "BTCUSDT_1m.csv"
        write_resume_csv(path, old)
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"), feed={
            "backfill_limit": 100
        })  # fmt: skip
        await App(config).run(max_bars=120)
        truth = history(exchange, 0)
    rows = csv_rows(path)
    assert rows[0] == old and len(rows) == 121
    resumed = truth.index(rows[1])
    assert rows[1:] == truth[resumed : resumed + 120]
    skipped_first, skipped_last = truth[11][6], truth[resumed - 1][6]
    gaps = (tmp_path / "BTCUSDT_1m.csv.gaps").read_text()
    assert gaps == f"{GAPS_HEADER}{skipped_first},{skipped_last},skipped by backfill_limit\n"
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "quantcore", "check", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    bars = resumed - 11
    assert lines[0].endswith(": clean"), lines
    assert lines[1] == f"  known gaps: 1 ({bars} bars, not counted as problems)"
    assert lines[2] == (
        f"    {skipped_first} .. {skipped_last} missing ({bars} bars): skipped by backfill_limit"
    )


@pytest.mark.timeout(60)
async def test_live_bars_ahead_of_the_rest_clock_never_trigger_the_future_check() -> None:
    """The "future" check is for resume points read from files at startup. Here a stream
    has no resume point, its first catch-up comes after live bars were published, and the
    exchange's REST clock reads two minutes behind those bars: that is no contradiction
    (before, the feed stopped with "the last recorded bar ... is in the future")."""

    class LaggingClockFeed(BinanceKlineFeed):
        async def server_time(self) -> int:
            return await super().server_time() - 2 * MINUTE

    source = replay(CSV_BTC)
    async with LocalExchange([source], speed=None, history_bars=50, updates_per_bar=3) as exchange:
        bus = EventBus()
        bars: list[BarEvent] = []
        bus.subscribe(BAR, bars.append)
        settings = BinanceFeedSettings(
            ws_url=exchange.ws_url, rest_url=exchange.rest_url, poll=0.05, stall_timeout=2
        )
        feed = LaggingClockFeed(bus, [("BTCUSDT", "1m")], settings)
        feed.bar_limit = 60
        await asyncio.wait_for(feed.run(), 45)
        truth = history(exchange, 0)
    assert feed.fatal is None, feed.fatal
    rows = [as_row(bar) for bar in bars]
    assert len(rows) == 60
    first = truth.index(rows[0])
    assert rows == truth[first : first + 60]


@pytest.mark.timeout(60)
async def test_live_bars_in_flight_during_a_capped_catch_up_are_never_dropped(
    tmp_path: Path,
) -> None:
    """The exchange plays as fast as the client reads, so by the time the first catch-up
    reads the exchange's clock, the socket already carries bars from before the cap's
    window: the cap stops at the first bar the socket may deliver, so none of those is
    counted as a duplicate and lost (before: 101-164 such bars were)."""
    source = replay(CSV_BTC)
    async with LocalExchange([source], speed=None, history_bars=600, updates_per_bar=1) as exchange:
        old = history(exchange, 0)[10]
        path = tmp_path / "BTCUSDT_1m.csv"
        write_resume_csv(path, old)
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"), feed={
            "backfill_limit": 1, "stall_timeout": 2
        })  # fmt: skip
        app = App(config)
        run = asyncio.create_task(app.run(max_bars=1500))
        await wait_until(lambda: run.done(), 45, "1,500 bars")
        await run
        truth = history(exchange, 0)
    rows = csv_rows(path)
    resumed = truth.index(rows[1])
    assert len(rows) == 1501
    assert rows[1:] == truth[resumed : resumed + 1500]
    assert resumed == 599, "the cap must stop at the socket's first bar (599), not skip it"
    gaps = (tmp_path / "BTCUSDT_1m.csv.gaps").read_text().splitlines()
    assert gaps[1:] == [f"{truth[11][6]},{truth[resumed - 1][6]},skipped by backfill_limit"]


@pytest.mark.timeout(60)
async def test_a_bar_the_exchange_lacks_waits_for_evidence_then_is_written_down(
    tmp_path: Path,
) -> None:
    """Bar 40 does not exist on the exchange; REST lags 6 minutes (0.75 s in real time at
    480x). The live bars behind the hole wait (``feed.waits()`` shows them) until REST
    serves a later bar: only then is the bar declared absent, written to the sidecar as an
    exchange gap, and labelled by check."""
    real = replay(CSV_BTC)
    bars = real.bars(real.first_open_ms, real.end_ms)[:200]
    hole = bars[40]
    source = ReplaySource("BTCUSDT", bars[:40] + bars[41:])
    exchange = LocalExchange(
        [source], speed=480, updates_per_bar=4, history_bars=30,
        realism=Realism(rest_lag_ms=360_000),
    )  # fmt: skip
    path = tmp_path / "BTCUSDT_1m.csv"
    hole_stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(hole.open_time / 1000))
    async with exchange:
        config = app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"), feed={
            "poll": 0.05, "stall_timeout": 5
        })  # fmt: skip
        app = App(config)
        run = asyncio.create_task(app.run())
        await wait_until(lambda: app.feed is not None, 10, "the feed")
        feed = app.feed
        assert isinstance(feed, BinanceKlineFeed)
        key = ("BTCUSDT", "1m")
        await wait_until(lambda: key in feed.waits(), 30, "live bars held behind the hole")
        wait = feed.waits()[key]
        assert wait.missing_from == from_epoch_ms(hole.open_time) and wait.held >= 1
        assert not (tmp_path / "BTCUSDT_1m.csv.gaps").exists(), "declared absent on a timer"
        await wait_until(lambda: key not in feed.waits(), 30, "REST to serve a later bar")
        await wait_until(lambda: len(csv_rows(path)) >= 20, 30, "20 rows")
        app.stop()
        await run
        truth = history(exchange, 0)
    rows = csv_rows(path)
    first = truth.index(rows[0])
    assert rows == truth[first : first + len(rows)]
    assert hole_stamp not in {row[6] for row in truth} and rows[0][6] < hole_stamp < rows[-1][6]
    gaps = (tmp_path / "BTCUSDT_1m.csv.gaps").read_text()
    assert gaps == f"{GAPS_HEADER}{hole_stamp},{hole_stamp},exchange gap (no data from Binance)\n"
    assert feed.stats.absent == 1
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "quantcore", "check", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[1:3] == [
        "  known gaps: 1 (1 bar, not counted as problems)",
        f"    {hole_stamp} .. {hole_stamp} missing (1 bar): exchange gap (no data from Binance)",
    ]
