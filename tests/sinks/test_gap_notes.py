"""Exchange gaps written down by the Parquet store and PostgreSQL, as by the CSV and SQLite.

``history`` against the local exchange with a planted exchange gap: the store's
``_gaps.csv`` holds the CSV sidecar's very lines, ``<table>_gaps`` in PostgreSQL the same
range, ``quantcore check ROOT`` labels the hole, and pandas, pyarrow, Polars and DuckDB
still read the store (the sidecar is not part of the dataset). ``export --to parquet
--csv`` carries the CSV's sidecar over, each range once.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import psycopg
import pyarrow.dataset as ds
import pytest

from quantcore.bus import EventBus
from quantcore.cli import main
from quantcore.events import GAP, GapEvent, GapReason
from quantcore.gapfile import STORE_NAME, append_gap, sidecar
from quantcore.sim import LocalExchange, RandomWalkSource
from quantcore.sim.archive import ExchangeGaps
from quantcore.sinks.postgres import PostgresRecorder
from tests.harness import csv_rows
from tests.paths import CSV_BTC
from tests.sinks.helpers import make_bar, start_all, stop_all
from tests.sinks.servers import PostgresServer
from tests.test_history_command import MINUTE, day_ms, history, truth
from tests.test_parquet_commands import recording, write_csv

pytestmark = pytest.mark.timeout(300)

REASON = "exchange gap (no data from Binance)"
HEADER = "first_open,last_open,reason\n"
STREAM = "venue=binance-spot/symbol=BTCUSDT/interval=1m"


def check_lines(capsys: pytest.CaptureFixture[str], target: Path) -> tuple[int, list[str]]:
    code = main(["check", str(target)])
    return code, capsys.readouterr().out.splitlines()


def labelled(where: str, rows: int, first: str, last: str, hole: str) -> list[str]:
    """``check``'s report of a clean stream whose one hole is a known exchange gap."""
    return [
        f"{where}: BTCUSDT 1m: {rows} rows, {first} .. {last} UTC: clean",
        "  known gaps: 1 (180 bars, not counted as problems)",
        f"    {hole} missing (180 bars): {REASON}",
    ]


async def test_history_writes_the_exchange_gap_into_the_store_and_postgres(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer,
    unique: str,
) -> None:  # fmt: skip
    gap = (day_ms("2025-03-08") + 10 * 60 * MINUTE, day_ms("2025-03-08") + 13 * 60 * MINUTE)
    source = ExchangeGaps(RandomWalkSource("BTCUSDT", "1m", 5), [gap])
    store, table = tmp_path / "store", f"bars_{unique}"
    consumers = [
        {"class": "parquet", "params": {"root": str(store)}},
        {"class": "postgres", "params": {"dsn": postgres_server.dsn, "table": table}},
    ]
    async with LocalExchange([source], speed=None) as exchange:
        totals, csv = await history(exchange, tmp_path, "2025-03-07", "2025-03-08",
                                    consumers=consumers)  # fmt: skip
        expected = truth(exchange, "BTCUSDT", day_ms("2025-03-07"), day_ms("2025-03-09"))
    assert (totals.gaps, totals.gap_bars) == (1, 180)
    assert csv_rows(csv) == expected and len(expected) == 2 * 1440 - 180
    line = f"2025-03-08 10:00:00,2025-03-08 12:59:00,{REASON}\n"
    assert sidecar(csv).read_text() == HEADER + line
    assert (store / STREAM / STORE_NAME).read_text() == HEADER + line

    async with await psycopg.AsyncConnection.connect(postgres_server.dsn) as conn:
        cursor = await conn.execute(f'SELECT * FROM "{table}_gaps"')
        assert await cursor.fetchall() == [("BTCUSDT", "1m", gap[0], gap[1] - MINUTE, REASON)]

    code, out = check_lines(capsys, store)
    assert (code, out) == (0, labelled(f"{store}:binance-spot", len(expected),
                                       "2025-03-07 00:00:00", "2025-03-08 23:59:00",
                                       "2025-03-08 10:00:00 .. 2025-03-08 12:59:00"))  # fmt: skip

    rows = len(expected)
    assert len(pd.read_parquet(store)) == rows
    assert ds.dataset(store, format="parquet", partitioning="hive").count_rows() == rows
    assert pl.scan_parquet(f"{store}/**/*.parquet", hive_partitioning=True).select(
        pl.len()).collect().item() == rows  # fmt: skip
    found = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{store}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert found == [(rows,)]


