"""PostgresRecorder: closed bars in a PostgreSQL table, shared by many hosts and readers.

psycopg 3 async, one connection; each batch is one transaction of a pipelined
``executemany`` upsert. Prices and volumes are ``NUMERIC`` columns fed the exchange's
strings, so they are stored and read back exactly (a NUMERIC keeps the scale it got).
A dropped connection (server restart, network) is thrown away and reopened by the retry
loop, so the failed batch is written again: ON CONFLICT makes that safe even when the
lost reply was for a commit that did happen. GapEvents are written down in
``<table>_gaps`` (the SQLite layout) with the next batch, or at stop.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from quantcore.backoff import describe
from quantcore.events import BarEvent, FeedState, GapEvent, epoch_ms
from quantcore.sinks import schema
from quantcore.sinks.base import BufferedSink
from quantcore.sinks.rows import to_row

log = logging.getLogger(__name__)


class PostgresRecorder(BufferedSink):
    """Upserts closed bars into ``table`` (created if missing) of the database at ``dsn``.

    If the database is unreachable at start, :meth:`resume_point` is None (the feed then
    resumes from the other components) and bars are buffered until it comes up; then
    it reads its own last row and fills the range up to the bars it holds.
    """

    defaults = {"stop_timeout": 10.0}
    venue_params = {"table": "table"}

    def __init__(
        self,
        *,
        dsn: str,
        table: str = "bars",
        connect_timeout: float = 5.0,
        name: str | None = None,
        **settings: float | str,
    ) -> None:
        super().__init__(name, settings)
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout!r}")
        self.dsn = dsn
        self.table = schema.table_name(table)
        self.connect_timeout = connect_timeout
        self._create = schema.create_table(self.table, integer="BIGINT", decimal="NUMERIC")
        self._insert = schema.insert(self.table, "%s")
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._resume: dict[tuple[str, str], int] = {}
        self._gaps_table = schema.gaps_table(table)
        self._gaps: list[tuple[str, str, int, int, str]] = []
        """Ranges of GapEvents not written down yet (in the next batch's transaction)."""

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            async with asyncio.timeout(self.connect_timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
                )
            try:
                await conn.execute(self._create)
                await self._check_table(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _check_table(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """FloatTableError if the table predates exact decimals (DOUBLE PRECISION prices)."""
        db_schema, name = schema.split_name(self.table.replace('"', ""))
        cursor = await conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = "
            "coalesce(%s, current_schema()) AND table_name = %s AND column_name = 'open'",
            (db_schema, name),
        )
        row = await cursor.fetchone()
        if row is not None and str(row[0]).lower() != "numeric":
            raise schema.FloatTableError(self.dsn_name, self.table, str(row[0]).upper())

    @property
    def dsn_name(self) -> str:
        """The database for messages: host/dbname of the DSN, never its password."""
        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        return f"{info.get('host', 'localhost')}/{info.get('dbname', '')}"

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def open(self) -> None:
        try:
            conn = await self._connection()
            for symbol, interval in self.context.streams:
                cursor = await conn.execute(
                    schema.last_open_time(self.table, "%s"),
                    (symbol, interval),
                )
                row = await cursor.fetchone()
                if row is not None and row[0] is not None:
                    self._resume[(symbol, interval)] = int(row[0])  # type: ignore[call-overload]
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._discard()
            self.buffer.mark_down(describe(exc))
            detail = (
                "database unavailable at start (buffering; its own range is filled when it "
                f"answers): {describe(exc)}"
            )
            self.report(FeedState.ERROR, detail, logging.WARNING)
        else:
            self.report(FeedState.CONNECTED, f"table {self.table}")

    def stored_resume_point(self, symbol: str, interval: str) -> int | None:
        return self._resume.get((symbol, interval))

    def destination(self) -> str:
        return f"postgresql {self.dsn_name} {self.table}"

    async def read_last(self, symbol: str, interval: str) -> int | None:
        try:
            conn = await self._connection()
            cursor = await conn.execute(schema.last_open_time(self.table, "%s"), (symbol, interval))
            row = await cursor.fetchone()
        except BaseException:
            await self._discard()
            raise
        return None if row is None or row[0] is None else int(row[0])  # type: ignore[call-overload]

    async def write_batch(self, batch: list[BarEvent]) -> None:
        gaps = self._gaps[:]
        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(
                    self._insert,
                    [to_row(bar) for bar in batch],
                )
                if gaps:
                    await cursor.execute(schema.create_gaps_table(self._gaps_table, "BIGINT"))
                    await cursor.executemany(schema.insert_gap(self._gaps_table, "%s"), gaps)
        except BaseException:
            await self._discard()
            raise
        del self._gaps[: len(gaps)]

    def on_gap(self, gap: GapEvent) -> None:
        """Queue the range for ``<table>_gaps`` (SQLite's record of why a hole is there): it
        is written with the next batch (retried with it while the database is down) or at stop."""
        first, last = epoch_ms(gap.first_open), epoch_ms(gap.last_open)
        self._gaps.append((gap.symbol, gap.interval, first, last, gap.reason.value))

    async def close(self) -> None:
        if self._gaps:
            try:
                await self.write_batch([])
            except (psycopg.Error, OSError, TimeoutError, ValueError) as exc:
                log.error("%s: %d gap notes not written down in %s: %s", self.dsn_name,
                          len(self._gaps), self._gaps_table, describe(exc))  # fmt: skip
        await self._discard()
