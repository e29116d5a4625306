"""YAML config → frozen, validated settings, checked completely before anything connects.

Every problem is reported as one line naming the file, the field path and the bad
value (``config/x.yaml: streams[0].interval: '7m' is not ...``), because a trading
process that half-starts on a typo is worse than one that refuses to start.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quantcore.backoff import Backoff
from quantcore.component import Component
from quantcore.feeds.base import ReconnectPolicy
from quantcore.feeds.binance.feed import BinanceFeedSettings
from quantcore.feeds.binance.limits import ConnectLimits, RestLimits
from quantcore.intervals import interval_ms

BUILTIN_CONSUMERS = {
    "history": "quantcore.consumers.history:HistoryStore",
    "csv": "quantcore.consumers.csv_recorder:CsvRecorder",
    "console": "quantcore.consumers.console:ConsoleLogger",
    "aggregator": "quantcore.consumers.aggregator:BarAggregator",
    "sqlite": "quantcore.sinks.sqlite:SqliteRecorder",
    "postgres": "quantcore.sinks.postgres:PostgresRecorder",
    "redis": "quantcore.sinks.redis_streams:RedisStreamPublisher",
}
"""Short names usable as ``class:`` in the YAML for the built-in consumers."""

_LIMIT_KEYS = {"connect_attempts", "connect_window", "connect_spacing", "rest_weight"}
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_URL = re.compile(r"^(wss?|https?)://[^\s/]+(/\S*)?$")


class ConfigError(ValueError):
    """A config problem; ``str()`` is the single line shown to the user."""


@dataclass(frozen=True, slots=True)
class LocalExchangeConfig:
    """Start the embedded local exchange and point the feed at it (offline runs)."""

    speed: float | None = 60.0
    seed: int = 7
    data: tuple[str, ...] = ()
    port: int = 0
    history_bars: int = 0
    updates_per_bar: int | None = None


@dataclass(frozen=True, slots=True)
class RedisSourceConfig:
    """Read bars another quantcore process publishes to Redis Streams (fan-out)."""

    url: str = "redis://127.0.0.1:6379/0"
    group: str = "quantcore"
    consumer: str = "main"
    prefix: str = "quantcore:bars"
    partials: bool = False


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """One ``consumers:`` entry: an importable Component class and its parameters."""

    cls: type[Component]
    params: Mapping[str, Any]
    where: str

    def build(self) -> Component:
        try:
            return self.cls(**self.params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.where}.params: {exc}") from None


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """``runtime:``: per-subscriber queue bounds of the bus and the per-component stop timeout."""

    queue_size: int = 1_000
    max_backlog: int = 1_000_000
    stop_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class LogFile:
    """``logging.file``: also log to this file, rotated at ``max_bytes``, keeping ``backups``."""

    path: str
    max_bytes: int = 10_000_000
    backups: int = 5


@dataclass(frozen=True, slots=True)
class AppConfig:
    source: str
    streams: tuple[tuple[str, str], ...]
    feed: BinanceFeedSettings
    consumers: tuple[ConsumerSpec, ...]
    local: LocalExchangeConfig | None = None
    log_level: str = "INFO"
    redis: RedisSourceConfig | None = None
    runtime: RuntimeConfig = RuntimeConfig()
    log_file: LogFile | None = None


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
    top = _mapping(raw, "config")
    _only(top, "config", {"exchange", "streams", "feed", "consumers", "logging", "runtime"})
    exchange = _mapping(top.get("exchange", {}), "exchange")
    _only(exchange, "exchange", {"ws_url", "rest_url", "local", "redis"})
    defaults = BinanceFeedSettings()
    ws_url = _url(exchange.get("ws_url", defaults.ws_url), "exchange.ws_url", "ws")
    rest_url = _url(exchange.get("rest_url", defaults.rest_url), "exchange.rest_url")
    local = _local(exchange.get("local"))
    redis = _redis(exchange.get("redis"))
    if local is not None and redis is not None:
        raise ConfigError("exchange: 'local' and 'redis' are alternatives; choose one")
    streams = _streams(top.get("streams"))
    feed = _feed(_mapping(top.get("feed", {}), "feed"), ws_url, rest_url)
    consumers = _consumers(top.get("consumers"))
    logging_cfg = _mapping(top.get("logging", {}), "logging")
    _only(logging_cfg, "logging", {"level", "file", "max_bytes", "backups"})
    level = str(logging_cfg.get("level", "INFO")).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"logging.level: {level!r} is not DEBUG, INFO, WARNING or ERROR")
    path = logging_cfg.get("file")
    if path is not None and (not isinstance(path, str) or not path):
        raise ConfigError(f"logging.file: expected a file path, got {path!r}")
    log_file = None
    if path is not None:
        size = int(_number(logging_cfg, "max_bytes", 10_000_000, "logging", True, 1024))
        log_file = LogFile(path, size, int(_number(logging_cfg, "backups", 5, "logging", True)))
    runtime = _runtime(top.get("runtime", {}))
    return AppConfig(source, streams, feed, consumers, local, level, redis, runtime, log_file)


def _runtime(raw: Any) -> RuntimeConfig:
    section = _mapping(raw, "runtime")
    _only(section, "runtime", {"queue_size", "max_backlog", "stop_timeout"})
    base = RuntimeConfig()
    return RuntimeConfig(
        queue_size=int(_number(section, "queue_size", base.queue_size, "runtime", True)),
        max_backlog=int(_number(section, "max_backlog", base.max_backlog, "runtime", True)),
        stop_timeout=_seconds(section, "stop_timeout", base.stop_timeout, "runtime"),
    )


def normalize_symbol(value: Any, where: str) -> str:
    """``BTC-USDT``, ``btc/usdt`` and ``BTCUSDT`` all mean Binance's ``BTCUSDT``."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a symbol like BTCUSDT, got {value!r}")
    symbol = re.sub(r"[-/_ ]", "", value).upper()
    if not _SYMBOL.match(symbol):
        raise ConfigError(f"{where}: {value!r} is not a Binance symbol (letters and digits)")
    return symbol


