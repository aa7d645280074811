"""Request-reply contract of ``<prefix>.<account>.rpc.<endpoint>``.

A request body is a struct in JSON or MessagePack (an empty body means "all
defaults"); the reply is in the daemon's configured encoding. A failed request
is answered the nats.micro way, headers ``Nats-Service-Error`` (message) and
``Nats-Service-Error-Code`` (status as a string), with an ``ErrorReply`` JSON
body naming the error class, so the client raises the same class again.

Bulk replies (candles, ticks) may come in pages: a NATS message is capped by
the server's ``max_payload`` (1 MiB by default), and 100,000 ticks are ~15 MB
of JSON. A reply with ``more=True`` says where to continue; ``MT5Client``
follows it (the daemon's ``mt5d.actors.logic.replies`` builds such replies).
"""

from __future__ import annotations

from typing import Annotated, Mapping, TypeVar

import msgspec
from mt5d.book import Book
from mt5d.account import Deal, Order, Position
from mt5d.codec import decode_any
from mt5d.errors import MT5Error, MT5ValidationError, error_for_status
from mt5d.market import TIMEFRAME_CODES, TIMEFRAME_MINUTES, TIMEFRAMES, Candle, HealthEvent, Record, Tick

__all__ = [
    "MAX_CANDLES", "DEFAULT_CANDLES", "MAX_TICKS", "MAX_PRICE_SYMBOLS", "MAX_REQUEST_BYTES", "REPLY_HEADROOM",
    "ERROR_HEADER", "ERROR_CODE_HEADER", "ENDPOINTS", "ACCOUNT_INFO_FIELDS",
    "Request", "AccountRequest", "AccountReply", "PriceRequest", "Quote", "PriceReply",
    "CandlesRequest", "CandlesReply", "TicksRequest", "TicksReply", "SymbolsRequest", "SymbolSpec",
    "SymbolsReply", "HealthRequest", "ReconnectRequest", "ReconnectReply", "ErrorReply",
    "check_timeframe", "timeframe_name", "validate_request", "error_from_reply",
    "BookRequest", "BookQuote", "BookReply", "SymbolRequest", "SymbolInfo",
    "TerminalRequest", "TerminalInfo", "TERMINAL_INFO_HIDDEN",
    "MAX_HISTORY", "PositionsRequest", "PositionsReply", "OrdersRequest", "OrdersReply", "DealsRequest",
    "DealsReply", "HistoryOrdersRequest", "HistoryOrdersReply",
]

MAX_CANDLES = 5000
DEFAULT_CANDLES = 100
MAX_TICKS = 100_000
MAX_PRICE_SYMBOLS = 1000
MAX_REQUEST_BYTES = 64 * 1024
# Room left in a NATS message for headers when a reply is sized to max_payload.
REPLY_HEADROOM = 1024

# The header names nats.micro uses (repeated here: schemas does not need nats.micro).
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

R = TypeVar("R", bound="Request")
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
EpochMs = Annotated[int, msgspec.Meta(ge=0)]  # true UTC, ms since 1970


