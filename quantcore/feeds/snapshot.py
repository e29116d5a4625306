"""FeedHealth: what a feed shows ``/health`` and ``/metrics`` at one moment.

A leaf module (it imports only ``events``), so every feed can build one and the health
policy (``quantcore/health.py``) reads it without knowing the feed's class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from quantcore.events import FeedState

Key = tuple[str, str]
"""(symbol, interval): ``feeds.base.StreamKey``, which this leaf cannot import."""


class HeldBars(Protocol):
    """Live closed bars of one stream held behind a hole (the settler's ``StreamWait``)."""

    @property
    def since(self) -> datetime: ...
    @property
    def held(self) -> int: ...
    @property
    def missing_from(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class ConnectionHealth:
    """One connection: its streams, state and counters; monotonic times (0.0: never)."""

    keys: frozenset[Key]
    label: str
    state: FeedState
    reconnects: int
    stalls: int
    last_data: float
    quiet_at: float
    stalled_at: float


@dataclass(frozen=True, slots=True)
class RestWeight:
    """REST weight per minute: last reported by the exchange, allowed, spent in total."""

    used: int
    limit: int
    spent: int


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """The defaults fit a feed without connections or REST (replay, Redis Streams)."""

    margin: float = 10.0
    """Seconds a stream's last closed bar may be late beyond two intervals."""
    silence_limit: float | None = None
    """Seconds without a frame before a live connection is silent (None: no connections)."""
    connections: tuple[ConnectionHealth, ...] = ()
    halted: frozenset[Key] = frozenset()
    """Streams whose symbol is not TRADING: excluded from health."""
    waits: Mapping[Key, HeldBars] = field(default_factory=dict)
    rest: RestWeight | None = None