def _streams(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        raise ConfigError("streams: missing; list at least one {symbol: BTCUSDT, interval: 1m}")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("streams: expected a non-empty list of {symbol, interval}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        where = f"streams[{i}]"
        entry = _mapping(item, where)
        _only(entry, where, {"symbol", "interval"})
        symbol = normalize_symbol(entry.get("symbol"), f"{where}.symbol")
        interval = entry.get("interval", "1m")
        try:
            interval_ms(str(interval))
        except ValueError as exc:
            raise ConfigError(f"{where}.interval: {exc}") from None
        key = (symbol, str(interval))
        if key in out:
            raise ConfigError(f"{where}: {symbol} {interval} is listed twice")
        out.append(key)
    return tuple(out)


def _feed(raw: Mapping[str, Any], ws_url: str, rest_url: str) -> BinanceFeedSettings:
    allowed = {
        "stall_timeout",
        "max_queue_size",
        "backfill_limit",
        "warmup_bars",
        "streams_per_connection",
        "reconnect",
        "settle",
        "poll",
        "probe_streams",
        "max_connection_age",
        "healthy_after",
        "max_url_chars",
        "limits",
    }
    _only(raw, "feed", allowed)
    reconnect_raw = _mapping(raw.get("reconnect", {}), "feed.reconnect")
    _only(reconnect_raw, "feed.reconnect", {"initial_delay", "max_delay", "max_attempts"})
    defaults = Backoff()
    max_attempts = reconnect_raw.get("max_attempts")
    where = "feed.reconnect"
    reconnect = ReconnectPolicy(
        backoff=Backoff(
            initial=_seconds(reconnect_raw, "initial_delay", defaults.initial, where),
            maximum=_seconds(reconnect_raw, "max_delay", defaults.maximum, where),
        ),
        max_attempts=None
        if max_attempts is None
        else int(_number(reconnect_raw, "max_attempts", 0, where, integer=True)),
    )
    base = BinanceFeedSettings()
    limits_raw = _mapping(raw.get("limits", {}), "feed.limits")
    where = "feed.limits"
    _only(limits_raw, where, _LIMIT_KEYS)
    connect, rest = ConnectLimits(), RestLimits()
    connect_limits = ConnectLimits(
        attempts=int(_number(limits_raw, "connect_attempts", connect.attempts, where, True)),
        window=_seconds(limits_raw, "connect_window", connect.window, where),
        spacing=_number(limits_raw, "connect_spacing", connect.spacing, where, minimum=0),
    )
    rest_limits = RestLimits(
        int(_number(limits_raw, "rest_weight", rest.weight_per_minute, where, True, 10))
    )
    return BinanceFeedSettings(
        ws_url=ws_url,
        rest_url=rest_url,
        stall_timeout=_seconds(raw, "stall_timeout", base.stall_timeout, "feed"),
        max_queue_size=int(_number(raw, "max_queue_size", base.max_queue_size, "feed", True)),
        backfill_limit=int(_number(raw, "backfill_limit", base.backfill_limit, "feed", True, 0)),
        warmup_bars=int(_number(raw, "warmup_bars", base.warmup_bars, "feed", True, 0)),
        streams_per_connection=int(
            _number(raw, "streams_per_connection", base.streams_per_connection, "feed", True)
        ),
        reconnect=reconnect,
        settle=_number(raw, "settle", base.settle, "feed", minimum=0),
        poll=_seconds(raw, "poll", base.poll, "feed"),
        probe_streams=int(_number(raw, "probe_streams", base.probe_streams, "feed", True)),
        max_connection_age=_seconds(raw, "max_connection_age", base.max_connection_age, "feed"),
        healthy_after=_number(raw, "healthy_after", base.healthy_after, "feed", minimum=0),
        max_url_chars=int(_number(raw, "max_url_chars", base.max_url_chars, "feed", True, 200)),
        connect_limits=connect_limits,
        rest_limits=rest_limits,
    )


def _local(raw: Any) -> LocalExchangeConfig | None:
    if raw is None or raw is False:
        return None
    entry = _mapping({} if raw is True else raw, "exchange.local")
    where = "exchange.local"
    _only(entry, where, {"speed", "seed", "data", "port", "history_bars", "updates_per_bar"})
    speed_raw = entry.get("speed", 60)
    speed: float | None
    if speed_raw == "max":
        speed = None
    elif isinstance(speed_raw, int | float) and not isinstance(speed_raw, bool) and speed_raw > 0:
        speed = float(speed_raw)
    else:
        raise ConfigError(f"{where}.speed: {speed_raw!r} is not a positive number or 'max'")
    data_raw = entry.get("data") or ()
    data = (data_raw,) if isinstance(data_raw, str) else data_raw
    if not isinstance(data, list | tuple) or not all(isinstance(d, str) for d in data):
        raise ConfigError(f"{where}.data: expected a file path or a list of them")
    updates = entry.get("updates_per_bar")
    return LocalExchangeConfig(
        speed=speed,
        seed=int(_number(entry, "seed", 7, where, True, 0)),
        data=tuple(data),
        port=int(_number(entry, "port", 0, where, True, 0)),
        history_bars=int(_number(entry, "history_bars", 0, where, True, 0)),
        updates_per_bar=None
        if updates is None
        else int(_number(entry, "updates_per_bar", 0, where, True, 0)),
    )


def _redis(raw: Any) -> RedisSourceConfig | None:
    if raw is None:
        return None
    where = "exchange.redis"
    entry = _mapping(raw, where)
    _only(entry, where, {"url", "group", "consumer", "prefix", "partials"})
    defaults = RedisSourceConfig()
    values: dict[str, Any] = {}
    for key in ("url", "group", "consumer", "prefix"):
        value = entry.get(key, getattr(defaults, key))
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key}: expected a non-empty string, got {value!r}")
        values[key] = value
    if not values["url"].startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where}.url: {values['url']!r} is not a redis:// URL")
    partials = entry.get("partials", False)
    if not isinstance(partials, bool):
        raise ConfigError(f"{where}.partials: expected true or false, got {partials!r}")
    return RedisSourceConfig(partials=partials, **values)


