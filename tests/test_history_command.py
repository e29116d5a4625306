"""``quantcore history`` against the local exchange and its public archive, end to end.

Each test records through the real command path (config → recorders on the EventBus →
archive reader and REST) and compares the CSV with the exchange's own bars, string for
string; downloads and REST weight are counted on the server side.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import io
import os
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from quantcore.config import AppConfig, parse_config
from quantcore.feeds.binance.venues import COINM, USDM, Venue
from quantcore.gapfile import read_gaps
from quantcore.history.command import record_history
from quantcore.history.fill import Totals
from quantcore.quality import check_csv, check_sqlite
from quantcore.sim import LocalExchange, RandomWalkSource, Realism
from quantcore.sim.archive import ExchangeGaps
from tests.harness import Row, csv_rows, truth_row
from tests.paths import REPO

MINUTE = 60_000
DAY = 86_400_000


def day_ms(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d")) * 1000


def config_for(exchange: LocalExchange, csv: Path, symbol: str = "BTCUSDT",
               consumers: list[dict[str, Any]] | None = None, **exchange_extra: Any
               ) -> AppConfig:  # fmt: skip
    raw = {
        "exchange": {
            "ws_url": exchange.ws_url,
            "rest_url": exchange.rest_url,
            "archive_url": exchange.archive_url,
            **exchange_extra,
        },
        "streams": [{"symbol": symbol, "interval": "1m"}],
        "consumers": [{"class": "csv", "params": {"path": str(csv)}}, *(consumers or [])],
    }
    return parse_config(raw)


def truth(exchange: LocalExchange, symbol: str, lo: int, hi: int) -> list[Row]:
    """The exchange's closed 1m bars opening in [lo, hi), as the CSV must hold them."""
    source = exchange.market.sources[symbol]
    return [truth_row(bar.kline()) for bar in source.aggregated(MINUTE, lo, hi)]


async def history(
    exchange: LocalExchange, tmp_path: Path, since: str, until: str, symbol: str = "BTCUSDT",
    consumers: list[dict[str, Any]] | None = None, **extra: Any,
) -> tuple[Totals, Path]:  # fmt: skip
    csv = tmp_path / f"{symbol}_1m.csv"
    config = config_for(exchange, csv, symbol, consumers, **extra)
    totals, _, lost = await record_history(
        config, day_ms(since), day_ms(until) + DAY, tmp_path / "cache"
    )
    assert lost == 0
    return totals, csv


