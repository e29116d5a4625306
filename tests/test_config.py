"""Config validation: one line naming file, field and value; nothing connects first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantcore.config import ConfigError, load_config
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.consumers.history import HistoryStore
from tests.paths import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_live_config_points_at_binance() -> None:
    config = load_config(REPO / "config" / "btc.yaml")
    assert config.streams == (("BTCUSDT", "1m"),)
    assert config.feed.ws_url == "wss://stream.binance.com:9443/"
    assert config.feed.rest_url == "https://api.binance.com/api"
    assert config.local is None
    kinds = [spec.cls for spec in config.consumers]
    assert HistoryStore in kinds and CsvRecorder in kinds


def test_demo_config_uses_local_exchange() -> None:
    config = load_config(REPO / "config" / "demo.yaml")
    assert config.local is not None and config.local.speed == 60


def test_symbol_spelling_normalized(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "streams: [{symbol: BTC-USDT, interval: 5m}]\n"))
    assert config.streams == (("BTCUSDT", "5m"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "streams: [{symbol: BTCUSDT, interval: 7m}]",
            "streams[0].interval: '7m' is not a fixed-length",
        ),
        (
            "streams: [{symbol: 'BTC USDT!'}]",
            "streams[0].symbol: 'BTC USDT!' is not a Binance symbol",
        ),
        ("streams: []", "streams: expected a non-empty list"),
        ("{}", "streams: missing"),
        ("streams: [{symbol: BTCUSDT}]\nfeeed: {}", "config.feeed: unknown setting"),
        (
            "streams: [{symbol: BTCUSDT}]\nfeed: {stall_timeout: -1}",
            "feed.stall_timeout: -1 is not a number",
        ),
        (
            "streams: [{symbol: BTCUSDT}]\nexchange: {ws_url: 'ftp://x'}",
            "exchange.ws_url: 'ftp://x' is not",
        ),
        (
            "streams: [{symbol: BTCUSDT}]\nconsumers: [{class: 'nope.mod:X'}]",
            "consumers[0].class: cannot import",
        ),
        (
            "streams: [{symbol: BTCUSDT}]\nconsumers: [{class: 'quantcore.events:BarEvent'}]",
            "not a quantcore Component",
        ),
        (
            "streams: [{symbol: BTCUSDT}]\nexchange: {local: {speed: fast}}",
            "exchange.local.speed: 'fast'",
        ),
        ("streams: [{symbol: BTCUSDT\n", "invalid YAML (line"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "c.yaml"))
    assert "\n" not in str(info.value)


def test_bad_params_fail_at_build(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "streams: [{symbol: BTCUSDT}]\nconsumers: [{class: history, params: {max_rows: 0}}]\n",
    )
    spec = load_config(path).consumers[0]
    with pytest.raises(ConfigError, match=r"consumers\[0\].params: max_rows must be"):
        spec.build()


def test_cli_bad_config_exit_2_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "streams: [{symbol: BTCUSDT, interval: 7m}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "quantcore", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "streams[0].interval: '7m'" in result.stderr
