"""Logging setup for quantcore as an application: UTC timestamps, one line per event.

Unexpected errors carry their traceback (at DEBUG where one could repeat per bar);
python-binance's own warnings stay visible, and ``logging.file`` adds a rotating file.
Every line is redacted (:mod:`quantcore.redact`): a DSN's password never reaches a log.
"""

from __future__ import annotations

import logging
import sys
import time
from logging.handlers import RotatingFileHandler
from typing import TYPE_CHECKING

from quantcore.events import DATETIME_FORMAT
from quantcore.redact import RedactingFormatter

if TYPE_CHECKING:
    from quantcore.config import LogFile


def configure_logging(level: str, file: LogFile | None = None) -> None:
    """UTC timestamps on every line, to stdout and, if ``file`` is given, to a file
    rotated by the standard library's :class:`RotatingFileHandler`."""
    formatter = RedactingFormatter("%(asctime)sZ %(levelname)-7s %(message)s", DATETIME_FORMAT)
    formatter.converter = time.gmtime
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if file is not None:
        handlers.append(
            RotatingFileHandler(file.path, maxBytes=file.max_bytes, backupCount=file.backups)
        )
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("binance").setLevel(logging.WARNING)
    # Its socket logs every close, even a graceful one, as ERROR; the feed's supervisor
    # owns reconnects and reports each disconnect itself, once, with its cause.
    logging.getLogger("binance.ws.reconnecting_websocket").setLevel(logging.CRITICAL)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