def test_export_carries_the_csv_sidecar_over_each_range_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real recording with 180 bars cut out and written down as an exchange gap: the
    converted store labels the hole; exporting again adds only a range it lacks; a bad
    sidecar line is one line (exit 2) and the store is left byte for byte; ``--force``
    makes the store's ranges the CSV's."""
    rows = recording(CSV_BTC)[:600]
    csv = write_csv(tmp_path / "BTCUSDT_1m.csv", [*rows[:100], *rows[280:]])
    first, last = (day_ms("2025-08-01") + n * MINUTE for n in (100, 279))
    append_gap(csv, first, last, REASON)
    store = tmp_path / "store"
    argv = ["export", "--to", "parquet", "--csv", str(csv), "--symbol", "BTCUSDT",
            "--interval", "1m", "--out", str(store)]  # fmt: skip
    assert main(argv) == 0
    gaps = store / STREAM / STORE_NAME
    assert gaps.read_bytes() == sidecar(csv).read_bytes()
    capsys.readouterr()
    code, out = check_lines(capsys, store)
    assert (code, out) == (0, labelled(f"{store}:binance-spot", 420, "2025-08-01 00:00:00",
                                       "2025-08-01 09:59:00",
                                       "2025-08-01 01:40:00 .. 2025-08-01 04:39:00"))  # fmt: skip

    append_gap(csv, first - 60 * MINUTE, first - 60 * MINUTE, "skipped by backfill_limit")
    assert main(argv) == 0
    assert gaps.read_text() == (
        HEADER
        + "2025-08-01 00:40:00,2025-08-01 00:40:00,skipped by backfill_limit\n"
        + f"2025-08-01 01:40:00,2025-08-01 04:39:00,{REASON}\n"
    )
    before = {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}
    with sidecar(csv).open("a") as handle:
        handle.write("2025-08-01 05:00:00,yesterday,maintenance\n")
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"export: {sidecar(csv)}: line 4: '2025-08-01 05:00:00,yesterday,maintenance' is not "
        "a gap; nothing written\n"
    )
    assert {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()} == before
    sidecar(csv).write_text(HEADER + f"2025-08-01 01:40:00,2025-08-01 04:39:00,{REASON}\n")
    assert main([*argv, "--force"]) == 0
    assert gaps.read_bytes() == sidecar(csv).read_bytes()


async def test_a_gap_with_no_bar_after_it_reaches_postgres_at_stop(
    postgres_server: PostgresServer, unique: str
) -> None:
    """No batch follows the GapEvent: the note is written when the recorder stops, and
    a second note for the same first bar replaces the first (as SQLite's INSERT OR REPLACE)."""
    bus, table = EventBus(), f"bars_{unique}"
    recorder = PostgresRecorder(dsn=postgres_server.dsn, table=table, max_delay=30)
    await start_all(bus, [recorder])
    first, last = make_bar(0).open_time, make_bar(9).open_time
    bus.publish(GAP, GapEvent("BTCUSDT", "1m", first, make_bar(4).open_time, GapReason.EXCHANGE))
    bus.publish(GAP, GapEvent("BTCUSDT", "1m", first, last, GapReason.EXCHANGE))
    await stop_all(bus, [recorder])
    async with await psycopg.AsyncConnection.connect(postgres_server.dsn) as conn:
        cursor = await conn.execute(f'SELECT * FROM "{table}_gaps"')
        assert await cursor.fetchall() == [
            ("BTCUSDT", "1m", make_bar(0).open_time_ms, make_bar(9).open_time_ms, REASON)
        ]
