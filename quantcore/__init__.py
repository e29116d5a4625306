"""quantcore: real-time Binance kline market data → typed events on a bus → consumers.

The public API a strategy or script needs is importable from here. The heavier parts
(the app, config, consumers; they pull in python-binance and pandas) load on first use,
so ``from quantcore import BarEvent`` in a strategy stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.events import (
    BAR,
    BAR_PARTIAL,
    FEED_STATUS,
    SIGNAL,
    BarDecimals,
    BarEvent,
    FeedState,
    FeedStatus,
    Side,
    SignalEvent,
)

if TYPE_CHECKING:
    from quantcore.app import App
    from quantcore.config import ConfigError, load_config, parse_config
    from quantcore.consumers.console import ConsoleLogger
    from quantcore.consumers.csv_recorder import CsvRecorder
    from quantcore.consumers.history import HistoryStore
    from quantcore.loader import LoadError, load
    from quantcore.logs import configure_logging

_LAZY = {
    "App": "quantcore.app",
    "configure_logging": "quantcore.logs",
    "ConfigError": "quantcore.config",
    "load_config": "quantcore.config",
    "parse_config": "quantcore.config",
    "ConsoleLogger": "quantcore.consumers.console",
    "CsvRecorder": "quantcore.consumers.csv_recorder",
    "HistoryStore": "quantcore.consumers.history",
    "load": "quantcore.loader",
    "LoadError": "quantcore.loader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quantcore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BAR",
    "BAR_PARTIAL",
    "FEED_STATUS",
    "SIGNAL",
    "App",
    "BarDecimals",
    "BarEvent",
    "Component",
    "ConfigError",
    "ConsoleLogger",
    "Context",
    "CsvRecorder",
    "EventBus",
    "FeedState",
    "FeedStatus",
    "HistoryStore",
    "LoadError",
    "Side",
    "SignalEvent",
    "configure_logging",
    "load",
    "load_config",
    "parse_config",
]
