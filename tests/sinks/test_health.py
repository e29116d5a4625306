"""Failures are visible: /health names a recorder that is failing, and a bar a recorder
refuses by raising is "not recorded" (exit 3), while what it holds stays gap-free."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.component import Component
from quantcore.events import BarEvent
from quantcore.sim import LocalExchange, ReplaySource
from quantcore.sinks.postgres import PostgresRecorder
from tests.harness import app_config, csv_rows, wait_until
from tests.paths import CSV_BTC
from tests.sinks.helpers import STREAM, StatusLog, make_bar, publish, start_all, stop_all
from tests.sinks.servers import PostgresServer
from tests.sinks.test_postgres import minutes, stored


class Refusing(Component):
    """A recorder (it has a resume point) that appends open times to ``path`` and raises
    on its ``refuse_at``-th bar, as a recorder with a bug or a refusing store would."""

    def __init__(self, *, path: str, refuse_at: int, name: str | None = None) -> None:
        super().__init__(name=name)
        self.path = Path(path)
        self.refuse_at = refuse_at
        self.seen = 0

    def resume_point(self, symbol: str, interval: str) -> int | None:
        return None

    def on_bar(self, bar: BarEvent) -> None:
        self.seen += 1
        if self.seen == self.refuse_at:
            raise ValueError(f"cannot store the bar of {bar.open_time}")
        with self.path.open("a") as out:
            out.write(f"{bar.open_time_ms}\n")


async def health(session: aiohttp.ClientSession, app: App) -> tuple[int, Any]:
    assert app.metrics is not None
    async with session.get(f"{app.metrics.url}/health") as response:
        return response.status, await response.json()


async def wait_for_health(
    session: aiohttp.ClientSession, app: App, status: int, recorder: str, seconds: float
) -> dict[str, Any]:
    """Poll /health until it answers ``status`` with ``recorder`` healthy (200) or not."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        code, body = await health(session, app)
        verdict = body.get("recorders", {}).get(recorder)
        if code == status and verdict is not None and verdict["healthy"] is (status == 200):
            return dict(verdict)
        last = (code, body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"/health never answered {status} for {recorder}; last: {last}")


@pytest.mark.timeout(60)
async def test_health_names_a_refusing_recorder_and_its_bars_are_not_recorded(
    tmp_path: Path,
) -> None:
    refusing = Refusing(path=str(tmp_path / "refused.txt"), refuse_at=4)
    async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=120) as exchange:
        config = app_config(
            exchange, str(tmp_path / "{symbol}_{interval}.csv"), metrics={"port": 0}
        )
        app = App(config, [refusing])
        run = asyncio.create_task(app.run(max_bars=10))
        await wait_until(lambda: refusing.refused > 0, 20, "the refusal")
        async with aiohttp.ClientSession() as session:
            verdict = await wait_for_health(session, app, 503, "Refusing", 5)
            _, body = await health(session, app)
        summary = await asyncio.wait_for(run, 30)
    assert (
        verdict["reason"].startswith("failing: refused ") and "on_bar raised" in verdict["reason"]
    )
    assert body["recorders"]["CsvRecorder"] == {"healthy": True, "reason": "recording"}
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert len(rows) == 10
    held = (tmp_path / "refused.txt").read_text().split()
    assert len(held) == 3, "it gets no later bar of the stream: what it holds has no hole"
    assert refusing.refused == 7 and summary.not_recorded == 7 and summary.incomplete
    assert summary.subscriber_errors == 1


@pytest.mark.timeout(60)
async def test_a_refusing_recorder_ends_the_run_with_exit_3(tmp_path: Path) -> None:
    config = {
        "exchange": {"local": {"speed": 600, "seed": 7}},
        "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
        "consumers": [
            {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
            {
                "class": "tests.sinks.test_health:Refusing",
                "params": {"path": str(tmp_path / "refused.txt"), "refuse_at": 5},
            },
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantcore", "run", str(path), "--max-bars", "12",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 50)
    assert process.returncode == 3, err.decode()
    assert "subscriber errors=1 " in out.decode() and "not recorded=8 " in out.decode()
    assert err.decode().splitlines()[-1] == (
        "quantcore: recorded data incomplete: 8 bars not recorded, "
        "0 closed bars not delivered (see the log above)"
    )
    assert len((tmp_path / "refused.txt").read_text().split()) == 4


@pytest.mark.timeout(90)
async def test_health_names_a_database_recorder_while_its_server_is_down(
    tmp_path: Path, postgres_server: PostgresServer, unique: str
) -> None:
    params = {"dsn": postgres_server.dsn, "table": f"bars_{unique}", "max_delay": 0.05}
    async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=60) as exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            metrics={"port": 0},
            consumers=[
                {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
                {"class": "postgres", "params": {**params, "retry_max": 0.3}},
            ],
        )
        app = App(config)
        run = asyncio.create_task(app.run())
        await wait_until(lambda: app.metrics is not None and app.metrics.port != 0, 10, "metrics")
        async with aiohttp.ClientSession() as session:
            healthy = await wait_for_health(session, app, 200, "PostgresRecorder", 20)
            await asyncio.to_thread(postgres_server.stop)
            try:
                failing = await wait_for_health(session, app, 503, "PostgresRecorder", 10)
            finally:
                await asyncio.to_thread(postgres_server.start)
            again = await wait_for_health(session, app, 200, "PostgresRecorder", 20)
        app.stop()
        summary = await asyncio.wait_for(run, 30)
    assert healthy == {"healthy": True, "reason": "recording"} == again
    assert failing["reason"].startswith("failing: ") and "bars waiting" in failing["reason"]
    assert summary.not_recorded == 0


async def test_a_range_no_history_can_fill_is_named_and_counted(
    postgres_server: PostgresServer, unique: str
) -> None:
    """Without a feed history (no App: ``context.history`` is None) a sink that finds its
    own rows behind the bars it holds says so, /health calls it behind, and the missing
    bars count as not recorded; it still writes what it holds."""
    table = f"bars_{unique}"
    bus = EventBus()
    params: dict[str, Any] = {"table": table, "max_delay": 0.02, "retry_max": 0.2}
    first = PostgresRecorder(dsn=postgres_server.dsn, **params)
    await start_all(bus, [first])
    publish(bus, [make_bar(i) for i in range(10)])
    await stop_all(bus, [first])

    bus = EventBus()
    status = StatusLog(bus)
    sink = PostgresRecorder(dsn=postgres_server.dsn, **params)
    await asyncio.to_thread(postgres_server.stop)
    try:
        await start_all(bus, [sink])
        assert sink.resume_point(*STREAM) is None
        assert (sink.problem() or "").startswith("failing: "), "down at start is failing"
        publish(bus, [make_bar(i) for i in range(20, 30)])
    finally:
        await asyncio.to_thread(postgres_server.start)
    await wait_until(lambda: sink.buffer.written == 10, 10.0, "the bars it holds")
    assert sink.unfillable == {STREAM: 10}
    assert sink.problem() == "behind: bars missing that the feed cannot provide (BTCUSDT 1m: 10)"
    missing = [e.detail for e in status.events if "no history can fill" in e.detail]
    assert missing == [
        "BTCUSDT 1m: bars 2024-09-04 02:37:00 UTC .. 2024-09-04 02:46:00 UTC missing, "
        "and no history can fill them"
    ]
    await stop_all(bus, [sink])
    assert sink.unrecorded() == 10
    assert await stored(postgres_server.dsn, table) == minutes(0, 10) + minutes(20, 30)
