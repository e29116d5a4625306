"""`Realism`: how unkind the local exchange is, as one frozen, seeded profile.

`Realism()` is the kind exchange (what `LocalExchange` does without a profile);
`Realism.binance()` turns every behaviour on with Binance's documented (or measured) numbers.
Every random choice is a pure function of the seed and what it decides about (a stream's
bar, a connection's serial number), so reruns are identical and ground truth never moves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


def stable_hash(*parts: object) -> int:
    """64 bits that depend only on `parts` (stable across runs and processes, unlike hash)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def seeded_unit(seed: int, *key: object) -> float:
    """A uniform number in [0, 1) that depends only on (seed, key): stable across runs."""
    return stable_hash(seed, *key) / 2.0**64


@dataclass(frozen=True, slots=True)
class Realism:
    """The unkind profile of a `LocalExchange`; every default is the kind behaviour.

    Times marked "market ms" follow the market clock (they scale with `speed`); "wall s"
    are real seconds, so windows and lifetimes can be compressed for tests.
    """

    seed: int = 0
    rest_lag_ms: int = 0
    """REST klines lag the market by this (market ms): undocumented, a few seconds."""
    rest_lag_spread_ms: int = 0
    """Each klines answer lags by a further seeded share of this (market ms), drawn per
    request: a lag that wanders (``lagging_rest``: 70-120 s), so one answer can show an
    older view than the one before it."""
    close_delay_ms: tuple[int, int] = (3, 3)
    """Range (market ms, inclusive) of the x:true frame's delay after the close, per bar."""
    missing_close: float = 0.0
    """Probability per (stream, bar) that the x:true frame is never sent."""
    quiet: bool = False
    """Push a kline frame only when the bar changed; bars with zero volume push nothing."""
    halted: frozenset[str] = frozenset()
    """Symbols with status BREAK in exchangeInfo; their streams send nothing."""
    connection_lifetime: float | None = None
    """Wall s after which a connection is closed with close code 1001 (Binance: 24 h)."""
    shutdown_notice: float = 0.0
    """Probability (per connection, seeded) that a lifetime close follows serverShutdown."""
    shutdown_lead: float = 5.0
    """Wall s between a serverShutdown notice and the close that follows it."""
    attempt_limit: int | None = None
    """WebSocket handshakes allowed per `attempt_window` (Binance: 300 per 5 minutes)."""
    attempt_window: float = 300.0
    """Wall s of one connection-attempt window."""
    weight_limit: int | None = None
    """REST weight allowed per `weight_window` (Binance: 6000 per minute)."""
    weight_window: float = 60.0
    """Wall s of one weight window; the header keeps Binance's name X-MBX-USED-WEIGHT-1M."""
    max_url: int | None = None
    """Longest WebSocket path+query accepted; longer ones get HTTP 414 (Binance ~8000)."""
    max_streams: int = 1024
    """Streams per connection (Binance: 1024)."""
    max_incoming_per_s: int | None = None
    """Messages a client may send per second (Binance: 5); more closes the connection."""
    exchange_info: Path | None = None
    """A real exchangeInfo JSON file to serve instead of the minimal generated one."""

    def __post_init__(self) -> None:
        lo, hi = self.close_delay_ms
        if not 0 <= lo <= hi:
            raise ValueError(f"close_delay_ms must be 0 <= lo <= hi, got {self.close_delay_ms}")
        for name in ("missing_close", "shutdown_notice"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")
        for name in ("rest_lag_ms", "rest_lag_spread_ms", "shutdown_lead"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("attempt_window", "weight_window", "connection_lifetime"):
            if (value := getattr(self, name)) is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {self.max_streams}")
        object.__setattr__(self, "halted", frozenset(s.upper() for s in self.halted))

    @classmethod
    def binance(cls, seed: int = 0, **overrides: Any) -> Realism:
        """Every behaviour on with Binance's numbers (spot API docs, or measured/assumed).

        Assumptions where Binance documents nothing: REST lags 3 s; 1 % of closes never
        arrive; half of the 24 h closes are announced by serverShutdown. `exchange_info`
        stays None (the file is data outside the package): pass it as an override.
        """
        base = cls(
            seed=seed,
            rest_lag_ms=3_000,
            close_delay_ms=(70, 430),
            missing_close=0.01,
            quiet=True,
            connection_lifetime=86_400.0,
            shutdown_notice=0.5,
            shutdown_lead=5.0,
            attempt_limit=300,
            attempt_window=300.0,
            weight_limit=6_000,
            weight_window=60.0,
            max_url=8_000,
            max_streams=1_024,
            max_incoming_per_s=5,
        )
        return replace(base, **overrides)

    @classmethod
    def lagging_rest(cls, seed: int = 0, **overrides: Any) -> Realism:
        """:meth:`binance`, with REST minutes behind the stream: every klines answer lags
        70-120 s (seeded per request), so recent bars are served as they stood then, still
        forming, and the newest are absent (seen on Binance under load)."""
        lag = {"rest_lag_ms": 70_000, "rest_lag_spread_ms": 50_000}
        return cls.binance(seed, **{**lag, **overrides})

    # -- seeded per-item decisions ---------------------------------------------------------

    def rest_lag(self, request: int) -> int:
        """Lag (market ms) of the klines answer to the ``request``-th call (1, 2, ...)."""
        if self.rest_lag_spread_ms <= 0:
            return self.rest_lag_ms
        share = seeded_unit(self.seed, "rest_lag", request)
        return self.rest_lag_ms + int(share * (self.rest_lag_spread_ms + 1))

    def close_delay(self, stream: str, open_ms: int) -> int:
        """Delay (market ms) of the x:true frame of `stream`'s bar opening at open_ms."""
        lo, hi = self.close_delay_ms
        if lo == hi:
            return lo
        return lo + int(seeded_unit(self.seed, "close_delay", stream, open_ms) * (hi - lo + 1))

    def close_withheld(self, stream: str, open_ms: int) -> bool:
        """Whether the x:true frame of that bar is never sent."""
        if self.missing_close <= 0.0:
            return False
        return seeded_unit(self.seed, "missing_close", stream, open_ms) < self.missing_close

    def announces_shutdown(self, serial: int) -> bool:
        """Whether the lifetime close of the connection with this serial number (1, 2, ...
        in accept order) is preceded by a serverShutdown notice."""
        if self.shutdown_notice <= 0.0:
            return False
        return seeded_unit(self.seed, "shutdown", serial) < self.shutdown_notice
