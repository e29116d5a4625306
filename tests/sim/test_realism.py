"""The unkind exchange (`Realism`), each behaviour observed through real clients."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.exceptions import BinanceAPIException

from quantcore.sim import LocalExchange, Realism, ReplaySource, load_klines, sparse
from quantcore.sim.cli import _exchange, configure_parser
from tests.paths import CSV_SHIB, EXCHANGE_INFO
from tests.sim.conftest import CSV_12, binance, quick_exit, recv_kline

pytestmark = pytest.mark.timeout(30)

MINUTE = 60_000
Frame = dict[str, Any]


async def _text(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> str:  # noqa: ASYNC109
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    assert isinstance(msg.data, str)
    return msg.data


async def _klines_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[Frame], bool]
) -> list[tuple[str, Frame]]:
    """(raw text, kline event) pairs, unwrapped from combined frames, until `done` holds."""
    out: list[tuple[str, Frame]] = []
    while True:
        text = await _text(ws)
        frame = json.loads(text)
        event = frame["data"] if "stream" in frame else frame
        out.append((text, event))
        if done(event):
            return out


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[Frame], int]:
    """Text messages received before the close frame, and the close code."""
    texts: list[Frame] = []
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.TEXT:
            texts.append(json.loads(msg.data))
            continue
        assert msg.type == aiohttp.WSMsgType.CLOSE, msg
        return texts, int(msg.data)


# -- the profile ------------------------------------------------------------------------


def test_binance_profile_numbers_overrides_and_validation() -> None:
    real = Realism.binance(seed=4, weight_limit=10, halted=frozenset({"lunausdt"}))
    assert real.seed == 4 and real.weight_limit == 10 and real.halted == {"LUNAUSDT"}
    assert (real.rest_lag_ms, real.close_delay_ms, real.quiet) == (3_000, (70, 430), True)
    assert (real.attempt_limit, real.attempt_window, real.weight_window) == (300, 300.0, 60.0)
    assert (real.max_url, real.max_streams, real.max_incoming_per_s) == (8_000, 1_024, 5)
    assert real.connection_lifetime == 86_400.0 and real.shutdown_lead == 5.0
    kind = Realism()
    assert kind.close_delay("btcusdt@kline_1m", 0) == 3
    assert not kind.close_withheld("btcusdt@kline_1m", 0)
    delays = {real.close_delay("btcusdt@kline_1m", t * MINUTE) for t in range(500)}
    assert min(delays) >= 70 and max(delays) <= 430 and len(delays) > 200
    assert real.close_delay("x", 7) == Realism.binance(seed=4).close_delay("x", 7)
    for bad in (
        {"close_delay_ms": (5, 1)},
        {"missing_close": 1.5},
        {"weight_window": 0.0},
        {"rest_lag_ms": -1},
    ):
        with pytest.raises(ValueError):
            Realism(**bad)


def test_cli_realistic_turns_on_the_binance_profile() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert "--realistic" in parser.format_help()
    args = parser.parse_args(["--symbols", "BTCUSDT", "--seed", "9", "--realistic"])
    assert _exchange(args).realism == Realism.binance(9)
    args = parser.parse_args(["--symbols", "BTCUSDT"])
    assert _exchange(args).realism == Realism()


# -- klines: REST lag, close delays, quiet and halted symbols ----------------------------


async def test_rest_lag_serves_a_partial_just_closed_bar_then_the_final_one() -> None:
    klines = load_klines(CSV_12)
    bar = klines[10]
    start = bar.open_time + MINUTE + 1_000  # the bar closed 1 s ago, REST lags 3 s
    source = ReplaySource("BTCUSDT", klines[:200])
    async with (
        LocalExchange(
            [source], speed=None, start_ms=start, realism=Realism(rest_lag_ms=3_000)
        ) as ex,
        binance(ex) as (client, bsm),
    ):
        assert (await client.get_server_time())["serverTime"] == start  # the true clock
        rows = await client.get_klines(symbol="BTCUSDT", interval="1m", limit=3)
        partial = ex.market.bar_at("BTCUSDT", "1m", bar.open_time, start - 3_000)
        assert partial is not None
        assert rows == [klines[8].to_rest(), klines[9].to_rest(), partial.rest_row()]
        assert rows[-1] != bar.to_rest() and float(rows[-1][5]) < float(bar.volume)
        assert ex.closed_klines("BTCUSDT", "1m", bar.open_time)[0] == bar  # truth is final
        async with bsm.kline_socket("BTCUSDT") as socket:
            quick_exit(socket)
            while True:  # play on until the next bar has closed
                k = (await recv_kline(socket))["k"]
                if k["x"] and k["t"] == bar.open_time + MINUTE:
                    break
        await asyncio.sleep(0.2)  # nobody subscribed: the market clock stops
        rows = await client.get_klines(
            symbol="BTCUSDT", interval="1m", startTime=bar.open_time, limit=2
        )
        assert rows == [bar.to_rest(), klines[11].to_rest()]
        now = (await client.get_server_time())["serverTime"]
        info = await client.get_exchange_info()
        assert now == info["serverTime"] == ex.now_ms >= bar.close_time + 1 + MINUTE


async def _closes(seed: int) -> tuple[list[str], list[Frame], LocalExchange]:
    """Frames of 60 bars played with seeded close delays and withheld closes."""
    klines = load_klines(CSV_12)[:120]
    realism = Realism(seed=seed, close_delay_ms=(70, 430), missing_close=0.2)
    async with (
        LocalExchange(
            [ReplaySource("BTCUSDT", klines)], speed=None, history_bars=10, realism=realism
        ) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m") as ws,
    ):
        target = ex.start_ms + 60 * MINUTE
        got = await _klines_until(ws, lambda e: e["k"]["t"] >= target)
    return [text for text, _ in got], [event for _, event in got], ex


async def test_close_delays_and_withheld_closes_are_seeded_and_leave_truth_alone() -> None:
    texts, events, ex = await _closes(seed=7)
    stream = "btcusdt@kline_1m"
    closed = [e for e in events if e["k"]["x"]]
    for e in closed:
        delay = e["E"] - e["k"]["T"] - 1
        assert 70 <= delay <= 430 and delay == ex.realism.close_delay(stream, e["k"]["t"])
    bars = range(ex.start_ms, events[-1]["k"]["t"], MINUTE)
    seen = {e["k"]["t"] for e in closed}
    withheld = {t for t in bars if t not in seen}
    assert withheld == {t for t in bars if ex.realism.close_withheld(stream, t)}
    assert 3 <= len(withheld) <= 25 and ex.limits.closes_withheld == len(withheld)
    truth = {k.open_time: k for k in ex.closed_klines("BTCUSDT", "1m")}
    assert set(bars) <= set(truth)  # ground truth keeps the withheld bars
    for e in closed:
        k, want = e["k"], truth[e["k"]["t"]]
        assert (k["o"], k["h"], k["l"], k["c"], k["v"]) == (
            want.open,
            want.high,
            want.low,
            want.close,
            want.volume,
        )
    again, _, _ = await _closes(seed=7)
    assert again == texts  # byte-identical rerun
    _, other, _ = await _closes(seed=8)
    assert {e["k"]["t"] for e in other if e["k"]["x"]} != seen


def test_sparse_turns_seeded_runs_into_zero_trade_bars() -> None:
    shib = ReplaySource.from_file(CSV_SHIB)
    quiet = sparse(shib, 0.3, seed=5, max_run=4)
    assert quiet.klines() == sparse(shib, 0.3, seed=5, max_run=4).klines()
    before, after = shib.klines(), quiet.klines()
    zero = [i for i, k in enumerate(after) if k.volume == "0.00000000"]
    assert len(zero) == 300 and 0 not in zero
    run = longest = 0
    zeros = set(zero)
    for i in range(len(after)):
        run = run + 1 if i in zeros else 0
        longest = max(longest, run)
    assert 1 < longest <= 4
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        if i not in zero:
            assert new == old
            continue
        prev = after[i - 1].close
        assert (new.open, new.high, new.low, new.close) == (prev, prev, prev, prev)
        assert (new.quote_volume, new.trades, new.taker_buy_base) == ("0.00000000", 0, "0.00000000")
    with pytest.raises(ValueError):
        sparse(shib, 1.0, seed=1)


async def test_quiet_tiny_priced_symbol_pushes_nothing_for_zero_trade_bars() -> None:
    with CSV_SHIB.open() as fh:
        first = next(csv.reader(fh))
    assert first[1] == "0.00001036" and first[5] == "1311851438.00"
    source = sparse(ReplaySource.from_file(CSV_SHIB), 0.3, seed=5)
    zero = {k.open_time for k in source.klines() if k.volume == "0.00000000"}
    async with (
        LocalExchange([source], speed=None, history_bars=20, realism=Realism(quiet=True)) as ex,
        binance(ex) as (client, _),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}stream?streams=shibusdt@kline_1m") as ws,
    ):
        start = ex.start_ms
        got = [e for _, e in await _klines_until(ws, lambda e: e["k"]["t"] >= start + 120 * MINUTE)]
        await ws.close()
        await asyncio.sleep(0.1)
        truth = ex.closed_klines("SHIBUSDT", "1m")
        rows = await client.get_klines(symbol="SHIBUSDT", interval="1m", startTime=start, limit=120)
        first_rows = await client.get_klines(symbol="SHIBUSDT", interval="1m", startTime=0, limit=1)
    last = got[-1]["k"]["t"]
    assert not [e for e in got if e["k"]["t"] in zero]  # not even x:true
    closed = {e["k"]["t"]: e["k"] for e in got if e["k"]["x"]}
    played = [k for k in truth if start <= k.open_time < last]
    assert sorted(closed) == [k.open_time for k in played if k.open_time not in zero]
    assert sum(k.open_time in zero for k in played) >= 20
    for k in played:
        if k.open_time in closed:
            frame = closed[k.open_time]
            assert (frame["o"], frame["c"], frame["v"], frame["q"]) == (
                k.open,
                k.close,
                k.volume,
                k.quote_volume,
            )
            assert frame["o"].startswith("0.0000")
    updates = [(e["k"]["t"], e["k"]["v"], e["k"]["c"]) for e in got if not e["k"]["x"]]
    assert len(updates) == len(set(updates))  # only changes are pushed
    assert ex.limits.quiet_frames_skipped > 0
    assert rows == [k.to_rest() for k in truth[:120]]
    quiet_rows = [r for r in rows if r[0] in zero]
    assert quiet_rows and all(r[5] == "0.00000000" and r[8] == 0 for r in quiet_rows)
    assert all(r[1] == r[2] == r[3] == r[4] for r in quiet_rows)
    assert first_rows[0][1:6] == [
        "0.00001036",
        "0.00001036",
        "0.00001034",
        "0.00001035",
        "1311851438.00000000",
    ]
    assert first_rows[0][7] == "13577.66238330"  # volume * close, exact


async def test_halted_symbol_is_break_and_silent_and_real_exchange_info_filters() -> None:
    realism = Realism(
        halted=frozenset({"ETHUSDT", "NEWCOINUSDT"}), exchange_info=EXCHANGE_INFO, weight_limit=6000
    )
    async with (
        LocalExchange(symbols=["BTCUSDT", "ETHUSDT", "BCCBTC"], speed=None, realism=realism) as ex,
        binance(ex) as (client, _),
        aiohttp.ClientSession() as http,
    ):
        streams = "btcusdt@kline_1m/ethusdt@kline_1m/bccbtc@kline_1m"
        async with http.ws_connect(f"{ex.ws_url}stream?streams={streams}") as ws:
            closes = 0
            events = []
            while closes < 4:
                events.append(json.loads(await _text(ws))["data"])
                closes += events[-1]["k"]["x"] and events[-1]["s"] == "BTCUSDT"
        assert {e["s"] for e in events} == {"BTCUSDT", "BCCBTC"}  # ETHUSDT is halted
        async with http.get(f"{ex.rest_url}/v3/exchangeInfo") as response:
            assert response.headers["X-MBX-USED-WEIGHT-1M"] == "20"
            body = await response.read()
        assert len(body) > 3_000_000
        info = json.loads(body)
        status = {s["symbol"]: s["status"] for s in info["symbols"]}
        assert len(info["symbols"]) == 2_293  # 2,292 real plus NEWCOINUSDT
        assert (status["BTCUSDT"], status["ETHUSDT"], status["NEWCOINUSDT"]) == (
            "TRADING",
            "BREAK",
            "BREAK",
        )
        assert status["BCCBTC"] == "TRADING"  # BREAK in the file, played here
        assert sum(v == "BREAK" for v in status.values()) == 952 - 1 + 2
        weight = [r for r in info["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT"]
        assert weight == [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            }
        ]
        assert info["serverTime"] == ex.now_ms
        eth = await client.get_symbol_info("ETHUSDT")
        assert eth is not None and eth["status"] == "BREAK" and eth["filters"]
        url = f"{ex.rest_url}/v3/exchangeInfo"
        async with http.get(url, params={"symbols": '["BTCUSDT","OMGBTC"]'}) as response:
            pair = await response.json()
            assert response.headers["X-MBX-USED-WEIGHT-1M"] == "60"
        assert [(s["symbol"], s["status"]) for s in pair["symbols"]] == [
            ("BTCUSDT", "TRADING"),
            ("OMGBTC", "BREAK"),
        ]
        for params in ({"symbol": "NOPEUSDT"}, {"symbols": '["BTCUSDT","NOPEUSDT"]'}):
            async with http.get(url, params=params) as response:
                assert response.status == 400
                assert (await response.json())["code"] == -1121


# -- connections: lifetime, serverShutdown, handshake limits, message rate ---------------


async def test_lifetime_close_is_announced_by_server_shutdown_when_notice_is_1() -> None:
    realism = Realism(connection_lifetime=0.4, shutdown_notice=1.0, shutdown_lead=0.3)
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=1.0, realism=realism) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}stream?streams=btcusdt@kline_1m") as mux,
        http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m") as raw,
    ):
        began = time.monotonic()
        (mux_texts, mux_code), (raw_texts, raw_code) = await asyncio.gather(
            _until_closed(mux), _until_closed(raw)
        )
        assert time.monotonic() - began >= 0.6
        notice = [t for t in mux_texts if t.get("stream") == "!serverShutdown"]
        assert len(notice) == 1 and notice[0]["data"]["e"] == "serverShutdown"
        assert abs(notice[0]["data"]["E"] - ex.now_ms) < 5_000
        assert next(t for t in raw_texts if t.get("e") == "serverShutdown").keys() == {"e", "E"}
        assert mux_code == raw_code == 1001
        assert (ex.limits.shutdown_notices, ex.limits.lifetime_closes) == (2, 2)


async def test_lifetime_close_without_notice_and_server_shutdown_helper() -> None:
    realism = Realism(connection_lifetime=0.3)
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=1.0, realism=realism) as ex,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m") as ws:
            texts, code = await _until_closed(ws)
        assert code == 1001 and all(t.get("e") == "kline" for t in texts)
        assert (ex.limits.shutdown_notices, ex.limits.lifetime_closes) == (0, 1)
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=1.0) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}stream?streams=btcusdt@kline_1m") as mux,
        http.ws_connect(f"{ex.ws_url}ws") as raw,
    ):
        await asyncio.sleep(0.05)
        assert await ex.server_shutdown(lead=0.2) == 2
        for ws in (mux, raw):
            texts, code = await _until_closed(ws)
            notices = [t for t in texts if "serverShutdown" in json.dumps(t)]
            assert len(notices) == 1 and code == 1001
        assert ex.limits.shutdown_notices == 2


async def test_connection_attempts_over_the_limit_get_429_then_418() -> None:
    realism = Realism(attempt_limit=3, attempt_window=30.0)
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=1.0, realism=realism) as ex,
        aiohttp.ClientSession() as http,
    ):
        for _ in range(3):
            async with http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m"):
                pass
        for status in (429, 418):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(f"{ex.ws_url}ws/btcusdt@kline_1m")
            assert info.value.status == status
            assert info.value.headers is not None
            assert 1 <= int(info.value.headers["Retry-After"]) <= 60
        limits = ex.limits
        assert (limits.ws_attempts, limits.ws_accepted, limits.max_attempts_in_window) == (5, 3, 3)
        assert (limits.ws_refused_429, limits.ws_refused_418) == (1, 1)


async def test_rest_weight_limit_429_then_418_with_weight_header_on_every_answer() -> None:
    realism = Realism(weight_limit=10, weight_window=30.0)
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=1.0, realism=realism) as ex,
        aiohttp.ClientSession() as http,
        binance(ex) as (client, _),
    ):
        api = f"{ex.rest_url}/v3"
        expected = [
            ("ping", 200, "1"),
            ("time", 200, "2"),
            ("klines?symbol=NOPEUSDT&interval=1m", 400, "4"),
            ("depth?symbol=BTCUSDT", 404, "5"),
            ("klines?symbol=BTCUSDT&interval=1m&limit=2", 200, "7"),
            ("klines?symbol=BTCUSDT&interval=1m&limit=2", 200, "9"),
        ]
        for path, status, used in expected:
            async with http.get(f"{api}/{path}") as response:
                assert (response.status, response.headers["X-MBX-USED-WEIGHT-1M"]) == (
                    status,
                    used,
                ), path
        async with http.get(f"{api}/klines?symbol=BTCUSDT&interval=1m") as response:
            assert response.status == 429
            assert response.headers["X-MBX-USED-WEIGHT-1M"] == "9"
            assert 1 <= int(response.headers["Retry-After"]) <= 30
            body = await response.json()
        assert body["code"] == -1003
        assert body["msg"].startswith("Too many requests; current limit of IP(")
        assert "request weight is 10 request weight" in body["msg"]
        async with http.get(f"{api}/ping") as response:
            assert response.status == 418
            assert response.headers["Retry-After"] == "60"  # 2 min scaled by 30 s / 60 s
            assert response.headers["X-MBX-USED-WEIGHT-1M"] == "9"
        with pytest.raises(BinanceAPIException) as info:
            await client.ping()
        assert (info.value.status_code, info.value.code) == (418, -1003)
        limits = ex.limits
        assert (limits.rest_429, limits.rest_418, limits.rest_weight) == (1, 2, 9)
        assert limits.max_weight_in_window == 9
        assert limits.rest_calls["/api/v3/klines"] == 4 and limits.rest_calls["/api/v3/ping"] == 3


async def test_long_urls_and_too_many_streams_are_refused_at_the_handshake() -> None:
    realism = Realism(max_url=300, max_streams=20)
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=60.0, realism=realism) as ex,
        aiohttp.ClientSession() as http,
    ):
        many = "/".join(f"sym{i:03d}usdt@kline_1m" for i in range(18))
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{ex.ws_url}stream?streams={many}")
        assert info.value.status == 414 and ex.limits.url_refused == 1
        few = "/".join(f"s{i}@kline_1m" for i in range(21))
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{ex.ws_url}stream?streams={few}")
        assert info.value.status == 400
        async with http.ws_connect(f"{ex.ws_url}stream?streams=btcusdt@kline_1m") as ws:
            assert json.loads(await _text(ws))["stream"] == "btcusdt@kline_1m"


async def test_more_than_max_incoming_messages_per_second_disconnects() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=1.0, realism=Realism(max_incoming_per_s=5)) as ex,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{ex.ws_url}ws") as ws,
    ):
        for burst in (5, 6):
            for i in range(burst):
                await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            if burst == 5:
                for i in range(5):
                    assert json.loads(await _text(ws)) == {"result": [], "id": i}
                await asyncio.sleep(1.05)
        texts, code = await _until_closed(ws)
        assert len(texts) == 5 and code == 1008
        assert ex.limits.rate_disconnects == 1


async def test_faults_keep_working_with_the_binance_profile() -> None:
    async with (
        LocalExchange(symbols=["BTCUSDT"], speed=None, realism=Realism.binance(seed=3)) as ex,
        binance(ex) as (_, bsm),
        bsm.kline_socket("BTCUSDT") as socket,
    ):
        quick_exit(socket)
        while not (await recv_kline(socket))["k"]["x"]:
            pass
        dup = json.loads(await ex.send_duplicate_closed("BTCUSDT", "1m"))
        k = dup["k"]
        assert dup["E"] == k["T"] + 1 + ex.realism.close_delay("btcusdt@kline_1m", k["t"])
        assert 70 <= dup["E"] - k["T"] - 1 <= 430
        assert await ex.drop_connections() == 1


async def test_tiny_prices_and_huge_volumes_stay_exact_when_aggregated() -> None:
    with CSV_SHIB.open() as fh:
        rows = list(csv.reader(fh))
    source = ReplaySource.from_file(CSV_SHIB)
    async with (
        LocalExchange([source], history_bars=len(rows)) as ex,
        aiohttp.ClientSession() as http,
        http.get(
            f"{ex.rest_url}/v3/klines",
            params={"symbol": "SHIBUSDT", "interval": "1d", "startTime": "0"},
        ) as response,
    ):
        (day,) = await response.json()
    volume = sum(Decimal(r[5]) for r in rows)
    assert volume > Decimal(2**63) / 10**8  # beyond int64 in units of 1e-8
    assert Decimal(day[5]) == volume and day[5].endswith(".00000000")
    assert day[1] == "0.00001036" and day[4] == rows[-1][4]
    assert Decimal(day[3]) == min(Decimal(r[3]) for r in rows)


def test_lagging_rest_profile_wanders_70_to_120_seconds_per_request() -> None:
    """``Realism.lagging_rest``: the Binance profile with REST minutes behind, the lag drawn
    per klines request (seeded), so answers show older and newer views in turn."""
    real = Realism.lagging_rest(seed=8)
    assert (real.rest_lag_ms, real.rest_lag_spread_ms, real.quiet) == (70_000, 50_000, True)
    lags = [real.rest_lag(n) for n in range(1, 400)]
    assert min(lags) >= 70_000 and max(lags) <= 120_000 and len(set(lags)) > 300
    assert max(lags) - min(lags) > 45_000
    assert lags == [Realism.lagging_rest(seed=8).rest_lag(n) for n in range(1, 400)]
    assert Realism(rest_lag_ms=3_000).rest_lag(5) == 3_000
    with pytest.raises(ValueError):
        Realism(rest_lag_spread_ms=-1)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--symbols", "BTCUSDT", "--seed", "9", "--lagging-rest"])
    assert _exchange(args).realism == Realism.lagging_rest(9)


async def test_lagging_rest_serves_recent_bars_as_they_stood_minutes_ago() -> None:
    """With REST 70-120 s behind, the newest row REST serves is a bar that has closed, shown
    as it stood then (still forming), and the bars closed since are absent; a row followed
    by a later one is the final bar."""
    klines = load_klines(CSV_12)
    start = klines[100].open_time + 30_000
    source = ReplaySource("BTCUSDT", klines[:200])
    realism = Realism.lagging_rest(seed=3)
    async with (
        LocalExchange([source], speed=None, start_ms=start, realism=realism) as ex,
        binance(ex) as (client, _),
    ):
        for request in range(1, 6):
            rows = await client.get_klines(
                symbol="BTCUSDT", interval="1m", startTime=klines[90].open_time, limit=20
            )
            as_of = start - realism.rest_lag(request)
            newest = ex.market.bar_at("BTCUSDT", "1m", rows[-1][0], as_of)
            assert newest is not None and rows[-1] == newest.rest_row()
            assert rows[-1][0] <= as_of < rows[-1][0] + MINUTE, "the newest row is forming"
            assert rows[:-1] == [k.to_rest() for k in klines[90 : 90 + len(rows) - 1]]
            final = next(k for k in klines if k.open_time == rows[-1][0])
            assert rows[-1][0] + MINUTE <= start and rows[-1] != final.to_rest(), (
                "a closed bar is served still forming, and the bars closed since are absent"
            )
