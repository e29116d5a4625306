"""YAML config → frozen AppConfig, checked completely before anything connects: msgspec
checks the schemas (``config_schema``), this what they cannot say (symbols, intervals, URLs).
Every problem is one line naming file, field and value (``x.yaml: streams[0].interval: ...``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml
from msgspec import UNSET, Struct

from quantcore.backoff import Backoff
from quantcore.config_components import ConsumerSpec, import_component
from quantcore.config_errors import ConfigError, schema_error
from quantcore.config_schema import (
    AppConfig,
    Document,
    ExchangeSection,
    FeedSection,
    LocalExchangeConfig,
    LogFile,
    MetricsConfig,
    StreamEntry,
)
from quantcore.config_venues import Streams, by_venue, venue_consumers, venue_documents
from quantcore.envvars import EnvVarError, substitute
from quantcore.feeds.base import ReconnectPolicy
from quantcore.feeds.binance.feed import BinanceFeedSettings
from quantcore.feeds.binance.limits import ConnectLimits, RestLimits
from quantcore.feeds.binance.venues import DEFAULT_ARCHIVE_URL, SPOT, SPOT_NAME, Venue
from quantcore.intervals import interval_ms
from quantcore.templates import csv_file_clash

__all__ = ["AppConfig", "ConfigError", "ConsumerSpec", "LocalExchangeConfig", "LogFile",
           "MetricsConfig", "import_component", "load_config", "normalize_symbol",
           "parse_config"]  # fmt: skip

_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")
_URL = re.compile(r"^(wss?|https?)://[^\s/]+(/\S*)?$")


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
        doc = msgspec.convert(raw, Document)
    except msgspec.ValidationError as exc:
        raise ConfigError(schema_error(str(exc), raw, Document)) from None
    exchange = doc.exchange
    local = LocalExchangeConfig() if exchange.local is True else exchange.local or None
    if local is not None and exchange.redis is not None:
        raise ConfigError("exchange: 'local' and 'redis' are alternatives; choose one")
    venue_name, venue = _venue(exchange)
    streams_of = by_venue(doc.streams, venue_name)
    if len(streams_of) > 1:
        return _split(raw, doc, streams_of, source)
    if streams_of:
        venue_name = next(iter(streams_of))
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
    consumers = venue_consumers(doc.consumers, venue.name, alone=not stream_indices)
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


def _split(raw: Any, doc: Document, per_venue: Streams, source: str) -> AppConfig:
    """One config per venue, run side by side; ``metrics`` stays with the whole (one
    endpoint for every venue), never a part's."""
    if doc.exchange.redis is not None:
        raise ConfigError("streams: a per-stream venue cannot be combined with exchange.redis")
    parts = [
        dataclasses.replace(parse_config(sub, source, indices), metrics=None)
        for sub, indices in venue_documents(raw, per_venue)
    ]
    _check_files(parts)
    return dataclasses.replace(
        parts[0], streams=tuple(key for part in parts for key in part.streams), consumers=(),
        metrics=doc.metrics, parts=tuple(parts),
        stream_fields=tuple(field for part in parts for field in part.stream_fields),
    )  # fmt: skip


def _venue(exchange: ExchangeSection) -> tuple[str, Venue]:
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


def _urls(exchange: ExchangeSection, venue: Venue) -> tuple[str, str]:
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


def _feed(raw: FeedSection, venue: Venue, ws_url: str, rest_url: str) -> BinanceFeedSettings:
    given = _given(raw)
    reconnect, limits = given.pop("reconnect"), _given(given.pop("limits"))
    rest = {key: limits.pop(key) for key in ("weight_per_minute",) if key in limits}
    backoff = _given(reconnect)
    attempts = backoff.pop("max_attempts")
    return BinanceFeedSettings(
        ws_url=ws_url, rest_url=rest_url, venue=venue, connect_limits=ConnectLimits(**limits),
        reconnect=ReconnectPolicy(Backoff(**backoff), attempts),
        rest_limits=RestLimits(**rest) if rest else None, **given,
    )  # fmt: skip


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
    raw: list[StreamEntry] | None, venue: Venue = SPOT, indices: tuple[int, ...] = ()
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
