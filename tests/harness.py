"""Helpers for end-to-end tests: build app configs for a running local exchange and
compare what was recorded with the exchange's ground truth.

Recorded CSV rows and ground truth are compared as the exchange's decimal strings,
exactly, never through floats; only the DataFrame (float64 by design) is compared with
the floats of those strings (:func:`as_floats`)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from quantcore.config import AppConfig, parse_config
from quantcore.consumers.csv_recorder import HEADER
from quantcore.sim import Kline, LocalExchange

Row = tuple[str, str, str, str, str, str, str]
"""close, high, low, open, volume, baseVolume as the exchange's strings; the datetime."""
FloatRow = tuple[float, float, float, float, float, float, str]


def app_config(exchange: LocalExchange, csv_template: str, **sections: Any) -> AppConfig:
    """A config pointing the feed at ``exchange`` (its URLs are plain config values)."""
    raw: dict[str, Any] = {
        "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url},
        "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
        "feed": {"stall_timeout": 2, "reconnect": {"initial_delay": 0.05, "max_delay": 0.5}},
        "consumers": [
            {"class": "history"},
            {"class": "csv", "params": {"path": csv_template}},
            {"class": "console"},
        ],
    }
    raw.update(sections)
    return parse_config(raw)


def truth_row(kline: Kline) -> Row:
    """A kline as the CSV must hold it: the strings the exchange served, verbatim."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(kline.open_time // 1000))
    return (
        kline.close,
        kline.high,
        kline.low,
        kline.open,
        kline.volume,
        kline.quote_volume,
        stamp,
    )


def csv_rows(path: Path) -> list[Row]:
    """The CSV's data rows as text; asserts the header is there exactly once, on line 1."""
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    assert HEADER.strip() not in lines[1:]
    rows: list[Row] = []
    for line in lines[1:]:
        c, h, lo, o, v, q, stamp = line.split(",")
        rows.append((c, h, lo, o, v, q, stamp))
    return rows


def as_floats(rows: list[Row]) -> list[FloatRow]:
    """Rows with their values as floats: what the float64 DataFrame must equal."""
    return [
        (float(c), float(h), float(lo), float(o), float(v), float(q), stamp)
        for c, h, lo, o, v, q, stamp in rows
    ]


def frame_rows(frame: pd.DataFrame) -> list[FloatRow]:
    stamps = frame["datetime"].dt.strftime("%Y-%m-%d %H:%M:%S")
    values = frame[["close", "high", "low", "open", "volume", "baseVolume"]].itertuples(
        index=False, name=None
    )
    return [(*v, s) for v, s in zip(values, stamps, strict=True)]


def truth_since(
    exchange: LocalExchange, first: Row, count: int | None = None, symbol: str = "BTCUSDT"
) -> list[Row]:
    """Ground-truth rows starting at the bar whose datetime is ``first[6]``."""
    rows = [truth_row(k) for k in exchange.closed_klines(symbol, "1m", since_ms=0)]
    start = next(i for i, row in enumerate(rows) if row[6] == first[6])
    return rows[start:] if count is None else rows[start : start + count]


async def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


def caught_up(exchange: LocalExchange, path: Path, symbol: str = "BTCUSDT") -> bool:
    """The CSV ends with the last bar the exchange has closed."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    lines = path.read_text().splitlines()
    truth = exchange.closed_klines(symbol, "1m")
    if len(lines) < 2 or not truth:
        return False
    last_ms = truth[-1].open_time
    return lines[-1].endswith(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_ms // 1000)))


FAULTS = ("drop", "stall", "restart", "not_json", "missing_fields", "wrong_types",
          "duplicate", "out_of_order", "error")  # fmt: skip


async def inject_faults(
    exchange: LocalExchange,
    rng: random.Random,
    done: Callable[[], bool],
    symbol: str = "BTCUSDT",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """Hit the exchange with seeded random faults every 0.2-0.8 s until ``done()``;
    ``extra`` adds ``"shutdown"`` (a serverShutdown notice, then the close)."""
    faults: list[str] = []
    kinds = FAULTS + extra
    while not done():
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        kind = rng.choice(kinds)
        faults.append(kind)
        if kind == "drop":
            await exchange.drop_connections()
        elif kind == "stall":
            exchange.stall(rng.uniform(0.7, 1.5))
        elif kind == "restart":
            await exchange.restart(down_seconds=rng.uniform(0.0, 0.5))
        elif kind == "shutdown":
            await exchange.server_shutdown()
        elif kind == "duplicate":
            await exchange.send_duplicate_closed(symbol, "1m")
        elif kind == "out_of_order":
            await exchange.send_out_of_order_closed(symbol, "1m", bars_back=rng.randint(1, 5))
        elif kind == "error":
            await exchange.send_error_payload()
        else:
            await exchange.send_malformed(kind)  # type: ignore[arg-type]
    return faults
