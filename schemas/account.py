"""Account state on the wire: positions, orders, deals and account snapshots.

Subjects (``mt5d.subjects``): ``<prefix>.<account>.account`` (an
``AccountSnapshot``), ``.position.<symbol>`` (a ``PositionEvent``),
``.order.<symbol>`` (an ``OrderEvent``) and ``.deal.<symbol>`` (a ``Deal``;
balance and credit deals have no symbol: their token is ``=``).

Every field of MT5's ``TradePosition``, ``TradeOrder`` and ``TradeDeal`` is
here under its own name and MT5 integer code (``type``, ``reason``, ``state``,
``entry``...), except the times: ``*_msc_broker`` is MT5's ``*_msc`` (trade
server clock), ``*_utc_ms`` the same instant in true UTC. Same rules as the
other wire structs: frozen, new fields only with defaults, no type changes.

Ordering (for a local mirror): every message of one daemon run carries
``epoch`` (that run's start, UTC ms) and ``seq`` (one counter over account,
position, order and deal messages of the run). The ``positions`` and
``orders`` replies carry the ``epoch``/``seq`` of the state they show, so a
mirror applies exactly the events with a higher ``seq`` of the same epoch.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Position", "Order", "Deal", "AccountSnapshot", "PositionEvent", "OrderEvent",
    "POSITION_EVENTS", "ORDER_EVENTS",
]

POSITION_EVENTS: tuple[str, ...] = ("opened", "modified", "closed")
ORDER_EVENTS: tuple[str, ...] = ("placed", "modified", "partially_filled", "filled", "cancelled", "expired",
                                 "rejected")


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """An open position (MT5 ``TradePosition``)."""

    ticket: int
    symbol: str
    type: int  # POSITION_TYPE_BUY 0 / SELL 1
    volume: float
    price_open: float
    sl: float
    tp: float
    price_current: float
    swap: float
    profit: float
    time_msc_broker: int
    time_utc_ms: int
    time_update_msc_broker: int
    time_update_utc_ms: int
    identifier: int = 0
    magic: int = 0
    reason: int = 0
    comment: str = ""
    external_id: str = ""


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """A pending or historical order (MT5 ``TradeOrder``)."""

    ticket: int
    symbol: str
    type: int  # ORDER_TYPE_*
    state: int  # ORDER_STATE_*
    volume_initial: float
    volume_current: float
    price_open: float
    sl: float
    tp: float
    price_current: float
    price_stoplimit: float
    time_setup_msc_broker: int
    time_setup_utc_ms: int
    time_done_msc_broker: int = 0  # 0 while active
    time_done_utc_ms: int = 0
    time_expiration_broker: int = 0  # seconds, 0 = none
    type_time: int = 0
    type_filling: int = 0
    magic: int = 0
    position_id: int = 0
    position_by_id: int = 0
    reason: int = 0
    comment: str = ""
    external_id: str = ""


class Deal(msgspec.Struct, frozen=True, kw_only=True):
    """A deal (MT5 ``TradeDeal``): published once, in ticket order."""

    ticket: int
    order: int
    symbol: str  # "" for balance/credit operations
    type: int  # DEAL_TYPE_*
    entry: int  # DEAL_ENTRY_IN 0 / OUT 1 / INOUT 2 / OUT_BY 3
    volume: float
    price: float
    profit: float
    commission: float
    swap: float
    fee: float
    time_msc_broker: int
    time_utc_ms: int
    position_id: int = 0
    magic: int = 0
    reason: int = 0  # DEAL_REASON_*
    comment: str = ""
    external_id: str = ""
    epoch: int = 0
    seq: int = 0


class AccountSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The account's figures: on a change (at most every ``account.interval``) and every ``account.heartbeat``."""

    login: int
    currency: str
    leverage: int
    balance: float
    credit: float
    profit: float
    equity: float
    margin: float
    margin_free: float
    margin_level: float
    trade_allowed: bool
    positions: int  # open positions
    orders: int  # pending orders
    time_utc_ms: int
    margin_mode: int = 0
    margin_so_call: float = 0.0
    margin_so_so: float = 0.0
    epoch: int = 0
    seq: int = 0


class PositionEvent(msgspec.Struct, frozen=True, kw_only=True):
    event: str  # one of POSITION_EVENTS
    position: Position  # its state after the event (the last state for "closed")
    deal: Deal | None = None  # the deal that caused it (none for an SL/TP change)
    time_utc_ms: int = 0  # when mt5d saw it
    epoch: int = 0
    seq: int = 0


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    event: str  # one of ORDER_EVENTS
    order: Order
    time_utc_ms: int = 0
    epoch: int = 0
    seq: int = 0
