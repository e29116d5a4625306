"""REST endpoints: Binance formats, paging semantics, python-binance's historical fetch."""

from __future__ import annotations

import warnings

import aiohttp
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.exceptions import BinanceAPIException

from quantcore.sim import LocalExchange, ReplaySource, aggregate, load_klines
from tests.sim.conftest import CSV_12, REST_BTC, binance, quick_exit, recv_kline

MINUTE = 60_000


async def test_paging_matches_ground_truth_and_ws_history() -> None:
    klines = load_klines(CSV_12)
    history = 3_000
    source = ReplaySource("BTCUSDT", klines)
    async with (
        LocalExchange([source], history_bars=history, speed=None) as ex,
        binance(ex) as (client, bsm),
    ):
        async with bsm.kline_socket("BTCUSDT") as socket:
            quick_exit(socket)
            ws_closed: list[int] = []
            while len(ws_closed) < 30:
                k = (await recv_kline(socket))["k"]
                if k["x"]:
                    ws_closed.append(k["t"])
        now = (await client.get_server_time())["serverTime"]
        assert now == ex.now_ms
        truth = ex.closed_klines("BTCUSDT", "1m", since_ms=0)
        assert [k.to_rest() for k in truth] == [k.to_rest() for k in klines if k.close_time < now]
        assert ws_closed == [k.open_time for k in truth[history : history + 30]]
        start = klines[0].open_time
        page = await client.get_klines(
            symbol="BTCUSDT", interval="1m", startTime=start + 10 * MINUTE, limit=7
        )
        assert page == [k.to_rest() for k in klines[10:17]]
        page = await client.get_klines(
            symbol="BTCUSDT",
            interval="1m",
            startTime=start + 5 * MINUTE + 1,
            endTime=start + 9 * MINUTE,
        )
        assert [r[0] for r in page] == [start + i * MINUTE for i in range(6, 10)]
        recent = await client.get_klines(symbol="BTCUSDT", interval="1m")
        assert len(recent) == 500
        assert recent[:-1] == [k.to_rest() for k in truth[-499:]]
        assert recent[-1][0] == truth[-1].open_time + MINUTE  # the forming bar, like Binance
        assert float(recent[-1][5]) <= float(klines[len(truth)].volume)
        first = await client.get_klines(symbol="BTCUSDT", interval="1m", startTime=0, limit=1)
        assert first == [klines[0].to_rest()]
        hourly = await client.get_klines(
            symbol="BTCUSDT", interval="1h", startTime=start, endTime=start + 47 * 60 * MINUTE
        )
        assert hourly == [k.to_rest() for k in aggregate(klines[: 48 * 60], "1h")]


async def test_get_historical_klines_probes_then_pages_by_1000() -> None:
    klines = load_klines(CSV_12)
    source = ReplaySource("BTCUSDT", klines)
    async with (
        LocalExchange([source], history_bars=5_000) as ex,
        binance(ex) as (client, _),
    ):
        start = klines[100].open_time
        end = klines[2_599].open_time
        got = await client.get_historical_klines("BTCUSDT", "1m", start, end)
        assert got == [k.to_rest() for k in klines[100:2_600]]
        everything = await client.get_historical_klines("BTCUSDT", "1m", "1 Jan 2017")
        assert everything[:5_000] == [k.to_rest() for k in klines[:5_000]]
        assert len(everything) == 5_001  # plus the bar forming at the market's now


async def test_generator_history_starts_in_2017() -> None:
    async with LocalExchange(symbols=["ETHUSDT"]) as ex, binance(ex) as (client, _):
        first = await client.get_klines(
            symbol="ETHUSDT", interval="1d", startTime=0, endTime=ex.now_ms, limit=1
        )
        assert first[0][0] == 1_483_228_800_000
        rows = await client.get_klines(symbol="ETHUSDT", interval="1m", limit=1000)
        assert len(rows) == 1000 and rows[-1][0] == ex.now_ms // MINUTE * MINUTE


@pytest.mark.parametrize(
    ("query", "code", "msg"),
    [
        ("symbol=NOPEUSDT&interval=1m", -1121, "Invalid symbol."),
        ("symbol=BTCUSDT&interval=7m", -1120, "Invalid interval."),
        ("symbol=BTCUSDT&interval=1m&limit=1001", -1130,
         "Data sent for parameter 'limit' is not valid."),
        ("interval=1m", -1102,
         "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ("symbol=BTCUSDT&interval=1m&startTime=abc", -1100, None),
        ("symbol=BTCUSDT&interval=1m&startTime=5&endTime=4", -1023,
         "Start time is greater than end time."),
    ],
)  # fmt: skip
async def test_errors_are_binance_json_with_http_400(query: str, code: int, msg: str) -> None:
    async with (
        LocalExchange([ReplaySource.from_file(REST_BTC)]) as ex,
        aiohttp.ClientSession() as http,
        http.get(f"{ex.rest_url}/v3/klines?{query}") as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["code"] == code
    if msg is not None:
        assert body["msg"] == msg


async def test_python_binance_sees_binance_api_errors() -> None:
    async with LocalExchange([ReplaySource.from_file(REST_BTC)]) as ex, binance(ex) as (client, _):
        for kwargs, code in (
            ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
            ({"symbol": "BTCUSDT", "interval": "1M"}, -1120),
            ({"symbol": "BTCUSDT", "interval": "1m", "limit": 5000}, -1130),
        ):
            with pytest.raises(BinanceAPIException) as info:
                await client.get_klines(**kwargs)
            assert (info.value.status_code, info.value.code) == (400, code)


async def test_ping_time_exchange_info_and_unknown_paths() -> None:
    source = ReplaySource.from_file(REST_BTC)
    async with (
        LocalExchange([source], symbols=["ETHBTC"]) as ex,
        binance(ex) as (client, _),
        aiohttp.ClientSession() as http,
    ):
        assert await client.ping() == {}
        assert await client.get_server_time() == {"serverTime": ex.now_ms}
        info = await client.get_exchange_info()
        assets = [
            (s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) for s in info["symbols"]
        ]
        assert assets == [
            ("BTCUSDT", "TRADING", "BTC", "USDT"),
            ("ETHBTC", "TRADING", "ETH", "BTC"),
        ]
        one = await client.get_symbol_info("ETHBTC")
        assert one is not None and one["quoteAsset"] == "BTC"
        async with http.get(f"{ex.rest_url}/v3/depth?symbol=BTCUSDT") as response:
            assert response.status == 404
        async with http.get(f"{ex.rest_url}/v3/time") as response:
            assert response.content_type == "application/json"
