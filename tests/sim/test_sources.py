"""Loading the real Binance data files in tests/data, and the errors for bad files."""

from __future__ import annotations

import csv
import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest

from quantcore.sim import DataFileError, detect_symbol, load_klines, load_klines_by_symbol
from quantcore.sim.sources import ReplaySource
from tests.paths import read_text
from tests.sim.conftest import CSV_6, CSV_12, REST_BTC, WS_3SYM, WS_BTC


def test_rest_json_file_is_served_verbatim() -> None:
    rows = json.loads(REST_BTC.read_text())
    klines = load_klines(REST_BTC)
    assert len(klines) == 1000
    assert [k.to_rest() for k in klines] == rows
    assert detect_symbol(REST_BTC) == "BTCUSDT"


def test_csv_with_iso_times_restores_the_rest_form() -> None:
    klines = load_klines(CSV_12)
    assert len(klines) == 14_401
    first = klines[0]
    assert first.to_rest() == [
        1754006400000,
        "115764.07000000",
        "115764.08000000",
        "115704.78000000",
        "115729.00000000",
        "11.87539000",
        1754006459999,
        "1374354.64030120",
        1421,
        "3.66465000",
        "424075.04943760",
        "0",
    ]
    assert all(k.close_time == k.open_time + 59_999 for k in klines)
    assert all(b.open_time - a.open_time == 60_000 for a, b in itertools.pairwise(klines))


def test_six_column_csv_dedupes_and_keeps_the_final_version() -> None:
    klines = load_klines(CSV_6)
    assert len(klines) == 30_900
    rows = list(csv.reader(read_text(CSV_6).splitlines()))[1:]
    last_seen = {int(r[0]): r for r in rows}
    by_time = {k.open_time: k for k in klines}
    # 2024-03-22 10:44 appears twice: an in-progress snapshot, then the final bar.
    twice = 1711104240000
    assert sum(1 for r in rows if int(r[0]) == twice) == 2
    final = last_seen[twice]
    kline = by_time[twice]
    assert kline.close == "64863.99000000" == f"{Decimal(final[4]):.8f}"
    assert kline.volume == "33.50450000"
    assert kline.trades == 0
    assert kline.taker_buy_base == kline.taker_buy_quote == "0.00000000"
    expected_quote = (Decimal(final[5]) * Decimal(final[4])).quantize(Decimal("0.00000001"))
    assert kline.quote_volume == f"{expected_quote:.8f}"
    assert kline.close_time == twice + 59_999


def test_ws_jsonl_keeps_only_closed_frames_per_symbol() -> None:
    [kline] = load_klines(WS_BTC)
    assert kline.open_time == 1617566580000
    assert kline.trades == 1020
    assert kline.volume == "23.06712200"
    by_symbol = load_klines_by_symbol(WS_3SYM)
    assert sorted(by_symbol) == ["BTCUSDT", "DOTUSDT", "ETHUSDT"]
    assert by_symbol["BTCUSDT"] == [kline]
    assert load_klines(WS_3SYM, "ethusdt") == by_symbol["ETHUSDT"]
    with pytest.raises(DataFileError, match="several symbols"):
        load_klines(WS_3SYM)
    source = ReplaySource.from_file(WS_3SYM, "DOTUSDT")
    assert (source.symbol, source.interval, len(source)) == ("DOTUSDT", "1m", 1)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "timestamp,open,high,low,close,volume\n60000,1,2,0.5,1.5,3\n120000,1,x,1,1,1\n",
         r"a\.csv:3: not a number: 'x'"),
        ("b.csv", "timestamp,open,high,low,close,volume\n60000,1,2,0.5,3,3\n",
         r"b\.csv:2: low/high do not enclose open and close"),
        ("c.csv", "timestamp,open,close\n",
         r"c\.csv:1: header lacks column\(s\) high, low, volume"),
        ("d.json", '[[1, "1"]]', r"d\.json: row 1: expected a 12-field kline array"),
        ("e.jsonl", '{"e":"kline"\n', r"e\.jsonl:1: invalid JSON"),
        ("f.csv", "timestamp,open,high,low,close,volume\n60000,1,2,0.5,1.5\n",
         r"f\.csv:2: expected 6 columns, got 5"),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_and_problem(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFileError, match=message) as info:
        load_klines(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_data_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read"):
        load_klines(tmp_path / "nope.csv")