@pytest.mark.timeout(600)
async def test_a_year_of_1m_bars_equals_the_exchange_string_for_string(tmp_path: Path) -> None:
    """525,600 bars of 2025 through ``history``: twelve monthly zips (spot, microseconds),
    every row the exchange's, no REST weight beyond the clock and the first-bar probe."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=3, speed=None) as exchange:
        totals, csv = await history(exchange, tmp_path, "2025-01-01", "2025-12-31")
        rows = csv_rows(csv)
        assert len(rows) == 525_600
        assert rows == truth(exchange, "BTCUSDT", day_ms("2025-01-01"), day_ms("2026-01-01"))
        downloads = exchange.archive.downloads
        assert len(downloads) == 12 and set(downloads.values()) == {1}
        assert all("/monthly/klines/BTCUSDT/1m/" in path for path in downloads)
        assert exchange.limits.rest_weight == 2 + 1  # first-bar probe (2) + server time (1)
        assert (totals.archive_days, totals.rest_days, totals.bars) == (365, 0, 525_600)
        assert (totals.gaps, totals.fallbacks, totals.corrections) == (0, 0, 0)


async def test_missing_corrupt_and_foreign_days_come_from_rest_and_gaps_are_labelled(
    tmp_path: Path,
) -> None:
    """A missing day (404), a zip that fails its CHECKSUM and a zip whose rows belong to
    another day are each taken from REST (the bad ones after their retries); an hour the
    archive lacks comes from REST, and where the two differ REST's bar is kept; three hours
    with no bars anywhere become one exchange gap in the sidecar, which ``check`` labels."""
    gap = (day_ms("2025-03-08") + 10 * 60 * MINUTE, day_ms("2025-03-08") + 13 * 60 * MINUTE)
    source = ExchangeGaps(RandomWalkSource("BTCUSDT", "1m", 5), [gap])
    async with LocalExchange([source], speed=None) as exchange:
        plants = exchange.archive.plants
        plants.missing.add("2025-03-03")
        plants.corrupt.add("2025-03-05")
        plants.foreign.add("2025-03-07")
        plants.incomplete.add("2025-03-09")
        sqlite = {"class": "sqlite", "params": {"path": str(tmp_path / "bars.sqlite")}}
        totals, csv = await history(
            exchange, tmp_path, "2025-03-01", "2025-03-10", consumers=[sqlite]
        )
        expected = truth(exchange, "BTCUSDT", day_ms("2025-03-01"), day_ms("2025-03-11"))
        assert len(expected) == 10 * 1440 - 180
        assert csv_rows(csv) == expected
        downloads = exchange.archive.downloads
        daily = "spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-"
        assert downloads[f"{daily}2025-03-05.zip"] == 3
        assert downloads[f"{daily}2025-03-07.zip"] == 3
        assert f"{daily}2025-03-03.zip" not in downloads
        assert (totals.archive_days, totals.rest_days, totals.fallbacks) == (7, 3, 3)
        assert (totals.gaps, totals.gap_bars) == (1, 180)
        assert totals.corrections == 1  # 2025-03-09 11:00: the archive's volume differs
        assert [(g.first_ms, g.last_ms, g.reason) for g in read_gaps(csv)] == [
            (gap[0], gap[1] - MINUTE, "exchange gap (no data from Binance)")
        ]
        for report in [check_csv(csv, "1m"), *check_sqlite(tmp_path / "bars.sqlite")]:
            assert report.clean, report.lines()
            assert [(h.first_ms, h.bars, reason) for h, reason in report.known] == [
                (gap[0], 180, "exchange gap (no data from Binance)")
            ]
        assert not list((tmp_path / "cache").rglob("*2025-03-05.zip"))


async def test_milliseconds_before_2025_and_microseconds_after_are_both_read(
    tmp_path: Path,
) -> None:
    """Spot files switch to microseconds on 2025-01-01: two days each side, exact."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=9, speed=None) as exchange:
        url = f"{exchange.archive_url}/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-"
        async with aiohttp.ClientSession() as session:
            for day, digits in (("2024-12-31", 13), ("2025-01-01", 16)):
                async with session.get(f"{url}{day}.zip") as response:
                    body = await response.read()
                text = zipfile.ZipFile(io.BytesIO(body)).read(f"BTCUSDT-1m-{day}.csv").decode()
                assert len(text.split(",", 1)[0]) == digits  # no header, that time unit
        totals, csv = await history(exchange, tmp_path, "2024-12-30", "2025-01-02")
        lo, hi = day_ms("2024-12-30"), day_ms("2025-01-03")
        assert csv_rows(csv) == truth(exchange, "BTCUSDT", lo, hi)
        assert (totals.archive_days, totals.rest_days) == (4, 0)


