"""PostgresRecorder against a real throwaway PostgreSQL: batches, idempotency, restarts."""

from __future__ import annotations

import psycopg

from quantcore.bus import EventBus
from quantcore.events import FeedState
from quantcore.sinks.postgres import PostgresRecorder
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
    assert row is not None and row[4:8] == tuple(
        getattr(make_bar(7), f) for f in ("open", "high", "low", "close")
    )


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
