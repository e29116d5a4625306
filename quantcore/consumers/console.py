"""ConsoleLogger: one readable line per closed bar (optionally per update), via logging."""

from __future__ import annotations

import logging

from quantcore.component import Component
from quantcore.decimals import plain, trim
from quantcore.events import BarEvent, SignalEvent

log = logging.getLogger("quantcore.console")


def describe(bar: BarEvent) -> str:
    """``BTCUSDT 1m 2024-09-04 02:27 UTC  O 56714.00 H ... C ... V 11.02444 Q 624782.9503264``.

    Prices and volumes are the exchange's own strings with trailing zeros trimmed to two
    decimals, so a SHIB price prints as ``0.00001036`` (not ``0.00``) and no digit is lost
    or invented.
    """
    d = bar.decimal_strings()
    return (
        f"{bar.symbol} {bar.interval} {bar.open_time:%Y-%m-%d %H:%M} UTC"
        f"  O {trim(d.open)}  H {trim(d.high)}  L {trim(d.low)}  C {trim(d.close)}"
        f"  V {trim(d.volume)}  Q {trim(d.quote_volume)}  n {bar.trades}"
    )


def is_backfilled(bar: BarEvent) -> bool:
    """A bar from the REST backfill: REST rows carry no event time, so the codec sets it
    to the close time; a live ``x:true`` frame is always sent after the close."""
    return bar.event_time == bar.close_time


class ConsoleLogger(Component):
    """Logs closed bars; ``partial=True`` also logs in-progress updates (chatty).

    Backfilled and replayed bars are logged only at DEBUG: a startup backfill or a replay
    can be thousands of bars, and the feed logs one line per catch-up or replay instead.
    """

    def __init__(
        self, *, partial: bool = False, signals: bool = True, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.partial = partial
        self.signals = signals

    def wants(self, handler: str) -> bool:
        return (handler != "on_bar_partial" or self.partial) and (
            handler != "on_signal" or self.signals
        )

    def on_bar(self, bar: BarEvent) -> None:
        if is_backfilled(bar) or bar.replayed:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("bar     %s (backfilled)", describe(bar))
            return
        log.info("bar     %s", describe(bar))

    def on_bar_partial(self, bar: BarEvent) -> None:
        log.info("update  %s", describe(bar))

    def on_signal(self, signal: SignalEvent) -> None:
        log.info(
            "signal  %s %s %s %s at %s (%s) by %s",
            signal.symbol,
            signal.interval,
            f"{signal.time:%Y-%m-%d %H:%M}",
            signal.side.value.upper(),
            trim(plain(signal.price)),
            signal.reason,
            signal.source,
        )
