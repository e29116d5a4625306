"""Every sink whole on its own: the App records to CSV + Parquet + PostgreSQL + Redis on
the local exchange; the databases fall behind (a run with the files alone), both servers
are down when the next run starts and are stopped again mid-run for OUTAGE bars. At the
end the table, the stream and the Parquet store each equal the CSV string for string,
and the CSV equals the exchange's ground truth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from quantcore.app import App
from quantcore.config import AppConfig
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.sim import LocalExchange, ReplaySource
from quantcore.sinks import schema
from quantcore.sinks.base import BufferedSink
from quantcore.sinks.parquet import ParquetRecorder
from quantcore.sinks.postgres import PostgresRecorder
from quantcore.sinks.redis_streams import RedisStreamPublisher, stream_name
from quantcore.sinks.rows import from_fields, from_row
from tests import parquet_check
from tests.harness import app_config, csv_rows, truth_since, wait_until
from tests.paths import CSV_BTC
from tests.sinks.servers import PostgresServer, RedisServer, redis_server_binary

STREAM = ("BTCUSDT", "1m")
FIRST = 10
"""Bars the first run records to all three."""
BEHIND = 8
"""Bars the second run records to the CSV alone: the databases fall behind."""
OUTAGE = 10
"""Bars recorded while both servers are stopped mid-run."""


@pytest.fixture
def kept_redis() -> Iterator[RedisServer]:
    """A Redis whose data survives a stop and start (append-only file)."""
    server = RedisServer(redis_server_binary(), persistent=True)
    try:
        server.start()
        yield server
    finally:
        server.remove()


def rows_in(path: Path) -> int:
    return len(csv_rows(path)) if path.exists() and path.stat().st_size else 0


def stored_text(rows: list[Any]) -> str:
    return HEADER + "".join(format_row(from_row(row)) for row in rows)


async def assert_databases_hold(
    csv_text: str, dsn: str, table: str, redis_url: str, prefix: str
) -> list[tuple[str, dict[str, str]]]:
    """The PostgreSQL table and the Redis stream each equal the CSV, string for string;
    returns the stream's entries for further checks."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(schema.select_stream(schema.table_name(table), "%s"), STREAM)
        assert stored_text(await cursor.fetchall()) == csv_text
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = await client.xrange(
            stream_name(prefix, *STREAM)
        )
    finally:
        await client.aclose()
    assert HEADER + "".join(format_row(from_fields(fields)) for _, fields in entries) == csv_text
    return entries


