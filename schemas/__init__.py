"""mt5d's wire contract: what a subscriber needs, and nothing else (nats-py + msgspec).

    from mt5d import MT5Client, Tick, subjects

The old session manager's package moves here whole: ``from mt5d import
MT5SessionManager, probe`` and ``from mt5d.errors import MT5ConnectionError``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mt5d")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from mt5d import book, client, codec, errors, rpc, subjects
from mt5d.account import AccountSnapshot, Deal, Order, OrderEvent, Position, PositionEvent
from mt5d.book import Book, BookLevel
from mt5d.client import (
    AccountInfo,
    HealthStatus,
    MT5Client,
    MT5SessionManager,
    Price,
    Stream,
    probe,
    timeframe_name,
)
from mt5d.client import *  # noqa: F401,F403  (the TIMEFRAME_* constants)
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
from mt5d.mirror import TerminalState

__all__ = [
    "Tick",
    "Candle",
    "HealthEvent",
    "TIMEFRAMES",
    "Book",
    "BookLevel",
    "Position",
    "Order",
    "Deal",
    "AccountSnapshot",
    "PositionEvent",
    "OrderEvent",
    "TerminalState",
    "book",
    "subjects",
    "Subjects",
    "codec",
    "Codec",
    "decode_any",
    "rpc",
    "client",
    "MT5Client",
    "MT5SessionManager",
    "probe",
    "AccountInfo",
    "Price",
    "HealthStatus",
    "timeframe_name",
    "Stream",
    *(name for name in client.__all__ if name.startswith("TIMEFRAME_")),
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
