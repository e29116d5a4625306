"""The learner examples in examples/ run end to end against the local exchange.

Each example is started the way a learner starts it, as a script in its own process,
with ``--local --bars 3`` in an empty working directory; the tests check what it
printed and what it wrote.
"""

from __future__ import annotations

import ast
import csv
import itertools
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.timeout(120)

EXAMPLES = REPO / "examples"
COLUMNS = ["close", "high", "low", "open", "volume", "baseVolume", "datetime"]
STAMP = "%Y-%m-%d %H:%M:%S"


def run_example(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with ``--local`` and ``args``; it must stop by itself, cleanly."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--local", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr}"
    for trouble in ("Traceback", "Unclosed", "was destroyed", "ERROR"):
        assert trouble not in result.stderr, f"{name} stderr:\n{result.stderr}"
    return result


def assert_consecutive_minutes(stamps: list[str]) -> None:
    times = [datetime.strptime(s, STAMP) for s in stamps]
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(minutes=1)] * (
        len(times) - 1
    )


def assert_sane_bar(
    close: float, high: float, low: float, open_: float, volume: float, quote: float
) -> None:
    assert low <= min(open_, close) <= max(open_, close) <= high
    assert volume > 0 and quote > volume  # BTC at tens of thousands of USDT: quote >> base


def test_01_prints_every_kline_message_and_stops_after_3_closed_bars(tmp_path: Path) -> None:
    result = run_example("01_print_klines.py", tmp_path, "--bars", "3")
    messages: list[dict[str, Any]] = [ast.literal_eval(line) for line in result.stdout.splitlines()]
    assert all(m["e"] == "kline" and m["s"] == "BTCUSDT" for m in messages)
    klines = [m["k"] for m in messages]
    assert all(k["i"] == "1m" and k["T"] == k["t"] + 59_999 for k in klines)
    closed = [k for k in klines if k["x"]]
    assert len(closed) == 3 and klines[-1]["x"], "stops right after the 3rd closed bar"
    assert [k["t"] - closed[0]["t"] for k in closed] == [0, 60_000, 120_000]
    # Each closed bar came after in-progress updates of the same minute (the first bar's
    # may have started before the script subscribed).
    for bar in closed[1:]:
        updates = [k for k in klines if k["t"] == bar["t"] and not k["x"]]
        assert len(updates) >= 2
        assert float(updates[-1]["v"]) <= float(bar["v"])
    assert len(messages) > 3 * 3


def test_02_builds_a_dataframe_row_per_closed_bar(tmp_path: Path) -> None:
    result = run_example("02_dataframe.py", tmp_path, "--bars", "3")
    out = result.stdout.splitlines()
    assert re.findall(r"rows in the DataFrame: (\d+)", result.stdout) == ["1", "2", "3"]
    assert f"done: 3 rows, columns {COLUMNS}" in out
    dtypes = dict(line.split() for line in out[out.index(f"done: 3 rows, columns {COLUMNS}") + 1 :])
    assert list(dtypes) == COLUMNS
    assert all(dtypes[c] == "float64" for c in COLUMNS[:6])
    assert dtypes["datetime"].startswith("datetime64[")
    # The last printed table is the whole 3-row frame: index, 6 numbers, date, time.
    table = out[out.index("bar closed; rows in the DataFrame: 3, the last ones:") + 1 :][:4]
    assert table[0].split() == COLUMNS
    rows = [line.split() for line in table[1:]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    for r in rows:
        c, h, lo, o, v, q = (float(x) for x in r[1:7])
        assert_sane_bar(c, h, lo, o, v, q)
    assert_consecutive_minutes([f"{r[7]} {r[8]}" for r in rows])


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_03_appends_one_line_per_bar_and_writes_the_header_once(tmp_path: Path) -> None:
    result = run_example("03_csv.py", tmp_path, "--bars", "3")
    path = tmp_path / "data" / "examples" / "BTCUSDT_1m_local.csv"
    lines = read_csv(path)
    assert lines[0] == COLUMNS
    rows = lines[1:]
    assert len(rows) == 3 and all(len(r) == 7 for r in rows)
    for r in rows:
        assert_sane_bar(*(float(x) for x in r[:6]))
        assert re.fullmatch(r"\d+\.\d{8}", r[0]), "prices kept exactly as Binance sends them"
    assert_consecutive_minutes([r[6] for r in rows])
    printed = [line.split(": ", 1)[1] for line in result.stdout.splitlines()]
    assert printed == [",".join(r) for r in rows]

    # A second run appends to the same file without a second header.
    run_example("03_csv.py", tmp_path, "--bars", "1", "--out", str(path))
    lines = read_csv(path)
    assert lines[0] == COLUMNS and COLUMNS not in lines[1:]
    assert len(lines) == 1 + 4 and lines[1:4] == rows


def test_04_quantcore_records_prints_and_feeds_a_custom_subscriber(tmp_path: Path) -> None:
    result = run_example("04_quantcore.py", tmp_path, "--bars", "3")
    out = result.stdout
    assert re.search(
        r"local exchange: ws=ws://127\.0\.0\.1:\d+/ rest=http://127\.0\.0\.1:\d+/api", out
    )
    logged = re.findall(r"bar     BTCUSDT 1m (\S+ \S+) UTC .* C (\S+) ", out)
    assert len(logged) == 3
    custom = re.findall(r"CloseVsAverage: BTCUSDT (\d\d:\d\d) close (\S+) is ", out)
    assert custom == [(stamp[-5:], close) for stamp, close in logged]
    assert f"HistoryStore: 3 rows, columns {COLUMNS}" in out
    assert "bars recorded=3 " in out and "subscriber errors=0" in out

    lines = read_csv(tmp_path / "data" / "local" / "BTCUSDT_1m.csv")
    assert lines[0] == COLUMNS
    rows = lines[1:]
    assert len(rows) == 3
    assert [r[6][:16] for r in rows] == [stamp for stamp, _ in logged]
    assert [f"{float(r[0]):.2f}" for r in rows] == [close for _, close in logged]
    for r in rows:
        assert_sane_bar(*(float(x) for x in r[:6]))


@pytest.mark.parametrize("name", ["01_print_klines.py", "02_dataframe.py", "03_csv.py"])
def test_steps_1_to_3_use_plain_python_binance(name: str) -> None:
    """Steps 1-3 show the plain way: their only quantcore import is the local exchange."""
    tree = ast.parse((EXAMPLES / name).read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "binance" in imported
    assert {m for m in imported if m.startswith("quantcore")} == {"quantcore.sim"}


def test_walkthrough_quotes_the_recorded_frame_and_what_quantcore_makes_of_it() -> None:
    """docs/walkthrough.md shows a real frame and its CSV line: both must stay true."""
    from quantcore.consumers.csv_recorder import format_row
    from quantcore.feeds.binance.codec import KlineCodec
    from tests.paths import WS_BTC

    doc = (REPO / "docs" / "walkthrough.md").read_text()
    frame_line = WS_BTC.read_text().splitlines()[23]
    assert frame_line in doc
    bar = KlineCodec().parse_frame(json.loads(frame_line))
    assert bar.closed and bar.volume == 23.067122 and bar.quote_volume == 1337913.58654308
    assert format_row(bar).strip() in doc
