"""YAML config → frozen, validated settings, checked completely before anything connects.

The file's shape, types and bounds are declared as msgspec schemas and checked by
msgspec; what remains here is what a schema cannot say (symbol spelling, intervals,
URL forms, importing consumer classes). Every problem is one line naming the file, the
field path and the bad value (``config/x.yaml: streams[0].interval: '7m' is not ...``),
because a trading process that half-starts on a typo is worse than one that refuses.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import UNSET, Meta, Struct, UnsetType, field

from quantcore.backoff import Backoff
from quantcore.component import Component
from quantcore.config_errors import schema_error
from quantcore.envvars import EnvVarError, substitute
from quantcore.feeds.base import ReconnectPolicy
from quantcore.feeds.binance.feed import BinanceFeedSettings
from quantcore.feeds.binance.limits import ConnectLimits, RestLimits
from quantcore.feeds.binance.transport import Transport
from quantcore.feeds.binance.venues import SPOT, SPOT_NAME, Venue
from quantcore.intervals import interval_ms
from quantcore.replay.settings import ReplaySettings
from quantcore.templates import TemplateError, check_template, csv_file_clash

BUILTIN_CONSUMERS = {
    "history": "quantcore.consumers.history:HistoryStore",
    "csv": "quantcore.consumers.csv_recorder:CsvRecorder",
    "console": "quantcore.consumers.console:ConsoleLogger",
    "aggregator": "quantcore.consumers.aggregator:BarAggregator",
    "sqlite": "quantcore.sinks.sqlite:SqliteRecorder",
    "parquet": "quantcore.sinks.parquet:ParquetRecorder",
    "postgres": "quantcore.sinks.postgres:PostgresRecorder",
    "redis": "quantcore.sinks.redis_streams:RedisStreamPublisher",
    "signals": "quantcore.consumers.signals:SignalRecorder",
}
"""Short names usable as ``class:`` in the YAML for the built-in consumers."""

_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_URL = re.compile(r"^(wss?|https?)://[^\s/]+(/\S*)?$")

Seconds = Annotated[float, Meta(ge=0.01)]
NonNegative = Annotated[float, Meta(ge=0)]
Count = Annotated[int, Meta(ge=1)]
Index = Annotated[int, Meta(ge=0)]
Text = Annotated[str, Meta(min_length=1)]


class ConfigError(ValueError):
    """A config problem; ``str()`` is the single line shown to the user."""


class _Section(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A YAML mapping: unknown keys are errors, not silently ignored typos."""


LOCAL_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT",
                 "BTCUSD_PERP", "ETHUSD_PERP")  # fmt: skip
"""What the embedded local exchange lists and generates unless ``symbols`` says otherwise."""


class LocalExchangeConfig(_Section, frozen=True):
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


class RedisSourceConfig(_Section, frozen=True):
    """Read bars another quantcore process publishes to Redis Streams (fan-out)."""

    url: Annotated[str, Meta(pattern=r"^(redis|rediss|unix)://")] = "redis://127.0.0.1:6379/0"
    group: Text = "quantcore"
    consumer: Text = "main"
    prefix: Text = "quantcore:bars"
    partials: bool = False


class RuntimeConfig(_Section, frozen=True):
    """``runtime:``: per-subscriber queue bounds of the bus and the per-component stop timeout."""

    queue_size: Count = 1_000
    max_backlog: Count = 1_000_000
    stop_timeout: Seconds = 5.0
    loop: Literal["asyncio", "uvloop"] = "asyncio"
    """The event loop ``quantcore run`` uses; uvloop must be installed (extra ``fast``)."""


class MetricsConfig(_Section, frozen=True):
    """``metrics:``: serve /metrics (Prometheus) and /health; loopback unless told otherwise."""

    port: Annotated[int, Meta(ge=0, le=65535)]
    host: Text = "127.0.0.1"


class LogFile(_Section, frozen=True):
    """``logging.file``: also log to this file, rotated at ``max_bytes``, keeping ``backups``."""

    path: str
    max_bytes: int = 10_000_000
    backups: int = 5


class _Reconnect(_Section, frozen=True):
    initial: Seconds | UnsetType = field(default=UNSET, name="initial_delay")
    maximum: Seconds | UnsetType = field(default=UNSET, name="max_delay")
    max_attempts: Count | None = None


