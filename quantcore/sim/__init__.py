"""A local Binance-compatible spot market-data exchange (klines over REST and WebSocket).

It serves the exchange side that python-binance talks to, for tests, demos and benchmarks
without the internet; of quantcore it needs only Binance's venue table, stream names, logging.
"""

from quantcore.feeds.binance.codec import stream_name

from .faults import ERROR_PAYLOAD
from .formats import DataFileError, detect_symbol, load_klines, load_klines_by_symbol
from .generator import RandomWalkSource
from .klines import INTERVALS, Kline, aggregate, bucket_start, interval_ms, interval_name, normalize
from .limits import Limits
from .market import Market
from .realism import Realism
from .server import LocalExchange
from .sources import KlineSource, ReplaySource, sources_from_specs, sparse

__all__ = [
    "ERROR_PAYLOAD",
    "INTERVALS",
    "DataFileError",
    "Kline",
    "KlineSource",
    "Limits",
    "LocalExchange",
    "Market",
    "RandomWalkSource",
    "Realism",
    "ReplaySource",
    "aggregate",
    "bucket_start",
    "detect_symbol",
    "interval_ms",
    "interval_name",
    "load_klines",
    "load_klines_by_symbol",
    "normalize",
    "sources_from_specs",
    "sparse",
    "stream_name",
]
