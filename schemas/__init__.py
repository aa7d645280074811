"""mt5d's wire contract: what a subscriber needs, and nothing else (nats-py + msgspec).

    from mt5d import MT5Client, Tick, subjects
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mt5d")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from mt5d import book, codec, errors, rpc, subjects
from mt5d.book import Book, BookLevel
from mt5d.client import MT5Client, Stream
from mt5d.codec import Codec, decode_any
from mt5d.errors import (
    MT5AuthError,
    MT5BusyError,
    MT5CircuitBreakerOpen,
    MT5ConnectionError,
    MT5DataError,
    MT5Error,
    MT5InitError,
    MT5StateError,
    MT5TimeoutError,
    MT5ValidationError,
    error_for_status,
)
from mt5d.market import TIMEFRAMES, Candle, HealthEvent, Tick
from mt5d.subjects import Subjects

__all__ = [
    "Tick",
    "Candle",
    "HealthEvent",
    "TIMEFRAMES",
    "Book",
    "BookLevel",
    "book",
    "subjects",
    "Subjects",
    "codec",
    "Codec",
    "decode_any",
    "rpc",
    "MT5Client",
    "Stream",
    "errors",
    "MT5Error",
    "MT5InitError",
    "MT5AuthError",
    "MT5ConnectionError",
    "MT5TimeoutError",
    "MT5DataError",
    "MT5ValidationError",
    "MT5StateError",
    "MT5CircuitBreakerOpen",
    "MT5BusyError",
    "error_for_status",
]
