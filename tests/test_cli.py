"""The command line as a user runs it: offline failure handling, demo, signals, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from quantcore.decimals import trim
from tests.harness import csv_rows
from tests.paths import REPO

pytestmark = pytest.mark.timeout(90)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quantcore(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_unreachable_exchange_is_reported_and_retried(tmp_path: Path) -> None:
    """The live config, unchanged but for its URLs (a closed loopback port stands in for
    Binance without network): clear one-line failures, retries, clean exit, no traceback."""
    config = yaml.safe_load((REPO / "config" / "btc.yaml").read_text())
    port = closed_port()
    config["exchange"] = {
        "ws_url": f"ws://127.0.0.1:{port}/",
        "rest_url": f"http://127.0.0.1:{port}/api",
    }
    path = tmp_path / "btc.yaml"
    path.write_text(yaml.safe_dump(config))
    result = quantcore("run", str(path), "--duration", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"cannot connect to ws://127.0.0.1:{port}/" in out
    assert out.count("reconnecting in") >= 2
    assert "Traceback" not in out + result.stderr
    assert out.strip().splitlines()[-1].startswith("quantcore: stopped after")
    assert "bars recorded=0" in out and "feed errors=" in out


def test_demo_runs_offline_and_grows_the_csv(tmp_path: Path) -> None:
    result = quantcore("run", str(REPO / "config" / "demo.yaml"), "--max-bars", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if " bar     BTCUSDT 1m " in line]
    assert len(printed) == 4
    rows = csv_rows(tmp_path / "data" / "demo" / "BTCUSDT_1m.csv")
    assert len(rows) == 4
    for line, row in zip(printed, rows, strict=True):
        assert f"{row[6][:16]} UTC" in line and f"C {trim(row[0])} " in line
    assert "bars recorded=4" in result.stdout.splitlines()[-1]

    again = quantcore("run", str(REPO / "config" / "demo.yaml"), "--max-bars", "3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rows = csv_rows(tmp_path / "data" / "demo" / "BTCUSDT_1m.csv")
    minutes = [datetime.strptime(row[6], "%Y-%m-%d %H:%M:%S") for row in rows]
    assert len(rows) == 7 and all(b - a == timedelta(minutes=1) for a, b in pairwise(minutes))
    assert rows[4][3] == rows[3][0], "the generated market continues where the demo stopped"


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "quantcore", "run", str(REPO / "config" / "demo.yaml")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    csv = tmp_path / "data" / "demo" / "BTCUSDT_1m.csv"
    deadline = time.monotonic() + 40
    while not (csv.exists() and len(csv.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline, "demo recorded nothing"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("quantcore: stopped after")
    recorded = int(last.split("bars recorded=")[1].split()[0])
    assert recorded == len(csv_rows(csv)) >= 2
    assert "Traceback" not in out + err


def test_local_exchange_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        config["exchange"]["local"]["port"] = port
        path = tmp_path / "demo.yaml"
        path.write_text(yaml.safe_dump(config))
        result = quantcore("run", str(path), "--duration", "5", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"quantcore: exchange.local.port: port {port} is already in use\n"
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_bad_duration_is_one_line_exit_2(tmp_path: Path, value: str) -> None:
    result = quantcore("run", str(REPO / "config" / "demo.yaml"), "--duration", value, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"quantcore run: error: argument --duration: {value!r} is not a positive, "
        "finite number of seconds"
    )
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "data").exists(), "nothing ran"
