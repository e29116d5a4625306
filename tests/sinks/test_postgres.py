"""PostgresRecorder against a real throwaway PostgreSQL: batches, idempotency, restarts."""

from __future__ import annotations

import psycopg
import pytest
from msgspec.structs import replace

from quantcore.bus import EventBus
from quantcore.events import FeedState
from quantcore.feeds.binance.codec import KlineCodec
from quantcore.sinks import schema
from quantcore.sinks.postgres import PostgresRecorder
from quantcore.sinks.rows import from_row
from quantcore.sinks.schema import FloatTableError
from tests.sinks.helpers import (
    STREAM,
    StatusLog,
    make_bar,
    publish,
    start_all,
    stop_all,
    wait_until,
)
from tests.sinks.servers import PostgresServer


async def stored(dsn: str, table: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(f"SELECT open_time FROM {table} ORDER BY open_time")
        return [int(row[0]) for row in await cursor.fetchall()]


def minutes(first: int, last: int) -> list[int]:
    return [make_bar(i).open_time_ms for i in range(first, last)]


async def test_batches_land_idempotently_and_resume(
    postgres_server: PostgresServer, unique: str
) -> None:
    table = f"bars_{unique}"
    bus = EventBus()
    recorder = PostgresRecorder(dsn=postgres_server.dsn, table=table, batch_size=10, max_delay=30)
    await start_all(bus, [recorder])
    assert recorder.resume_point(*STREAM) is None
    publish(bus, [make_bar(i) for i in range(25)])
    await wait_until(lambda: recorder.buffer.written == 20, 5.0, "two full batches")
    assert await stored(postgres_server.dsn, table) == minutes(0, 20)
    publish(bus, [make_bar(i) for i in range(5, 15)])
    await stop_all(bus, [recorder])
    assert await stored(postgres_server.dsn, table) == minutes(0, 25)

    bus = EventBus()
    again = PostgresRecorder(dsn=postgres_server.dsn, table=table, batch_size=10, max_delay=0.05)
    await start_all(bus, [again])
    assert again.resume_point(*STREAM) == make_bar(24).open_time_ms
    publish(bus, [make_bar(i) for i in range(20, 30)])
    await stop_all(bus, [again])
    assert await stored(postgres_server.dsn, table) == minutes(0, 30)
    async with await psycopg.AsyncConnection.connect(postgres_server.dsn) as conn:
        cursor = await conn.execute(
            f"SELECT * FROM {table} WHERE open_time = %s", [minutes(7, 8)[0]]
        )
        row = await cursor.fetchone()
    exact = make_bar(7).decimal_strings()
    assert row is not None and [str(value) for value in row[4:14]] == [
        exact.open, exact.high, exact.low, exact.close, exact.volume, exact.quote_volume,
        "107", exact.taker_buy_volume, exact.taker_buy_quote_volume, str(minutes(7, 8)[0] + 60_017)
    ]  # fmt: skip


async def test_server_restart_mid_run_loses_and_duplicates_nothing(
    postgres_server: PostgresServer, unique: str
) -> None:
    table = f"bars_{unique}"
    bus = EventBus()
    status = StatusLog(bus)
    recorder = PostgresRecorder(
        dsn=postgres_server.dsn, table=table, batch_size=4, max_delay=0.02, retry_max=0.2
    )
    await start_all(bus, [recorder])
    publish(bus, [make_bar(i) for i in range(10)])
    await wait_until(lambda: recorder.buffer.written == 10, 5.0, "bars before the restart")
    try:
        postgres_server.stop()
        publish(bus, [make_bar(i) for i in range(10, 30)])
        await wait_until(lambda: not recorder.buffer.healthy, 5.0, "the outage to be noticed")
        assert len(recorder.buffer) == 20, "bars are buffered while the server is down"
    finally:
        postgres_server.start()
    publish(bus, [make_bar(i) for i in range(30, 40)])
    await wait_until(lambda: recorder.buffer.healthy, 10.0, "reconnect")
    await stop_all(bus, [recorder])
    assert await stored(postgres_server.dsn, table) == minutes(0, 40)
    states = status.states(recorder.name)
    assert states[0] is FeedState.CONNECTED
    assert FeedState.ERROR in states and states[-1] is FeedState.CONNECTED
    assert recorder.buffer.dropped == 0 and sum(bus.handler_errors.values()) == 0


async def test_down_at_start_has_no_resume_point_and_buffers(
    postgres_server: PostgresServer, unique: str
) -> None:
    table = f"bars_{unique}"
    bus = EventBus()
    status = StatusLog(bus)
    recorder = PostgresRecorder(
        dsn=postgres_server.dsn, table=table, batch_size=50, max_delay=0.02, retry_max=0.2
    )
    postgres_server.stop()
    try:
        await start_all(bus, [recorder])
        assert recorder.resume_point(*STREAM) is None
        assert status.states(recorder.name) == [FeedState.ERROR]
        publish(bus, [make_bar(i) for i in range(12)])
        await wait_until(lambda: recorder.buffer.failures >= 1, 5.0, "a failed write")
    finally:
        postgres_server.start()
    await wait_until(lambda: recorder.buffer.written == 12, 10.0, "the buffered bars")
    await stop_all(bus, [recorder])
    assert await stored(postgres_server.dsn, table) == minutes(0, 12)


async def test_numeric_columns_keep_every_digit_and_a_float_table_is_refused(
    postgres_server: PostgresServer, unique: str
) -> None:
    codec = KlineCodec()
    row = [1704067200000, "0.00001036", "0.00001036", "0.00001034", "0.00001035",
           "1311851438.00", 1704067259999, "6732223209.87654307", 9, "0.00001234", "0", "0"]  # fmt: skip
    bar = codec.parse_rest_row("SHIBUSDT", "1m", row)
    table = f"bars_{unique}"
    bus = EventBus()
    recorder = PostgresRecorder(dsn=postgres_server.dsn, table=table, max_delay=0.01)
    await start_all(bus, [recorder])
    publish(bus, [bar])
    await stop_all(bus, [recorder])
    async with await psycopg.AsyncConnection.connect(postgres_server.dsn) as conn:
        cursor = await conn.execute(f"SELECT * FROM {table}")
        rows = await cursor.fetchall()
        assert [from_row(r) for r in rows] == [replace(bar, received_ns=0)]
        assert [str(v) for v in rows[0][4:10]] == [*row[1:6], "6732223209.87654307"]

        old = f"old_{unique}"
        await conn.execute(
            schema.create_table(
                schema.table_name(old), integer="BIGINT", decimal="DOUBLE PRECISION"
            )
        )
        await conn.commit()
    stale = PostgresRecorder(dsn=postgres_server.dsn, table=old)
    with pytest.raises(FloatTableError, match=f'table "{old}" stores prices as DOUBLE PRECISION'):
        await start_all(EventBus(), [stale])