class _Limits(_Section, frozen=True):
    attempts: Count | UnsetType = field(default=UNSET, name="connect_attempts")
    window: Seconds | UnsetType = field(default=UNSET, name="connect_window")
    spacing: NonNegative | UnsetType = field(default=UNSET, name="connect_spacing")
    weight_per_minute: Annotated[int, Meta(ge=10)] | UnsetType = field(
        default=UNSET, name="rest_weight"
    )


class _Feed(_Section, frozen=True):
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
    reconnect: _Reconnect = _Reconnect()
    limits: _Limits = _Limits()


class _Exchange(_Section, frozen=True):
    venue: Text = SPOT_NAME
    preset: Text | None = None
    ws_url: str | None = None
    rest_url: str | None = None
    local: LocalExchangeConfig | bool | None = None
    redis: RedisSourceConfig | None = None
    archive_url: str | None = None
    replay: ReplaySettings | None = None


class _Stream(_Section, frozen=True):
    symbol: str
    interval: str = "1m"
    venue: Text | None = None
    """Another registered venue than ``exchange.venue`` for this stream."""


class _Consumer(_Section, frozen=True):
    target: str = field(name="class")
    params: dict[str, Any] | None = None


class _Logging(_Section, frozen=True):
    level: str = "INFO"
    file: Text | None = None
    max_bytes: Annotated[int, Meta(ge=1024)] = 10_000_000
    backups: Count = 5


class _Document(_Section, frozen=True):
    exchange: _Exchange = _Exchange()
    streams: list[_Stream] | None = None
    feed: _Feed = _Feed()
    consumers: list[str | _Consumer] | None = None
    logging: _Logging = _Logging()
    runtime: RuntimeConfig = RuntimeConfig()
    metrics: MetricsConfig | None = None


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """One ``consumers:`` entry: an importable Component class and its parameters."""

    cls: type[Component]
    params: Mapping[str, Any]
    where: str

    def build(self) -> Component:
        """Instantiate; a bad parameter is a ConfigError naming the field (and the value
        for unknown names; the component's own errors name the values they refuse)."""
        accepted = inspect.signature(self.cls).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            for key, value in self.params.items():
                if key not in accepted:
                    raise ConfigError(
                        f"{self.where}.params.{key}: {value!r}: {self.cls.__name__} has no "
                        f"parameter {key!r} (it takes {', '.join(accepted) or 'none'})"
                    )
        try:
            return self.cls(**self.params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.where}.params: {exc}") from None
        except Exception as exc:  # a user's component: any failure is a refused start
            raise ConfigError(
                f"{self.where}: {self.cls.__name__}(...) failed: {type(exc).__name__}: {exc}"
            ) from None


DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
"""Binance's public kline archive (``exchange.archive_url``)."""


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


def load_config(path: str | Path) -> AppConfig:
    """Read and validate ``path``; raises ConfigError with a one-line message."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save the config as UTF-8"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    try:
        return parse_config(substitute(raw), source)
    except (ConfigError, EnvVarError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(
    raw: Any, source: str = "<config>", stream_indices: tuple[int, ...] = ()
) -> AppConfig:
    """Validate an already-loaded mapping (the YAML document); ``stream_indices``: where
    each listed stream stands in the whole document (a venue's part lists only its own)."""
    try:
        doc = msgspec.convert(raw, _Document)
    except msgspec.ValidationError as exc:
        raise ConfigError(schema_error(str(exc), raw, _Document)) from None
    exchange = doc.exchange
    local = LocalExchangeConfig() if exchange.local is True else exchange.local or None
    if local is not None and exchange.redis is not None:
        raise ConfigError("exchange: 'local' and 'redis' are alternatives; choose one")
    venue_name, venue = _venue(exchange)
    by_venue = _by_venue(doc.streams, venue_name)
    if len(by_venue) > 1:
        return _split(raw, doc, by_venue, source)
    if by_venue:
        venue_name = next(iter(by_venue))
        venue = _venue(msgspec.structs.replace(exchange, venue=venue_name))[1]
    indices = stream_indices or tuple(range(len(doc.streams or ())))
    streams = _streams(doc.streams, venue, indices)
    if local is not None and not local.data:  # a replay file's symbol is known at start
        for (symbol, _), i in zip(streams, indices, strict=True):
            if symbol not in local.symbols:
                raise ConfigError(
                    f"streams[{i}].symbol (venue {venue_name}): unknown symbol {symbol}: not in "
                    f"exchange.local.symbols ({', '.join(local.symbols)}), what the embedded "
                    "local exchange generates"
                )
    logs = doc.logging
    level = logs.level.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"logging.level: {level!r} is not DEBUG, INFO, WARNING or ERROR")
    log_file = None if logs.file is None else LogFile(logs.file, logs.max_bytes, logs.backups)
    ws_url, rest_url = _urls(exchange, venue)
    feed = _feed(doc.feed, venue, ws_url, rest_url)
    consumers = _consumers(_venue_paths(doc.consumers, venue, alone=True))
    fields = tuple(f"streams[{i}]" for i in indices)
    config = AppConfig(
        source, streams, feed, consumers, local, level, exchange.redis, doc.runtime, log_file,
        doc.metrics, venue_name, stream_fields=fields,
        archive_url=_archive_url(exchange.archive_url), replay=exchange.replay,
    )  # fmt: skip
    if not stream_indices:
        _check_files([config])
    return config


