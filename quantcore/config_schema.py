"""The config's shapes: the YAML document as msgspec schemas (an unknown key is an error,
not an ignored typo) and the AppConfig :mod:`quantcore.config` builds from it."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from quantcore.config_components import ConsumerSpec
from quantcore.feeds.binance.feed import BinanceFeedSettings
from quantcore.feeds.binance.stream_socket import Transport
from quantcore.feeds.binance.venues import DEFAULT_ARCHIVE_URL, SPOT_NAME
from quantcore.replay.settings import ReplaySettings

Seconds = Annotated[float, Meta(ge=0.01)]
NonNegative = Annotated[float, Meta(ge=0)]
Count = Annotated[int, Meta(ge=1)]
Index = Annotated[int, Meta(ge=0)]
Text = Annotated[str, Meta(min_length=1)]


class Section(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A YAML mapping: unknown keys are errors, not silently ignored typos."""


LOCAL_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT",
                 "BTCUSD_PERP", "ETHUSD_PERP")  # fmt: skip
"""What the embedded local exchange lists and generates unless ``symbols`` says otherwise."""


class LocalExchangeConfig(Section, frozen=True):
    """Start the embedded local exchange and point the feed at it (offline runs). It lists
    the symbols it replays (``data``) and generates (``symbols``); like the standalone
    ``simulate``, it refuses any other, so a typo is an error, not a random walk."""

    speed: Annotated[float, Meta(gt=0)] | Literal["max"] = 60.0
    seed: Index = 7
    data: str | tuple[str, ...] | None = ()
    """``[SYMBOL=]FILE`` replay specs; one string is a list of one, none an empty list."""
    port: Index = 0
    history_bars: Index = 0
    updates_per_bar: Index | None = None
    symbols: tuple[Annotated[str, Meta(pattern=r"^[A-Za-z0-9_]{2,30}$")], ...] = LOCAL_SYMBOLS

    def __post_init__(self) -> None:
        if not isinstance(self.data, tuple):
            msgspec.structs.force_setattr(self, "data", (self.data,) if self.data else ())
        msgspec.structs.force_setattr(self, "symbols", tuple(s.upper() for s in self.symbols))

    @property
    def rate(self) -> float | None:
        """Market time per wall time; None for ``max`` (as fast as the client reads)."""
        return self.speed if isinstance(self.speed, float) else None


class RedisSourceConfig(Section, frozen=True):
    """Read bars another quantcore process publishes to Redis Streams (fan-out)."""

    url: Annotated[str, Meta(pattern=r"^(redis|rediss|unix)://")] = "redis://127.0.0.1:6379/0"
    group: Text = "quantcore"
    consumer: Text = "main"
    prefix: Text = "quantcore:bars"
    partials: bool = False


class RuntimeConfig(Section, frozen=True):
    """``runtime:``: per-subscriber queue bounds of the bus and the per-component stop timeout."""

    queue_size: Count = 1_000
    max_backlog: Count = 1_000_000
    stop_timeout: Seconds = 5.0
    loop: Literal["asyncio", "uvloop"] = "asyncio"
    """The event loop ``quantcore run`` uses; uvloop must be installed (extra ``fast``)."""


class MetricsConfig(Section, frozen=True):
    """``metrics:``: serve /metrics (Prometheus) and /health; loopback unless told otherwise."""

    port: Annotated[int, Meta(ge=0, le=65535)]
    host: Text = "127.0.0.1"


class LogFile(Section, frozen=True):
    """``logging.file``: also log to this file, rotated at ``max_bytes``, keeping ``backups``."""

    path: str
    max_bytes: int = 10_000_000
    backups: int = 5


class ReconnectSection(Section, frozen=True):
    initial: Seconds | UnsetType = field(default=UNSET, name="initial_delay")
    maximum: Seconds | UnsetType = field(default=UNSET, name="max_delay")
    max_attempts: Count | None = None


