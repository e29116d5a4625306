"""BarEvent ⇄ row ⇄ stream fields: lossless for every field each layout carries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from msgspec.structs import replace

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


def test_rows_and_fields_carry_the_exchange_strings_verbatim() -> None:
    codec = KlineCodec()
    row = [1704067200000, "0.00001036", "0.00001036", "0.00001034", "0.00001035",
           "1311851438.00", 1704067259999, "6732223209.87654307", 9, "0.00001234", "0", "0"]  # fmt: skip
    bar = codec.parse_rest_row("SHIBUSDT", "1m", row)
    stored = to_row(bar)
    assert stored[4:10] == ("0.00001036", "0.00001036", "0.00001034", "0.00001035",
                            "1311851438.00", "6732223209.87654307")  # fmt: skip
    assert from_row(stored) == replace(bar, received_ns=0)
    fields = to_fields(bar)
    assert fields["quote_volume"] == "6732223209.87654307" and fields["low"] == "0.00001034"
    assert from_fields(fields) == bar
    assert from_row([*stored[:4], Decimal("0.00001036"), *stored[5:]]).decimals == bar.decimals


def test_fields_from_before_exact_decimals_are_read_as_their_floats() -> None:
    fields = to_fields(make_bar(0))
    fields.update(low="1.034e-05", open="1.036e-05", close="1.035e-05", high="1.036e-05")
    bar = from_fields(fields)
    assert bar.decimals is not None and bar.decimals.low == "0.00001034"
    assert bar.low == 1.034e-05


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"closed": "yes"}, "closed='yes'"),
        ({"close": "abc"}, "not a decimal"),
        ({"close": "nan"}, "not a decimal"),
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
