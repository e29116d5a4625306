"""BarEvent ⇄ SQL row and ⇄ Redis stream fields: the one place that knows both layouts.

Times travel as epoch milliseconds (exact: exchange times are whole ms) and prices and
volumes as the exchange's own decimal strings (:class:`~quantcore.events.BarDecimals`),
so a bar read back compares equal to the bar that was written, every digit included;
its floats are derived from those strings again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from quantcore.decimals import plain, to_floats
from quantcore.events import BarDecimals, BarEvent, epoch_ms, from_epoch_ms

ROW_COLUMNS = (
    "symbol",
    "interval",
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "event_time",
)
"""Column order of :func:`to_row`; ``open_time``/``close_time``/``event_time`` are epoch ms."""

DECIMAL_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
"""The columns holding exact decimals (the exchange's strings; TEXT or NUMERIC in SQL)."""

Row = tuple[str, str, int, int, str, str, str, str, str, str, int, str, str, int]

_TRUE, _FALSE = "true", "false"


def to_row(bar: BarEvent) -> Row:
    """A closed bar as a row in :data:`ROW_COLUMNS` order (``received_ns`` is not stored)."""
    d = bar.decimals or bar.decimal_strings()
    return (
        bar.symbol,
        bar.interval,
        epoch_ms(bar.open_time),
        epoch_ms(bar.close_time),
        d.open,
        d.high,
        d.low,
        d.close,
        d.volume,
        d.quote_volume,
        bar.trades,
        d.taker_buy_volume,
        d.taker_buy_quote_volume,
        epoch_ms(bar.event_time),
    )


def _text(value: object) -> str:
    """A stored decimal as the exchange's string: SQLite TEXT as is, a Postgres NUMERIC
    (a Decimal, which keeps the scale it was given) in plain notation."""
    if type(value) is str:
        return value
    if isinstance(value, Decimal):
        return plain(value)
    raise ValueError(f"expected a decimal string, got {value!r} (a float column?)")


def _decimals(values: Sequence[str]) -> tuple[tuple[float, ...], BarDecimals]:
    """The eight exact strings → their floats and the BarDecimals; ValueError if not plain."""
    o, h, lo, c, v, q, tv, tq = values
    return to_floats(o, h, lo, c, v, q, tv, tq), BarDecimals(o, h, lo, c, v, q, tv, tq)


def from_row(row: Sequence[Any]) -> BarEvent:
    """A row in :data:`ROW_COLUMNS` order → the closed BarEvent it was made from."""
    exact = [_text(row[i]) for i in (4, 5, 6, 7, 8, 9, 11, 12)]
    (fo, fh, fl, fc, fv, fq, ftv, ftq), decimals = _decimals(exact)
    return BarEvent(
        symbol=str(row[0]),
        interval=str(row[1]),
        open_time=from_epoch_ms(int(row[2])),
        close_time=from_epoch_ms(int(row[3])),
        open=fo,
        high=fh,
        low=fl,
        close=fc,
        volume=fv,
        quote_volume=fq,
        trades=int(row[10]),
        taker_buy_volume=ftv,
        taker_buy_quote_volume=ftq,
        closed=True,
        event_time=from_epoch_ms(int(row[13])),
        decimals=decimals,
    )


def to_fields(bar: BarEvent) -> dict[str, str]:
    """Every BarEvent field as text: times in ms, prices and volumes as the exchange's
    strings, bools true/false."""
    d = bar.decimals or bar.decimal_strings()
    return {
        "symbol": bar.symbol,
        "interval": bar.interval,
        "open_time": str(epoch_ms(bar.open_time)),
        "close_time": str(epoch_ms(bar.close_time)),
        "open": d.open,
        "high": d.high,
        "low": d.low,
        "close": d.close,
        "volume": d.volume,
        "quote_volume": d.quote_volume,
        "trades": str(bar.trades),
        "taker_buy_volume": d.taker_buy_volume,
        "taker_buy_quote_volume": d.taker_buy_quote_volume,
        "closed": _TRUE if bar.closed else _FALSE,
        "event_time": str(epoch_ms(bar.event_time)),
        "received_ns": str(bar.received_ns),
    }


def _legacy(text: str) -> str:
    """A value written by quantcore before exact decimals (a float ``repr`` such as
    ``1.234e-05``) in plain notation: exactly the float it stood for."""
    try:
        return plain(float(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a decimal") from None


def from_fields(fields: Mapping[str, str]) -> BarEvent:
    """The inverse of :func:`to_fields`; ValueError (naming the field) on anything else.

    Entries published before exact decimals hold float ``repr`` text; they are still read
    (as the floats they were), so upgrading loses nothing already in the stream.
    """
    try:
        closed = fields["closed"]
        if closed not in (_TRUE, _FALSE):
            raise ValueError(f"closed={closed!r} is not true/false")
        exact = [fields[name] for name in DECIMAL_COLUMNS]
        try:
            floats, decimals = _decimals(exact)
        except ValueError:
            floats, decimals = _decimals([_legacy(text) for text in exact])
        fo, fh, fl, fc, fv, fq, ftv, ftq = floats
        return BarEvent(
            symbol=fields["symbol"],
            interval=fields["interval"],
            open_time=from_epoch_ms(int(fields["open_time"])),
            close_time=from_epoch_ms(int(fields["close_time"])),
            open=fo,
            high=fh,
            low=fl,
            close=fc,
            volume=fv,
            quote_volume=fq,
            trades=int(fields["trades"]),
            taker_buy_volume=ftv,
            taker_buy_quote_volume=ftq,
            closed=closed == _TRUE,
            event_time=from_epoch_ms(int(fields["event_time"])),
            received_ns=int(fields.get("received_ns", "0")),
            decimals=decimals,
        )
    except KeyError as exc:
        raise ValueError(f"missing field {exc.args[0]!r}") from None
