"""kill -9 a ParquetRecorder process at random moments and during compactions and the
year merge: no bar it accepted is lost, none is stored twice, and readers only ever see
whole Parquet files."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import quantcore
from quantcore.sinks.parquet import ParquetRecorder
from tests.paths import REPO
from tests.sinks.parquet_writer import STREAM, bar

pytestmark = pytest.mark.timeout(120)


def visible_parquet(root: Path) -> list[Path]:
    """What a reader's ``**/*.parquet`` glob sees (hidden names are skipped by all readers)."""
    return [
        p
        for p in root.rglob("*.parquet")
        if not any(part[0] in "._" for part in p.relative_to(root).parts)
    ]


def read_everything(root: Path) -> int:
    """Read the whole store as pandas does (pyarrow dataset), and every file alone."""
    if not any(root.rglob("*.parquet")):
        return 0
    for path in visible_parquet(root):
        pq.read_table(path)
    return len(pd.read_parquet(root))


def temp_exists(root: Path) -> bool:
    """Whether a compaction or a year merge is writing its temporary file (checked
    cheaply, name by name)."""
    stream = root / "venue=binance-spot/symbol=ETHBTC/interval=1m"
    return any(
        os.path.exists(stream / f"year={year}/.{name}.parquet.tmp")
        for year in (2024, 2025)
        for name in (f"{year}", *(f"{year}-{month:02d}" for month in range(1, 13)))
    )


def run_and_kill(root: Path, rng: random.Random, during_compaction: bool) -> tuple[int, bool]:
    """Start the writer, read the store while it writes, SIGKILL it; the last index it acked."""
    acks = root.parent / "acks.txt"
    with acks.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.sinks.parquet_writer", str(root)], cwd=REPO, stdout=out
        )
    while not acks.stat().st_size:
        assert child.poll() is None, "the writer did not start"
        time.sleep(0.01)
    hit = False
    deadline = time.monotonic() + (20 if during_compaction else rng.uniform(0.05, 1.5))
    while time.monotonic() < deadline:
        if during_compaction and temp_exists(root):
            hit = True
            break
        if not during_compaction:
            read_everything(root)
        time.sleep(0.0005)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    text = acks.read_text()
    acked = [int(line) for line in text.splitlines()]
    read_everything(root)
    return acked[-1], hit


async def test_kill_9_at_any_moment_loses_nothing_and_shows_no_half_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rng = random.Random(22)
    last_acked = -1
    hits = 0
    for round_ in range(4):
        acked, hit = run_and_kill(root, rng, during_compaction=round_ % 2 == 1)
        assert acked > last_acked
        last_acked, hits = acked, hits + hit
        assert all(re.fullmatch(r"\d{4}(-\d{2})?\.parquet", p.name) for p in visible_parquet(root))
    assert hits >= 2, "the kills during compaction must land while a temporary file exists"

    recorder = ParquetRecorder(root=str(root))
    resume = recorder.resume_point(*STREAM)
    assert resume is not None and resume >= bar(last_acked).open_time_ms
    await recorder.stop()
    frame = quantcore.load(*STREAM, source=root, exact=True)
    count = len(frame)
    assert count >= last_acked + 1
    expected = [bar(i) for i in range(count)]
    assert list(frame["datetime"]) == [b.open_time.replace(tzinfo=None) for b in expected]
    assert list(frame["baseVolume"]) == [b.decimal_strings().quote_volume for b in expected]
    assert list(frame["low"]) == ["0.00000001"] * count
    assert read_everything(root) == count
    assert not temp_exists(root) and not any(root.rglob("_*.journal.csv"))
    stream = root / "venue=binance-spot/symbol=ETHBTC/interval=1m"
    assert (stream / "year=2024/2024.parquet").exists(), "the closed year was not merged"
    assert sorted(p.name for p in (stream / "year=2024").iterdir()) == ["2024.parquet"]
