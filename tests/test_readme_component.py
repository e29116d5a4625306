"""The README's "Write your own component" example works exactly as written.

Its python block becomes a module in a temporary package, its YAML block the consumers of
an App run against the local exchange replaying recorded bars; the example's printed
"big move" lines must be exactly those the ground truth says.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.app import App
from quantcore.consumers.history import HistoryStore
from quantcore.sim import LocalExchange, ReplaySource
from tests.harness import app_config, csv_rows
from tests.paths import REPO, REST_BTC

pytestmark = pytest.mark.timeout(60)

HEADING = "## Write your own component"
PACKAGE = "strategies_readme_tmp"
BARS = 20
START_BAR = 660
"""Play from 13:27 UTC, where the recorded day has bars on both sides of the 0.2% threshold."""


def readme_blocks() -> tuple[str, str]:
    """The first python block after the heading and the first yaml block after that."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(HEADING) :]
    python = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert python is not None, f"no ```python block after {HEADING!r}"
    rest = section[python.end() :]
    yaml_block = re.search(r"^```yaml\n(.*?)^```$", rest, re.S | re.M)
    assert yaml_block is not None, f"no ```yaml block after the python block of {HEADING!r}"
    return python.group(1), yaml_block.group(1)


@pytest.fixture
def readme_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable empty package ``strategies_readme_tmp`` in tmp_path (removed after)."""
    root = tmp_path / "pkg"
    (root / PACKAGE).mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    yield root / PACKAGE
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


async def test_readme_component_example_runs_as_written(
    readme_package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, config_text = readme_blocks()
    first_line = code.splitlines()[0]
    assert first_line == "# strategies/my_module.py"
    assert "class: strategies.my_module:BigMoves" in config_text
    (readme_package / "my_module.py").write_text(code)
    rewritten = config_text.replace("class: strategies.my_module:", f"class: {PACKAGE}.my_module:")
    sections: dict[str, Any] = yaml.safe_load(rewritten)
    assert list(sections) == ["consumers"]

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the example's csv consumer writes data/ relative to here
    source = ReplaySource.from_file(REST_BTC)
    async with LocalExchange([source], history_bars=START_BAR, updates_per_bar=3) as exchange:
        app = App(app_config(exchange, "unused", **sections))
        await app.run(max_bars=BARS)
        truth = exchange.closed_klines("BTCUSDT", "1m")[:BARS]
    printed = capsys.readouterr().out.splitlines()

    module = sys.modules[f"{PACKAGE}.my_module"]
    component = app.context.find(module.BigMoves)
    store = app.context.find(HistoryStore)
    assert component is not None and store is not None
    assert component.threshold == 0.002
    received = store.frame("BTCUSDT", "1m")
    assert len(received) == BARS and len(csv_rows(work / "data" / "BTCUSDT_1m.csv")) == BARS
    assert received["datetime"].astype("int64").tolist() == [k.open_time for k in truth]

    big = [k for k in truth if (float(k.high) - float(k.low)) / float(k.open) > 0.002]
    assert 0 < len(big) < BARS  # the threshold really splits these bars
    expected = [
        f"big move BTCUSDT {time.strftime('%H:%M', time.gmtime(k.open_time / 1000))} "
        f"{float(k.low)}..{float(k.high)}"
        for k in big
    ]
    assert [line for line in printed if line.startswith("big move")] == expected
    assert [bar.open_time_ms for bar in component.hits] == [k.open_time for k in big]