def _consumers(raw: Any) -> tuple[ConsumerSpec, ...]:
    if raw is None:
        raw = [{"class": "history"}, {"class": "csv"}, {"class": "console"}]
    if not isinstance(raw, list):
        raise ConfigError("consumers: expected a list of {class: ..., params: {...}}")
    specs: list[ConsumerSpec] = []
    for i, item in enumerate(raw):
        where = f"consumers[{i}]"
        entry = _mapping({"class": item} if isinstance(item, str) else item, where)
        _only(entry, where, {"class", "params"})
        target = entry.get("class")
        if not isinstance(target, str):
            raise ConfigError(
                f"{where}.class: expected 'module:Class' or one of {sorted(BUILTIN_CONSUMERS)}"
            )
        params = _mapping(entry.get("params") or {}, f"{where}.params")
        specs.append(ConsumerSpec(import_component(target, f"{where}.class"), dict(params), where))
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


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    return raw


def _only(raw: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{where}.{key}: unknown setting (allowed: {', '.join(sorted(allowed))})"
            )


def _url(raw: Any, where: str, scheme: str = "http") -> str:
    """Check a base URL; the forms Binance documents are normalized to what the feed
    appends to: ``wss://host/ws`` or ``/stream`` → ``wss://host/``, ``.../api/v3`` → ``.../api``."""
    if not isinstance(raw, str) or not _URL.match(raw) or not raw.startswith(scheme):
        raise ConfigError(f"{where}: {raw!r} is not a {scheme}:// or {scheme}s:// URL")
    if "?" in raw or "#" in raw:
        raise ConfigError(f"{where}: {raw!r}: give the base URL, without a query")
    if scheme == "ws":
        base = re.sub(r"/(ws|stream)/?$", "", raw.rstrip("/"))
        if re.search(r"/(ws|stream)/", base + "/") or "@" in base:
            raise ConfigError(f"{where}: {raw!r}: give the base URL, not a stream path")
        return base + "/"
    base = re.sub(r"/v[0-9]+/?$", "", raw.rstrip("/"))
    if not base.endswith("/api"):
        raise ConfigError(f"{where}: {raw!r}: expected the REST base ending in /api")
    return base


def _number(
    raw: Mapping[str, Any],
    key: str,
    default: float,
    where: str,
    integer: bool = False,
    minimum: float = 1,
) -> float:
    value: Any = raw.get(key, default)
    ok_type = isinstance(value, int) or (not integer and isinstance(value, float))
    if isinstance(value, bool) or not ok_type or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}.{key}: {value!r} is not {kind} >= {minimum:g}")
    return float(value)


def _seconds(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    return _number(raw, key, default, where, minimum=0.01)
