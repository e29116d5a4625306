"""quantcore.load: the same frame from the CSV, SQLite, PostgreSQL and Parquet recordings of
one live run against the local exchange, exact strings and HistoryStore floats alike."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import quantcore
from quantcore.app import App
from quantcore.consumers.history import COLUMNS, HistoryStore
from quantcore.sim import LocalExchange, ReplaySource
from quantcore.sinks.parquet_format import STORE_MARKER
from tests.harness import app_config, csv_rows, truth_row
from tests.paths import REST_BTC
from tests.sinks.servers import PostgresServer

pytestmark = pytest.mark.timeout(90)


def rows_of(frame: pd.DataFrame) -> list[tuple[object, ...]]:
    stamps = frame["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S")
    values = frame[list(COLUMNS[:6])].itertuples(index=False, name=None)
    return [(*v, s) for v, s in zip(values, stamps, strict=True)]


async def test_every_source_loads_the_same_bars(
    tmp_path: Path, postgres_server: PostgresServer, unique: str
) -> None:
    sql_table = f"load_{unique}"
    store = tmp_path / "store"
    consumers = [
        {"class": "history"},
        {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
        {"class": "sqlite", "params": {"path": str(tmp_path / "bars.sqlite"), "max_delay": 0.05}},
        {"class": "postgres", "params": {"dsn": postgres_server.dsn, "table": sql_table}},
        {"class": "parquet", "params": {"root": str(store)}},
    ]
    exchange = LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=3)
    async with exchange:
        app = App(
            app_config(exchange, str(tmp_path / "{symbol}_{interval}.csv"), consumers=consumers)
        )
        summary = await app.run(max_bars=30)
        truth = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)][:30]
    assert summary.bars_recorded == 30
    history = app.context.find(HistoryStore)
    assert history is not None
    assert csv_rows(tmp_path / "BTCUSDT_1m.csv") == truth

    sources: list[str | Path] = [
        tmp_path / "BTCUSDT_1m.csv",
        str(tmp_path / "{symbol}_{interval}.csv"),
        tmp_path / "bars.sqlite",
        postgres_server.dsn,
        store,
    ]
    for source in sources:
        table = sql_table if source == postgres_server.dsn else "bars"
        exact = quantcore.load("BTCUSDT", "1m", source=source, exact=True, table=table)
        assert rows_of(exact) == truth, source
        floats = quantcore.load("BTCUSDT", "1m", source=source, table=table)
        pd.testing.assert_frame_equal(floats, history.frame("BTCUSDT", "1m"), check_exact=True)
        part = quantcore.load(
            "BTCUSDT", "1m", "2024-09-04 02:30", "2024-09-04 02:35", source=source, table=table
        )
        assert rows_of(part) == [(*(float(v) for v in row[:6]), row[6]) for row in truth[3:8]], (
            source
        )


def test_bad_sources_get_one_line(tmp_path: Path) -> None:
    with pytest.raises(quantcore.LoadError, match=r"nothing\.csv: no such file or store"):
        quantcore.load("BTCUSDT", "1m", source=tmp_path / "nothing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(quantcore.LoadError, match="not a quantcore Parquet store"):
        quantcore.load("BTCUSDT", "1m", source=tmp_path / "empty")
    (tmp_path / "empty" / "_quantcore.json").write_text("{}")
    with pytest.raises(
        quantcore.LoadError, match=r"_quantcore\.json: not a quantcore store marker"
    ):
        quantcore.load("ETHBTC", "1m", source=tmp_path / "empty")
    (tmp_path / "empty" / "_quantcore.json").write_bytes(STORE_MARKER)
    with pytest.raises(quantcore.LoadError, match="no bars of ETHBTC 1m in this store"):
        quantcore.load("ETHBTC", "1m", source=tmp_path / "empty")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(quantcore.LoadError, match=r"other\.csv: not a quantcore CSV"):
        quantcore.load("BTCUSDT", "1m", source=other)
