"""ConsoleLogger: one readable line per closed bar (optionally per update), via logging."""

from __future__ import annotations

import logging

from quantcore.component import Component
from quantcore.events import BarEvent, SignalEvent

log = logging.getLogger("quantcore.console")


def describe(bar: BarEvent) -> str:
    """``BTCUSDT 1m 2024-09-04 02:27 UTC  O 56714.00 H ... C ... V 11.02444 Q 624782.95 n 1425``."""
    return (
        f"{bar.symbol} {bar.interval} {bar.open_time:%Y-%m-%d %H:%M} UTC"
        f"  O {bar.open:.2f}  H {bar.high:.2f}  L {bar.low:.2f}  C {bar.close:.2f}"
        f"  V {bar.volume:.5f}  Q {bar.quote_volume:.2f}  n {bar.trades}"
    )


class ConsoleLogger(Component):
    """Logs closed bars; ``partial=True`` also logs in-progress updates (chatty)."""

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
        log.info("bar     %s", describe(bar))

    def on_bar_partial(self, bar: BarEvent) -> None:
        log.info("update  %s", describe(bar))

    def on_signal(self, signal: SignalEvent) -> None:
        log.info(
            "signal  %s %s %s %s at %.2f (%s) by %s",
            signal.symbol,
            signal.interval,
            f"{signal.time:%Y-%m-%d %H:%M}",
            signal.side.value.upper(),
            signal.price,
            signal.reason,
            signal.source,
        )
