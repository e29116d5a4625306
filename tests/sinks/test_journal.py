"""A sink's backlog while its server is down: bounded memory, then the journal file, read
back in order when the server returns and removed once drained; when even the journal
cannot be written, the newest bars are refused and the run stops itself (exit 3), and
the next run fills the sink from its own last row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from quantcore.app import App
from quantcore.bus import EventBus
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.sim import LocalExchange, ReplaySource
from quantcore.sinks import schema
from quantcore.sinks.postgres import PostgresRecorder
from quantcore.sinks.rows import from_row
from tests.disk import small_disk
from tests.harness import app_config, csv_rows, truth_since
from tests.paths import CSV_BTC
from tests.sinks.helpers import STREAM, make_bar, publish, start_all, stop_all, wait_until
from tests.sinks.servers import PostgresServer
from tests.sinks.test_postgres import minutes, stored


async def test_backlog_spills_to_the_journal_and_drains_in_order_after_a_restart(
    tmp_path: Path, postgres_server: PostgresServer, unique: str
) -> None:
    table = f"bars_{unique}"
    bus = EventBus()
    recorder = PostgresRecorder(
        dsn=postgres_server.dsn, table=table, batch_size=4, max_delay=0.02, retry_max=0.2,
        max_buffer=10, journal_dir=str(tmp_path),
    )  # fmt: skip
    await start_all(bus, [recorder])
    journal = recorder.journal_path()
    assert journal.parent == tmp_path and journal.name.startswith("PostgresRecorder-")
    publish(bus, [make_bar(i) for i in range(10)])
    await wait_until(lambda: recorder.buffer.written == 10, 5.0, "bars before the outage")
    await asyncio.to_thread(postgres_server.stop)
    try:
        publish(bus, [make_bar(i) for i in range(10, 200)])
        assert recorder.buffer.journaled == 180, "memory keeps max_buffer bars, no more"
        lines = journal.read_bytes().splitlines()
        assert len(lines) == 180 and b'"open_time":"2024-09-04T02:47:00Z"' in lines[0]
        await wait_until(lambda: not recorder.buffer.healthy, 5.0, "the outage to be noticed")
        publish(bus, [make_bar(i) for i in range(200, 210)])
    finally:
        await asyncio.to_thread(postgres_server.start)
    await wait_until(lambda: recorder.buffer.written == 210, 20.0, "the journal to drain")
    assert not journal.exists(), "removed once drained"
    await stop_all(bus, [recorder])
    assert await stored(postgres_server.dsn, table) == minutes(0, 210)
    assert recorder.buffer.dropped == 0 and recorder.unrecorded() == 0


@pytest.mark.timeout(180)
async def test_journal_that_cannot_be_written_stops_the_run_and_the_next_run_fills_it(
    tmp_path: Path, postgres_server: PostgresServer, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"bars_{unique}"
    template = str(tmp_path / "{symbol}_{interval}.csv")
    csv_path = tmp_path / "BTCUSDT_1m.csv"
    with small_disk(tmp_path / "disk", monkeypatch) as disk:
        params = {
            "dsn": postgres_server.dsn, "table": table, "batch_size": 2, "max_buffer": 4,
            "max_delay": 0.02, "retry_max": 0.2, "stop_timeout": 1, "journal_dir": str(disk.root),
        }  # fmt: skip
        consumers = [
            {"class": "csv", "params": {"path": template}},
            {"class": "postgres", "params": params},
        ]
        async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=120) as exchange:
            app = App(app_config(exchange, template, consumers=consumers))
            sink = app.components[1]
            assert isinstance(sink, PostgresRecorder)
            run = asyncio.create_task(app.run())
            await wait_until(lambda: sink.buffer.written >= 3, 30, "the first bars")
            disk.fill()
            await asyncio.to_thread(postgres_server.stop)
            try:
                summary = await asyncio.wait_for(run, 60)
            finally:
                disk.free()
                await asyncio.to_thread(postgres_server.start)
            assert sink.buffer.refusing and summary.incomplete and summary.not_recorded >= 1
            kept = await stored(postgres_server.dsn, table)
            first = kept[0]
            assert kept == list(range(first, kept[-1] + 60_000, 60_000)), "no hole in the middle"

            again = App(app_config(exchange, template, consumers=consumers))
            await again.run(max_bars=len(csv_rows(csv_path)) - len(kept) + 5)
            rows = csv_rows(csv_path)
            assert rows == truth_since(exchange, rows[0], len(rows))
    async with await psycopg.AsyncConnection.connect(postgres_server.dsn) as conn:
        cursor = await conn.execute(schema.select_stream(schema.table_name(table), "%s"), STREAM)
        text = HEADER + "".join(format_row(from_row(row)) for row in await cursor.fetchall())
    assert text == csv_path.read_text()
