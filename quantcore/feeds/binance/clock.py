"""ExchangeClock: an estimate of the exchange's time between authoritative readings.

The exchange's clock decides what has closed. It is read exactly from ``/api/v3/time``
(before any REST row is trusted) and observed cheaply from frame event times; between
readings it is extrapolated at the rate it has been seen to run (1.0 against Binance,
the replay speed against a sped-up local exchange), so scheduling needs no REST call.
"""

from __future__ import annotations

import time


class ExchangeClock:
    """Maps this machine's monotonic clock onto exchange epoch milliseconds."""

    __slots__ = ("_first", "_last")

    MIN_SPAN = 2.0
    """Seconds of local time two readings must span before their rate is trusted."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self._last: tuple[float, int] | None = None

    def observe(self, server_ms: int, at: float | None = None) -> None:
        """Record that the exchange's clock read ``server_ms`` at local monotonic ``at``."""
        reading = (time.monotonic() if at is None else at, server_ms)
        if self._first is None:
            self._first = reading
        if self._last is None or server_ms >= self._last[1]:
            self._last = reading

    @property
    def known(self) -> bool:
        return self._last is not None

    @property
    def rate(self) -> float:
        """Exchange ms per local ms; 1.0 until two readings span ``MIN_SPAN`` seconds."""
        first, last = self._first, self._last
        if first is None or last is None or last[0] - first[0] < self.MIN_SPAN:
            return 1.0
        return max(1.0, (last[1] - first[1]) / ((last[0] - first[0]) * 1000.0))

    def now_ms(self) -> int:
        """Estimated exchange time now (never earlier than the last reading)."""
        last = self._last
        if last is None:
            return int(time.time() * 1000)
        return last[1] + int((time.monotonic() - last[0]) * 1000.0 * self.rate)
