"""Binance's limits, kept process-wide: WebSocket connection attempts and REST request weight.

Binance counts both per IP, so every connection and every REST call of the process draws
from one budget per exchange host, whatever the faults: a reconnect storm is slowed by
the attempt budget, and a 429/418 makes *every* caller wait out ``Retry-After`` instead
of one caller retrying inside the ban window (which is what escalates to a 418 ban).
Every caller's limits hold: the strictest one given for a host is the budget's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectLimits:
    """WebSocket connection attempts allowed to this process.

    Binance allows 300 attempts per 5 minutes per IP; the default takes a third of it so
    other processes on the same IP keep room, and spaces attempts (staggered starts).
    """

    attempts: int = 100
    window: float = 300.0
    spacing: float = 0.25

    def stricter(self, other: ConnectLimits) -> ConnectLimits:
        """Both callers' limits hold: the fewer attempts, the longer window and spacing."""
        return ConnectLimits(min(self.attempts, other.attempts), max(self.window, other.window),
                             max(self.spacing, other.spacing))  # fmt: skip


@dataclass(frozen=True, slots=True)
class RestLimits:
    """REST request weight this process may spend per minute.

    Binance's spot limit is 6000 per minute per IP (REQUEST_WEIGHT in exchangeInfo); the
    default spends at most half of it, leaving the rest to other tools on the machine.
    """

    weight_per_minute: int = 3000

    def stricter(self, other: RestLimits) -> RestLimits:
        """Both callers' limits hold: the smaller weight per minute."""
        return RestLimits(min(self.weight_per_minute, other.weight_per_minute))


class ConnectionBudget:
    """Sliding-window limiter for connection attempts, shared by every connection."""

    def __init__(self, limits: ConnectLimits) -> None:
        self.limits = limits
        self._attempts: deque[float] = deque()
        self._banned_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more attempt fits the window, the spacing and any ban."""
        async with self._lock:
            limits = self.limits
            while True:
                now = time.monotonic()
                while self._attempts and now - self._attempts[0] >= limits.window:
                    self._attempts.popleft()
                wait = self._banned_until - now
                if self._attempts:
                    wait = max(wait, self._attempts[-1] + limits.spacing - now)
                    if len(self._attempts) >= limits.attempts:
                        wait = max(wait, self._attempts[0] + limits.window - now)
                if wait <= 0:
                    self._attempts.append(now)
                    return
                await asyncio.sleep(wait)

    def ban(self, seconds: float) -> None:
        """The exchange refused a handshake with 429/418: no attempt before ``seconds``."""
        self._banned_until = max(self._banned_until, time.monotonic() + seconds)

    @property
    def recent(self) -> int:
        """Attempts inside the current window."""
        now = time.monotonic()
        return sum(1 for t in self._attempts if now - t < self.limits.window)


class RestBudget:
    """Request weight per minute, fed by Binance's own count (``X-MBX-USED-WEIGHT-1M``).

    Before a call the caller asks for its weight; the budget waits for the next minute
    when the call would exceed the limit, and for the end of any ``Retry-After`` window
    after a 429/418, so no request is ever sent inside a ban.
    """

    def __init__(self, limits: RestLimits) -> None:
        self.limits = limits
        self._minute = self._current_minute()
        self._used = 0
        self._banned_until = 0.0
        self.used_reported = 0
        """The last ``X-MBX-USED-WEIGHT-1M`` the exchange sent."""
        self.spent = 0
        """Weight this process asked for, in total."""
        self.rate_limited = 0
        """429/418 answers seen."""

    @staticmethod
    def _current_minute() -> int:
        return int(time.time() // 60)

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` more fits this minute and no ban is running."""
        while True:
            now = time.monotonic()
            if self._banned_until > now:
                await asyncio.sleep(self._banned_until - now)
                continue
            minute = self._current_minute()
            if minute != self._minute:
                self._minute, self._used = minute, 0
            if self._used + weight <= self.limits.weight_per_minute or self._used == 0:
                self._used += weight
                self.spent += weight
                return
            await asyncio.sleep(max(0.05, (minute + 1) * 60 - time.time()))

    def report_used(self, used: int) -> None:
        """The exchange's count for this minute is authoritative when it is higher."""
        self.used_reported = used
        if self._current_minute() == self._minute:
            self._used = max(self._used, used)

    def ban(self, seconds: float) -> None:
        """A 429 or 418 arrived: nobody calls again before ``seconds`` have passed."""
        self.rate_limited += 1
        self._banned_until = max(self._banned_until, time.monotonic() + seconds)


_connect_budgets: dict[str, ConnectionBudget] = {}
_rest_budgets: dict[str, RestBudget] = {}


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def connection_budget(ws_url: str, limits: ConnectLimits) -> ConnectionBudget:
    """The process-wide attempt budget for the WebSocket host of ``ws_url``; a caller with
    stricter limits tightens it (Binance counts per IP, so every caller's limits must hold)."""
    budget = _connect_budgets.setdefault(_host(ws_url), ConnectionBudget(limits))
    budget.limits = budget.limits.stricter(limits)
    return budget


def rest_budget(rest_url: str, limits: RestLimits) -> RestBudget:
    """The process-wide weight budget for the REST host of ``rest_url``; the strictest
    caller's weight per minute holds for all."""
    budget = _rest_budgets.setdefault(_host(rest_url), RestBudget(limits))
    budget.limits = budget.limits.stricter(limits)
    return budget