def _safe(text: str, limit: int = 32) -> str:
    """User input echoed in a message: repr'd and cut short."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def check_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAMES:
        raise MT5ValidationError(f"unknown timeframe {_safe(timeframe)}; expected one of {' '.join(TIMEFRAMES)}")
    return timeframe


_TF_BY_NUMBER = {**{m: n for n, m in TIMEFRAME_MINUTES.items()}, **{c: n for n, c in TIMEFRAME_CODES.items()}}


def timeframe_name(timeframe: str | int) -> str:
    """``"M15"`` for ``"M15"``, 15 (minutes, as the old session manager took it) or
    ``TIMEFRAME_M15`` (MetaTrader5's code). The codes of H1 and longer (0x4000 and up)
    are never a timeframe's minutes, so an int means one thing."""
    if isinstance(timeframe, int) and not isinstance(timeframe, bool):
        name = _TF_BY_NUMBER.get(timeframe)
        if name is None:
            raise MT5ValidationError(f"unknown timeframe {timeframe!r}: give minutes (1, 5, 15, 30, 60, 240, "
                                     f"1440, ...), a TIMEFRAME_* code or a name ({' '.join(TIMEFRAMES)})")
        return name
    if isinstance(timeframe, str):
        return check_timeframe(timeframe)
    raise MT5ValidationError(f"a timeframe is a name or an int, not {type(timeframe).__name__}")


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """Base of requests: ``checked()`` does the cross-field checks types cannot."""

    def checked(self: R) -> R:
        """This request with defaults filled in; MT5ValidationError when it makes no sense."""
        return self


# -- account ---------------------------------------------------------------------

class AccountRequest(Request):
    pass


class AccountReply(Record, frozen=True, kw_only=True):
    """Every ``account_info()`` field, plus ``margin_used`` (= margin) as the old API named it."""

    login: int
    trade_mode: int
    leverage: int
    limit_orders: int
    margin_so_mode: int
    trade_allowed: bool
    trade_expert: bool
    margin_mode: int
    currency_digits: int
    fifo_close: bool
    balance: float
    credit: float
    profit: float
    equity: float
    margin: float
    margin_free: float
    margin_level: float
    margin_so_call: float
    margin_so_so: float
    margin_initial: float
    margin_maintenance: float
    assets: float
    liabilities: float
    commission_blocked: float
    name: str
    server: str
    currency: str
    company: str
    margin_used: float


ACCOUNT_INFO_FIELDS: tuple[str, ...] = tuple(f for f in AccountReply.__struct_fields__ if f != "margin_used")


# -- price -----------------------------------------------------------------------

class PriceRequest(Request):
    """``symbol`` or ``symbols``, not both."""

    symbol: Symbol | None = None
    symbols: Annotated[list[Symbol], msgspec.Meta(min_length=1, max_length=MAX_PRICE_SYMBOLS)] | None = None

    def checked(self) -> "PriceRequest":
        if (self.symbol is None) == (self.symbols is None):
            raise MT5ValidationError("give `symbol` or `symbols`, exactly one")
        return self

    @property
    def wanted(self) -> list[str]:
        return [self.symbol] if self.symbol is not None else list(self.symbols or ())


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    tick: Tick  # the newest tick the daemon has
    age_ms: int  # how long ago the daemon received it


class PriceReply(msgspec.Struct, frozen=True, kw_only=True):
    prices: dict[str, Quote]  # raw symbol -> quote
    missing: list[str] = []  # asked for, but no price known


# -- candles ---------------------------------------------------------------------

class CandlesRequest(Request):
    """Three forms: ``count`` (the newest bars, the forming one last, ``closed=False``);
    ``end`` + ``count`` (the newest bars opened at or before ``end``); ``start`` +
    ``end`` (bars opened in [start, end], at most MAX_CANDLES). Times: UTC ms."""

    symbol: Symbol
    timeframe: str = "M15"
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_CANDLES)] | None = None
    start: EpochMs | None = None
    end: EpochMs | None = None

    def checked(self) -> "CandlesRequest":
        check_timeframe(self.timeframe)
        if self.start is not None:
            if self.end is None:
                raise MT5ValidationError("`start` needs `end`")
            if self.count is not None:
                raise MT5ValidationError("give `count` or `start`/`end`, not both")
            if self.end < self.start:
                raise MT5ValidationError("`end` is before `start`")
            return self
        if self.count is None:
            return msgspec.structs.replace(self, count=DEFAULT_CANDLES)
        return self

    @property
    def mode(self) -> str:
        """One of "latest" (count), "before" (end + count), "range" (start + end)."""
        if self.start is not None:
            return "range"
        return "before" if self.end is not None else "latest"


class CandlesReply(msgspec.Struct, frozen=True, kw_only=True):
    candles: list[Candle]  # oldest first
    # A page: the newest part of the answer. Ask again with end=next_end (same
    # start; count minus what came) for the older part.
    more: bool = False
    next_end: int = 0


# -- ticks -----------------------------------------------------------------------

class TicksRequest(Request):
    """Ticks with time_utc_ms in [start, end], oldest first, at most ``count``.
    ``skip`` leaves out that many ticks at ``start`` itself (several ticks share a
    millisecond, so a time alone is not a cursor)."""

    symbol: Symbol
    start: EpochMs
    end: EpochMs
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_TICKS)] = MAX_TICKS
    skip: Annotated[int, msgspec.Meta(ge=0)] = 0

    def checked(self) -> "TicksRequest":
        if self.end < self.start:
            raise MT5ValidationError("`end` is before `start`")
        return self


class TicksReply(msgspec.Struct, frozen=True, kw_only=True):
    ticks: list[Tick]  # oldest first
    # A page: continue with start=next_start, skip=next_skip, count minus what came.
    more: bool = False
    next_start: int = 0
    next_skip: int = 0


# -- symbols, health, reconnect ----------------------------------------------------

class SymbolsRequest(Request):
    pass


class SymbolSpec(Record, frozen=True, kw_only=True):
    symbol: str
    digits: int
    point: float
    spread: int
    trade_mode: int
    description: str = ""
    currency_base: str = ""
    currency_profit: str = ""


class SymbolsReply(msgspec.Struct, frozen=True, kw_only=True):
    symbols: list[SymbolSpec]


