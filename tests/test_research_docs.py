"""docs/research.md: every Python example runs against a real store and prints exactly the
output shown under it (pandas, Polars, DuckDB and quantcore.load)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.sinks.parquet import ParquetRecorder
from tests.paths import REPO
from tests.sinks.helpers import make_bar, publish, start_all, stop_all

DOC = REPO / "docs" / "research.md"
EXAMPLE = re.compile(r"```python\n(.*?)```\n\n```text\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = EXAMPLE.findall(DOC.read_text())
    assert len(found) == 4 == DOC.read_text().count("```python")
    return found


async def test_every_example_prints_what_the_doc_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recorder = ParquetRecorder(root="data/parquet")
    bus = EventBus()
    await start_all(bus, [recorder], [("BTCUSDT", "1m"), ("ETHUSDT", "1m")])
    publish(bus, [make_bar(i) for i in range(90)])
    publish(bus, [make_bar(i, symbol="ETHUSDT") for i in range(60)])
    await stop_all(bus, [recorder])
    names: dict[str, object] = {}
    for code, shown in examples():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(DOC), "exec"), names)
        assert out.getvalue() == shown, code
