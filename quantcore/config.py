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
import msgspec.inspect
import yaml
from msgspec import UNSET, Meta, Struct, UnsetType, field

from quantcore.backoff import Backoff
from quantcore.component import Component
from quantcore.feeds.base import ReconnectPolicy
from quantcore.feeds.binance.feed import BinanceFeedSettings
from quantcore.feeds.binance.limits import ConnectLimits, RestLimits
from quantcore.feeds.binance.transport import Transport
from quantcore.feeds.binance.venues import SPOT, SPOT_NAME, Venue
from quantcore.intervals import interval_ms
from quantcore.replay.settings import ReplaySettings

BUILTIN_CONSUMERS = {
    "history": "quantcore.consumers.history:HistoryStore",
    "csv": "quantcore.consumers.csv_recorder:CsvRecorder",
    "console": "quantcore.consumers.console:ConsoleLogger",
    "aggregator": "quantcore.consumers.aggregator:BarAggregator",
    "sqlite": "quantcore.sinks.sqlite:SqliteRecorder",
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


class LocalExchangeConfig(_Section, frozen=True):
    """Start the embedded local exchange and point the feed at it (offline runs)."""

    speed: Annotated[float, Meta(gt=0)] | Literal["max"] = 60.0
    seed: Index = 7
    data: str | tuple[str, ...] | None = ()
    """``[SYMBOL=]FILE`` replay specs; one string is a list of one, none an empty list."""
    port: Index = 0
    history_bars: Index = 0
    updates_per_bar: Index | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, tuple):
            msgspec.structs.force_setattr(self, "data", (self.data,) if self.data else ())

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
    replay: ReplaySettings | None = None
    """``exchange.replay``: the recorded store the ``replay`` venue reads (quantcore.replay)."""


def load_config(path: str | Path) -> AppConfig:
    """Read and validate ``path``; raises ConfigError with a one-line message."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    try:
        return parse_config(raw, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(raw: Any, source: str = "<config>") -> AppConfig:
    """Validate an already-loaded mapping (the YAML document)."""
    try:
        doc = msgspec.convert(raw, _Document)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc), raw) from None
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
    streams = _streams(doc.streams, venue)
    logs = doc.logging
    level = logs.level.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"logging.level: {level!r} is not DEBUG, INFO, WARNING or ERROR")
    log_file = None if logs.file is None else LogFile(logs.file, logs.max_bytes, logs.backups)
    ws_url, rest_url = _urls(exchange, venue)
    feed = _feed(doc.feed, venue, ws_url, rest_url)
    consumers = _consumers(_venue_paths(doc.consumers, venue, alone=True))
    return AppConfig(
        source, streams, feed, consumers, local, level, exchange.redis, doc.runtime, log_file,
        doc.metrics, venue_name, replay=exchange.replay,
    )  # fmt: skip


def _by_venue(raw: list[_Stream] | None, default: str) -> dict[str, list[_Stream]]:
    groups: dict[str, list[_Stream]] = {}
    for entry in raw or ():
        groups.setdefault(entry.venue or default, []).append(entry)
    return groups


def _split(raw: Any, doc: _Document, by_venue: dict[str, list[_Stream]], source: str) -> AppConfig:
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
        listed = [{"symbol": e.symbol, "interval": e.interval} for e in entries]
        sub = parse_config({**raw, "exchange": exchange, "streams": listed}, source)
        _, venue = _venue(msgspec.structs.replace(doc.exchange, venue=name))
        consumers = _consumers(_venue_paths(doc.consumers, venue, alone=False))
        parts.append(dataclasses.replace(sub, consumers=consumers, metrics=None))
    first = parts[0]
    streams = tuple(key for part in parts for key in part.streams)
    return dataclasses.replace(
        first, streams=streams, consumers=(), metrics=doc.metrics, parts=tuple(parts)
    )


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
    for entry in entries:
        spec = entry if isinstance(entry, _Consumer) else _Consumer(target=entry)
        params = dict(spec.params or {})
        target = BUILTIN_CONSUMERS.get(spec.target, spec.target)
        if target == BUILTIN_CONSUMERS["csv"]:
            path = params.get("path")
            if isinstance(path, str) and "{venue}" in path:
                params["path"] = path.replace("{venue}", venue.name)
            elif not spot and path is None:
                params["path"] = f"data/{venue.name}/{{symbol}}_{{interval}}.csv"
            elif not spot and isinstance(path, str) and not alone:
                params["path"] = _in_folder(path, venue.name)
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


def _streams(raw: list[_Stream] | None, venue: Venue = SPOT) -> tuple[tuple[str, str], ...]:
    if raw is None:
        raise ConfigError("streams: missing; list at least one {symbol: BTCUSDT, interval: 1m}")
    if not raw:
        raise ConfigError("streams: expected a non-empty list of {symbol, interval}")
    out: list[tuple[str, str]] = []
    for i, entry in enumerate(raw):
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


_KINDS = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
          "object": "a mapping", "array": "a list", "null": "empty"}  # fmt: skip
_PATH = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _schema_error(message: str, raw: Any) -> ConfigError:
    """msgspec's ``Expected `int` >= 1, got ... - at `$.feed.x``` → ``feed.x: 0 is not an
    integer >= 1``: the field path, the value as written, what was expected."""
    problem, _, at = message.partition(" - at `$")
    path = at.rstrip("`")
    where = path.lstrip(".") or "config"
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", problem)
    if unknown:
        allowed = ", ".join(sorted(_keys(path)))
        return ConfigError(f"{where}.{unknown[1]}: unknown setting (allowed: {allowed})")
    missing = re.fullmatch(r"Object missing required field `(.*)`", problem)
    if missing:
        return ConfigError(f"{where}.{missing[1]}: missing")
    value: Any = raw
    for key, index in _PATH.findall(path):
        value = value[int(index)] if index else value.get(key)
    expected = problem.removeprefix("Expected ").partition(", got")[0]
    if expected == problem:
        return ConfigError(f"{where}: {value!r}: {problem}")
    words = re.sub(
        r"`([a-z]+)`", lambda m: _KINDS.get(m[1], m[1]), expected.replace(" | ", "` or `")
    )
    return ConfigError(f"{where}: {value!r} is not {words}")


def _keys(path: str) -> list[str]:
    """The settings the schema allows in the mapping at ``path`` (for the error message)."""
    options = _structs(msgspec.inspect.type_info(_Document))
    for key, _ in _PATH.findall(path):
        if key:
            fields = (f for option in options for f in option.fields if f.encode_name == key)
            options = [struct for f in fields for struct in _structs(f.type)]
    return [f.encode_name for option in options for f in option.fields]


def _structs(info: msgspec.inspect.Type) -> list[msgspec.inspect.StructType]:
    """The mapping schemas a type admits, through unions and lists."""
    if isinstance(info, msgspec.inspect.UnionType):
        return [struct for option in info.types for struct in _structs(option)]
    if isinstance(info, msgspec.inspect.ListType):
        return _structs(info.item_type)
    return [info] if isinstance(info, msgspec.inspect.StructType) else []
