"""Rate limits of the local exchange and the counters tests read (`LocalExchange.limits`)."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

BASE_BAN_S = 120.0
"""Binance's first IP ban lasts 2 minutes; compressed windows shrink it in proportion."""


@dataclass(slots=True)
class Limits:
    """What the exchange's limits and unkind behaviours did so far (mutable, for tests)."""

    ws_attempts: int = 0
    ws_accepted: int = 0
    max_attempts_in_window: int = 0
    ws_refused_429: int = 0
    ws_refused_418: int = 0
    url_refused: int = 0
    rest_calls: Counter[str] = field(default_factory=Counter)
    rest_weight: int = 0
    max_weight_in_window: int = 0
    rest_429: int = 0
    rest_418: int = 0
    shutdown_notices: int = 0
    lifetime_closes: int = 0
    rate_disconnects: int = 0
    closes_withheld: int = 0
    quiet_frames_skipped: int = 0


class Verdict(NamedTuple):
    """Outcome of one charge: HTTP status (200, 429 or 418), usage in the current window
    (including this charge when accepted) and seconds until the caller may try again."""

    status: int
    used: int
    retry_after: float

    @property
    def retry_header(self) -> str:
        """`Retry-After` value: whole seconds, rounded up so that honouring it is safe."""
        return str(max(1, math.ceil(self.retry_after)))


class RateWindow:
    """Usage per fixed window of `window` wall seconds (Binance's: `binance_window`), aligned
    to its creation (Binance counts per calendar minute; compressed windows have no calendar,
    so the exchange start is used).

    Over the limit the call is refused with 429 until the window ends; any call before that
    is banned with 418 for `base_ban` s (`BASE_BAN_S` scaled by the window), doubling with
    every further 418 (assumed: Binance documents escalating bans from 2 minutes to 3 days,
    not the exact steps). Refused calls cost nothing.
    """

    def __init__(self, limit: int | None, window: float, binance_window: float) -> None:
        self.limit = limit
        self.window = window
        self.base_ban = BASE_BAN_S * window / binance_window
        self._origin = time.monotonic()
        self._index = 0
        self._used = 0
        self._blocked_until = -math.inf
        self._bans = 0
        self.max_used = 0

    def _roll(self, now: float) -> None:
        index = math.floor((now - self._origin) / self.window)
        if index != self._index:
            self._index, self._used = index, 0

    def charge(self, now: float, cost: int) -> Verdict:
        """Count a call of `cost` at wall time `now` unless it is refused."""
        self._roll(now)
        if now < self._blocked_until:
            self._bans += 1
            ban = self.base_ban * 2.0 ** (self._bans - 1)
            self._blocked_until = max(self._blocked_until, now + ban)
            return Verdict(418, self._used, self._blocked_until - now)
        if self.limit is not None and self._used + cost > self.limit:
            window_end = self._origin + (self._index + 1) * self.window
            self._blocked_until = window_end
            return Verdict(429, self._used, window_end - now)
        self._used += cost
        self.max_used = max(self.max_used, self._used)
        return Verdict(200, self._used, 0.0)
