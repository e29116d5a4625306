"""``quantcore plot CSV``: a candlestick chart (PNG) of a CSV recorded by CsvRecorder.

Plain matplotlib drawn on an Agg canvas (no pyplot, no display, no global backend switch),
imported only when a chart is drawn so ``quantcore run`` never pays for it. A file that
is not a quantcore CSV is reported as one line naming the file and the problem (exit 2),
and so is one whose rows repeat a bar or go back in time: a chart of it would show a bar
twice or out of place, so the damage is named instead (``quantcore check`` lists all).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantcore.consumers.csv_recorder import HEADER
from quantcore.consumers.history import COLUMNS
from quantcore.events import DATETIME_FORMAT

EXIT_OK = 0
EXIT_BAD_INPUT = 2
WIDTH_PX, HEIGHT_PX, DPI = 1200, 700, 100
"""Size of the PNG; fixed so charts of different files line up."""
UP, DOWN = "#26a69a", "#ef5350"


class PlotError(ValueError):
    """The input or output is unusable; ``str()`` names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Chart:
    """What was drawn, for the one-line report."""

    path: Path
    bars: int
    first: pd.Timestamp
    last: pd.Timestamp


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``quantcore plot``."""
    p.add_argument("csv", help="a CSV written by the csv consumer, e.g. data/BTCUSDT_1m.csv")
    p.add_argument("--out", help="PNG to write (default: the CSV's path with .png)")
    p.add_argument("--last", type=_positive_int, metavar="N", help="plot only the last N bars")
    p.add_argument("--title", help="chart title (default: the file name and the time range)")


def main(args: argparse.Namespace) -> int:
    """Draw the chart; 0 on success, 2 with one line on stderr for a bad file."""
    source = Path(args.csv)
    out = Path(args.out) if args.out else source.with_suffix(".png")
    try:
        frame = read_bars(source, args.last)
        chart = render(frame, out, args.title or _default_title(source, frame))
    except PlotError as exc:
        print(f"quantcore plot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"quantcore plot: wrote {chart.path} ({chart.bars} bars, "
        f"{chart.first:%Y-%m-%d %H:%M} .. {chart.last:%Y-%m-%d %H:%M} UTC)"
    )
    return EXIT_OK


def read_bars(path: Path, last: int | None = None) -> pd.DataFrame:
    """The CSV's bars (columns :data:`COLUMNS`, ``datetime`` parsed), the last ``last`` only."""
    rows: list[list[str]] = []
    try:
        with path.open(encoding="ascii", errors="replace", newline="") as handle:
            header = handle.readline()
            if header.rstrip("\r\n") != HEADER.rstrip("\n"):
                shown = header.rstrip("\r\n")[:80]
                raise PlotError(
                    f"{path}: not a quantcore CSV (header is {shown!r}, expected {HEADER!r})"
                )
            for line, row in enumerate(csv.reader(handle), start=2):
                if len(row) != len(COLUMNS):
                    raise PlotError(
                        f"{path}: line {line}: {len(row)} fields, expected {len(COLUMNS)}"
                    )
                rows.append(row)
    except OSError as exc:
        raise PlotError(f"{path}: cannot read: {exc.strerror}") from None
    if not rows:
        raise PlotError(f"{path}: no bars to plot (only the header)")
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out = pd.DataFrame(index=frame.index)
    for column in COLUMNS[:6]:
        values = pd.to_numeric(frame[column], errors="coerce")
        _check(path, frame[column], values.isna() | ~np.isfinite(values), column)
        out[column] = values.astype("float64")
    stamps = pd.to_datetime(frame["datetime"], format=DATETIME_FORMAT, errors="coerce")
    _check(path, frame["datetime"], stamps.isna(), "datetime")
    out["datetime"] = stamps
    _check_order(path, frame["datetime"], stamps.to_numpy(dtype="datetime64[ms]"))
    return out if last is None else out.iloc[-last:].reset_index(drop=True)


def _check_order(path: Path, raw: pd.Series[str], times: np.ndarray[Any, Any]) -> None:
    """PlotError at the first row whose time is not after the previous row's."""
    back = np.flatnonzero(times[1:] <= times[:-1])
    if not len(back):
        return
    row = int(back[0]) + 1
    line = row + 2  # the header is line 1
    hint = f"quantcore check {path} lists every problem"
    if (times[:row] == times[row]).any():
        first = int(np.flatnonzero(times[:row] == times[row])[0]) + 2
        raise PlotError(
            f"{path}: line {line}: {raw.iloc[row]} again (first on line {first}): a duplicate "
            f"row, not plotted twice; {hint}"
        )
    raise PlotError(
        f"{path}: line {line}: {raw.iloc[row]} is before line {line - 1} "
        f"({raw.iloc[row - 1]}): rows out of time order; {hint}"
    )


def render(frame: pd.DataFrame, out: Path, title: str) -> Chart:
    """Candles (wicks high-low, bodies open-close) over a volume panel, saved as PNG."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("drawing charts needs matplotlib: pip install matplotlib") from None

    times = frame["datetime"].to_numpy(dtype="datetime64[ms]")
    step = np.median(np.diff(times)) if len(times) > 1 else np.timedelta64(60_000, "ms")
    width = step * 0.7
    opens, closes = frame["open"].to_numpy(), frame["close"].to_numpy()
    colors = np.where(closes >= opens, UP, DOWN)
    span = float(frame["high"].max() - frame["low"].min()) or 1.0
    bodies = np.maximum(np.abs(closes - opens), span / 500)

    with matplotlib.rc_context({"date.converter": "concise"}):
        figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
        FigureCanvasAgg(figure)
        price, volume = figure.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": (4, 1), "hspace": 0.05}
        )
        price.vlines(times, frame["low"], frame["high"], colors=colors, linewidth=0.8)
        price.bar(times, bodies, width=width, bottom=np.minimum(opens, closes), color=colors)
        price.set_title(title)
        price.set_ylabel("price")
        price.grid(alpha=0.3)
        volume.bar(times, frame["volume"], width=width, color=colors)
        volume.set_ylabel("volume")
        volume.grid(alpha=0.3)
        volume.set_xlim(times[0] - step, times[-1] + step)
        figure.subplots_adjust(left=0.07, right=0.98, top=0.94, bottom=0.08)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format="png")
    except OSError as exc:
        raise PlotError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return Chart(out, len(frame), frame["datetime"].iloc[0], frame["datetime"].iloc[-1])


def _check(path: Path, raw: pd.Series[str], bad: pd.Series[bool], column: str) -> None:
    where = np.flatnonzero(bad.to_numpy())
    if len(where):
        row = int(where[0])
        line, value = row + 2, raw.iloc[row]  # the header is line 1
        problem = "is missing" if value == "" else f"{value!r} is not valid"
        raise PlotError(f"{path}: line {line}: {column} {problem}")


def _default_title(source: Path, frame: pd.DataFrame) -> str:
    first, last = frame["datetime"].iloc[0], frame["datetime"].iloc[-1]
    name = source.stem.replace("_", " ")
    return f"{name}   {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value
