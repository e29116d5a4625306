"""Binance kline wire formats → BarEvent: the only place that knows Binance's field names.

One parser serves WebSocket frames (raw ``{"e":"kline",...}`` or combined
``{"stream":..., "data":...}``) and REST rows (12-field arrays). Anything that is not
a valid kline raises :class:`KlineParseError` and nothing else, so the feed can count
and skip bad frames without ever crashing on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from quantcore.events import BarEvent, new_bar_event
from quantcore.intervals import INTERVAL_MS


class KlineParseError(ValueError):
    """A frame or row that is not a valid Binance kline; the message says why."""


_MAX_CACHED_TIMES = 65_536


class KlineCodec:
    """Stateful only for speed: bar open/close datetimes repeat across the ~30 updates
    of one bar, so they are cached by their millisecond value."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: dict[int, datetime] = {}

    def _time(self, ms: int) -> datetime:
        moment = self._times.get(ms)
        if moment is None:
            if len(self._times) >= _MAX_CACHED_TIMES:
                self._times.clear()
            moment = self._times[ms] = datetime.fromtimestamp(ms / 1000, UTC)
        return moment

    def parse_frame(self, message: Any, received_ns: int = 0) -> BarEvent:
        """A decoded WebSocket kline message (raw or combined) → BarEvent."""
        try:
            data = message["data"] if "stream" in message else message
            if data["e"] != "kline":
                raise KlineParseError(f"not a kline event: e={data['e']!r}")
            k = data["k"]
            event_ms = data["E"]
            t, close_ms, n, closed = k["t"], k["T"], k["n"], k["x"]
            if (
                type(t) is not int
                or type(close_ms) is not int
                or type(event_ms) is not int
                or type(n) is not int
                or type(closed) is not bool
            ):
                raise KlineParseError("t, T, E and n must be integers and x a boolean")
            return self._build(
                k["s"], k["i"], t, close_ms, k["o"], k["h"], k["l"], k["c"], k["v"], k["q"],
                n, k["V"], k["Q"], closed, datetime.fromtimestamp(event_ms / 1000, UTC),
                received_ns,
            )  # fmt: skip
        except KlineParseError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise KlineParseError(f"not a kline frame ({type(exc).__name__}: {exc})") from None

    def parse_rest_row(
        self, symbol: str, interval: str, row: Sequence[Any], received_ns: int = 0
    ) -> BarEvent:
        """One row of ``GET /api/v3/klines`` → a closed BarEvent.

        The caller decides the bar is closed (its close time is before server time);
        the event time is set to the close time, the moment the bar became final.
        """
        try:
            if len(row) < 11:
                raise KlineParseError(f"REST kline row has {len(row)} fields, expected 12")
            t, o, h, lo, c, v, close_ms, q, n, tv, tq = row[:11]
            if type(t) is not int or type(close_ms) is not int or type(n) is not int:
                raise KlineParseError("open time, close time and trades must be integers")
            close_time = self._time(close_ms)
            return self._build(
                symbol, interval, t, close_ms, o, h, lo, c, v, q, n, tv, tq,
                True, close_time, received_ns,
            )  # fmt: skip
        except KlineParseError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise KlineParseError(f"not a kline row ({type(exc).__name__}: {exc})") from None

    def _build(
        self,
        symbol: Any,
        interval: Any,
        t: int,
        close_ms: int,
        o: Any,
        h: Any,
        lo: Any,
        c: Any,
        v: Any,
        q: Any,
        n: int,
        tv: Any,
        tq: Any,
        closed: bool,
        event_time: datetime,
        received_ns: int,
    ) -> BarEvent:
        if (
            type(o) is not str
            or type(h) is not str
            or type(lo) is not str
            or type(c) is not str
            or type(v) is not str
            or type(q) is not str
            or type(tv) is not str
            or type(tq) is not str
        ):
            raise KlineParseError("prices and volumes must be decimal strings")
        if type(symbol) is not str or not symbol:
            raise KlineParseError(f"bad symbol {symbol!r}")
        step = INTERVAL_MS.get(interval)
        if step is None:
            raise KlineParseError(f"unknown interval {interval!r}")
        if close_ms <= t or (step and close_ms != t + step - 1):
            raise KlineParseError(f"close time {close_ms} does not end the {interval} bar at {t}")
        fo, fh, fl, fc = float(o), float(h), float(lo), float(c)
        fv, fq, ftv, ftq = float(v), float(q), float(tv), float(tq)
        if not math.isfinite(fo + fh + fl + fc + fv + fq + ftv + ftq):
            raise KlineParseError("non-finite price or volume")
        if not (fl <= fo <= fh and fl <= fc <= fh) or fv < 0 or fq < 0 or n < 0:
            raise KlineParseError(f"inconsistent bar o={o} h={h} l={lo} c={c} v={v}")
        times = self._times
        open_time = times.get(t) or self._time(t)
        close_time = times.get(close_ms) or self._time(close_ms)
        return new_bar_event(
            symbol, interval, open_time, close_time, fo, fh, fl, fc, fv, fq, n, ftv, ftq,
            closed, event_time, received_ns,
        )  # fmt: skip


def stream_name(symbol: str, interval: str) -> str:
    """Binance stream name, e.g. ``btcusdt@kline_1m`` (lowercase symbol, as Binance wants)."""
    return f"{symbol.lower()}@kline_{interval}"


def is_error_payload(message: Mapping[str, Any]) -> bool:
    """python-binance reports socket trouble as data: ``{"e": "error", "type":..., "m":...}``."""
    return message.get("e") == "error" or "error" in message
