"""The one command line: every command listed in ``--help``; ``validate`` checks a config
and prints what a run would use without connecting; parameter errors name file, field, value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantcore.app import App
from quantcore.cli import build_parser, main
from quantcore.config import ConfigError, load_config
from tests.paths import REPO


def quantcore(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_help_lists_every_command_with_one_line() -> None:
    text = build_parser().format_help()
    for command in ("run", "simulate", "plot", "export", "validate", "check"):
        assert any(line.split()[:1] == [command] for line in text.splitlines()), command
    assert "Exit codes: 0" in text
    assert '"""' not in text


def test_a_command_imports_only_its_own_modules() -> None:
    """``check`` and ``--help`` start without loading the feed, the local exchange or the
    history command (each command's modules load when it runs)."""
    probe = (
        "import sys\n"
        "from quantcore.cli import build_parser\n"
        "build_parser('check').parse_args(['check', 'x.csv'])\n"
        "build_parser('').format_help()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('quantcore.feeds', "
        "'quantcore.sim', 'quantcore.history', 'quantcore.app', 'binance'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, cwd=REPO)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


def test_validate_prints_the_resolved_settings(tmp_path: Path) -> None:
    result = quantcore("validate", str(REPO / "config" / "demo.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0].endswith("demo.yaml: valid")
    assert "exchange: local on 127.0.0.1" in out and "speed 60x" in out
    assert "streams (1):\n  BTCUSDT 1m\n" in out
    assert "backfill_limit=None" in out and "stall_timeout=5.0" in out
    assert "strategies.sma_cross:SmaCross {'fast':" in out
    assert "logging: level=INFO" in out
    assert not (tmp_path / "data").exists(), "validate must not open any output"


def test_validate_live_config_names_the_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(REPO / "config" / "btc.yaml")]) == 0
    out = capsys.readouterr().out
    assert "exchange: ws=wss://stream.binance.com:9443/ rest=https://api.binance.com/api" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("streams: [{symbol: BTCUSDT, interval: 7m}]\n", "streams[0].interval"),
        (
            "streams: [{symbol: BTCUSDT}]\n"
            "consumers: [{class: 'strategies.sma_cross:SmaCross', params: {fast: 30, slow: 20}}]\n",
            "consumers[0].params: need integers 0 < fast < slow, got fast=30 slow=20",
        ),
        (
            "streams: [{symbol: BTCUSDT}]\n"
            "consumers: [{class: 'strategies.sma_cross:SmaCross', params: {fats: 3}}]\n",
            "consumers[0].params.fats: 3: SmaCross has no parameter 'fats' (it takes fast, slow, warmup, name)",
        ),
    ],
)
def test_validate_bad_config_exits_2_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = quantcore("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"quantcore: {path}: ")
    assert message in lines[0]


def test_run_bad_params_name_the_file_field_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "streams: [{symbol: BTCUSDT}]\n"
        "consumers: [history, {class: csv, params: {max_pending: 0}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        App(load_config(path))
    assert str(info.value).startswith(f"{path}: consumers[1].params: max_pending")
    result = quantcore("run", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"quantcore: {path}: consumers[1].params: max_pending")
    assert "0" in result.stderr.split("max_pending", 1)[1]
