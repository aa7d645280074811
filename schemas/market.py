"""Stream messages: one tick, one bar, one health event per NATS message.

Rules for these wire structs (msgspec): frozen; unknown fields are ignored, so
a newer daemon may add fields; a new field always has a default and a field
never changes type, so an older subscriber still decodes. Times are integers:
``*_broker`` is the trade server's wall clock written as if it were UTC (what
MT5 reports), ``*_utc_ms`` is true UTC in milliseconds since the epoch.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

__all__ = ["Record", "Tick", "Candle", "HealthEvent", "TIMEFRAMES", "TIMEFRAME_SECONDS", "TIMEFRAME_CODES",
           "TIMEFRAME_MINUTES", "BREAKER_STATES", "EventKind", "EVENT_KINDS"]

# MT5's standard timeframes, shortest first, and the length of one bar in seconds
# (MN1: 0, months differ; W1 bars open on Sunday 00:00). The one timeframe table:
# the terminal boundary adds only the MetaTrader5 codes.
TIMEFRAME_SECONDS: dict[str, int] = {
    "M1": 60, "M2": 120, "M3": 180, "M4": 240, "M5": 300, "M6": 360,
    "M10": 600, "M12": 720, "M15": 900, "M20": 1200, "M30": 1800,
    "H1": 3600, "H2": 7200, "H3": 10800, "H4": 14400, "H6": 21600, "H8": 28800, "H12": 43200,
    "D1": 86400, "W1": 7 * 86400, "MN1": 0,
}
TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAME_SECONDS)
# The MetaTrader5 package's TIMEFRAME_* codes, for clients (the terminal's constants
# module needs numpy; a subscriber must not): minutes below 1 h, then flag bits.
TIMEFRAME_CODES: dict[str, int] = {
    **{name: secs // 60 for name, secs in TIMEFRAME_SECONDS.items() if name.startswith("M") and name != "MN1"},
    **{f"H{n}": n | 0x4000 for n in (1, 2, 3, 4, 6, 8, 12)},
    "D1": 24 | 0x4000, "W1": 1 | 0x8000, "MN1": 1 | 0xC000,
}
# Minutes, as the old session manager took a timeframe (MN1 counted as 30 days).
TIMEFRAME_MINUTES: dict[str, int] = {name: (secs or 30 * 86400) // 60 for name, secs in TIMEFRAME_SECONDS.items()}

BREAKER_STATES: tuple[str, ...] = ("closed", "open", "half_open")

# What a health event reports: a periodic probe, or a state change of the connection.
EventKind = Literal[
    "probe", "connected", "disconnected", "auth_ok", "auth_failed",
    "breaker_open", "breaker_half_open", "breaker_closed", "wedged", "unwedged", "symbol_unknown",
    "book_unavailable",
    "leader", "follower",  # hot standby: this daemon took the lease, or lost it
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the result structs: attribute access, and ``_asdict()`` as the
    MetaTrader5 package's namedtuples have (field name -> value, in order)."""

    def _asdict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__}


class Tick(Record, frozen=True, kw_only=True, gc=False):
    """One tick, every field MT5's ``Tick`` has (its ``time`` is ``time_broker``)."""

    symbol: str  # raw broker symbol, unescaped ("EURUSD.m")
    time_msc_broker: int  # MT5 time_msc: broker clock, ms
    time_utc_ms: int  # the same instant in true UTC, ms
    bid: float
    ask: float
    last: float
    volume: int
    volume_real: float
    flags: int  # TICK_FLAG_* bits
    # Position among the ticks of the same symbol and millisecond (0, 1, ...):
    # (symbol, time_msc_broker, index_in_ms) identifies a tick, for de-duplication.
    index_in_ms: int = 0

    @property
    def time_broker(self) -> int:
        """MT5's ``time`` field: broker clock, whole seconds."""
        return self.time_msc_broker // 1000

    @property
    def time(self) -> int:
        return self.time_msc_broker // 1000

    @property
    def time_msc(self) -> int:
        return self.time_msc_broker


class Candle(Record, frozen=True, kw_only=True, gc=False):
    """One bar. ``closed=False`` marks the forming bar (it will still change)."""

    symbol: str
    timeframe: str  # "M15", one of TIMEFRAMES
    time_broker: int  # bar open, broker clock, whole seconds (MT5 rates ``time``)
    time_utc_ms: int  # bar open, true UTC, ms
    close_time_utc_ms: int  # bar end (= next bar's open), true UTC, ms
    open: float
    high: float
    low: float
    close: float
    tick_volume: int
    spread: int
    real_volume: int
    closed: bool

    @property
    def time(self) -> int:
        """MT5's rates ``time`` field: bar open, broker clock, whole seconds."""
        return self.time_broker


class HealthEvent(Record, frozen=True, kw_only=True):
    """The daemon's view of its terminal, on every probe and every state change."""

    account: str
    time_utc_ms: int
    # What happened: one of EVENT_KINDS. A plain str on the wire, so a kind added
    # later does not make older subscribers reject the whole event.
    event: str
    connection_ok: bool
    auth_ok: bool
    data_feed_ok: bool
    # One of BREAKER_STATES. A plain str, not a Literal, so a state added later
    # does not make older subscribers reject the whole event.
    breaker: str
    latency_ms: float | None = None  # last probe round trip; None when it failed
    wedged: bool = False  # a terminal call never returned
    detail: str = ""  # text safe to show; never credentials or tracebacks
    # From the terminal's own terminal_info() at the probe (None: not known, e.g. no IPC):
    trade_allowed: bool | None = None  # the terminal's "Algo Trading" switch
    terminal_connected: bool | None = None  # the terminal's link to the trade server
    ping_ms: float | None = None  # its last ping to the trade server (terminal_info().ping_last, µs / 1000)
    # Hot standby: "leader" (publishes) or "follower"; "" without HA. lease_revision is the
    # leader's fencing token (also the Mt5d-Lease header on every message it publishes).
    role: str = ""
    lease_revision: int = 0
