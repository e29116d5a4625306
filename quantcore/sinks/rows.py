"""BarEvent ⇄ SQL row and ⇄ Redis stream fields: the one place that knows both layouts.

Times travel as epoch milliseconds (exact: exchange times are whole ms) and floats as
IEEE doubles or their ``repr`` (shortest round-trip text), so a bar read back compares
equal to the bar that was written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from quantcore.events import BarEvent, epoch_ms, from_epoch_ms

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

Row = tuple[str, str, int, int, float, float, float, float, float, float, int, float, float, int]

_TRUE, _FALSE = "true", "false"


def to_row(bar: BarEvent) -> Row:
    """A closed bar as a row in :data:`ROW_COLUMNS` order (``received_ns`` is not stored)."""
    return (
        bar.symbol,
        bar.interval,
        epoch_ms(bar.open_time),
        epoch_ms(bar.close_time),
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.quote_volume,
        bar.trades,
        bar.taker_buy_volume,
        bar.taker_buy_quote_volume,
        epoch_ms(bar.event_time),
    )


def from_row(row: Sequence[Any]) -> BarEvent:
    """A row in :data:`ROW_COLUMNS` order → the closed BarEvent it was made from."""
    return BarEvent(
        symbol=str(row[0]),
        interval=str(row[1]),
        open_time=from_epoch_ms(int(row[2])),
        close_time=from_epoch_ms(int(row[3])),
        open=float(row[4]),
        high=float(row[5]),
        low=float(row[6]),
        close=float(row[7]),
        volume=float(row[8]),
        quote_volume=float(row[9]),
        trades=int(row[10]),
        taker_buy_volume=float(row[11]),
        taker_buy_quote_volume=float(row[12]),
        closed=True,
        event_time=from_epoch_ms(int(row[13])),
    )


def to_fields(bar: BarEvent) -> dict[str, str]:
    """Every BarEvent field as text: times in ms, floats by ``repr``, bools true/false."""
    return {
        "symbol": bar.symbol,
        "interval": bar.interval,
        "open_time": str(epoch_ms(bar.open_time)),
        "close_time": str(epoch_ms(bar.close_time)),
        "open": repr(bar.open),
        "high": repr(bar.high),
        "low": repr(bar.low),
        "close": repr(bar.close),
        "volume": repr(bar.volume),
        "quote_volume": repr(bar.quote_volume),
        "trades": str(bar.trades),
        "taker_buy_volume": repr(bar.taker_buy_volume),
        "taker_buy_quote_volume": repr(bar.taker_buy_quote_volume),
        "closed": _TRUE if bar.closed else _FALSE,
        "event_time": str(epoch_ms(bar.event_time)),
        "received_ns": str(bar.received_ns),
    }


def from_fields(fields: Mapping[str, str]) -> BarEvent:
    """The inverse of :func:`to_fields`; ValueError (naming the field) on anything else."""
    try:
        closed = fields["closed"]
        if closed not in (_TRUE, _FALSE):
            raise ValueError(f"closed={closed!r} is not true/false")
        return BarEvent(
            symbol=fields["symbol"],
            interval=fields["interval"],
            open_time=from_epoch_ms(int(fields["open_time"])),
            close_time=from_epoch_ms(int(fields["close_time"])),
            open=float(fields["open"]),
            high=float(fields["high"]),
            low=float(fields["low"]),
            close=float(fields["close"]),
            volume=float(fields["volume"]),
            quote_volume=float(fields["quote_volume"]),
            trades=int(fields["trades"]),
            taker_buy_volume=float(fields["taker_buy_volume"]),
            taker_buy_quote_volume=float(fields["taker_buy_quote_volume"]),
            closed=closed == _TRUE,
            event_time=from_epoch_ms(int(fields["event_time"])),
            received_ns=int(fields.get("received_ns", "0")),
        )
    except KeyError as exc:
        raise ValueError(f"missing field {exc.args[0]!r}") from None
