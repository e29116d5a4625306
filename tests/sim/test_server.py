"""Connection handling: live subscriptions, limits, pings, playback pacing, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from quantcore.sim import LocalExchange, ReplaySource
from tests.sim.conftest import REST_BTC, WS_3SYM, binance, quick_exit, recv, recv_kline


async def _json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    msg = await ws.receive(timeout=3)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, object] = json.loads(msg.data)
    return data


async def _reply(ws: aiohttp.ClientWebSocketResponse, rid: int) -> dict[str, object]:
    """Skip market frames until the answer to request `rid`."""
    while True:
        data = await _json(ws)
        if data.get("id") == rid:
            return data


async def test_subscribe_unsubscribe_and_list() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT", "ETHUSDT"], speed=60.0) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws") as ws,
    ):
        await ws.send_str('{"method":"SUBSCRIBE","params":["ethusdt@kline_1m"],"id":1}')
        assert await _json(ws) == {"result": None, "id": 1}
        frame = await _json(ws)
        assert frame["s"] == "ETHUSDT"  # raw connection: unwrapped payloads
        await ws.send_str(
            '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","xyzusdt@kline_1m"],"id":2}'
        )
        assert await _reply(ws, 2) == {"result": None, "id": 2}
        await ws.send_str('{"method":"UNSUBSCRIBE","params":["ethusdt@kline_1m"],"id":3}')
        assert await _reply(ws, 3) == {"result": None, "id": 3}
        await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":4}')
        assert await _reply(ws, 4) == {"result": ["btcusdt@kline_1m", "xyzusdt@kline_1m"], "id": 4}
        await ws.send_str('{"method":"SUBSCRIBE","params":["BTCUSDT@kline_1m"],"id":5}')
        assert await _reply(ws, 5) == {
            "error": {"code": 2, "msg": "Invalid request: invalid stream"},
            "id": 5,
        }
        await ws.send_str('{"method":"SET_PROPERTY","params":["combined",true],"id":6}')
        assert await _reply(ws, 6) == {"result": None, "id": 6}
        data = await _json(ws)
        while "stream" not in data:
            data = await _json(ws)
        assert data["stream"] == "btcusdt@kline_1m"
        await ws.send_str('{"method":"PING","id":7}')
        error = await _reply(ws, 7)
        assert isinstance(error["error"], dict) and error["error"]["code"] == 2
        await ws.send_str("not json")
        error = await _reply(ws, None)  # type: ignore[arg-type]
        assert isinstance(error["error"], dict) and error["error"]["code"] == 3


async def test_stream_limit_is_1024_per_connection() -> None:
    names = [f"s{i}usdt@kline_1m" for i in range(1025)]
    async with LocalExchange(symbols=["BTCUSDT"]) as ex, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{ex.ws_url}stream?streams={'/'.join(names)}")
        async with http.ws_connect(f"{ex.ws_url}stream?streams={'/'.join(names[:1024])}") as ws:
            await ws.send_str('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":1}')
            reply = await _json(ws)
            assert isinstance(reply["error"], dict) and "1024" in str(reply["error"]["msg"])


async def test_pings_are_answered_and_sent() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT"], heartbeat=0.2) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws/xyzusdt@kline_1m", autoping=False) as ws,
    ):
        await ws.ping(b"hello")
        kinds: set[aiohttp.WSMsgType] = set()
        deadline = time.monotonic() + 2
        while {aiohttp.WSMsgType.PONG, aiohttp.WSMsgType.PING} - kinds:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            kinds.add(msg.type)
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            if msg.type == aiohttp.WSMsgType.PONG:
                assert msg.data == b"hello"


async def test_silent_clients_are_dropped_after_the_pong_timeout() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT"], heartbeat=0.1, pong_timeout=0.3) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws", autoping=False) as ws,
    ):
        started = time.monotonic()
        while (msg := await ws.receive(timeout=2)).type == aiohttp.WSMsgType.PING:
            pass  # never answered
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert 0.2 <= time.monotonic() - started < 1.5


async def test_max_speed_waits_for_a_subscriber_and_serves_several_symbols() -> None:
    async with LocalExchange(
        [ReplaySource.from_file(WS_3SYM, s) for s in ("BTCUSDT", "ETHUSDT")]
    ) as ex:
        await asyncio.sleep(0.2)
        assert ex.now_ms == ex.start_ms  # nothing played unseen
        async with binance(ex) as (_, bsm):
            streams = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
            async with bsm.multiplex_socket(streams) as mux:
                quick_exit(mux)
                seen = [await recv(mux) for _ in range(8)]
        await asyncio.wait_for(ex.finished.wait(), 2)
    assert [m["stream"] for m in seen] == streams * 4
    assert [m["data"]["k"]["x"] for m in seen[-2:]] == [True, True]
    assert seen[-1]["data"]["k"]["c"] == "2065.00000000"


async def test_finite_speed_runs_like_a_clock_without_clients() -> None:
    source = ReplaySource.from_file(REST_BTC)
    async with LocalExchange([source], speed=600.0) as ex:
        await asyncio.sleep(0.5)
        elapsed = ex.now_ms - ex.start_ms
        assert 200_000 < elapsed < 400_000  # 0.5 s x 600 = 5 market minutes
        bar = await ex.wait_for_closed("BTCUSDT", "1m", 6, timeout=2)
        assert bar.open_time == ex.start_ms + 5 * 60_000


async def test_stop_leaves_no_tasks_and_frees_the_port() -> None:
    before = asyncio.all_tasks()
    ex = LocalExchange([ReplaySource.from_file(REST_BTC)], speed=None)
    await ex.start()
    port = ex.port
    async with binance(ex) as (client, bsm):
        assert len(await client.get_klines(symbol="BTCUSDT", interval="1m", limit=2)) == 1
        socket_ = bsm.kline_socket("BTCUSDT")
        await socket_.__aenter__()
        quick_exit(socket_)
        await recv_kline(socket_)
        await socket_.__aexit__(None, None, None)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m"):
        await ex.stop()
    await ex.stop()  # idempotent
    await asyncio.sleep(0.05)
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == []
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


async def test_multi_stream_raw_path_and_intervals_above_the_generator_base() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT", "ETHUSDT"], intervals="5m", updates_per_bar=2) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_5m/ethusdt@kline_5m") as ws,
    ):
        frames = [await _json(ws) for _ in range(6)]
        assert {f["s"] for f in frames} == {"BTCUSDT", "ETHUSDT"}  # unwrapped raw payloads
        assert all(f["k"]["i"] == "5m" for f in frames)  # type: ignore[index]
        closed = await ex.wait_for_closed("BTCUSDT", "5m", 1, timeout=2)
        async with binance(ex) as (client, _):
            minutes = await client.get_klines(
                symbol="BTCUSDT", interval="1m", startTime=closed.open_time, limit=5
            )
        assert [m[0] for m in minutes] == [closed.open_time + i * 60_000 for i in range(5)]
        assert minutes[-1][4] == closed.close and minutes[0][1] == closed.open
