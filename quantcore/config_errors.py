"""The config's one-line errors: :class:`ConfigError`, and msgspec's messages rewritten.

``Expected `int` >= 1, got ... - at `$.feed.x``` becomes ``feed.x: 0 is not an integer
>= 1``; an unknown key lists the settings allowed where it stands.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import msgspec.inspect

_KINDS = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
          "object": "a mapping", "array": "a list", "null": "empty"}  # fmt: skip
_PATH = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


class ConfigError(ValueError):
    """A config problem; ``str()`` is the single line shown to the user."""


def schema_error(message: str, raw: Any, root: type) -> str:
    """msgspec's ``Expected `int` >= 1, got ... - at `$.feed.x``` → ``feed.x: 0 is not an
    integer >= 1``: the field path, the value as written, what was expected."""
    problem, _, at = message.partition(" - at `$")
    path = at.rstrip("`")
    where = path.lstrip(".") or "config"
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", problem)
    if unknown:
        allowed = ", ".join(sorted(_keys(path, root)))
        return f"{where}.{unknown[1]}: unknown setting (allowed: {allowed})"
    missing = re.fullmatch(r"Object missing required field `(.*)`", problem)
    if missing:
        return f"{where}.{missing[1]}: missing"
    value: Any = raw
    for key, index in _PATH.findall(path):
        value = value[int(index)] if index else value.get(key)
    expected = problem.removeprefix("Expected ").partition(", got")[0]
    if expected == problem:
        return f"{where}: {value!r}: {problem}"
    words = re.sub(
        r"`([a-z]+)`", lambda m: _KINDS.get(m[1], m[1]), expected.replace(" | ", "` or `")
    )
    return f"{where}: {value!r} is not {words}"


def _keys(path: str, root: type) -> list[str]:
    """The settings the schema allows in the mapping at ``path`` (for the error message)."""
    options = _structs(msgspec.inspect.type_info(root))
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
