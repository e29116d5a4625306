"""``${VAR}`` in config string values: secrets (DSN passwords, Redis URLs) stay out of files.

Every string value of the YAML document may hold ``${NAME}`` (letters, digits, ``_``),
replaced by that environment variable; ``$${`` stands for a literal ``${``. A variable
that is not set is an error naming the field and the variable, never an empty string
(an empty password would connect somewhere unexpected, or fail far from its cause).
Keys are never substituted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvVarError(ValueError):
    """An unset or malformed ``${...}``; ``str()`` names the field and the variable."""


def substitute(raw: Any, environ: Mapping[str, str] | None = None, where: str = "") -> Any:
    """``raw`` (a loaded YAML document) with every ``${NAME}`` in its strings replaced."""
    env = os.environ if environ is None else environ
    if isinstance(raw, str):
        return _substitute(raw, env, where or "config")
    if isinstance(raw, dict):
        return {
            key: substitute(value, env, f"{where}.{key}" if where else str(key))
            for key, value in raw.items()
        }
    if isinstance(raw, list):
        return [substitute(value, env, f"{where}[{i}]") for i, value in enumerate(raw)]
    return raw


def _substitute(text: str, env: Mapping[str, str], where: str) -> str:
    if "$" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        name = match[1]
        if not _NAME.fullmatch(name):
            raise EnvVarError(f"{where}: ${{{name}}} is not an environment variable reference")
        if name not in env:
            raise EnvVarError(f"{where}: environment variable {name} is not set (${{{name}}})")
        return env[name]

    return _REFERENCE.sub(value, text)