@pytest.mark.parametrize(
    ("venue", "symbol", "folder"),
    [(USDM, "BTCUSDT", "futures/um"), (COINM, "BTCUSD_PERP", "futures/cm")],
)
async def test_futures_archives_with_their_paths_and_headers(
    tmp_path: Path, venue: Venue, symbol: str, folder: str
) -> None:
    """USD-M and COIN-M files live under their folders and carry a header row (COIN-M's
    names its base-volume columns); times stay in milliseconds; rows are exact."""
    async with LocalExchange(symbols=[symbol], seed=4, speed=None, venue=venue) as exchange:
        totals, csv = await history(
            exchange, tmp_path, "2025-02-27", "2025-03-01", symbol, venue=venue.name
        )
        assert csv_rows(csv) == truth(exchange, symbol, day_ms("2025-02-27"), day_ms("2025-03-02"))
        paths = sorted(exchange.archive.downloads)
        assert paths == [
            f"{folder}/daily/klines/{symbol}/1m/{symbol}-1m-{d}.zip"
            for d in ("2025-02-27", "2025-02-28", "2025-03-01")
        ]
        cached = tmp_path / "cache" / "data" / paths[0]
        text = zipfile.ZipFile(cached).read(f"{symbol}-1m-2025-02-27.csv").decode()
        header = text.split("\n", 1)[0]
        assert header.startswith("open_time,open,high,low,close,volume,close_time,")
        assert ("base_volume" in header) == (venue is COINM)
        assert len(text.split("\n")[1].split(",", 1)[0]) == 13
        assert totals.rest_days == 0


async def test_today_comes_from_rest_settled_and_the_rest_of_the_range_from_the_archive(
    tmp_path: Path,
) -> None:
    """Yesterday is archived; today is not (404): its closed bars come from REST, each
    proven final by a later bar REST serves, up to the exchange's forming bar."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=2, speed=None) as exchange:
        now = exchange.now_ms
        today = now - now % DAY
        yesterday = time.strftime("%Y-%m-%d", time.gmtime((today - DAY) // 1000))
        csv = tmp_path / "BTCUSDT_1m.csv"
        config = config_for(exchange, csv)
        totals, _, lost = await record_history(config, today - DAY, None, tmp_path / "cache")
        assert lost == 0
        assert csv_rows(csv) == truth(exchange, "BTCUSDT", today - DAY, now - now % MINUTE)
        assert list(exchange.archive.downloads) == [
            f"spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{yesterday}.zip"
        ]
        assert totals.archive_days == 1
        assert totals.rest_days == (1 if now > today else 0)


@pytest.mark.timeout(300)
async def test_kill_9_then_restart_repeats_no_row_and_downloads_no_verified_file_again(
    tmp_path: Path,
) -> None:
    """``history`` in its own process is killed (SIGKILL) mid-run, then started again: the
    CSV ends equal to the exchange's bars (no row twice), and no zip that was verified into
    the cache before the kill is downloaded a second time (counted by the server)."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=8, speed=None) as exchange:
        csv = tmp_path / "BTCUSDT_1m.csv"
        cache = tmp_path / "cache"
        config = tmp_path / "history.yaml"
        config.write_text(
            "exchange:\n"
            f"  ws_url: {exchange.ws_url}\n  rest_url: {exchange.rest_url}\n"
            f"  archive_url: {exchange.archive_url}\n"
            "streams: [{symbol: BTCUSDT, interval: 1m}]\n"
            f"consumers: [{{class: csv, params: {{path: '{csv}'}}}}]\n"
        )
        command = [sys.executable, "-m", "quantcore", "history", str(config),
                   "--since", "2025-04-01", "--until", "2025-04-29", "--cache", str(cache)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        first = await asyncio.create_subprocess_exec(*command, env=env, cwd=tmp_path,
                                                     stdout=asyncio.subprocess.DEVNULL,
                                                     stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if csv.exists() and csv.stat().st_size > 5 * 1440 * 90:
                break
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        verified = {str(p.relative_to(cache / "data")) for p in cache.rglob("*.zip")}
        rows_at_kill = len(csv_rows(csv))
        assert 4 * 1440 <= rows_at_kill < 29 * 1440
        assert verified
        second = await asyncio.create_subprocess_exec(*command, env=env, cwd=tmp_path,
                                                      stdout=asyncio.subprocess.PIPE)  # fmt: skip
        out, _ = await second.communicate()
        assert second.returncode == 0, out
        rows = csv_rows(csv)
        assert rows == truth(exchange, "BTCUSDT", day_ms("2025-04-01"), day_ms("2025-04-30"))
        downloads = exchange.archive.downloads
        assert all(downloads[path] == 1 for path in verified)
        assert all(count <= 2 for count in downloads.values())
        assert b"quantcore history:" in out


@pytest.mark.timeout(180)
def test_demo_config_records_history_offline_and_run_continues_the_same_file(
    tmp_path: Path,
) -> None:
    """The README's ``quantcore history config/demo.yaml --since …`` runs on the embedded
    local exchange (no network), then ``run`` appends to the same CSV: ``check`` finds
    it clean, every row once, in order, up to the live bars."""
    import subprocess

    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 2 * 86_400))
    demo = str(REPO / "config" / "demo.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "quantcore", "history", demo, "--since", since],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("quantcore history: 2 days from the archive, ")
    assert " 1 days from REST" in summary or time.gmtime().tm_hour * 60 + time.gmtime().tm_min < 2
    csv = tmp_path / "data" / "demo" / "BTCUSDT_1m.csv"
    recorded = csv_rows(csv)
    assert f" {len(recorded)} bars, 0 exchange gaps" in summary
    assert recorded[0][6] == f"{since} 00:00:00"
    live = subprocess.run(
        [sys.executable, "-m", "quantcore", "run", demo, "--max-bars", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert live.returncode == 0, live.stderr
    rows = csv_rows(csv)
    assert rows[: len(recorded)] == recorded and len(rows) >= len(recorded) + 2
    stamps = [day_ms(r[6][:10]) + int(r[6][11:13]) * 3_600_000 + int(r[6][14:16]) * MINUTE
              for r in rows]  # fmt: skip
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps) * MINUTE, MINUTE))