def _check_files(parts: list[AppConfig]) -> None:
    problem = csv_file_clash(parts)
    if problem is not None:
        raise ConfigError(problem)


def _by_venue(raw: list[_Stream] | None, default: str) -> dict[str, list[tuple[int, _Stream]]]:
    """The streams of each venue, each with its index in the whole ``streams:`` list."""
    groups: dict[str, list[tuple[int, _Stream]]] = {}
    for i, entry in enumerate(raw or ()):
        groups.setdefault(entry.venue or default, []).append((i, entry))
    return groups


def _split(
    raw: Any, doc: _Document, by_venue: dict[str, list[tuple[int, _Stream]]], source: str
) -> AppConfig:
    """One config per venue; URLs given in ``exchange`` belong to ``exchange.venue``;
    ``metrics`` stays with the whole (one endpoint for every venue), never a part's."""
    if doc.exchange.redis is not None:
        raise ConfigError("streams: a per-stream venue cannot be combined with exchange.redis")
    parts = []
    for n, (name, entries) in enumerate(by_venue.items()):
        exchange = dict(raw.get("exchange") or {})
        if name != exchange.get("venue", SPOT_NAME):
            exchange.pop("ws_url", None)
            exchange.pop("rest_url", None)
        exchange["venue"] = name
        local = exchange.get("local")
        if isinstance(local, dict) and local.get("port"):
            exchange["local"] = {**local, "port": int(local["port"]) + n}
        listed = [{"symbol": e.symbol, "interval": e.interval} for _, e in entries]
        indices = tuple(i for i, _ in entries)
        sub = parse_config({**raw, "exchange": exchange, "streams": listed}, source, indices)
        _, venue = _venue(msgspec.structs.replace(doc.exchange, venue=name))
        consumers = _consumers(_venue_paths(doc.consumers, venue, alone=False))
        parts.append(dataclasses.replace(sub, consumers=consumers, metrics=None))
    _check_files(parts)
    first = parts[0]
    streams = tuple(key for part in parts for key in part.streams)
    fields = tuple(field for part in parts for field in part.stream_fields)
    return dataclasses.replace(
        first, streams=streams, consumers=(), metrics=doc.metrics, parts=tuple(parts),
        stream_fields=fields,
    )  # fmt: skip


