"""Logging setup for quantcore as an application: UTC timestamps, one line per event."""

from __future__ import annotations

import logging
import sys
import time


def configure_logging(level: str) -> None:
    """UTC timestamps on every line; python-binance's socket chatter is left to our feed,
    which reports each connection problem once with what it will do next."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter("%(asctime)sZ %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("binance").setLevel(logging.CRITICAL)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
