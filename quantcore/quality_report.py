"""The report of one recorded series: holes, duplicates, order, grid and OHLC problems.

Shared by every source :mod:`quantcore.quality` reads and by the Parquet store's
(:mod:`quantcore.quality_parquet`), so each source only yields its rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import pairwise

from quantcore.events import datetime_text
from quantcore.gapfile import KnownGap
from quantcore.intervals import bar_open_ms

Values = tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]
"""open, high, low, close, volume, quote volume."""


class CheckError(ValueError):
    """The file cannot be checked at all (missing, not quantcore's); one line."""


@dataclass(frozen=True, slots=True)
class Hole:
    """``bars`` consecutive bars missing, the first opening at ``first_ms``."""

    first_ms: int
    bars: int
    step_ms: int

    def text(self) -> str:
        last = self.first_ms + (self.bars - 1) * self.step_ms
        plural = "s" if self.bars != 1 else ""
        span = f"{datetime_text(self.first_ms)} .. {datetime_text(last)}"
        return f"{span} missing ({self.bars} bar{plural})"


@dataclass(slots=True)
class SeriesReport:
    """Everything found in one (symbol, interval) series of one file."""

    source: str
    label: str
    step_ms: int | None
    rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    holes: list[Hole] = field(default_factory=list)
    known: list[tuple[Hole, str]] = field(default_factory=list)
    """Missing bars explained by the ``.gaps`` sidecar: (range, reason); not problems."""
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Kind (duplicate, out of order, off grid, ohlc, bad row) → one line per finding."""

    def add(self, kind: str, text: str) -> None:
        self.problems.setdefault(kind, []).append(text)

    @property
    def clean(self) -> bool:
        return not self.holes and not any(self.problems.values())

    @property
    def missing_bars(self) -> int:
        return sum(h.bars for h in self.holes)

    def lines(self, max_list: int = 20) -> list[str]:
        """The report: one summary line, then up to ``max_list`` findings per kind."""
        span = "no bars"
        if self.first_ms is not None and self.last_ms is not None:
            span = f"{datetime_text(self.first_ms)} .. {datetime_text(self.last_ms)} UTC"
        count = sum(len(v) for v in self.problems.values()) + len(self.holes)
        verdict = "clean" if self.clean else f"{count} problem{'s' if count != 1 else ''}"
        out = [f"{self.source}: {self.label}: {self.rows} rows, {span}: {verdict}"]
        kinds: list[tuple[str, list[str]]] = []
        if self.known:
            bars = sum(h.bars for h, _ in self.known)
            plural = "s" if bars != 1 else ""
            title = f"known gaps: {len(self.known)} ({bars} bar{plural}, not counted as problems)"
            kinds.append((title, [f"{h.text()}: {reason}" for h, reason in self.known]))
        if self.holes:
            title = f"holes: {len(self.holes)} ({self.missing_bars} bars missing)"
            kinds.append((title, [h.text() for h in self.holes]))
        for kind, found in self.problems.items():
            kinds.append((f"{kind}: {len(found)}", found))
        for title, found in kinds:
            out.append(f"  {title}")
            out.extend(f"    {line}" for line in found[:max_list])
            if len(found) > max_list:
                out.append(f"    ... and {len(found) - max_list} more")
        return out


def analyze(
    report: SeriesReport, rows: Iterable[tuple[str, int, Values | None]], interval: str | None
) -> SeriesReport:
    """Fill ``report`` from rows in stored order: (where, open time ms, values or None).

    Holes are judged on the set of open times (so a row out of place is not a hole);
    duplicates, disorder and grid against the rows in their stored order.
    """
    seen: dict[int, tuple[str, Values | None]] = {}
    previous: int | None = None
    for where, open_ms, values in rows:
        report.rows += 1
        stamp = datetime_text(open_ms)
        first = seen.get(open_ms)
        if first is not None:
            same = "same values" if first[1] == values else "different values"
            report.add("duplicates", f"{where}: {stamp} again ({same} as {first[0]})")
        elif previous is not None and open_ms < previous:
            report.add("out of order", f"{where}: {stamp} after {datetime_text(previous)}")
        if interval is not None and first is None and bar_open_ms(open_ms, interval) != open_ms:
            report.add("off grid", f"{where}: {stamp} is not a {interval} bar open time")
        if values is not None:
            for problem in ohlc_problems(values):
                report.add("ohlc", f"{where}: {stamp}: {problem}")
        if first is None:
            seen[open_ms] = (where, values)
        previous = open_ms
    if seen:
        report.first_ms, report.last_ms = min(seen), max(seen)
    step = report.step_ms
    if step:
        times = sorted(seen)
        for before, after in pairwise(times):
            if after - before > step:
                report.holes.append(Hole(before + step, (after - before) // step - 1, step))
    return report


def ohlc_problems(values: Values) -> list[str]:
    """What is inconsistent in one bar: low above open/close/high, high below them,
    non-positive prices, negative volumes."""
    o, h, low, c, volume, quote = values
    found = []
    for name, value in (("open", o), ("close", c)):
        if low > value:
            found.append(f"low {low} > {name} {value}")
        if h < value:
            found.append(f"high {h} < {name} {value}")
    if low > h:
        found.append(f"low {low} > high {h}")
    if min(o, h, low, c) <= 0:
        found.append("a price is not positive")
    if volume < 0 or quote < 0:
        found.append("a volume is negative")
    return found


def explain(report: SeriesReport, gaps: list[KnownGap]) -> None:
    """Move the parts of ``report``'s holes that ``gaps`` cover into ``report.known``."""
    if not gaps or not report.step_ms:
        return
    step = report.step_ms
    holes: list[Hole] = []
    for hole in report.holes:
        cursor, end = hole.first_ms, hole.first_ms + hole.bars * step
        for gap in gaps:
            lo, hi = max(cursor, gap.first_ms), min(end, gap.last_ms + step)
            if lo >= hi:
                continue
            if lo > cursor:
                holes.append(Hole(cursor, (lo - cursor) // step, step))
            report.known.append((Hole(lo, (hi - lo) // step, step), gap.reason))
            cursor = hi
        if cursor < end:
            holes.append(Hole(cursor, (end - cursor) // step, step))
    report.holes = holes


def decimals(texts: list[str]) -> Values | None:
    """Six value texts as finite Decimals (open, high, low, close, volume, quote), or None."""
    try:
        values = [Decimal(t) for t in texts]
    except InvalidOperation:
        return None
    if not all(v.is_finite() for v in values):
        return None
    o, h, low, c, v, q = values
    return (o, h, low, c, v, q)


def sql_rows(
    report: SeriesReport, rows: Iterable[tuple[object, ...]], step: int
) -> Iterator[tuple[str, int, Values | None]]:
    """A recorder table's rows (ROW_COLUMNS order; values as text or Decimal) for
    :func:`analyze`, with a ``close_time`` other than open + step - 1 a bad row."""
    for row in rows:
        open_ms, close_ms = int(str(row[2])), int(str(row[3]))
        where = f"open_time {open_ms}"
        values = decimals([str(row[i]) for i in (4, 5, 6, 7, 8, 9)])
        if values is None:
            report.add("bad rows", f"{where}: values {row[4:10]!r}")
        if close_ms != open_ms + step - 1:
            report.add("bad rows", f"{where}: close_time {close_ms} is not open + {step} - 1")
        yield where, open_ms, values
