"""BarEvent ⇄ row ⇄ stream fields: lossless for every field each layout carries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from quantcore.feeds.binance.codec import KlineCodec
from quantcore.sinks.rows import ROW_COLUMNS, from_fields, from_row, to_fields, to_row
from tests.sinks.helpers import make_bar


def test_row_round_trip_is_exact() -> None:
    bar = make_bar(7)
    row = to_row(bar)
    assert len(row) == len(ROW_COLUMNS)
    assert row[2] == bar.open_time_ms
    assert from_row(row) == replace(bar, received_ns=0)


def test_fields_round_trip_is_exact_for_closed_and_partial(
    btc_frames: list[dict[str, Any]],
) -> None:
    codec = KlineCodec()
    bars = [codec.parse_frame(frame, received_ns=i) for i, frame in enumerate(btc_frames)]
    bars += [make_bar(3), make_bar(4, closed=False, update=2)]
    for bar in bars:
        fields = to_fields(bar)
        assert all(isinstance(value, str) for value in fields.values())
        assert from_fields(fields) == bar
    assert to_fields(make_bar(1))["open_time"] == str(make_bar(1).open_time_ms)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"closed": "yes"}, "closed='yes'"),
        ({"close": "abc"}, "could not convert"),
        ({"trades": None}, "missing field 'trades'"),
    ],
)
def test_bad_fields_raise_value_error(change: dict[str, str | None], message: str) -> None:
    fields = to_fields(make_bar(0))
    for key, value in change.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    with pytest.raises(ValueError, match=message):
        from_fields(fields)
