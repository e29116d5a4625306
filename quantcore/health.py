"""Health: per stream and per recorder, whether the run records what the exchange publishes.

Read at scrape time by ``/health`` and ``/metrics`` through narrow protocols (a venue's
run, its feed and the feed's :class:`FeedHealth` snapshot), never the App itself. A
recorder (a component with a resume point: the CSV recorder, every database sink) is
unhealthy while failing (its storage refuses writes, or its ``on_bar`` raised), behind
(bars waiting too long, in the journal, or a range being filled) or dropping bars.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from quantcore.bus import EventBus
from quantcore.component import Component
from quantcore.config import AppConfig
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.events import FeedState, epoch_ms, utc_text
from quantcore.feeds.base import FeedStats, StreamKey, StreamSequencer
from quantcore.feeds.snapshot import FeedHealth
from quantcore.intervals import interval_ms


class MonitoredFeed(Protocol):
    """What health and metrics read from a feed (every ``DataFeed`` is one)."""

    name: str
    stats: FeedStats
    fatal: str | None
    sequencers: dict[StreamKey, StreamSequencer]
    stream_bars: Counter[StreamKey]
    stream_backfilled: Counter[StreamKey]

    def exchange_ms(self) -> int: ...
    def health_snapshot(self) -> FeedHealth: ...


class Monitored(Protocol):
    """One venue's run as health and metrics read it (``app.VenueApp``)."""

    config: AppConfig
    bus: EventBus
    components: list[Component]

    @property
    def feed(self) -> MonitoredFeed | None: ...


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """One stream's verdict; ``reason`` says why it is not healthy (or why excluded)."""

    healthy: bool
    reason: str
    last_open: str | None = None
    age_seconds: float | None = None
    excluded: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"healthy": self.healthy, "reason": self.reason}
        if self.last_open is not None:
            out["last_open"] = self.last_open
        if self.age_seconds is not None:
            out["age_seconds"] = round(self.age_seconds, 1)
        if self.excluded:
            out["excluded"] = True
        return out


def health(venue: Monitored) -> dict[StreamKey, StreamHealth]:
    """Per stream: healthy only while its connection is live and its last bar is recent.

    Live: the connection is up, it was not found stalled since its last frame, and a frame
    came within 2 x ``stall_timeout`` or a REST probe since then found the market quiet.
    Recent: the last closed bar closed at most 2 intervals + margin (``settle`` +
    ``stall_timeout`` + ``poll``) ago in exchange time. Halted symbols are excluded.
    """
    feed = venue.feed
    if feed is None:
        return {key: StreamHealth(False, "feed not started") for key in venue.config.streams}
    snapshot, now_ms = feed.health_snapshot(), feed.exchange_ms()
    return {key: _verdict(feed, snapshot, now_ms, key) for key in venue.config.streams}


def _verdict(feed: MonitoredFeed, snap: FeedHealth, now_ms: int, key: StreamKey) -> StreamHealth:
    if feed.fatal is not None:
        return StreamHealth(False, f"feed stopped: {feed.fatal}")
    if key in snap.halted:
        return StreamHealth(True, "symbol not TRADING (excluded)", excluded=True)
    reason = _connection_problem(snap, key)
    if reason is not None:
        return StreamHealth(False, reason)
    last = feed.sequencers[key].last
    if last is None:
        return StreamHealth(False, "no closed bar yet")
    step = interval_ms(key[1])
    last_ms = epoch_ms(last)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_ms / 1000))
    age = (now_ms - last_ms - step) / 1000.0
    limit = 2 * step / 1000.0 + snap.margin
    if age > limit:
        reason = f"last closed bar closed {age:.0f}s ago (exchange time), more than {limit:.0f}s"
        wait = snap.waits.get(key)
        if wait is not None:
            reason += (
                f"; {wait.held} live bars held until REST shows the bar at "
                f"{utc_text(epoch_ms(wait.missing_from))} (waiting since "
                f"{wait.since:%Y-%m-%d %H:%M:%S})"
            )
        return StreamHealth(False, reason, stamp, age)
    return StreamHealth(True, "live", stamp, age)


def _connection_problem(snap: FeedHealth, key: StreamKey) -> str | None:
    """Why the connection carrying ``key`` is not live, or None (also: no connections)."""
    if snap.silence_limit is None:
        return None
    for conn in snap.connections:
        if key not in conn.keys:
            continue
        if conn.state is not FeedState.LIVE:
            return f"connection {conn.label}: {conn.state.value}"
        if conn.last_data == 0.0 and conn.quiet_at == 0.0:
            return f"connection {conn.label}: no frame yet"
        silent = time.monotonic() - conn.last_data
        if conn.stalled_at > conn.last_data:
            return f"connection {conn.label}: stalled, no frame for {silent:.1f}s"
        if silent > snap.silence_limit and conn.quiet_at < conn.last_data:
            return f"connection {conn.label}: no frame for {silent:.1f}s"
        return None
    return "not connected yet"


@dataclass(frozen=True, slots=True)
class RecorderHealth:
    """One recorder's verdict; ``reason`` says what is wrong ("recording" when nothing)."""

    healthy: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "reason": self.reason}


def recorder_problem(component: Component) -> str | None:
    """Why ``component`` is failing, behind or dropping bars, or None if it keeps up."""
    reason = component.problem()
    if reason is not None:
        return reason
    lost = component.unrecorded()
    if lost:
        return f"dropping bars: {lost} not recorded this run"
    if isinstance(component, CsvRecorder) and component.pending:
        return f"failing: {component.pending} bars held in memory (the file refuses writes)"
    return None


def recorders_health(components: Sequence[Component]) -> dict[str, RecorderHealth]:
    """Every recorder among ``components`` by name, with its verdict."""
    verdicts: dict[str, RecorderHealth] = {}
    for component in components:
        if component.is_recorder:
            reason = recorder_problem(component)
            verdicts[component.name] = RecorderHealth(reason is None, reason or "recording")
    return verdicts
