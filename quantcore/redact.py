"""Passwords out of everything quantcore prints or logs: DSNs, URLs, ``password=`` pairs.

``postgresql://trader:s3cret@db/x`` → ``postgresql://trader:***@db/x``,
``redis://:s3cret@cache:6379/0`` → ``redis://:***@cache:6379/0``, and libpq's
``host=db password=s3cret`` → ``host=db password=***``. Applied to ``validate``'s
output, one-line errors and every log line (see :mod:`quantcore.logs`).
"""

from __future__ import annotations

import logging
import re

MASK = "***"
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s'\"]*:)[^@/?#\s'\"]+@")
_PAIR = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'\"&,;)]+)", re.I)
_SECRET_KEYS = ("password", "passwd", "secret", "token")


def redact(text: str) -> str:
    """``text`` with the password of every URL/DSN in it replaced by ``***``."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _PAIR.sub(lambda m: f"{m['head']}{MASK}", text)


def secret_key(name: str) -> bool:
    """A parameter whose whole value is a secret (``password``, ``api_token``...)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_KEYS)


class RedactingFormatter(logging.Formatter):
    """A Formatter whose every line (message, arguments, traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
