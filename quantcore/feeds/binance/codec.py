"""Binance kline wire formats → BarEvent: the only place that knows Binance's field names.

It reads WebSocket frames (raw ``{"e":"kline",...}`` or combined ``{"stream":...,
"data":...}``), either as the frame's text — decoded straight into typed structs by
msgspec, in C — or as an already-decoded dict, and REST rows (12-field arrays). Every
path ends in the same checks. Binance's decimal strings are kept verbatim
(:class:`~quantcore.events.BarDecimals`, the exact values) and converted to floats by
:func:`quantcore.decimals.to_floats` (inlined), which also refuses anything but plain
decimals. Anything that is not a valid kline raises :class:`KlineParseError` and nothing
else, so the feed can count and skip bad frames without ever crashing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from quantcore.decimals import NOT_PLAIN, decode_floats
from quantcore.events import BarDecimals, BarEvent
from quantcore.intervals import FIXED_INTERVALS, INTERVAL_MS


class KlineParseError(ValueError):
    """A frame or row that is not a valid Binance kline; the message says why."""


class _Kline(msgspec.Struct, gc=False):
    """The ``k`` object of a kline event (fields Binance sends that we drop are ignored).

    Prices and volumes stay strings here: they are the exact values, and the floats are
    derived from them afterwards (a number where Binance sends a string is refused). The
    dict and REST paths build one too, so every path shares :meth:`KlineCodec._checked`.
    ``gc=False`` (also on the wrappers): no cycles are possible, and untracked structs are
    cheaper to allocate, one set per frame.
    """

    t: int
    T: int
    s: str
    i: str
    o: str
    c: str
    h: str
    l: str  # noqa: E741 (Binance's name)
    v: str
    n: int
    x: bool
    q: str
    V: str
    Q: str


class _Event(msgspec.Struct, gc=False):
    e: str
    E: int
    k: _Kline


class _Frame(msgspec.Struct, gc=False):
    """A raw event, or a combined-stream wrapper with the event in ``data``."""

    data: _Event | None = None
    e: str | None = None
    E: int | None = None
    k: _Kline | None = None


RawKline = _Kline
"""A decoded kline, prices still the exchange's strings (:meth:`KlineCodec.read`)."""

_fields = msgspec.structs.astuple  # a _Kline's fields in order: one C call, not 14 reads

# Lax mode: an integer or boolean sent as a string is read for its value rather than refused.
_decode_frame = msgspec.json.Decoder(_Frame, strict=False).decode


_MAX_CACHED_TIMES = 65_536
_MINUTE_MS = 60_000
_OFFSETS = tuple(timedelta(milliseconds=ms) for ms in range(_MINUTE_MS))
"""Every offset within a minute (2.9 MB, built once): an event time is its cached minute
plus one of these, a third of the cost of ``fromtimestamp`` and the same result."""
_SPANS = {name: step - 1 for name, step in FIXED_INTERVALS.items()}
"""Close time minus open time of a bar of each fixed interval (one test on the hot path)."""


