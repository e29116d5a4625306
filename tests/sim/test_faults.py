"""Fault injection, each observed from a client (python-binance or a raw WebSocket)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from quantcore.sim import ERROR_PAYLOAD, LocalExchange, ReplaySource, load_klines
from tests.sim.conftest import CSV_12, REST_BTC, binance, quick_exit, recv, recv_kline


async def _next_text(ws: aiohttp.ClientWebSocketResponse) -> str:
    msg = await ws.receive(timeout=3.0)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    assert isinstance(msg.data, str)
    return msg.data


async def test_drop_connections_surfaces_an_error_then_python_binance_reconnects() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=60.0, updates_per_bar=30) as ex,
        binance(ex) as (_, bsm),
        bsm.kline_socket("BTCUSDT") as socket,
    ):
        quick_exit(socket)
        await recv_kline(socket)
        assert await ex.drop_connections() == 1
        msg = await recv(socket)
        while msg.get("e") == "kline":
            msg = await recv(socket)
        assert msg["e"] == "error"
        assert msg["type"] in ("ConnectionClosedError", "BinanceWebsocketClosed")
        while msg.get("e") != "kline":  # python-binance reconnects by itself within 1-2 s
            msg = await recv(socket)
        assert msg["s"] == "BTCUSDT"


async def test_stall_silences_frames_and_rest_recovers_the_missed_bars() -> None:
    klines = load_klines(CSV_12)
    source = ReplaySource("BTCUSDT", klines)
    async with (
        LocalExchange([source], speed=1200.0, updates_per_bar=2, history_bars=10) as ex,
        binance(ex) as (client, bsm),
        bsm.kline_socket("BTCUSDT") as socket,
    ):
        quick_exit(socket)
        closed: list[int] = []
        while len(closed) < 3:
            k = (await recv_kline(socket))["k"]
            if k["x"]:
                closed.append(k["t"])
        ex.stall(1.0)
        stalled_at = time.monotonic()
        while True:  # drain what was already in flight, then measure the silence
            frame = await recv_kline(socket)
            if time.monotonic() - stalled_at > 0.2:
                break
            if frame["k"]["x"]:
                closed.append(frame["k"]["t"])
        assert time.monotonic() - stalled_at >= 0.95
        while not frame["k"]["x"]:
            frame = await recv_kline(socket)
        after = frame["k"]["t"]
        missed_start, missed_end = closed[-1] + 60_000, after - 60_000
        assert (after - closed[-1]) // 60_000 >= 15  # ~20 bars closed unseen
        rows = await client.get_klines(
            symbol="BTCUSDT", interval="1m", startTime=missed_start, endTime=missed_end
        )
        truth = [k.to_rest() for k in klines if missed_start <= k.open_time <= missed_end]
        assert rows == truth
        assert [k.to_rest() for k in ex.closed_klines("BTCUSDT", "1m", missed_start)][
            : len(truth)
        ] == truth


async def test_malformed_frames_arrive_as_sent() -> None:
    source = ReplaySource.from_file(REST_BTC)
    async with (
        LocalExchange([source], speed=1.0, history_bars=500) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m") as raw,
        http.ws_connect(f"{ex.ws_url}stream?streams=btcusdt@kline_1m") as mux,
    ):
        await asyncio.sleep(0.05)
        assert await ex.send_malformed("not_json") == 2
        for ws in (raw, mux):
            text = await _next_text(ws)
            try:
                json.loads(text)
            except ValueError:
                pass
            else:
                raise AssertionError(f"valid JSON: {text}")
        assert await ex.send_malformed("missing_fields") == 2
        event = json.loads(await _next_text(raw))
        wrapped = json.loads(await _next_text(mux))
        assert wrapped["stream"] == "btcusdt@kline_1m"
        for e in (event, wrapped["data"]):
            assert e["e"] == "kline" and "E" not in e
            assert "c" not in e["k"] and "x" not in e["k"] and "o" in e["k"]
        assert await ex.send_malformed("wrong_types") == 2
        event = json.loads(await _next_text(raw))
        assert isinstance(event["E"], str) and isinstance(event["k"]["t"], str)
        assert isinstance(event["k"]["o"], float) and event["k"]["x"] == "true"
        assert json.loads(await _next_text(mux))["data"]["k"]["n"].isdigit()


async def test_duplicate_out_of_order_and_error_payload() -> None:
    source = ReplaySource.from_file(REST_BTC)
    async with (
        LocalExchange([source], speed=1.0, history_bars=500) as ex,
        binance(ex) as (_, bsm),
        bsm.kline_socket("BTCUSDT") as socket,
    ):
        quick_exit(socket)
        last = ex.closed_klines("BTCUSDT", "1m", since_ms=0)[-3:]
        dup = json.loads(await ex.send_duplicate_closed("BTCUSDT", "1m"))
        assert await recv_kline(socket) == dup
        assert dup["k"]["x"] is True and dup["k"]["t"] == last[-1].open_time
        assert dup["k"]["c"] == last[-1].close
        old = json.loads(await ex.send_out_of_order_closed("BTCUSDT", "1m", bars_back=2))
        assert await recv_kline(socket) == old
        assert old["k"]["t"] == last[0].open_time and old["k"]["x"] is True
        assert old["k"]["L"] < dup["k"]["f"]
        assert await ex.send_error_payload() == 1
        assert await recv(socket) == json.loads(ERROR_PAYLOAD)
        assert json.loads(ERROR_PAYLOAD)["error"]["code"] == 2


async def test_restart_keeps_port_and_market_then_a_new_client_connects() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=60.0, updates_per_bar=30) as ex,
        aiohttp.ClientSession() as http,
    ):
        port, before = ex.port, ex.now_ms
        async with http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m") as ws:
            json.loads(await _next_text(ws))
            await ex.restart(down_seconds=0.3)
            msg = await ws.receive(timeout=2)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert ex.port == port
        assert ex.now_ms >= before + 0.3 * 60_000 * 0.9  # the market kept running
        async with http.ws_connect(f"{ex.ws_url}stream?streams=btcusdt@kline_1m") as ws:
            frame = json.loads(await _next_text(ws))
            assert frame["stream"] == "btcusdt@kline_1m" and frame["data"]["s"] == "BTCUSDT"
        async with http.get(f"{ex.rest_url}/v3/ping") as response:
            assert response.status == 200
