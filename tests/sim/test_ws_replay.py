"""WebSocket frames through python-binance: exact Binance format and exact replay."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from quantcore.sim import LocalExchange, ReplaySource, aggregate, load_klines
from quantcore.sim.market import CLOSE_DELAY_MS
from tests.sim.conftest import CSV_12, REST_BTC, WS_BTC, binance, quick_exit, recv, recv_kline

DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")


def _shape(value: Any) -> Any:
    """Keys (in order) and JSON types of a decoded frame."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    return type(value).__name__


def _row(k: dict[str, Any]) -> list[Any]:
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"],
            k["Q"], "0"]  # fmt: skip


async def _closed_rows(socket: Any, count: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    while len(rows) < count:
        k = (await recv_kline(socket))["k"]
        if k["x"]:
            rows.append(_row(k))
    return rows


async def test_raw_and_combined_frames_match_a_recorded_binance_frame() -> None:
    recorded = [json.loads(line) for line in WS_BTC.read_text().splitlines()]
    live_rec, closed_rec = recorded[0], recorded[23]
    assert closed_rec["data"]["k"]["x"] is True
    source = ReplaySource.from_file(REST_BTC)
    # A finite speed keeps the replay going while the second socket connects.
    async with (
        LocalExchange([source], history_bars=5, speed=3000.0, updates_per_bar=3) as ex,
        binance(ex) as (_, bsm),
    ):
        async with bsm.kline_socket("BTCUSDT") as raw:
            quick_exit(raw)
            live = await recv(raw)
            while not (closed := await recv(raw))["k"]["x"]:
                pass
        async with bsm.multiplex_socket(["btcusdt@kline_1m"]) as mux:
            quick_exit(mux)
            wrapped = await recv(mux)
    assert _shape(live) == _shape(live_rec["data"])
    assert _shape(closed) == _shape(closed_rec["data"])
    assert _shape(wrapped) == _shape(live_rec)
    assert wrapped["stream"] == live_rec["stream"] == "btcusdt@kline_1m"
    for frame in (live, closed, wrapped["data"]):
        k = frame["k"]
        assert frame["e"] == "kline" and frame["s"] == k["s"] == "BTCUSDT"
        assert k["i"] == "1m" and k["B"] == "0"
        assert k["T"] == k["t"] + 59_999
        assert k["L"] == k["f"] + k["n"] - 1
        for key in "ochlvqVQ":
            assert DECIMAL_8.match(k[key]), (key, k[key])
    assert live["k"]["x"] is False and closed["k"]["x"] is True
    assert closed["E"] == closed["k"]["T"] + 1 + CLOSE_DELAY_MS
    assert live["k"]["t"] >= source.first_open_ms + 5 * 60_000 == ex.start_ms


async def test_replayed_rest_file_arrives_exactly_over_ws() -> None:
    rows = json.loads(REST_BTC.read_text())
    source = ReplaySource.from_file(REST_BTC)
    async with LocalExchange([source]) as ex, binance(ex) as (_, bsm):
        async with bsm.kline_socket("BTCUSDT") as socket:
            quick_exit(socket)
            got = await _closed_rows(socket, len(rows))
        await ex.finished.wait()
        assert [k.to_rest() for k in ex.closed_klines("BTCUSDT", "1m")] == rows
    assert got == rows


async def test_csv_window_replays_exactly_with_history_before_it() -> None:
    klines = load_klines(CSV_12)
    played = 150
    source = ReplaySource("BTCUSDT", klines)
    history = len(klines) - played
    async with (
        LocalExchange([source], intervals=["1m", "5m"], history_bars=history) as ex,
        binance(ex) as (client, bsm),
    ):
        assert ex.start_ms == klines[history].open_time
        async with bsm.multiplex_socket(["btcusdt@kline_1m", "btcusdt@kline_5m"]) as socket:
            quick_exit(socket)
            ones: list[list[Any]] = []
            fives: list[list[Any]] = []
            while len(ones) < played:
                msg = await recv(socket)
                k = msg["data"]["k"]
                if k["x"]:
                    (ones if msg["stream"] == "btcusdt@kline_1m" else fives).append(_row(k))
        assert ones == [k.to_rest() for k in klines[history:]]
        expected_fives = [k.to_rest() for k in aggregate(klines, "5m")]
        assert fives == [r for r in expected_fives if r[0] >= fives[0][0]][: len(fives)]
        assert len(fives) >= played // 5 - 1
        history_rows = await client.get_klines(
            symbol="BTCUSDT", interval="1m", endTime=ex.start_ms - 1, limit=3
        )
        assert history_rows == [k.to_rest() for k in klines[history - 3 : history]]


async def test_each_bar_is_several_partial_updates_then_one_closed() -> None:
    source = ReplaySource.from_file(REST_BTC)
    truth = {k.open_time: k.to_rest() for k in load_klines(REST_BTC)}
    async with (
        LocalExchange([source], updates_per_bar=5) as ex,
        binance(ex) as (_, bsm),
        bsm.kline_socket("BTCUSDT") as socket,
    ):
        quick_exit(socket)
        frames = [await recv_kline(socket) for _ in range(6 * 40)]
    bars: dict[int, list[dict[str, Any]]] = {}
    for frame in frames:
        bars.setdefault(frame["k"]["t"], []).append(frame)
    assert len(bars) == 40
    prev_last_id = None
    for t, group in bars.items():
        ks = [f["k"] for f in group]
        assert [k["x"] for k in ks] == [False] * 5 + [True]
        final = truth[t]
        assert _row(ks[-1]) == final
        assert _row(ks[-2]) == final  # the last in-progress update already shows the truth
        events = [f["E"] for f in group]
        assert events == sorted(events) and len(set(events)) == 6
        assert all(t <= e <= t + 60_000 + CLOSE_DELAY_MS for e in events)
        lo, hi = float(final[3]), float(final[2])
        for a, b in itertools.pairwise(ks):
            assert float(b["h"]) >= float(a["h"]) and float(b["l"]) <= float(a["l"])
            for key in ("v", "q", "V", "Q"):
                assert float(b[key]) >= float(a[key])
            assert b["n"] >= a["n"]
        for k in ks:
            assert lo <= float(k["l"]) <= float(k["c"]) <= float(k["h"]) <= hi
            assert float(k["l"]) <= float(k["o"]) == float(final[1]) <= float(k["h"])
            assert float(k["V"]) <= float(k["v"]) and k["L"] == k["f"] + k["n"] - 1
            assert k["f"] == ks[0]["f"]
        if prev_last_id is not None:
            assert ks[0]["f"] == prev_last_id + 1
        prev_last_id = ks[-1]["L"]
