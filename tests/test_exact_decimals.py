"""Exact decimals end to end: the exchange's strings reach the CSV, SQLite, the Parquet
store and the console unchanged (no exponent, no lost digit), while BarEvent and the DataFrame keep floats.

The end-to-end tests replay the real SHIBUSDT recording (prices like ``0.00001036``,
volumes like ``1311851438.00``) through the local exchange and real python-binance.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.app import App
from quantcore.consumers.console import describe
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.consumers.history import HistoryStore
from quantcore.decimals import plain, to_floats, trim
from quantcore.events import BarDecimals
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError
from quantcore.sim import LocalExchange, ReplaySource
from quantcore.sinks.export import export_csv
from quantcore.sinks.rows import from_fields, from_row, to_fields, to_row
from tests import parquet_check
from tests.harness import (
    app_config,
    as_floats,
    caught_up,
    csv_rows,
    frame_rows,
    inject_faults,
    truth_row,
    truth_since,
    wait_until,
)
from tests.paths import CSV_SHIB, WS_BTC

SHIB = "SHIBUSDT"
OPEN_MS = 1704067200000


def rest_row(*values: str, trades: int = 9) -> list[object]:
    """A REST kline row: o, h, l, c, v, q, taker base, taker quote as given."""
    o, h, lo, c, v, q, tv, tq = values
    return [OPEN_MS, o, h, lo, c, v, OPEN_MS + 59_999, q, trades, tv, tq, "0"]


def test_tiny_price_stays_plain_and_huge_volume_keeps_every_digit() -> None:
    row = rest_row("0.00001234", "0.00001240", "0.00001230", "0.00001234",
                   "6732223209.87654307", "83080.23456789", "0.00000001", "0")  # fmt: skip
    bar = KlineCodec().parse_rest_row(SHIB, "1m", row)
    assert bar.close == 1.234e-05 and bar.volume == 6732223209.876543
    assert format_row(bar) == (
        "0.00001234,0.00001240,0.00001230,0.00001234,6732223209.87654307,83080.23456789,"
        "2024-01-01 00:00:00\n"
    )
    assert to_row(bar)[8] == to_fields(bar)["volume"] == "6732223209.87654307"
    assert from_fields(to_fields(bar)) == bar
    assert "C 0.00001234" in describe(bar) and "V 6732223209.87654307" in describe(bar)


def test_text_and_dict_frames_keep_the_strings() -> None:
    k = {"t": OPEN_MS, "T": OPEN_MS + 59_999, "s": SHIB, "i": "1m", "o": "0.00001036",
         "c": "0.00001035", "h": "0.00001036", "l": "0.00001034", "v": "1311851438.00",
         "n": 7, "x": True, "q": "13577.66238330", "V": "0.00", "Q": "0.00000000"}  # fmt: skip
    frame = {"e": "kline", "E": OPEN_MS + 60_000, "s": SHIB, "k": k}
    codec = KlineCodec()
    expected = BarDecimals("0.00001036", "0.00001036", "0.00001034", "0.00001035",
                           "1311851438.00", "13577.66238330", "0.00", "0.00000000")  # fmt: skip
    assert codec.parse_frame(frame).decimals == expected
    assert codec.parse(json.dumps({"stream": "x", "data": frame})).decimals == expected


@pytest.mark.parametrize("bad", ["1.234e-05", "1E5", "nan", "inf", "-0.1", "+1", " 1", "1_0", ".5"])
def test_non_plain_decimals_are_parse_errors(bad: str) -> None:
    row = rest_row("1", "2", "0.5", "1", "3", "3", "1", "1")
    row[5] = bad  # volume
    with pytest.raises(KlineParseError, match="plain decimal"):
        KlineCodec().parse_rest_row(SHIB, "1m", row)


plain_decimals = st.builds(
    lambda whole, frac: f"{whole}.{frac}" if frac else str(whole),
    st.integers(min_value=0, max_value=10**20),
    st.text(alphabet="0123456789", max_size=18),
)


@settings(max_examples=300, deadline=None)
@given(value=plain_decimals, volume=plain_decimals)
def test_format_of_parse_is_the_identity_on_plain_decimals(value: str, volume: str) -> None:
    bar = KlineCodec().parse_rest_row(
        SHIB, "1m", rest_row(value, value, value, value, volume, volume, volume, volume)
    )
    assert (
        format_row(bar)
        == f"{value},{value},{value},{value},{volume},{volume},2024-01-01 00:00:00\n"
    )
    assert bar.close == float(value) and bar.volume == float(volume)
    assert from_row(to_row(bar)).decimals == bar.decimals
    assert to_floats(value, value, value, value, volume, volume, volume, volume)[4] == float(volume)


@settings(max_examples=300, deadline=None)
@given(value=st.floats(min_value=0, allow_infinity=False, allow_nan=False))
def test_floats_without_exchange_strings_are_written_plain_and_exact(value: float) -> None:
    text = plain(value)
    assert "e" not in text.lower() and float(text) == value
    assert Decimal(text) == Decimal(repr(value))
    assert Decimal(trim(text)) == Decimal(text)


def shib_file() -> list[list[str]]:
    """The recording's rows as the exchange served them: open ms, o, h, l, c, v strings."""
    with CSV_SHIB.open(newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def assert_rows_are_the_files_strings(rows: list[tuple[str, ...]], exchange: LocalExchange) -> None:
    """Every CSV value equals what the local exchange served, character for character,
    and the value of the recording's own string (prices: the same string; volumes: the
    recording has 2 decimals, the exchange serves Binance's REST form with 8)."""
    served = {
        row[6]: row
        for row in (truth_row(k) for k in exchange.closed_klines(SHIB, "1m", since_ms=0))
    }
    recorded = {
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(open_ms) // 1000)): (c, h, lo, o, v)
        for open_ms, o, h, lo, c, v in shib_file()
    }
    for row in rows:
        assert row == served[row[6]]
        c, h, lo, o, v = recorded[row[6]]
        assert row[:4] == (c, h, lo, o)
        assert Decimal(row[4]) == Decimal(v) and row[4] == f"{v}000000"


@pytest.mark.timeout(120)
async def test_shib_recording_reaches_csv_sqlite_and_dataframe_exactly(tmp_path: Path) -> None:
    bars = 400
    db = tmp_path / "bars.sqlite"
    path = tmp_path / f"{SHIB}_1m.csv"
    source = ReplaySource.from_file(CSV_SHIB, SHIB)
    async with LocalExchange([source], updates_per_bar=3) as exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            streams=[{"symbol": SHIB, "interval": "1m"}],
            consumers=[
                {"class": "history"},
                {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
                {"class": "quantcore.sinks.sqlite:SqliteRecorder", "params": {"path": str(db)}},
                parquet_check.consumer(tmp_path / "store"),
            ],
        )
        app = App(config)
        await app.run(max_bars=bars)
        text = path.read_text()
        rows = csv_rows(path)
        assert len(rows) == bars and rows[0][6] == "2024-01-01 00:00:00"
        assert not any("e" in line.lower() for line in text.splitlines()[1:])
        assert rows[0] == ("0.00001035", "0.00001036", "0.00001034", "0.00001036",
                           "1311851438.00000000", rows[0][5], "2024-01-01 00:00:00")  # fmt: skip
        assert_rows_are_the_files_strings(rows, exchange)
        store = app.context.find(HistoryStore)
        assert store is not None and frame_rows(store.frame(SHIB, "1m")) == as_floats(rows)
        parquet_check.assert_store_holds(tmp_path / "store", SHIB, rows, exchange)

    out = io.StringIO()
    assert export_csv(db, SHIB, "1m", out) == bars
    assert out.getvalue() == text and out.getvalue().startswith(HEADER)


@pytest.mark.timeout(120)
async def test_shib_fault_schedule_records_the_exact_strings(tmp_path: Path) -> None:
    rng = random.Random(20240101)
    bars = 120
    path = tmp_path / f"{SHIB}_1m.csv"
    source = ReplaySource.from_file(CSV_SHIB, SHIB)
    async with LocalExchange([source], speed=1200, updates_per_bar=4) as exchange:
        config = app_config(
            exchange,
            str(tmp_path / "{symbol}_{interval}.csv"),
            streams=[{"symbol": SHIB, "interval": "1m"}],
            feed={"stall_timeout": 0.5, "reconnect": {"initial_delay": 0.05, "max_delay": 0.3}},
        )
        app = App(config)
        run = asyncio.create_task(app.run())
        await wait_until(
            lambda: path.exists() and len(path.read_text().splitlines()) > 3, 10, "first bars"
        )
        faults = await inject_faults(
            exchange, rng, lambda: len(exchange.closed_klines(SHIB, "1m")) >= bars, symbol=SHIB
        )
        await wait_until(lambda: caught_up(exchange, path, SHIB), 20, "the CSV to catch up")
        app.stop()
        await asyncio.wait_for(run, 10)

        rows = csv_rows(path)
        assert len(rows) >= bars - 10
        assert rows == truth_since(exchange, rows[0], len(rows), symbol=SHIB)
        assert_rows_are_the_files_strings(rows, exchange)
        store = app.context.find(HistoryStore)
        assert store is not None and frame_rows(store.frame(SHIB, "1m")) == as_floats(rows)
    assert app.feed is not None and app.feed.stats.malformed + app.feed.stats.reconnects >= 1
    assert {"drop", "restart"} & set(faults), faults


@pytest.mark.parametrize("bad", [57994.6, "5.79946e4", "NaN", "-57994.60000000"])
def test_text_frames_with_a_non_plain_price_are_parse_errors(bad: object) -> None:
    frame = json.loads(WS_BTC.read_text().splitlines()[0])
    frame["data"]["k"]["o"] = bad
    with pytest.raises(KlineParseError):
        KlineCodec().parse(json.dumps(frame))