@pytest.mark.timeout(240)
async def test_table_and_stream_equal_the_csv_after_outages_before_and_during_the_run(
    tmp_path: Path, postgres_server: PostgresServer, kept_redis: RedisServer, unique: str
) -> None:
    table, prefix = f"bars_{unique}", f"qc:{unique}"
    template = str(tmp_path / "{symbol}_{interval}.csv")
    csv_path = tmp_path / "BTCUSDT_1m.csv"
    fast = {"max_delay": 0.05, "retry_max": 0.3, "stop_timeout": 10}
    async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=120) as exchange:

        def config(sinks: bool) -> AppConfig:
            consumers: list[dict[str, Any]] = [
                {"class": "csv", "params": {"path": template}},
                parquet_check.consumer(tmp_path / "store"),  # never behind: the databases are
            ]
            if sinks:
                consumers += [
                    {"class": "postgres", "params": {"dsn": postgres_server.dsn, "table": table, **fast}},
                    {"class": "redis", "params": {"url": kept_redis.url, "prefix": prefix, **fast}},
                ]  # fmt: skip
            return app_config(exchange, template, consumers=consumers)

        first = await App(config(True)).run(max_bars=FIRST)
        assert first.not_recorded == 0
        await App(config(False)).run(max_bars=BEHIND)

        await asyncio.to_thread(postgres_server.stop)
        kept_redis.stop()
        app = App(config(True))
        csv, parquet, postgres, redis = app.components
        assert isinstance(postgres, PostgresRecorder) and isinstance(redis, RedisStreamPublisher)
        assert isinstance(parquet, ParquetRecorder)
        sinks: list[BufferedSink] = [postgres, redis]
        run = asyncio.create_task(app.run())
        try:
            at_start = FIRST + BEHIND
            await wait_until(lambda: rows_in(csv_path) >= at_start + 3, 60, "bars while down")
            assert [sink.resume_point(*STREAM) for sink in sinks] == [None, None]
            assert all(sink.buffer.failures > 0 for sink in sinks)
        finally:
            await asyncio.to_thread(postgres_server.start)
            kept_redis.start()

        def caught_up() -> bool:
            last = csv.resume_point(*STREAM)
            return parquet.resume_point(*STREAM) == last and all(
                s.buffer.healthy and not len(s.buffer) and s.resume_point(*STREAM) == last
                for s in sinks
            )

        await wait_until(caught_up, 60, "the sinks to fill their own range and catch up")
        assert all(sink.refilled >= BEHIND for sink in sinks), [s.refilled for s in sinks]

        before = rows_in(csv_path)
        await asyncio.to_thread(postgres_server.stop)
        kept_redis.stop()
        try:
            await wait_until(lambda: rows_in(csv_path) >= before + OUTAGE, 60, "the outage")
            assert all(not sink.buffer.healthy and len(sink.buffer) for sink in sinks)
        finally:
            await asyncio.to_thread(postgres_server.start)
            kept_redis.start()
        await wait_until(caught_up, 60, "the sinks to catch up after the outage")
        app.stop()
        summary = await asyncio.wait_for(run, 30)
        rows = csv_rows(csv_path)
        assert rows == truth_since(exchange, rows[0], len(rows))
        parquet_check.assert_store_holds(tmp_path / "store", "BTCUSDT", rows, exchange)
    assert summary.not_recorded == 0 and summary.subscriber_errors == 0
    assert len(rows) >= FIRST + BEHIND + 3 + OUTAGE
    assert all(sink.buffer.dropped == 0 for sink in sinks)
    entries = await assert_databases_hold(
        csv_path.read_text(), postgres_server.dsn, table, kept_redis.url, prefix
    )
    assert [entry_id for entry_id, _ in entries] == [
        f"{from_fields(fields).open_time_ms}-0" for _, fields in entries
    ]


@pytest.mark.timeout(120)
async def test_a_recorder_behind_is_filled_for_its_own_range_and_the_others_skip_it(
    tmp_path: Path, postgres_server: PostgresServer, kept_redis: RedisServer, unique: str
) -> None:
    """The CSV is restored from an older backup: the feed resumes from its row, the CSV
    gets the bars it lost, and the databases, which hold them, receive none twice."""
    table, prefix = f"bars_{unique}", f"qc:{unique}"
    template = str(tmp_path / "{symbol}_{interval}.csv")
    csv_path = tmp_path / "BTCUSDT_1m.csv"
    params = {"max_delay": 0.05}
    consumers: list[dict[str, Any]] = [
        {"class": "csv", "params": {"path": template}},
        {"class": "postgres", "params": {"dsn": postgres_server.dsn, "table": table, **params}},
        {"class": "redis", "params": {"url": kept_redis.url, "prefix": prefix, **params}},
        parquet_check.consumer(tmp_path / "store"),
    ]
    async with LocalExchange([ReplaySource.from_file(CSV_BTC)], speed=120) as exchange:
        await App(app_config(exchange, template, consumers=consumers)).run(max_bars=12)
        lines = csv_path.read_text().splitlines(keepends=True)
        csv_path.write_text("".join(lines[:7]))  # the header and 6 rows: an older backup
        app = App(app_config(exchange, template, consumers=consumers))
        _, postgres, redis, parquet = app.components
        assert isinstance(postgres, PostgresRecorder) and isinstance(redis, RedisStreamPublisher)
        assert isinstance(parquet, ParquetRecorder)
        summary = await app.run(max_bars=11)
        rows = csv_rows(csv_path)
        assert rows == truth_since(exchange, rows[0], len(rows)) and len(rows) == 17
        parquet_check.assert_store_holds(tmp_path / "store", "BTCUSDT", rows, exchange)
    assert parquet.rows_written == 5
    assert summary.not_recorded == 0
    for sink in (postgres, redis):
        assert (sink.skipped, sink.refilled, sink.buffer.written) == (6, 0, 5), sink.name
    assert redis.duplicates == 0
    await assert_databases_hold(
        csv_path.read_text(), postgres_server.dsn, table, kept_redis.url, prefix
    )
