"""`python -m quantcore simulate` as a real subprocess."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest

from tests.sim.conftest import REPO_ROOT, REST_BTC, WS_3SYM, binance, quick_exit, recv_kline

LINE = re.compile(
    r"^local exchange: ws=(ws://127\.0\.0\.1:\d+/) "
    r"rest=(http://127\.0\.0\.1:\d+/api) streams=(\S+)$"
)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quantcore",
        "simulate",
        *args,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


class _Urls:
    """The exchange as announced on stdout (the attributes `binance()` needs)."""

    def __init__(self, ws_url: str, rest_url: str) -> None:
        self.ws_url, self.rest_url = ws_url, rest_url


async def test_simulate_prints_urls_serves_python_binance_and_exits_on_sigterm() -> None:
    proc = await _spawn("--port", "0", "--speed", "max", "--symbols", "BTCUSDT,ETHUSDT")
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().rstrip("\n")
        match = LINE.match(line)
        assert match, line
        assert match.group(3) == "btcusdt@kline_1m,ethusdt@kline_1m"
        urls = _Urls(match.group(1), match.group(2))
        async with binance(urls) as (client, bsm):  # type: ignore[arg-type]
            async with bsm.kline_socket("ETHUSDT") as socket:
                quick_exit(socket)
                frame = await recv_kline(socket)
            assert frame["s"] == "ETHUSDT"
            rows = await client.get_klines(symbol="BTCUSDT", interval="1m", limit=3)
            assert len(rows) == 3
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        log = (await proc.stdout.read()).decode()
        assert "INFO    playing BTCUSDT: seeded random walk (seed 0), 1m base" in log
        assert "INFO    as fast as clients read, market clock at " in log
        assert "client 1 connected from 127.0.0.1: ethusdt@kline_1m" in log
        assert re.search(r"client 1 disconnected after \d+\.\ds", log), log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_replay_exits_when_done() -> None:
    proc = await _spawn("--data", f"DOTUSDT={WS_3SYM}", "--exit-when-done", "--speed", "600")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert b"streams=dotusdt@kline_1m" in out
    assert re.search(rb"playing DOTUSDT: replaying \d+ 1m bars, 2021-04-04 \d\d:\d\d UTC", out)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--data", "/nonexistent/file.csv"], "/nonexistent/file.csv: cannot read"),
        (["--symbols", "BTC-USD"], "invalid symbol 'BTC-USD'"),
        (["--interval", "7m"], "'7m' is not a fixed-length Binance interval"),
        (["--speed", "fast"], "invalid --speed 'fast'"),
        (["--speed", "-2"], "invalid --speed '-2'"),
        (["--data", f"{REST_BTC}", "--interval", "1s"], "interval 1s cannot be built from 1m bars"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(args: list[str], problem: str) -> None:
    proc = await _spawn(*args)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1 and problem in lines[0], lines
