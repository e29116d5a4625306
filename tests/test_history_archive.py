"""The archive parser: Binance's archive rows → the very BarEvents the live codec builds from
REST rows, in milliseconds or microseconds, with or without a header; anything that is not
the file's own bars in order is refused as corrupt."""

from __future__ import annotations

import io
import zipfile

import pytest

from quantcore.feeds.binance.codec import KlineCodec
from quantcore.history.archive import ArchiveCorrupt, parse_rows
from quantcore.sim import RandomWalkSource
from quantcore.sim.archive import UM_HEADER, period_bounds, render_csv

DAY_START, DAY_END = period_bounds("2025-01-01")


def zipped(text: str, names: tuple[str, ...] = ("BTCUSDT-1m-2025-01-01.csv",)) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(name, text)
    return buffer.getvalue()


def day_csv(venue: str = "binance-spot", micros: bool = True) -> str:
    bars = RandomWalkSource("BTCUSDT", "1m", 1).bars(DAY_START, DAY_END)
    return render_csv(bars, venue, micros).decode()


@pytest.mark.parametrize(("venue", "micros"), [("binance-spot", True), ("binance-spot", False),
                                               ("binance-usdm", False)])  # fmt: skip
def test_rows_become_the_bars_the_codec_builds_from_rest(venue: str, micros: bool) -> None:
    text = day_csv(venue, micros)
    bars = parse_rows(zipped(text), "BTCUSDT", "1m", DAY_START, DAY_END)
    assert len(bars) == 1440
    codec = KlineCodec()
    source = RandomWalkSource("BTCUSDT", "1m", 1).bars(DAY_START, DAY_END)
    assert bars == [codec.parse_rest_row("BTCUSDT", "1m", b.rest_row()) for b in source]
    first = text.split("\n", 2)[1 if venue == "binance-usdm" else 0]
    assert len(first.split(",", 1)[0]) == (16 if micros else 13)
    assert text.startswith(UM_HEADER) == (venue == "binance-usdm")


def corrupt(text: str, how: str) -> str:
    lines = text.splitlines(keepends=True)
    if how == "another day":
        stamp = lines[0].split(",", 1)[0]
        return text.replace(stamp, str(int(stamp) - 86_400_000_000), 1)
    if how == "out of order":
        return "".join([lines[1], lines[0], *lines[2:]])
    if how == "exponent":
        fields = lines[5].split(",")
        fields[1] = "5.8e4"
        return "".join([*lines[:5], ",".join(fields), *lines[6:]])
    if how == "mixed units":
        fields = lines[7].split(",")
        fields[0], fields[6] = str(int(fields[0]) // 1000), str(int(fields[6]) // 1000)
        return "".join([*lines[:7], ",".join(fields), *lines[8:]])
    if how == "torn row":
        return text[: len(text) - 30]
    if how == "high below close":
        fields = lines[3].split(",")
        fields[2] = "1.00000000"
        return "".join([*lines[:3], ",".join(fields), *lines[4:]])
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    ["another day", "out of order", "exponent", "mixed units", "torn row", "high below close"],
)
def test_rows_not_the_files_own_in_order_are_refused(how: str) -> None:
    with pytest.raises(ArchiveCorrupt):
        parse_rows(zipped(corrupt(day_csv(), how)), "BTCUSDT", "1m", DAY_START, DAY_END)


def test_what_is_no_single_csv_zip_is_refused() -> None:
    with pytest.raises(ArchiveCorrupt, match="unreadable zip"):
        parse_rows(b"PK\x03\x04 not really", "BTCUSDT", "1m", DAY_START, DAY_END)
    with pytest.raises(ArchiveCorrupt, match="2 members"):
        parse_rows(zipped(day_csv(), ("a.csv", "b.csv")), "BTCUSDT", "1m", DAY_START, DAY_END)
