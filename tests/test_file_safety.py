"""Files nobody else can spoil, failures that are failures: real processes, real files.

One writer per file (a second ``quantcore run`` is refused, kill -9 frees the file), a
full disk (a 64 KiB tmpfs) ends in exit 3 with the file exact, a stuck subscriber cannot
hold up stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from quantcore import BarEvent, Component
from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.component import Context
from quantcore.filelock import FileBusyError
from quantcore.sim import LocalExchange
from quantcore.sinks.sqlite import SqliteRecorder
from tests.disk import InjectedFullDisk, SmallDisk, small_disk
from tests.harness import app_config, caught_up, csv_rows, truth_since, wait_until
from tests.test_history import make_bar
from tests.test_reliability import recorded_exchange, rows_in, write_config

pytestmark = pytest.mark.timeout(120)


async def run_cli(*argv: str, prefix: list[str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(prefix or [sys.executable, "-m", "quantcore"]), "run", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_second_process_on_the_same_csv_is_refused_and_kill_9_frees_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    async with recorded_exchange(speed=600) as exchange:
        config = str(write_config(tmp_path, exchange))
        first = await run_cli(config)
        await wait_until(lambda: rows_in(path) >= 5, 30, "the first process to record")
        second = await run_cli(config)
        out, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 2
        assert err.decode() == (
            f"quantcore: CsvRecorder: {path} is being written by another quantcore process "
            f"(pid {first.pid})\n"
        )
        assert "connect" not in out.decode().lower(), "refused before anything connects"
        at = rows_in(path)
        await wait_until(lambda: rows_in(path) >= at + 10, 30, "the first to keep recording")

        os.kill(first.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        killed_at = rows_in(path)
        third = await run_cli(config)
        await wait_until(lambda: rows_in(path) >= killed_at + 10, 30, "the restart to record")
        await wait_until(lambda: caught_up(exchange, path), 20, "the CSV to catch up")
        third.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(third.communicate(), 20)
        assert third.returncode == 0, err.decode()
        rows = csv_rows(path)
        assert len(set(rows)) == len(rows), "no duplicate rows"
        assert rows == truth_since(exchange, rows[0], len(rows))


async def test_second_sqlite_writer_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "bars.sqlite"
    first = SqliteRecorder(path=str(db))
    await first.open()
    with pytest.raises(FileBusyError) as raised:
        await SqliteRecorder(path=str(db)).open()
    assert str(raised.value) == (
        f"{db} is being written by another quantcore process (pid {os.getpid()})"
    )
    await first.close()
    again = SqliteRecorder(path=str(db))
    await again.open()
    await again.close()


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk", monkeypatch) as mounted:
        yield mounted


def disk_config(tmp_path: Path, exchange: LocalExchange, disk: SmallDisk) -> str:
    config = yaml.safe_load(write_config(tmp_path, exchange).read_text())
    config["consumers"][0]["params"]["path"] = str(disk.root / "{symbol}_{interval}.csv")
    path = tmp_path / "disk.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


async def test_full_disk_ends_in_exit_3_and_the_file_stays_exact(
    tmp_path: Path, disk: SmallDisk
) -> None:
    path = disk.root / "BTCUSDT_1m.csv"
    async with recorded_exchange(speed=1200) as exchange:  # 100 bars: 5 s
        config = disk_config(tmp_path, exchange, disk)
        full = await run_cli(config, "--max-bars", "100", prefix=disk.command())
        await wait_until(lambda: rows_in(path) >= 3, 30, "the first rows")
        disk.fill()
        out, err = await asyncio.wait_for(full.communicate(), 60)
        assert full.returncode == 3, err.decode()
        summary = out.decode().strip().splitlines()[-1]
        recorded = int(summary.split("bars recorded=")[1].split()[0])
        not_recorded = int(summary.split("not recorded=")[1].split()[0])
        assert recorded == rows_in(path) and recorded + not_recorded == 100
        assert err.decode().splitlines()[-1] == (
            f"quantcore: recorded data incomplete: {not_recorded} bars not recorded, "
            "0 closed bars not delivered (see the log above)"
        )
        assert "Traceback" not in out.decode() + err.decode()
        assert len(re.findall("cannot append", out.decode())) == 1
        rows = csv_rows(path)
        assert rows == truth_since(exchange, rows[0], len(rows))

        disk.free()
        again = await run_cli(config, prefix=disk.command())
        await wait_until(lambda: caught_up(exchange, path), 30, "the restart to fill the gap")
        again.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(again.communicate(), 20)
        assert again.returncode == 0, err.decode()
        rows = csv_rows(path)
        assert len(rows) > 100 and rows == truth_since(exchange, rows[0], len(rows))


async def test_full_disk_that_recovers_loses_nothing(
    tmp_path: Path, disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    path = disk.root / "BTCUSDT_1m.csv"
    caplog.set_level(logging.INFO)
    async with recorded_exchange(speed=600) as exchange:
        app = App(app_config(exchange, str(disk.root / "{symbol}_{interval}.csv")))
        run = asyncio.create_task(app.run())
        await wait_until(lambda: rows_in(path) >= 3, 30, "the first rows")
        disk.fill()
        await wait_until(lambda: "cannot append" in caplog.text, 30, "the disk to fill")
        published = app.feed.stats.bars if app.feed else 0
        await wait_until(
            lambda: app.feed is not None and app.feed.stats.bars >= published + 10, 30, "more bars"
        )
        disk.free()
        await wait_until(lambda: caught_up(exchange, path), 30, "the held bars to be written")
        app.stop()
        summary = await asyncio.wait_for(run, 20)
    rows = csv_rows(path)
    assert rows == truth_since(exchange, rows[0], len(rows))
    assert summary.bars_recorded == len(rows) and not summary.incomplete
    assert caplog.text.count("cannot append") == 1
    assert caplog.text.count("appending again") == 1


class Stuck(Component):
    """An ``async def on_bar`` that never returns after its first bar."""

    async def on_bar(self, bar: BarEvent) -> None:
        await asyncio.Event().wait()


async def test_a_stuck_subscriber_cannot_hold_up_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    caplog.set_level(logging.ERROR)
    async with recorded_exchange(speed=6000) as exchange:
        app = App(
            app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv")),
            [Stuck(name="stuck")],
            stop_timeout=0.5,
        )
        started = time.monotonic()
        summary = await asyncio.wait_for(app.run(max_bars=20), 30)
        rows = csv_rows(path)
        assert rows == truth_since(exchange, rows[0], 20)
    assert time.monotonic() - started < 15
    assert summary.bars_recorded == 20 and summary.undelivered == 20 and summary.incomplete
    stuck = [r.getMessage() for r in caplog.records if "stuck" in r.getMessage()]
    assert stuck == [
        "subscriber stuck.on_bar is stuck: 20 events not handled after 0.5s; stopping without it"
    ]


async def test_sqlite_rows_unwritten_at_stop_fail_the_run(
    disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = SqliteRecorder(
        path=str(disk.root / "bars.sqlite"), batch_size=1, max_delay=0, stop_timeout=0.5
    )
    rec.attach(Context(EventBus(), [("BTCUSDT", "1m")]))
    await rec.start()
    if isinstance(disk, InjectedFullDisk):

        async def full(batch: list[BarEvent]) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(rec.buffer, "_write", full)
    disk.fill()
    for i in range(200):
        rec.on_bar(make_bar(i))
    await rec.stop()
    assert rec.buffer.written < 200
    assert rec.unrecorded() == 200 - rec.buffer.written > 0
