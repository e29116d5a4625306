"""A config across venues: each venue's part of the document, and its consumers' parameters.

Every component declares the parameters that say where it writes
(:attr:`~quantcore.component.Component.venue_params`); here they get the venue, so the
same symbol on two venues stays two series. Spot's paths and keys never change (existing
recordings resume), and neither do those of a config recording one venue only, except
that a futures venue's CSV files default to ``data/{venue}/``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from quantcore.component import Component, VenueRule
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
        params = dict(spec.params or {})
        for name, rule in cls.venue_params.items():
            _place(params, cls, name, rule, venue, alone, f"{where}.params.{name}")
        specs.append(ConsumerSpec(cls, params, where))
    return tuple(specs)


def _place(
    params: dict[str, Any], cls: type[Component], name: str, rule: VenueRule, venue: str,
    alone: bool, where: str,
) -> None:  # fmt: skip
    """Set the venue in ``params[name]`` as ``rule`` says: ``template``: ``{venue}``
    filled in, else like ``folder``: ``data/x`` → ``data/{venue}/x``; ``table``: ``_{venue}``
    (``-`` as ``_``) appended; ``key``: ``:{venue}`` appended; ``partition``: the venue."""
    given, default = params.get(name), inspect.signature(cls).parameters[name].default
    value = params.get(name, default)
    if rule == "template" and isinstance(given, str):
        try:
            check_template(given, where)
        except TemplateError as exc:
            raise ConfigError(str(exc)) from None
        if "{venue}" in given:
            params[name] = given.replace("{venue}", venue)
            return
    if rule == "partition":
        params.setdefault(name, venue)
    elif venue == SPOT_NAME or (alone and (rule != "template" or given is not None)):
        return
    elif rule == "template" and (given is None or isinstance(given, str)):
        params[name] = in_folder(default if given is None else given, venue)
    elif rule == "folder":
        params[name] = in_folder(str(value), venue)
    elif rule == "table":
        params[name] = f"{value}_{venue.replace('-', '_')}"
    elif rule == "key":
        params[name] = f"{value}:{venue}"


def in_folder(path: str, folder: str) -> str:
    """``data/x.csv`` → ``data/{folder}/x.csv``: the same file name, one folder deeper."""
    parent, _, name = path.rpartition("/")
    return f"{parent}/{folder}/{name}" if parent else f"{folder}/{name}"
