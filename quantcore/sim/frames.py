"""A bar at a moment and on the wire: its partial states while it forms (pure functions of
bar and time, so REST, frames and ground truth agree) and Binance's kline event JSON."""

from __future__ import annotations

from .klines import Bar, merge, units_str
from .sources import KlineSource


def kline_frame(
    event_ms: int, symbol: str, interval: str, bar: Bar, first_id: int, closed: bool
) -> str:
    """Binance's raw kline event JSON, byte-compatible in key order and value types."""
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{symbol}","k":{{"t":{bar.open_time},'
        f'"T":{bar.close_time},"s":"{symbol}","i":"{interval}","f":{first_id},'
        f'"L":{first_id + bar.trades - 1},"o":"{units_str(bar.open)}",'
        f'"c":"{units_str(bar.close)}","h":"{units_str(bar.high)}",'
        f'"l":"{units_str(bar.low)}","v":"{units_str(bar.volume)}","n":{bar.trades},'
        f'"x":{"true" if closed else "false"},"q":"{units_str(bar.quote_volume)}",'
        f'"V":"{units_str(bar.taker_base)}","Q":"{units_str(bar.taker_quote)}","B":"0"}}}}'
    )


def _tick(bar: Bar) -> int:
    """Largest power of ten (in units, at most 1.0) dividing all four prices of a bar."""
    tick = 100_000_000
    while tick > 1 and (bar.open % tick or bar.high % tick or bar.low % tick or bar.close % tick):
        tick //= 10
    return tick


def partial_bar(bar: Bar, num: int, den: int) -> Bar:
    """State of `bar` after the fraction num/den of its time: monotone, within its range.

    Volumes and trades grow linearly (floored); the high only rises and the low only falls,
    reaching the true extremes at a per-bar point; num >= den gives the bar itself.
    """
    if num >= den:
        return bar
    o = bar.open
    mix = (bar.open_time // 1000 * 2_654_435_761) & 0xFFFFFFFF
    at_high = 200 + mix % 801  # permille of the bar at which the true high is reached
    at_low = 200 + (mix >> 12) % 801
    tick = _tick(bar)
    scaled = num * 1000
    if scaled >= at_high * den:
        high = bar.high
    else:
        high = o + (bar.high - o) * scaled // (den * at_high) // tick * tick
    if scaled >= at_low * den:
        low = bar.low
    else:
        low = o - (o - bar.low) * scaled // (den * at_low) // tick * tick
    close = o + (bar.close - o) * num // den // tick * tick
    close = min(max(close, low), high)
    return Bar(
        bar.open_time,
        bar.close_time,
        o,
        high,
        low,
        close,
        bar.volume * num // den,
        bar.quote_volume * num // den,
        bar.trades * num // den,
        bar.taker_base * num // den,
        bar.taker_quote * num // den,
    )


def bucket_bar(source: KlineSource, bucket: int, length: int, at_ms: int) -> Bar | None:
    """The bar of `length` opening at `bucket` as it stands at market time `at_ms`."""
    bars = source.bars(bucket, min(at_ms + 1, bucket + length))
    if not bars:
        return None
    last = bars[-1]
    if last.close_time > at_ms:
        bars[-1] = partial_bar(last, at_ms - last.open_time + 1, source.interval_ms)
    return merge(bars, bucket, bucket + length - 1)