class KlineCodec:
    """Stateful only for speed: bar open/close datetimes repeat across the ~30 updates
    of one bar, and event times share their minute, so they are cached by their
    millisecond value."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: dict[int, datetime] = {}
        """The cache behind :meth:`time` (epoch ms → UTC datetime): ``times.get(ms) or
        time(ms)`` inlines a hit."""

    def _time(self, ms: int) -> datetime:
        moment = self.times.get(ms)
        if moment is None:
            if len(self.times) >= _MAX_CACHED_TIMES:
                self.times.clear()
            moment = self.times[ms] = _utc(ms)
        return moment

    def parse(self, message: Any, received_ns: int = 0) -> BarEvent:
        """A WebSocket kline frame as received (raw or combined JSON text or bytes) →
        BarEvent; an already-decoded dict goes to :meth:`parse_frame`."""
        if type(message) is not bytes and type(message) is not str:
            return self.parse_frame(message, received_ns)
        k, event_ms = self.read(message)
        return self._converted(k, event_ms, received_ns)

    def read(self, message: str | bytes) -> tuple[RawKline, int]:
        """The kline of a frame's text and its event time (ms): decoded (one struct per
        frame), checked to be a kline event of a sane shape, prices not converted; the
        feed turns only the updates someone consumes into a BarEvent (:meth:`convert`)."""
        if not message.isascii():
            _check_utf8(message)
        try:
            frame = _decode_frame(message)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise KlineParseError(f"not a kline frame ({exc})") from None
        event = frame.data
        kind: str | None
        if event is not None:
            kind, event_ms, k = event.e, event.E, event.k
        elif frame.k is not None and frame.E is not None:
            kind, event_ms, k = frame.e, frame.E, frame.k
        else:
            raise KlineParseError("not a kline frame (no kline event in it)")
        if kind != "kline":
            raise KlineParseError(f"not a kline event: e={kind!r}")
        if k.T - k.t != _SPANS.get(k.i) or not k.s:
            _check_shape(k.s, k.i, k.t, k.T)  # raises, or passes a 1M bar
        return k, event_ms

    def convert(self, k: RawKline, event_ms: int, received_ns: int = 0) -> BarEvent:
        """A kline from :meth:`read` → BarEvent (prices checked and converted)."""
        return self._converted(k, event_ms, received_ns)

    def time(self, ms: int) -> datetime:
        """Epoch ms → UTC datetime, cached (bar open times repeat ~30 times)."""
        return self.times.get(ms) or self._time(ms)

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
                n, k["V"], k["Q"], closed, event_ms, received_ns,
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
            return self._build(
                symbol, interval, t, close_ms, o, h, lo, c, v, q, n, tv, tq,
                True, close_ms, received_ns,
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
        event_ms: int,
        received_ns: int,
    ) -> BarEvent:
        """The dict and REST paths: type checks msgspec does on the text path, then the
        shared checks on a ``_Kline`` (built without validation, hence the checks)."""
        if type(symbol) is not str or type(interval) is not str:
            raise KlineParseError(f"bad symbol {symbol!r} or interval {interval!r}")
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
        k = _Kline(t, close_ms, symbol, interval, o, c, h, lo, v, n, closed, q, tv, tq)
        return self._checked(k, event_ms, received_ns)

    def _checked(self, k: _Kline, event_ms: int, received_ns: int) -> BarEvent:
        """The checks every path shares, then the BarEvent (floats derived from the strings)."""
        if k.T - k.t != _SPANS.get(k.i) or not k.s:
            _check_shape(k.s, k.i, k.t, k.T)  # raises, or passes a 1M bar
        return self._converted(k, event_ms, received_ns)

    def _converted(self, k: _Kline, event_ms: int, received_ns: int) -> BarEvent:
        """A kline of a checked shape → BarEvent: prices checked, floats derived."""
        t, close_ms, symbol, interval, o, c, h, lo, v, n, closed, q, tv, tq = _fields(k)
        # decimals.to_floats, inlined: a function call is ~10 % of this path's budget.
        text = f"[{o},{h},{lo},{c},{v},{q},{tv},{tq}]"
        if (
            "e" in text
            or "E" in text
            or "-" in text
            or " " in text
            or "\n" in text
            or "\t" in text
            or "\r" in text
        ):
            raise KlineParseError(NOT_PLAIN)
        try:
            fo, fh, fl, fc, fv, fq, ftv, ftq = decode_floats(text)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise KlineParseError(NOT_PLAIN) from None
        if not (fl <= fo <= fh and fl <= fc <= fh) or n < 0:
            raise KlineParseError(f"inconsistent bar o={fo} h={fh} l={fl} c={fc} v={fv}")
        times = self.times
        into_minute = event_ms % _MINUTE_MS
        minute = event_ms - into_minute
        return BarEvent(
            symbol, interval, times.get(t) or self._time(t),
            times.get(close_ms) or self._time(close_ms), fo, fh, fl, fc, fv, fq, n, ftv, ftq,
            closed, (times.get(minute) or self._time(minute)) + _OFFSETS[into_minute],
            received_ns, BarDecimals(o, h, lo, c, v, q, tv, tq),
        )  # fmt: skip


def _check_utf8(text: str | bytes) -> None:
    """Refuse text that is not UTF-8 (bytes, or a str holding lone surrogates) whole:
    msgspec validates only the strings it keeps, not those of the fields it skips."""
    try:
        text.decode() if isinstance(text, bytes) else text.encode()
    except UnicodeError as exc:
        raise KlineParseError(f"not UTF-8 text ({exc})") from None


def _check_shape(symbol: str, interval: str, t: int, close_ms: int) -> None:
    """Why a kline's symbol, interval or times are wrong; a calendar-month bar (no fixed
    length) passes when it closes after it opens."""
    if not symbol:
        raise KlineParseError(f"bad symbol {symbol!r}")
    step = INTERVAL_MS.get(interval)
    if step is None:
        raise KlineParseError(f"unknown interval {interval!r}")
    if close_ms <= t or (step and close_ms != t + step - 1):
        raise KlineParseError(f"close time {close_ms} does not end the {interval} bar at {t}")


def _utc(ms: int) -> datetime:
    """Epoch ms → UTC datetime; an impossible time is a parse error, not a crash.

    ``fromtimestamp`` rather than :func:`quantcore.events.from_epoch_ms`: half the cost
    on the hot path, and the same result for whole milliseconds.
    """
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise KlineParseError(f"impossible time {ms} ms: {exc}") from None


def stream_name(symbol: str, interval: str) -> str:
    """Binance stream name, e.g. ``btcusdt@kline_1m`` (lowercase symbol, as Binance wants)."""
    return f"{symbol.lower()}@kline_{interval}"


def is_error_payload(message: Mapping[str, Any]) -> bool:
    """python-binance reports socket trouble as data: ``{"e": "error", "type":..., "m":...}``."""
    return message.get("e") == "error" or "error" in message
