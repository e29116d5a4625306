"""``quantcore plot``: a candlestick PNG from a recorded CSV; bad files are one clear line."""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from quantcore import plot
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.feeds.binance.codec import KlineCodec
from tests.paths import REPO, REST_BTC

pytestmark = pytest.mark.timeout(60)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def recorded_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real REST klines written exactly as CsvRecorder writes them."""
    codec = KlineCodec()
    rows = json.loads(REST_BTC.read_text())
    path = tmp_path_factory.mktemp("plot") / "BTCUSDT_1m.csv"
    lines = [format_row(codec.parse_rest_row("BTCUSDT", "1m", row)) for row in rows]
    path.write_text(HEADER + "".join(lines))
    return path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="quantcore plot")
    plot.configure_parser(parser)
    return plot.main(parser.parse_args(list(argv)))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_renders_last_bars_as_a_candlestick_png(
    recorded_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "charts" / "chart.png"
    assert run(str(recorded_csv), "--out", str(out), "--last", "120", "--title", "BTC") == 0
    assert capsys.readouterr().out == (
        f"quantcore plot: wrote {out} (120 bars, 2024-09-04 17:07 .. 2024-09-04 19:06 UTC)\n"
    )
    assert png_size(out) == (plot.WIDTH_PX, plot.HEIGHT_PX)
    assert out.stat().st_size > 20_000
    # Both candle colours are drawn: the last 120 bars have rising and falling ones.
    pixels = Image.open(out).convert("RGB")
    colours = {colour for _, colour in pixels.getcolors(maxcolors=1 << 20) or []}
    assert {(0x26, 0xA6, 0x9A), (0xEF, 0x53, 0x50)} <= colours


def test_default_output_is_beside_the_csv(
    recorded_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(recorded_csv)) == 0
    out = recorded_csv.with_suffix(".png")
    assert capsys.readouterr().out.startswith(f"quantcore plot: wrote {out} (1000 bars, ")
    assert png_size(out) == (1200, 700)
    out.unlink()


def test_reads_the_bars_it_plots(recorded_csv: Path) -> None:
    frame = plot.read_bars(recorded_csv, last=3)
    assert list(frame.columns) == list(HEADER.strip().split(","))
    assert frame["datetime"].dt.strftime("%H:%M").tolist() == ["19:04", "19:05", "19:06"]
    assert frame["open"].tolist()[-1] == 57840.0 and frame["close"].tolist()[-1] == 57771.01


GOOD_ROW = "58339.0,58450.01,58318.13,58450.01,109.00342,6360009.239593,2024-09-04 17:07:00\n"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read: No such file or directory"),
        ("", "not a quantcore CSV (header is '', expected "),
        ("time,price\n1,2\n", "not a quantcore CSV (header is 'time,price', expected "),
        (HEADER, "no bars to plot (only the header)"),
        (
            HEADER + GOOD_ROW + GOOD_ROW.replace("58450.01,", "abc,", 1),
            "line 3: high 'abc' is not valid",
        ),
        (
            HEADER + GOOD_ROW.replace("2024-09-04 17:07:00", "yesterday"),
            "line 2: datetime 'yesterday' is not valid",
        ),
        (HEADER + GOOD_ROW + GOOD_ROW[:30], "line 3: 4 fields, expected 7"),
        (HEADER + GOOD_ROW[7:], "line 2: close is missing"),
        (HEADER + GOOD_ROW + "1,2,3,4,5,6,7,8\n", "line 3: 8 fields, expected 7"),
        (HEADER + GOOD_ROW.replace(",2024", ",,2024"), "line 2: 8 fields, expected 7"),
    ],
)
def test_bad_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, problem: str
) -> None:
    path = tmp_path / "BTCUSDT_1m.csv"
    if content is not None:
        path.write_text(content)
    assert run(str(path), "--out", str(tmp_path / "x.png")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"quantcore plot: {path}: {problem}")
    assert captured.err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_unwritable_output_is_one_line(
    recorded_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    assert run(str(recorded_csv), "--out", str(blocker / "chart.png"), "--last", "5") == 2
    assert capsys.readouterr().err.startswith(f"quantcore plot: {blocker}")


def test_last_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("x.csv", "--last", "0")
    assert exit_info.value.code == 2
    assert "--last: '0' is not a positive integer" in capsys.readouterr().err


def test_needs_no_display_whatever_the_configured_backend(
    recorded_csv: Path, tmp_path: Path
) -> None:
    """An interactive MPLBACKEND and no DISPLAY: still a PNG, and pyplot never loaded."""
    out = tmp_path / "headless.png"
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
    env["MPLBACKEND"] = "TkAgg"
    script = (
        "import sys, argparse\n"
        "from quantcore import plot\n"
        "p = argparse.ArgumentParser(); plot.configure_parser(p)\n"
        f"code = plot.main(p.parse_args([{str(recorded_csv)!r}, '--out', {str(out)!r}]))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    assert png_size(out) == (1200, 700)


@pytest.mark.parametrize("order", ["duplicate", "backwards"])
def test_rows_repeated_or_out_of_order_are_named_not_drawn(
    recorded_csv: Path, tmp_path: Path, order: str
) -> None:
    """A CSV with a bar twice (a copy appended by hand, two writers) or a row back in
    time: the chart would show that bar twice or out of place, so plot names the row
    and exits 2 without drawing; ``quantcore check`` lists every problem."""
    lines = recorded_csv.read_text().splitlines(keepends=True)
    if order == "duplicate":
        damaged = [*lines[:30], lines[10], *lines[30:]]
        problem = f"line 31: {lines[10].rstrip().rsplit(',', 1)[1]} again (first on line 11)"
        problem += ": a duplicate row, not plotted twice"
    else:
        damaged = [*lines[:10], lines[11], lines[10], *lines[12:]]
        problem = (
            f"line 12: {lines[10].rstrip().rsplit(',', 1)[1]} is before line 11 "
            f"({lines[11].rstrip().rsplit(',', 1)[1]}): rows out of time order"
        )
    path = tmp_path / "BTCUSDT_1m.csv"
    path.write_text("".join(damaged))
    result = subprocess.run(
        [sys.executable, "-m", "quantcore", "plot", str(path), "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"quantcore plot: {path}: {problem}; quantcore check {path} lists every problem\n"
    )
    assert result.stdout == "" and not (tmp_path / "x.png").exists()
