"""A config across venues: each venue's part of the document, and its components' paths
and keys (what they declare in ``Component.venue_params``) holding the venue, so one symbol
on two venues stays two series. Spot's never change: existing recordings resume."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from quantcore.component import Component
from quantcore.config_components import ConsumerSpec, import_component
from quantcore.config_errors import ConfigError
from quantcore.config_schema import ConsumerEntry, StreamEntry
from quantcore.feeds.binance.venues import SPOT_NAME
from quantcore.templates import TemplateError, check_template

Streams = dict[str, list[tuple[int, StreamEntry]]]
"""Venue name → its ``streams:`` entries, each with its index in the whole list."""


def by_venue(raw: list[StreamEntry] | None, default: str) -> Streams:
    """The streams of each venue (``default`` for those naming none), in config order."""
    groups: Streams = {}
    for i, entry in enumerate(raw or ()):
        groups.setdefault(entry.venue or default, []).append((i, entry))
    return groups


def venue_documents(
    raw: Mapping[str, Any], streams: Streams
) -> Iterator[tuple[Any, tuple[int, ...]]]:
    """Per venue, the document listing only its streams (and where they stand in the
    whole): URLs given in ``exchange`` belong to ``exchange.venue``; each venue's embedded
    local exchange takes the next port."""
    for n, (name, entries) in enumerate(streams.items()):
        exchange = dict(raw.get("exchange") or {})
        if name != exchange.get("venue", SPOT_NAME):
            exchange.pop("ws_url", None)
            exchange.pop("rest_url", None)
        exchange["venue"] = name
        local = exchange.get("local")
        if isinstance(local, dict) and local.get("port"):
            exchange["local"] = {**local, "port": int(local["port"]) + n}
        listed = [{"symbol": e.symbol, "interval": e.interval} for _, e in entries]
        yield {**raw, "exchange": exchange, "streams": listed}, tuple(i for i, _ in entries)


def venue_consumers(
    raw: list[str | ConsumerEntry] | None, venue: str, alone: bool
) -> tuple[ConsumerSpec, ...]:
    """The ``consumers:`` (history, csv and console when none are listed) of the part
    recording ``venue``, ``alone`` when it is the config's only venue."""
    specs: list[ConsumerSpec] = []
    for i, entry in enumerate(raw if raw is not None else ["history", "csv", "console"]):
        where = f"consumers[{i}]"
        spec = entry if isinstance(entry, ConsumerEntry) else ConsumerEntry(target=entry)
        cls = import_component(spec.target, f"{where}.class")
        params = _for_venue(cls, dict(spec.params or {}), venue, alone, where)
        specs.append(ConsumerSpec(cls, params, where))
    return tuple(specs)


def _for_venue(
    cls: type[Component], params: dict[str, Any], venue: str, alone: bool, where: str
) -> dict[str, Any]:
    """``params`` with the venue as ``cls.venue_params`` says: ``template``: ``{venue}`` filled
    in, or like ``folder`` (beside another venue; a futures default even alone) ``data/x`` →
    ``data/{venue}/x``; ``table``: ``_{venue}``; ``key``: ``:{venue}``; ``partition``: it."""
    for name, rule in cls.venue_params.items():
        given, default = params.get(name), inspect.signature(cls).parameters[name].default
        value = params.get(name, default)
        if rule == "template" and isinstance(given, str):
            try:
                check_template(given, f"{where}.params.{name}")
            except TemplateError as exc:
                raise ConfigError(str(exc)) from None
            if "{venue}" in given:
                params[name] = given.replace("{venue}", venue)
                continue
        if rule == "partition":
            params.setdefault(name, venue)
        elif venue == SPOT_NAME or (alone and (rule != "template" or given is not None)):
            continue
        elif rule == "template" and (given is None or isinstance(given, str)):
            params[name] = in_folder(default if given is None else given, venue)
        elif rule == "folder":
            params[name] = in_folder(str(value), venue)
        elif rule == "table":
            params[name] = f"{value}_{venue.replace('-', '_')}"
        elif rule == "key":
            params[name] = f"{value}:{venue}"
    return params


def in_folder(path: str, folder: str) -> str:
    """``data/x.csv`` → ``data/{folder}/x.csv``: the same file name, one folder deeper."""
    parent, _, name = path.rpartition("/")
    return f"{parent}/{folder}/{name}" if parent else f"{folder}/{name}"