class HealthRequest(Request):
    pass  # the reply is a HealthEvent (event "probe" when freshly probed)


class ReconnectRequest(Request):
    pass


class ReconnectReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool


# -- depth of market, symbol specification, terminal state ------------------------------

class BookRequest(PriceRequest):
    """``symbol`` or ``symbols`` (of ``stream.books``), not both; answered from the daemon's cache."""


class BookQuote(msgspec.Struct, frozen=True, kw_only=True):
    book: Book  # the newest book the daemon published
    age_ms: int  # how long ago the daemon read it


class BookReply(msgspec.Struct, frozen=True, kw_only=True):
    books: dict[str, BookQuote]  # raw symbol -> book
    missing: list[str] = []  # asked for, but no book known


class SymbolRequest(Request):
    symbol: Symbol  # any symbol the terminal offers (not only the streamed ones)


class SymbolInfo(Record, frozen=True, kw_only=True):
    """Every field of MT5's ``symbol_info()``, in its order, with its meaning (MQL5 SYMBOL_* properties):
    prices and ``time`` on the broker clock as the terminal reports them."""

    custom: bool
    chart_mode: int
    select: bool
    visible: bool
    session_deals: int
    session_buy_orders: int
    session_sell_orders: int
    volume: int
    volumehigh: int
    volumelow: int
    time: int
    digits: int
    spread: int
    spread_float: bool
    ticks_bookdepth: int
    trade_calc_mode: int
    trade_mode: int
    start_time: int
    expiration_time: int
    trade_stops_level: int
    trade_freeze_level: int
    trade_exemode: int
    swap_mode: int
    swap_rollover3days: int
    margin_hedged_use_leg: bool
    expiration_mode: int
    filling_mode: int
    order_mode: int
    order_gtc_mode: int
    option_mode: int
    option_right: int
    bid: float
    bidhigh: float
    bidlow: float
    ask: float
    askhigh: float
    asklow: float
    last: float
    lasthigh: float
    lastlow: float
    volume_real: float
    volumehigh_real: float
    volumelow_real: float
    option_strike: float
    point: float
    trade_tick_value: float
    trade_tick_value_profit: float
    trade_tick_value_loss: float
    trade_tick_size: float
    trade_contract_size: float
    trade_accrued_interest: float
    trade_face_value: float
    trade_liquidity_rate: float
    volume_min: float
    volume_max: float
    volume_step: float
    volume_limit: float
    swap_long: float
    swap_short: float
    margin_initial: float
    margin_maintenance: float
    session_volume: float
    session_turnover: float
    session_interest: float
    session_buy_orders_volume: float
    session_sell_orders_volume: float
    session_open: float
    session_close: float
    session_aw: float
    session_price_settlement: float
    session_price_limit_min: float
    session_price_limit_max: float
    margin_hedged: float
    price_change: float
    price_volatility: float
    price_theoretical: float
    price_greeks_delta: float
    price_greeks_theta: float
    price_greeks_gamma: float
    price_greeks_vega: float
    price_greeks_rho: float
    price_greeks_omega: float
    price_sensitivity: float
    basis: str
    category: str
    currency_base: str
    currency_profit: str
    currency_margin: str
    bank: str
    description: str
    exchange: str
    formula: str
    isin: str
    name: str
    page: str
    path: str


class TerminalRequest(Request):
    pass


class TerminalInfo(Record, frozen=True, kw_only=True):
    """MT5's ``terminal_info()`` without what describes the host or another account: the
    install and data paths (``path``, ``data_path``, ``commondata_path``) and the MQL5.community
    balance (``community_balance``) stay in the daemon."""

    community_account: bool
    community_connection: bool
    connected: bool  # to the trade server
    dlls_allowed: bool
    trade_allowed: bool  # the terminal's "Algo Trading" button
    tradeapi_disabled: bool
    email_enabled: bool
    ftp_enabled: bool
    notifications_enabled: bool
    mqid: bool
    build: int
    maxbars: int
    codepage: int
    ping_last: int  # last ping to the trade server, microseconds
    retransmission: float  # % of resent TCP packets
    company: str
    name: str
    language: str


TERMINAL_INFO_HIDDEN: tuple[str, ...] = ("community_balance", "path", "data_path", "commondata_path")


# -- positions, orders, deals, history orders (account data: operator role only) ----------

MAX_HISTORY = 10_000  # deals or orders in one reply at most
Ticket = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
# An MT5 group mask ("*USD*,!EUR*"): printable, short.
GroupMask = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]*$")]


