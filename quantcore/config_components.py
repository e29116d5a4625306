"""``consumers:`` entries → Component classes and parameters, checked before the start: a
typo in a class path or a parameter is one ConfigError naming ``consumers[i]``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantcore.component import Component
from quantcore.config_errors import ConfigError

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
