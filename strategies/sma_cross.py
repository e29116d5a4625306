"""SmaCross: the example strategy — fast/slow simple moving averages on closed bars.

Publishes a SignalEvent (BUY when the fast average crosses above the slow one, SELL
when it crosses below) for every stream it sees. It keeps its own fixed window per
stream, so its cost per bar is O(slow) whatever the history length.
"""

from __future__ import annotations

from collections import deque

from quantcore import SIGNAL, BarEvent, Component, Side, SignalEvent


class SmaCross(Component):
    """Crossover of two simple moving averages of the close."""

    def __init__(
        self, *, fast: int = 10, slow: int = 30, warmup: int = 0, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        if not (isinstance(fast, int) and isinstance(slow, int) and 0 < fast < slow):
            raise ValueError(f"need integers 0 < fast < slow, got fast={fast!r} slow={slow!r}")
        self.fast, self.slow = fast, slow
        if not (isinstance(warmup, int) and warmup >= 0):
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        self.warmup = warmup
        """Past bars ``run`` hands it before the first live bar; ``warmup: slow`` (e.g. 200
        for SMA200) lets it signal on the first live bar. 0 (default): it starts cold."""
        self._closes: dict[tuple[str, str], tuple[deque[float], deque[float]]] = {}
        self._previous: dict[tuple[str, str], float] = {}
        self.signals: list[SignalEvent] = []

    def on_bar(self, bar: BarEvent) -> None:
        key = (bar.symbol, bar.interval)
        windows = self._closes.get(key)
        if windows is None:
            windows = self._closes[key] = (deque(maxlen=self.slow), deque(maxlen=self.fast))
        closes, recent = windows
        closes.append(bar.close)
        recent.append(bar.close)
        if len(closes) < self.slow:
            return
        diff = sum(recent) / self.fast - sum(closes) / self.slow
        previous = self._previous.get(key)
        self._previous[key] = diff
        if previous is None:
            return
        side = Side.BUY if previous <= 0 < diff else Side.SELL if previous >= 0 > diff else None
        if side is not None:
            direction = "above" if side is Side.BUY else "below"
            signal = SignalEvent(
                source=self.name,
                symbol=bar.symbol,
                interval=bar.interval,
                side=side,
                price=bar.close,
                time=bar.close_time,
                reason=f"SMA{self.fast} crossed {direction} SMA{self.slow}",
            )
            self.signals.append(signal)
            self.publish(SIGNAL, signal)