def _venue_paths(
    raw: list[str | _Consumer] | None, venue: Venue, alone: bool
) -> list[str | _Consumer]:
    """The venue in CSV paths and sink keys: ``{venue}`` in a CSV path is filled in; a
    futures venue's default CSV path is ``data/{venue}/{symbol}_{interval}.csv``; with
    more than one venue, a non-spot venue's CSV files and SQLite file go to a ``{venue}``
    folder beside the configured ones, its PostgreSQL table gets ``_{venue}`` (``-`` as
    ``_``) and its Redis keys ``:{venue}`` after the prefix, so the same symbol on two
    venues stays two series. Spot's paths and keys never change, so existing recordings
    resume."""
    entries = raw if raw is not None else ["history", "csv", "console"]
    spot = venue.name == SPOT_NAME
    out: list[str | _Consumer] = []
    for i, entry in enumerate(entries):
        spec = entry if isinstance(entry, _Consumer) else _Consumer(target=entry)
        params = dict(spec.params or {})
        target = BUILTIN_CONSUMERS.get(spec.target, spec.target)
        if target == BUILTIN_CONSUMERS["csv"]:
            path = params.get("path")
            if isinstance(path, str):
                try:
                    check_template(path, f"consumers[{i}].params.path")
                except TemplateError as exc:
                    raise ConfigError(str(exc)) from None
            if isinstance(path, str) and "{venue}" in path:
                params["path"] = path.replace("{venue}", venue.name)
            elif not spot and path is None:
                params["path"] = f"data/{venue.name}/{{symbol}}_{{interval}}.csv"
            elif not spot and isinstance(path, str) and not alone:
                params["path"] = _in_folder(path, venue.name)
        elif target == BUILTIN_CONSUMERS["parquet"]:
            params.setdefault("venue", venue.name)  # one root holds every venue's partitions
        elif spot or alone:
            pass
        elif target == BUILTIN_CONSUMERS["sqlite"]:
            params["path"] = _in_folder(str(params.get("path", "data/bars.sqlite")), venue.name)
        elif target == BUILTIN_CONSUMERS["postgres"]:
            params["table"] = f"{params.get('table', 'bars')}_{venue.name.replace('-', '_')}"
        elif target == BUILTIN_CONSUMERS["redis"]:
            params["prefix"] = f"{params.get('prefix', 'quantcore:bars')}:{venue.name}"
        out.append(_Consumer(target=spec.target, params=params or None))
    return out


def _in_folder(path: str, folder: str) -> str:
    """``data/x.csv`` → ``data/{folder}/x.csv``: the same file name, one folder deeper."""
    parent, _, name = path.rpartition("/")
    return f"{parent}/{folder}/{name}" if parent else f"{folder}/{name}"


def _venue(exchange: _Exchange) -> tuple[str, Venue]:
    """The registered venue named by ``exchange.venue`` (``redis`` when that section is
    given) and its Binance-shaped API data (spot's for venues without any)."""
    from quantcore.feeds import registry

    name = "redis" if exchange.redis is not None else exchange.venue
    name = "replay" if exchange.replay is not None else name
    try:
        entry = registry.entry(name)
    except KeyError as exc:
        raise ConfigError(f"exchange.venue: {exc.args[0]}") from None
    return name, entry.venue or SPOT


def _archive_url(given: str | None) -> str:
    if given is None:
        return DEFAULT_ARCHIVE_URL
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", given):
        raise ConfigError(f"exchange.archive_url: {given!r} is not an http(s) URL")
    return given.rstrip("/")


def _urls(exchange: _Exchange, venue: Venue) -> tuple[str, str]:
    """The venue's URLs, a preset's (``testnet``), or the ones given."""
    ws_url, rest_url = venue.ws_url, venue.rest_url
    if exchange.preset is not None:
        if exchange.preset not in venue.presets:
            known = ", ".join(venue.presets) or "none"
            raise ConfigError(
                f"exchange.preset: {exchange.preset!r} is not a preset of {venue.name} "
                f"(known: {known})"
            )
        ws_url, rest_url = venue.presets[exchange.preset]
    ws_url = _url(exchange.ws_url or ws_url, "exchange.ws_url", "ws")
    return ws_url, _url(exchange.rest_url or rest_url, "exchange.rest_url", root=venue.root)


def _given(section: Struct) -> dict[str, Any]:
    """The fields of a schema section that the YAML gave (not UNSET)."""
    fields = ((name, getattr(section, name)) for name in section.__struct_fields__)
    return {name: value for name, value in fields if value is not UNSET}


def _feed(raw: _Feed, venue: Venue, ws_url: str, rest_url: str) -> BinanceFeedSettings:
    given = _given(raw)
    reconnect, limits = given.pop("reconnect"), _given(given.pop("limits"))
    rest = {key: limits.pop(key) for key in ("weight_per_minute",) if key in limits}
    backoff = _given(reconnect)
    attempts = backoff.pop("max_attempts")
    return BinanceFeedSettings(
        ws_url=ws_url,
        rest_url=rest_url,
        venue=venue,
        reconnect=ReconnectPolicy(Backoff(**backoff), attempts),
        connect_limits=ConnectLimits(**limits),
        rest_limits=RestLimits(**rest) if rest else None,
        **given,
    )


