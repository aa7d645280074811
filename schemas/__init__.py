"""mt5d's wire contract: what a subscriber needs, and nothing else (nats-py + msgspec).

    from schemas import MT5Client, Tick, subjects
"""

from schemas import codec, errors, rpc, subjects
from schemas.client import MT5Client, Stream
from schemas.codec import Codec, decode_any
from schemas.errors import (
    MT5AuthError,
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
from schemas.market import TIMEFRAMES, Candle, HealthEvent, Tick
from schemas.subjects import Subjects

__all__ = [
    "Tick",
    "Candle",
    "HealthEvent",
    "TIMEFRAMES",
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
    "error_for_status",
]
