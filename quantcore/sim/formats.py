"""Binance data files → closed klines: REST JSON, the 12-column and 6-column CSVs, WS JSONL.

Every problem is a :class:`DataFileError` whose one line names the file, the line and
what is wrong, so a bad ``--data`` argument is clear before the exchange starts.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from .klines import MINUTE_MS, SCALE, Bar, Kline, interval_ms, interval_name, to_units

QUOTES = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "DAI")
"""Quote assets Binance lists: how a symbol is found in a file name or split into base and quote."""


class DataFileError(ValueError):
    """A data file cannot be used; the message is one line naming file, line and problem."""


GZIP_MAGIC = b"\x1f\x8b"


def read_data(path: str | Path) -> bytes:
    """A data file's bytes, gunzipped when it is gzip (sniffed, not by name): large recordings
    are shipped compressed. Raises OSError or ``gzip.BadGzipFile`` as reading does."""
    data = Path(path).read_bytes()
    return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data


def _base_name(p: Path) -> Path:
    return p.with_suffix("") if p.suffix.lower() == ".gz" else p


def detect_symbol(path: str | Path) -> str | None:
    """Symbol of a data file: the `s` of its first WS kline frame, else a token in its name."""
    p = Path(path)
    if _base_name(p).suffix.lower() in (".jsonl", ".ndjson"):
        try:
            for raw in read_data(p).splitlines():
                frame = _kline_payload(orjson.loads(raw))
                if frame is not None and isinstance(frame.get("s"), str):
                    return str(frame["s"]).upper()
        except (OSError, EOFError, orjson.JSONDecodeError):
            return None
    for token in re.split(r"[^A-Za-z0-9]+", _base_name(p).stem):
        if token.isupper() and token.endswith(QUOTES) and len(token) > 4:
            return token
    return None


def load_klines(path: str | Path, symbol: str | None = None) -> list[Kline]:
    """Closed klines of one symbol from a Binance data file, oldest first, deduplicated.

    Formats (sniffed from content): REST array JSON; JSONL of WS kline frames (only `x:true`
    kept; `symbol` picks one when several are present); CSV with the 12 kline columns (ms or
    ISO times) or with 6 `timestamp,open,high,low,close,volume` columns. Rows repeating an
    open_time are replaced by the later row (page overlaps, in-progress then final). For
    6-column files quote_volume is derived as volume*close rounded to 8 dp; trades and taker
    volumes are 0.
    """
    by_symbol = _load(Path(path))
    if len(by_symbol) == 1 and (symbol is None or None in by_symbol):
        return next(iter(by_symbol.values()))
    if symbol is None:
        names = ", ".join(sorted(str(s) for s in by_symbol))
        raise DataFileError(f"{path}: holds several symbols ({names}); pick one")
    found = by_symbol.get(symbol.upper())
    if found is None:
        raise DataFileError(f"{path}: no closed klines for {symbol.upper()}")
    return found


def load_klines_by_symbol(path: str | Path) -> dict[str, list[Kline]]:
    """Every symbol's klines in a file; symbols of single-symbol files come from the name."""
    by_symbol = _load(Path(path))
    out: dict[str, list[Kline]] = {}
    for name, klines in by_symbol.items():
        if name is None:
            detected = detect_symbol(path)
            if detected is None:
                raise DataFileError(f"{path}: cannot tell the symbol; name it as SYMBOL=FILE")
            name = detected
        out[name] = klines
    return out