class LimitsSection(Section, frozen=True):
    attempts: Count | UnsetType = field(default=UNSET, name="connect_attempts")
    window: Seconds | UnsetType = field(default=UNSET, name="connect_window")
    spacing: NonNegative | UnsetType = field(default=UNSET, name="connect_spacing")
    weight_per_minute: Annotated[int, Meta(ge=10)] | UnsetType = field(
        default=UNSET, name="rest_weight"
    )


class FeedSection(Section, frozen=True):
    """``feed:``; anything not given keeps :class:`BinanceFeedSettings`' default."""

    stall_timeout: Seconds | UnsetType = UNSET
    max_queue_size: Count | UnsetType = UNSET
    backfill_limit: Index | UnsetType = UNSET
    warmup_bars: Index | UnsetType = UNSET
    streams_per_connection: Count | UnsetType = UNSET
    settle: NonNegative | UnsetType = UNSET
    poll: Seconds | UnsetType = UNSET
    probe_streams: Count | UnsetType = UNSET
    max_connection_age: Seconds | UnsetType = UNSET
    healthy_after: NonNegative | UnsetType = UNSET
    max_url_chars: Annotated[int, Meta(ge=200)] | UnsetType = UNSET
    transport: Transport | UnsetType = UNSET
    reconnect: ReconnectSection = ReconnectSection()
    limits: LimitsSection = LimitsSection()


class ExchangeSection(Section, frozen=True):
    venue: Text = SPOT_NAME
    preset: Text | None = None
    ws_url: str | None = None
    rest_url: str | None = None
    local: LocalExchangeConfig | bool | None = None
    redis: RedisSourceConfig | None = None
    archive_url: str | None = None
    replay: ReplaySettings | None = None


class StreamEntry(Section, frozen=True):
    symbol: str
    interval: str = "1m"
    venue: Text | None = None
    """Another registered venue than ``exchange.venue`` for this stream."""


class ConsumerEntry(Section, frozen=True):
    target: str = field(name="class")
    params: dict[str, Any] | None = None


class LoggingSection(Section, frozen=True):
    level: str = "INFO"
    file: Text | None = None
    max_bytes: Annotated[int, Meta(ge=1024)] = 10_000_000
    backups: Count = 5


class Document(Section, frozen=True):
    exchange: ExchangeSection = ExchangeSection()
    streams: list[StreamEntry] | None = None
    feed: FeedSection = FeedSection()
    consumers: list[str | ConsumerEntry] | None = None
    logging: LoggingSection = LoggingSection()
    runtime: RuntimeConfig = RuntimeConfig()
    metrics: MetricsConfig | None = None


@dataclass(frozen=True, slots=True)
class AppConfig:
    source: str
    streams: tuple[tuple[str, str], ...]
    feed: BinanceFeedSettings
    consumers: tuple[ConsumerSpec, ...]
    local: LocalExchangeConfig | None = None
    log_level: str = "INFO"
    redis: RedisSourceConfig | None = None
    runtime: RuntimeConfig = dataclass_field(default_factory=RuntimeConfig)
    log_file: LogFile | None = None
    metrics: MetricsConfig | None = None
    venue: str = SPOT_NAME
    """The registry name of the venue the streams come from (``exchange.venue``)."""
    parts: tuple[AppConfig, ...] = ()
    """With streams of more than one venue: one config per venue (its streams, URLs,
    local exchange and consumers, CSV paths and sink keys holding the venue), run side
    by side; this one then holds every stream and no consumers of its own."""
    stream_fields: tuple[str, ...] = ()
    """Per stream, where the config lists it (``streams[2]``), for error messages."""
    archive_url: str = DEFAULT_ARCHIVE_URL
    """Base URL of Binance's public kline archive (``quantcore history``)."""
    replay: ReplaySettings | None = None
    """``exchange.replay``: the recorded store the ``replay`` venue reads (quantcore.replay)."""

    def stream_field(self, key: tuple[str, str]) -> str:
        """``streams[2]`` for a configured (symbol, interval), counting every venue's."""
        fields = dict(zip(self.streams, self.stream_fields, strict=False))
        return fields.get(key, "streams")
