"""Every sink ends equal to the CSV after a fault-schedule run through python-binance
(drops, stalls, restarts, malformed/duplicate/out-of-order frames), and the CSV equals
the exchange's ground truth string for string: the ordering/dedup guarantees and exact
decimals hold for all of them, for a busy symbol and a tiny-priced one (SHIBUSDT). The
Parquet store's fields beyond the CSV's (close time, trades, taker volumes) equal the
exchange's bar too."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

import psycopg
import pytest

from quantcore.app import App
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.sim import LocalExchange, ReplaySource
from quantcore.sinks import schema
from quantcore.sinks.export import export_csv
from quantcore.sinks.rows import from_row
from tests import parquet_check
from tests.harness import app_config, caught_up, csv_rows, inject_faults, truth_since, wait_until
from tests.paths import CSV_BTC, CSV_SHIB
from tests.sinks.servers import PostgresServer

BARS = 150


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("symbol", "data"), [("BTCUSDT", CSV_BTC), ("SHIBUSDT", CSV_SHIB)])
async def test_every_sink_equals_the_csv_after_faults(
    tmp_path: Path, postgres_server: PostgresServer, unique: str, symbol: str, data: Path
) -> None:
    table = f"bars_{unique}"
    csv_path = tmp_path / f"{symbol}_1m.csv"
    db = tmp_path / "bars.sqlite"
    root = tmp_path / "store"
    source = ReplaySource.from_file(data, symbol)
    exchange = LocalExchange([source], speed=1200, updates_per_bar=4)
    async with exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            streams=[{"symbol": symbol, "interval": "1m"}],
            feed={"stall_timeout": 0.5, "reconnect": {"initial_delay": 0.05, "max_delay": 0.3}},
            consumers=[
                {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
                {"class": "sqlite", "params": {"path": str(db), "max_delay": 0.05}},
                {
                    "class": "postgres",
                    "params": {"dsn": postgres_server.dsn, "table": table, "max_delay": 0.05},
                },
                parquet_check.consumer(root),
            ],
        )
        app = App(config)
        run = asyncio.create_task(app.run())
        await wait_until(
            lambda: csv_path.exists() and len(csv_path.read_text().splitlines()) > 3,
            10,
            "first bars",
        )
        faults = await inject_faults(
            exchange,
            random.Random(7),
            lambda: len(exchange.closed_klines(symbol, "1m")) >= BARS,
            symbol=symbol,
        )
        await wait_until(lambda: caught_up(exchange, csv_path, symbol), 20, "the CSV to catch up")
        app.stop()
        await asyncio.wait_for(run, 20)
        rows = csv_rows(csv_path)
        assert rows == truth_since(exchange, rows[0], len(rows), symbol=symbol)
        parquet_check.assert_store_holds(root, symbol, rows, exchange)
    assert len(rows) >= BARS - 10 and len(set(faults)) >= 4, faults

    csv_text = csv_path.read_text()
    exported = io.StringIO()
    assert export_csv(db, symbol, "1m", exported) == len(rows)
    assert exported.getvalue() == csv_text

    async with await psycopg.AsyncConnection.connect(postgres_server.dsn) as conn:
        cursor = await conn.execute(
            schema.select_stream(schema.table_name(table), "%s"), (symbol, "1m")
        )
        stored = await cursor.fetchall()
    assert HEADER + "".join(format_row(from_row(row)) for row in stored) == csv_text