class PositionsRequest(Request):
    """Open positions, filtered like ``positions_get``: ``symbol``, ``ticket``, ``group`` (all optional, ANDed)."""

    symbol: Symbol | None = None
    ticket: Ticket | None = None
    group: GroupMask | None = None


class PositionsReply(msgspec.Struct, frozen=True, kw_only=True):
    positions: list[Position]  # by ticket
    # The state after message ``seq`` of daemon run ``epoch``: a mirror applies only later events.
    epoch: int = 0
    seq: int = 0


class OrdersRequest(PositionsRequest):
    """Pending orders, filtered like ``orders_get``."""


class OrdersReply(msgspec.Struct, frozen=True, kw_only=True):
    orders: list[Order]  # by ticket
    epoch: int = 0
    seq: int = 0


class DealsRequest(Request):
    """Deals with time_utc_ms in [start, end], oldest first (ties by ticket), at most ``count``;
    ``skip`` leaves out that many at ``start`` itself. ``position`` or ``group``/``symbol`` narrow it."""

    start: EpochMs
    end: EpochMs
    symbol: Symbol | None = None
    group: GroupMask | None = None
    position: Ticket | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY)] = MAX_HISTORY
    skip: Annotated[int, msgspec.Meta(ge=0, le=MAX_HISTORY)] = 0

    def checked(self):
        if self.end < self.start:
            raise MT5ValidationError("`end` is before `start`")
        return self


class DealsReply(msgspec.Struct, frozen=True, kw_only=True):
    deals: list[Deal]
    # A page: continue with start=next_start, skip=next_skip (like ticks).
    more: bool = False
    next_start: int = 0
    next_skip: int = 0


class HistoryOrdersRequest(DealsRequest):
    """History orders with time_setup_utc_ms in [start, end], like ``history_orders_get``."""


class HistoryOrdersReply(msgspec.Struct, frozen=True, kw_only=True):
    orders: list[Order]
    more: bool = False
    next_start: int = 0
    next_skip: int = 0


# name -> (request type, reply type): lets the service register endpoints in a loop.
ENDPOINTS: dict[str, tuple[type[Request], type]] = {
    "account": (AccountRequest, AccountReply),
    "price": (PriceRequest, PriceReply),
    "candles": (CandlesRequest, CandlesReply),
    "ticks": (TicksRequest, TicksReply),
    "symbols": (SymbolsRequest, SymbolsReply),
    "health": (HealthRequest, HealthEvent),
    "reconnect": (ReconnectRequest, ReconnectReply),
    "book": (BookRequest, BookReply),
    "symbol": (SymbolRequest, SymbolInfo),
    "terminal": (TerminalRequest, TerminalInfo),
    "positions": (PositionsRequest, PositionsReply),
    "orders": (OrdersRequest, OrdersReply),
    "deals": (DealsRequest, DealsReply),
    "history_orders": (HistoryOrdersRequest, HistoryOrdersReply),
}


# -- checking requests built in code -----------------------------------------------

def validate_request(req: R) -> R:
    """Client side: the checks ``parse_request`` makes, on a request built in code
    (a Struct constructor does not check ``Meta`` constraints; decoding does)."""
    try:
        req = msgspec.convert(msgspec.to_builtins(req), type(req))
    except msgspec.ValidationError as err:
        raise MT5ValidationError(f"invalid request: {str(err)[:200]}") from None
    return req.checked()


# -- errors --------------------------------------------------------------------------

class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    code: int  # status: 400, 500, 502, 503, 504
    kind: str  # error class name, e.g. "MT5ValidationError"
    message: str  # safe to show
    mt5_code: int = 0  # last_error() code, 0 when the error is not the terminal's

    @classmethod
    def from_error(cls, err: BaseException) -> "ErrorReply":
        if isinstance(err, MT5Error):
            return cls(code=err.status, kind=type(err).__name__, message=err.message, mt5_code=err.code)
        # Anything else is a bug on our side: its text may hold internals, so say nothing.
        return cls(code=500, kind="MT5Error", message="internal error")

    def to_error(self) -> MT5Error:
        return error_for_status(self.code, self.kind, self.message, self.mt5_code)


def error_from_reply(headers: Mapping[str, str] | None, data: bytes) -> MT5Error | None:
    """Client side: the error a reply carries, or None when it is a success."""
    if not headers or ERROR_CODE_HEADER not in headers:
        return None
    try:
        return decode_any(data, ErrorReply).to_error()
    except (msgspec.DecodeError, UnicodeDecodeError):
        # A bare nats.micro error (e.g. its own "500" for an uncaught exception).
        code = headers[ERROR_CODE_HEADER]
        status = int(code) if code.isdigit() else 500
        return error_for_status(status, "", headers.get(ERROR_HEADER, "") or f"error {code}")
