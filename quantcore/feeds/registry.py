"""Venue registry: ``exchange.venue`` in the config → the feed that serves it.

The app builds its feed only through here. Binance's venues and the Redis Streams feed
are entries like any other; a new venue (say OKX) is one subpackage under
``quantcore/feeds/`` and one :func:`register` call, from inside the package (the
``_builtin`` list below) or from outside it (a plugin module imported before the config
is loaded)::

    from quantcore.feeds.registry import register
    register("okx-spot", lambda bus, streams, settings, config: OkxFeed(bus, streams))

A venue that speaks Binance's kline API with other URLs and limits needs no feed code at
all: ``register(venue.name, binance_factory(venue), venue)`` with a
:class:`~quantcore.feeds.binance.venues.Venue`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import msgspec

from quantcore.feeds.base import DataFeed, StreamKey
from quantcore.feeds.binance.venues import SPOT_NAME, VENUES, Venue

if TYPE_CHECKING:
    from quantcore.bus import EventBus
    from quantcore.feeds.binance.feed import BinanceFeedSettings

FeedFactory = Callable[["EventBus", Sequence[StreamKey], "BinanceFeedSettings", Any], DataFeed]
"""``factory(bus, streams, settings, config)``: the feed for one venue's streams.
``settings`` is the ``feed:`` section (URLs already resolved), ``config`` the AppConfig."""


@dataclass(frozen=True, slots=True)
class VenueEntry:
    name: str
    factory: FeedFactory
    venue: Venue | None = None
    """Binance-shaped kline API data (URLs, limits, symbols), if the venue has one: the
    config takes its default URLs and symbol rule from it, the local exchange plays it."""


_REGISTRY: dict[str, VenueEntry] = {}


def register(name: str, factory: FeedFactory, venue: Venue | None = None) -> None:
    """Add (or replace) the venue ``name``."""
    if venue is not None and venue.name != name:
        venue = replace(venue, name=name)
    _REGISTRY[name] = VenueEntry(name, factory, venue)


def entry(name: str) -> VenueEntry:
    """The registered venue; KeyError names the known ones."""
    found = _REGISTRY.get(name)
    if found is None:
        raise KeyError(f"{name!r} is not a registered venue (one of {', '.join(_REGISTRY)})")
    return found


def create(
    name: str,
    bus: EventBus,
    streams: Sequence[StreamKey],
    settings: BinanceFeedSettings,
    config: Any = None,
) -> DataFeed:
    """Build the feed of venue ``name``."""
    return entry(name).factory(bus, streams, settings, config)


def binance_factory(venue: Venue) -> FeedFactory:
    """The shared Binance kline feed for ``venue`` (its endpoints, limits and symbols)."""

    def build(
        bus: EventBus, streams: Sequence[StreamKey], settings: BinanceFeedSettings, config: Any
    ) -> DataFeed:
        from quantcore.feeds.binance.feed import BinanceKlineFeed

        if settings.venue != venue:
            settings = replace(settings, venue=venue)
        name = "binance" if venue.name == SPOT_NAME else venue.name
        return BinanceKlineFeed(bus, streams, settings, name=name)

    return build


def _redis(
    bus: EventBus, streams: Sequence[StreamKey], settings: BinanceFeedSettings, config: Any
) -> DataFeed:
    from quantcore.feeds.redis_stream import RedisStreamFeed

    return RedisStreamFeed(bus, streams, **msgspec.structs.asdict(config.redis))


def _replay(
    bus: EventBus, streams: Sequence[StreamKey], settings: BinanceFeedSettings, config: Any
) -> DataFeed:
    from quantcore.replay.feed import ReplayFeed, resolve
    from quantcore.replay.settings import ReplaySettings

    return ReplayFeed(bus, streams, resolve(config.replay or ReplaySettings(), config))


def _builtin() -> None:
    for venue in VENUES.values():
        register(venue.name, binance_factory(venue), venue)
    register("redis", _redis)
    register("replay", _replay)


_builtin()