def normalize_symbol(value: str, where: str, venue: Venue = SPOT) -> str:
    """``BTC-USDT``, ``btc/usdt`` and ``BTCUSDT`` all mean Binance's ``BTCUSDT``; a venue
    whose symbols hold ``_`` (``BTCUSD_PERP``) keeps it."""
    if venue.name == SPOT_NAME:
        symbol = re.sub(r"[-/_ ]", "", value).upper()
        if not _SYMBOL.match(symbol):
            raise ConfigError(f"{where}: {value!r} is not a Binance symbol (letters and digits)")
        return symbol
    keep = "_" in venue.symbol_pattern
    symbol = re.sub(r"[-/ ]" if keep else r"[-/_ ]", "", value).upper()
    if not venue.check_symbol(symbol):
        raise ConfigError(
            f"{where}: {value!r} is not a {venue.name} symbol (pattern {venue.symbol_pattern})"
        )
    return symbol


def _streams(
    raw: list[_Stream] | None, venue: Venue = SPOT, indices: tuple[int, ...] = ()
) -> tuple[tuple[str, str], ...]:
    if raw is None:
        raise ConfigError("streams: missing; list at least one {symbol: BTCUSDT, interval: 1m}")
    if not raw:
        raise ConfigError("streams: expected a non-empty list of {symbol, interval}")
    out: list[tuple[str, str]] = []
    for i, entry in zip(indices or range(len(raw)), raw, strict=True):
        where = f"streams[{i}]"
        symbol = normalize_symbol(entry.symbol, f"{where}.symbol", venue)
        try:
            interval_ms(entry.interval)
        except ValueError as exc:
            raise ConfigError(f"{where}.interval: {exc}") from None
        key = (symbol, entry.interval)
        if key in out:
            raise ConfigError(f"{where}: {symbol} {entry.interval} is listed twice")
        out.append(key)
    return tuple(out)


def _consumers(raw: list[str | _Consumer] | None) -> tuple[ConsumerSpec, ...]:
    entries = raw if raw is not None else ["history", "csv", "console"]
    specs: list[ConsumerSpec] = []
    for i, entry in enumerate(entries):
        where = f"consumers[{i}]"
        spec = entry if isinstance(entry, _Consumer) else _Consumer(target=entry)
        cls = import_component(spec.target, f"{where}.class")
        specs.append(ConsumerSpec(cls, dict(spec.params or {}), where))
    return tuple(specs)


def import_component(target: str, where: str) -> type[Component]:
    """Resolve ``module.path:ClassName`` (or a built-in short name) to a Component class."""
    dotted = BUILTIN_CONSUMERS.get(target, target)
    module_name, _, class_name = dotted.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"{where}: {target!r} is not 'module.path:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # a SyntaxError, or whatever the module raises on import
        raise ConfigError(
            f"{where}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise ConfigError(f"{where}: {dotted!r} is not a quantcore Component subclass")
    return cls


def _url(raw: str, where: str, scheme: str = "http", root: str = "api") -> str:
    """Check a base URL; the forms Binance documents are normalized to what the feed
    appends to: ``wss://host/ws`` or ``/stream`` → ``wss://host/``, ``.../api/v3`` → ``.../api``."""
    if not _URL.match(raw) or not raw.startswith(scheme):
        raise ConfigError(f"{where}: {raw!r} is not a {scheme}:// or {scheme}s:// URL")
    if "?" in raw or "#" in raw:
        raise ConfigError(f"{where}: {raw!r}: give the base URL, without a query")
    if scheme == "ws":
        base = re.sub(r"/(ws|stream)/?$", "", raw.rstrip("/"))
        if re.search(r"/(ws|stream)/", base + "/") or "@" in base:
            raise ConfigError(f"{where}: {raw!r}: give the base URL, not a stream path")
        return base + "/"
    base = re.sub(r"/v[0-9]+/?$", "", raw.rstrip("/"))
    if not base.endswith(f"/{root}"):
        raise ConfigError(f"{where}: {raw!r}: expected the REST base ending in /{root}")
    return base