@pytest.mark.parametrize(
    ("args", "config_extra", "message"),
    [
        (["--since", "2025-03-02", "--until", "2025-03-01"], "",
         "--until: 2025-03-01 is before --since"),
        (["--since", "2025-03-01"], "  archive_url: ftp://example.com\n",
         "exchange.archive_url: 'ftp://example.com' is not an http(s) URL"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], config_extra: str,
    message: str,
) -> None:  # fmt: skip
    from quantcore.cli import main

    config = tmp_path / "history.yaml"
    config.write_text(
        "exchange:\n  local: {seed: 1}\n" + config_extra
        + "streams: [{symbol: BTCUSDT, interval: 1m}]\n"
        + f"consumers: [{{class: csv, params: {{path: '{tmp_path}/{{symbol}}.csv'}}}}]\n"
    )  # fmt: skip
    assert main(["history", str(config), *args, "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not list(tmp_path.glob("*.csv")) and not (tmp_path / "cache").exists()


async def test_since_listing_starts_at_the_first_bar_and_the_archive_404s_where_binance_does(
    tmp_path: Path,
) -> None:
    """``--since listing`` finds the symbol's first bar with one ``startTime=0`` request
    (the generator's market opens 2017-01-01); the archive answers 404 before the listing,
    for today, for the current month and for another venue's folder."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=6, speed=None) as exchange:
        csv = tmp_path / "BTCUSDT_1m.csv"
        totals, _, lost = await record_history(
            config_for(exchange, csv), 0, day_ms("2017-01-03"), tmp_path / "cache"
        )
        assert lost == 0 and totals.archive_days == 2
        rows = csv_rows(csv)
        assert rows[0][6] == "2017-01-01 00:00:00"
        assert rows == truth(exchange, "BTCUSDT", day_ms("2017-01-01"), day_ms("2017-01-03"))
        now = exchange.now_ms
        today = time.strftime("%Y-%m-%d", time.gmtime(now // 1000))
        base = f"{exchange.archive_url}/data/spot"
        name = "klines/BTCUSDT/1m/BTCUSDT-1m"
        async with aiohttp.ClientSession() as session:
            for url, status in [
                (f"{base}/daily/{name}-2016-12-31.zip", 404),
                (f"{base}/daily/{name}-{today}.zip", 404),
                (f"{base}/monthly/{name}-{today[:7]}.zip.CHECKSUM", 404),
                (f"{base}/monthly/{name}-2017-01.zip.CHECKSUM", 200),
                (f"{exchange.archive_url}/data/futures/um/daily/{name}-2017-01-01.zip", 404),
            ]:
                async with session.get(url) as response:
                    assert response.status == status, url
                    if status == 200:
                        line = (await response.text()).split()
                        assert len(line[0]) == 64 and line[1] == "BTCUSDT-1m-2017-01.zip"


async def test_rest_lagging_minutes_behind_ends_history_at_the_last_proven_bar(
    tmp_path: Path,
) -> None:
    """With REST 70-120 s behind, today's newest closed bars are not proven final yet: the
    run records every bar up to the last one REST proves, exactly, and stops there (a later
    run or ``run`` continues)."""
    realism = Realism(rest_lag_ms=70_000, rest_lag_spread_ms=50_000)
    async with LocalExchange(symbols=["BTCUSDT"], seed=2, speed=None, realism=realism) as ex:
        now = ex.now_ms
        today = now - now % DAY
        csv = tmp_path / "BTCUSDT_1m.csv"
        _, _, lost = await record_history(config_for(ex, csv), today - DAY, None, tmp_path / "c")
        assert lost == 0
        expected = truth(ex, "BTCUSDT", today - DAY, now - now % MINUTE)
        rows = csv_rows(csv)
        unproven = min(2, (now - today) // MINUTE)  # today's newest two, none of yesterday's
        assert rows == expected[: len(rows)] and len(rows) == len(expected) - unproven


async def test_an_unreachable_archive_leaves_everything_to_rest_exactly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``exchange.archive_url`` pointing at nothing: one warning, then every day from REST
    (settled on evidence, paged within the budget), the same rows."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=12, speed=None) as exchange:
        csv = tmp_path / "BTCUSDT_1m.csv"
        config = config_for(exchange, csv)
        config = dataclasses.replace(config, archive_url="http://127.0.0.1:9")
        totals, _, lost = await record_history(
            config, day_ms("2025-06-01"), day_ms("2025-06-03"), tmp_path / "cache"
        )
        assert lost == 0
        assert csv_rows(csv) == truth(
            exchange, "BTCUSDT", day_ms("2025-06-01"), day_ms("2025-06-03")
        )
        assert (totals.archive_days, totals.rest_days, totals.bars) == (0, 2, 2880)
        assert not exchange.archive.downloads
    warnings = [r.message for r in caplog.records if "cannot be reached" in r.message]
    assert len(warnings) == 1


async def test_a_csv_older_than_since_is_continued_from_its_last_row_gap_free(
    tmp_path: Path,
) -> None:
    """A CSV ending 2025-05-30 12:00 and ``--since 2025-06-01``: the file is continued from
    12:01 (mid-day, from that day's zip), so it stays gap-free; nothing is written twice."""
    async with LocalExchange(symbols=["BTCUSDT"], seed=13, speed=None) as exchange:
        lo = day_ms("2025-05-30") + 12 * 60 * MINUTE
        expected = truth(exchange, "BTCUSDT", lo, day_ms("2025-06-02"))
        csv = tmp_path / "BTCUSDT_1m.csv"
        csv.write_text("close,high,low,open,volume,baseVolume,datetime\n"
                       + ",".join(expected[0]) + "\n")  # fmt: skip
        totals, _ = await history(exchange, tmp_path, "2025-06-01", "2025-06-01")
        assert csv_rows(csv) == expected
        assert totals.bars == len(expected) - 1 and totals.archive_days == 3
