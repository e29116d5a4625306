"""The kline parser on real recorded Binance frames and REST rows, and on garbage."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.feeds.binance.codec import KlineCodec, KlineParseError
from tests.paths import REST_BTC, WS_3SYM


def test_combined_frame_fields(btc_frames: list[dict[str, Any]]) -> None:
    frame = btc_frames[0]
    k = frame["data"]["k"]
    bar = KlineCodec().parse_frame(frame, received_ns=123)
    assert bar.symbol == "BTCUSDT" and bar.interval == "1m"
    assert bar.open_time == datetime(2021, 4, 4, 20, 3, tzinfo=UTC)
    assert bar.close_time == datetime.fromtimestamp(1617566639.999, UTC)
    assert (bar.open, bar.high, bar.low, bar.close) == (57994.6, 58008.75, 57994.59, 58001.03)
    assert bar.volume == float(k["v"]) == 6.453895
    assert bar.quote_volume == float(k["q"]) == 374344.56589795
    assert bar.taker_buy_volume == float(k["V"])
    assert bar.taker_buy_quote_volume == float(k["Q"])
    assert bar.trades == 242 and bar.closed is False
    assert bar.event_time == datetime.fromtimestamp(1617566592.358, UTC)
    assert bar.received_ns == 123


def test_raw_frame_equals_combined(btc_frames: list[dict[str, Any]]) -> None:
    codec = KlineCodec()
    for frame in btc_frames:
        assert codec.parse_frame(frame["data"]) == codec.parse_frame(frame)


def test_exactly_one_closed_bar_in_recording(btc_frames: list[dict[str, Any]]) -> None:
    bars = [KlineCodec().parse_frame(f) for f in btc_frames]
    closed = [b for b in bars if b.closed]
    assert len(closed) == 1
    assert closed[0].trades == 1020 and closed[0].volume == 23.067122


def test_rest_rows() -> None:
    rows = json.loads(REST_BTC.read_text())
    codec = KlineCodec()
    first = codec.parse_rest_row("BTCUSDT", "1m", rows[0])
    assert first.open_time == datetime(2024, 9, 4, 2, 27, tzinfo=UTC)
    assert (first.open, first.high, first.low, first.close) == (56714.0, 56714.01, 56634.0, 56642.0)
    assert first.volume == 11.02444 and first.quote_volume == 624782.9503264
    assert first.trades == 1425 and first.closed
    bars = [codec.parse_rest_row("BTCUSDT", "1m", r) for r in rows]
    assert len(bars) == 1000
    assert all(b.open_time < c.open_time for b, c in itertools.pairwise(bars))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f["data"].pop("k"), "KeyError"),
        (lambda f: f["data"].update(e="trade"), "not a kline event"),
        (lambda f: f["data"]["k"].update(o=57994.6), "decimal strings"),
        (lambda f: f["data"]["k"].update(t="1617566580000"), "integers"),
        (lambda f: f["data"]["k"].update(x="false"), "integers and x a boolean"),
        (lambda f: f["data"]["k"].update(i="7m"), "unknown interval"),
        (lambda f: f["data"]["k"].update(T=1617566699999), "does not end"),
        (lambda f: f["data"]["k"].update(c="abc"), "plain decimal"),
        (lambda f: f["data"]["k"].update(h="nan"), "plain decimal"),
        (lambda f: f["data"]["k"].update(h="inf"), "plain decimal"),
        (lambda f: f["data"]["k"].update(v="1.2e-05"), "plain decimal"),
        (lambda f: f["data"]["k"].update(q="-1.0"), "plain decimal"),
        (lambda f: f["data"]["k"].update(V=" 1.0"), "plain decimal"),
        (lambda f: f["data"]["k"].update(h="1.0"), "inconsistent"),
        (lambda f: f["data"]["k"].update(s=""), "bad symbol"),
    ],
)
def test_malformed_frames_raise_parse_error(
    btc_frames: list[dict[str, Any]], mutate: Any, reason: str
) -> None:
    frame = copy.deepcopy(btc_frames[0])
    mutate(frame)
    with pytest.raises(KlineParseError, match=reason):
        KlineCodec().parse_frame(frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(message=json_values)
def test_parser_only_raises_its_own_error_on_arbitrary_input(message: Any) -> None:
    with contextlib.suppress(KlineParseError):
        KlineCodec().parse_frame(message)


KLINE_KEYS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]


@settings(max_examples=400, deadline=None)
@given(
    drop=st.sets(st.sampled_from(KLINE_KEYS), max_size=3),
    replace=st.dictionaries(st.sampled_from(KLINE_KEYS), json_values, max_size=3),
    wrap=st.booleans(),
)
def test_parser_on_damaged_real_frames(
    btc_frames: list[dict[str, Any]], drop: set[str], replace: dict[str, Any], wrap: bool
) -> None:
    frame = copy.deepcopy(btc_frames[5])
    k = frame["data"]["k"]
    for key in drop:
        k.pop(key, None)
    k.update(replace)
    try:
        bar = KlineCodec().parse_frame(frame if wrap else frame["data"])
    except KlineParseError:
        return
    assert bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high


def test_text_path_equals_dict_path_on_recorded_frames() -> None:
    codec = KlineCodec()
    lines = [line for line in WS_3SYM.read_text().splitlines() if line.strip()]
    assert len(lines) == 118
    for line in lines:
        frame = json.loads(line)
        assert codec.parse(line, 7) == codec.parse_frame(frame, 7)
        raw = json.dumps(frame["data"])
        assert codec.parse(raw.encode()) == codec.parse_frame(frame["data"])
        assert codec.parse(line) == codec.parse(frame)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1', "not a kline frame"),
        ('{"result":null,"id":1}', "no kline event"),
        ('{"error":{"code":2,"msg":"Invalid request"},"id":null}', "no kline event"),
        ("[1,2,3]", "not a kline frame"),
        ("", "not a kline frame"),
    ],
)
def test_text_path_rejects(text: str, reason: str) -> None:
    with pytest.raises(KlineParseError, match=reason):
        KlineCodec().parse(text)


def test_text_path_applies_the_same_checks(btc_frames: list[dict[str, Any]]) -> None:
    frame = copy.deepcopy(btc_frames[0])
    frame["data"]["k"]["h"] = "1.0"
    with pytest.raises(KlineParseError, match="inconsistent"):
        KlineCodec().parse(json.dumps(frame))
    frame["data"]["E"] = 10**30
    with pytest.raises(KlineParseError):
        KlineCodec().parse(json.dumps(frame))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_text_parser_only_raises_its_own_error_on_arbitrary_bytes(raw: bytes | str) -> None:
    with contextlib.suppress(KlineParseError):
        KlineCodec().parse(raw)


@settings(max_examples=300, deadline=None)
@given(
    drop=st.sets(st.sampled_from(KLINE_KEYS), max_size=3),
    replace=st.dictionaries(st.sampled_from(KLINE_KEYS), json_values, max_size=3),
    cut=st.integers(min_value=0, max_value=400),
)
def test_text_parser_on_damaged_real_frames(
    btc_frames: list[dict[str, Any]], drop: set[str], replace: dict[str, Any], cut: int
) -> None:
    frame = copy.deepcopy(btc_frames[5])
    k = frame["data"]["k"]
    for key in drop:
        k.pop(key, None)
    k.update(replace)
    text = json.dumps(frame, allow_nan=True)
    for candidate in (text, text[:cut]):
        try:
            bar = KlineCodec().parse(candidate)
        except KlineParseError:
            continue
        assert bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high