def _load(path: Path) -> dict[str | None, list[Kline]]:
    try:
        data = read_data(path)
    except (OSError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DataFileError(f"{path}: cannot read: {reason}") from None
    head = data.lstrip()[:1]
    if head == b"[":
        rows = _rest_rows(path, data)
        return {None: _finish(path, rows, None)}
    if head == b"{":
        return _jsonl_rows(path, data)
    if not head:
        raise DataFileError(f"{path}: file is empty")
    return {None: _csv_rows(path, data)}


Row = tuple[int, Bar]  # (line or row number, bar)


def _finish(path: Path, rows: list[Row], length: int | None) -> list[Kline]:
    """Validate, deduplicate (later row wins) and order parsed rows."""
    if not rows:
        raise DataFileError(f"{path}: no closed klines found")
    latest: dict[int, Row] = {}
    for line, bar in rows:
        latest[bar.open_time] = (line, bar)
    ordered = [latest[t] for t in sorted(latest)]
    expected = (
        length if length is not None else ordered[0][1].close_time - ordered[0][1].open_time + 1
    )
    try:
        interval_name(expected)
    except ValueError:
        raise DataFileError(
            f"{path}:{ordered[0][0]}: bar length {expected} ms is not a Binance interval"
        ) from None
    out: list[Kline] = []
    for line, bar in ordered:
        problem = bar.problem()
        if problem is None and bar.close_time - bar.open_time + 1 != expected:
            problem = f"bar length {bar.close_time - bar.open_time + 1} ms, expected {expected}"
        if problem is None and bar.open_time % 1000:
            problem = f"open_time {bar.open_time} is not on a whole second"
        if problem is not None:
            raise DataFileError(f"{path}:{line}: {problem}")
        out.append(bar.kline())
    return out


def _rest_rows(path: Path, data: bytes) -> list[Row]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(parsed, list):
        raise DataFileError(f"{path}: expected a JSON array of kline arrays")
    rows: list[Row] = []
    for i, item in enumerate(parsed, 1):
        if not isinstance(item, list) or len(item) < 11:
            raise DataFileError(f"{path}: row {i}: expected a 12-field kline array")
        try:
            rows.append((i, Bar.from_fields(item)))
        except ValueError as exc:
            raise DataFileError(f"{path}: row {i}: {exc}") from None
    return rows


def _kline_payload(frame: Any) -> dict[str, Any] | None:
    """The `k` object of a raw or combined WS kline frame, else None."""
    if isinstance(frame, dict) and isinstance(frame.get("data"), dict):
        frame = frame["data"]
    if isinstance(frame, dict) and frame.get("e") == "kline" and isinstance(frame.get("k"), dict):
        return frame["k"]  # type: ignore[no-any-return]
    return None


def _jsonl_rows(path: Path, data: bytes) -> dict[str | None, list[Kline]]:
    rows: dict[str, list[Row]] = {}
    intervals: dict[str, str] = {}
    for line_no, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            k = _kline_payload(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{line_no}: invalid JSON: {exc}") from None
        if k is None or k.get("x") is not True:
            continue
        try:
            symbol = str(k["s"]).upper()
            fields = [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"]]
            bar = Bar.from_fields([*fields, k["V"], k["Q"]])
            interval = str(k["i"])
        except (KeyError, ValueError) as exc:
            raise DataFileError(f"{path}:{line_no}: bad kline frame: {exc}") from None
        if intervals.setdefault(symbol, interval) != interval:
            raise DataFileError(f"{path}:{line_no}: {symbol} mixes intervals")
        rows.setdefault(symbol, []).append((line_no, bar))
    if not rows:
        raise DataFileError(f"{path}: no closed (x:true) kline frames found")
    return {s: _finish(path, r, interval_ms(intervals[s])) for s, r in rows.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = {
    "open_time": ("open_time", "opentime", "open time", "timestamp", "time", "date", "datetime"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "v", "vol"),
    "close_time": ("close_time", "closetime", "close time"),
    "quote_volume": ("quote_volume", "quote_asset_volume", "quote asset volume", "quotevolume"),
    "trades": ("trades", "trade_count", "number_of_trades", "count", "num_trades"),
    "taker_base": ("taker_buy_base", "taker_buy_base_asset_volume", "taker_buy_volume"),
    "taker_quote": ("taker_buy_quote", "taker_buy_quote_asset_volume", "taker_buy_quote_volume"),
}
_POSITIONAL_12 = list(_COLUMNS)


def _parse_time(text: str) -> int:
    """Epoch ms from an integer (s, ms or us, by magnitude) or an ISO-8601 timestamp."""
    stripped = text.strip()
    if stripped.isdigit():
        value = int(stripped)
        if value >= 10**14:
            return value // 1000
        return value * 1000 if value < 10**11 else value
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"not a timestamp: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _parse_count(text: str) -> int:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a trade count: {text!r}") from None
    if value != value.to_integral_value() or value < 0:
        raise ValueError(f"not a trade count: {text!r}")
    return int(value)


def _csv_rows(path: Path, data: bytes) -> list[Kline]:
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    reader = csv.reader(lines)
    first = next(reader)
    if first and first[0].strip().isdigit():
        names = _POSITIONAL_12 if len(first) >= 11 else _POSITIONAL_12[:6]
        columns = {name: i for i, name in enumerate(names)}
        body_start = 1
    else:
        columns = {}
        header = [h.strip().lower() for h in first]
        for key, aliases in _COLUMNS.items():
            for i, name in enumerate(header):
                if name in aliases:
                    columns[key] = i
                    break
        missing = [
            k for k in ("open_time", "open", "high", "low", "close", "volume") if k not in columns
        ]
        if missing:
            raise DataFileError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        body_start = 2
    full = all(k in columns for k in _POSITIONAL_12)
    width = max(columns.values()) + 1
    parsed: list[tuple[int, int, int | None, list[int]]] = []
    rows_iter = reader if body_start == 2 else csv.reader(lines)
    for line_no, cells in enumerate(rows_iter, body_start):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) < width:
            raise DataFileError(f"{path}:{line_no}: expected {width} columns, got {len(cells)}")
        try:
            t = _parse_time(cells[columns["open_time"]])
            close_t = _parse_time(cells[columns["close_time"]]) if full else None
            nums = [to_units(cells[columns[k]]) for k in ("open", "high", "low", "close", "volume")]
            if full:
                nums += [
                    to_units(cells[columns["quote_volume"]]),
                    _parse_count(cells[columns["trades"]]),
                    to_units(cells[columns["taker_base"]]),
                    to_units(cells[columns["taker_quote"]]),
                ]
        except ValueError as exc:
            raise DataFileError(f"{path}:{line_no}: {exc}") from None
        parsed.append((line_no, t, close_t, nums))
    if not parsed:
        raise DataFileError(f"{path}: no kline rows found")
    length = None if full else _infer_length(path, [p[1] for p in parsed])
    rows: list[Row] = []
    for line_no, t, close_t, nums in parsed:
        o, h, lo, c, v = nums[:5]
        if close_t is not None:
            q, n, tb, tq = nums[5:]
            rows.append((line_no, Bar(t, close_t, o, h, lo, c, v, q, n, tb, tq)))
        else:
            assert length is not None
            quote = (v * c + SCALE // 2) // SCALE
            rows.append((line_no, Bar(t, t + length - 1, o, h, lo, c, v, quote, 0, 0, 0)))
    return _finish(path, rows, length)


def _infer_length(path: Path, opens: list[int]) -> int:
    """Interval of a file without close times: the most common gap between open times."""
    unique = sorted(set(opens))
    gaps = Counter(b - a for a, b in itertools.pairwise(unique))
    if not gaps:
        return MINUTE_MS
    length = gaps.most_common(1)[0][0]
    try:
        interval_name(length)
    except ValueError:
        raise DataFileError(f"{path}: rows are {length} ms apart, not a Binance interval") from None
    return length
