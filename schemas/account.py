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

from typing import Any

import msgspec

__all__ = [
    "Position", "Order", "Deal", "AccountSnapshot", "PositionEvent", "OrderEvent",
    "POSITION_EVENTS", "ORDER_EVENTS", "position_from_mt5", "order_from_mt5", "deal_from_mt5",
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


# -- from the terminal's namedtuples (daemon side) ---------------------------------

def position_from_mt5(p: Any, off_ms: int) -> Position:
    return Position(ticket=p.ticket, symbol=p.symbol, type=p.type, volume=p.volume, price_open=p.price_open,
                    sl=p.sl, tp=p.tp, price_current=p.price_current, swap=p.swap, profit=p.profit,
                    time_msc_broker=p.time_msc, time_utc_ms=p.time_msc - off_ms,
                    time_update_msc_broker=p.time_update_msc, time_update_utc_ms=p.time_update_msc - off_ms,
                    identifier=p.identifier, magic=p.magic, reason=p.reason, comment=p.comment,
                    external_id=p.external_id)


def order_from_mt5(o: Any, off_ms: int) -> Order:
    done = o.time_done_msc
    return Order(ticket=o.ticket, symbol=o.symbol, type=o.type, state=o.state, volume_initial=o.volume_initial,
                 volume_current=o.volume_current, price_open=o.price_open, sl=o.sl, tp=o.tp,
                 price_current=o.price_current, price_stoplimit=o.price_stoplimit,
                 time_setup_msc_broker=o.time_setup_msc, time_setup_utc_ms=o.time_setup_msc - off_ms,
                 time_done_msc_broker=done, time_done_utc_ms=done - off_ms if done else 0,
                 time_expiration_broker=o.time_expiration, type_time=o.type_time, type_filling=o.type_filling,
                 magic=o.magic, position_id=o.position_id, position_by_id=o.position_by_id, reason=o.reason,
                 comment=o.comment, external_id=o.external_id)


def deal_from_mt5(d: Any, off_ms: int, epoch: int = 0, seq: int = 0) -> Deal:
    return Deal(ticket=d.ticket, order=d.order, symbol=d.symbol, type=d.type, entry=d.entry, volume=d.volume,
                price=d.price, profit=d.profit, commission=d.commission, swap=d.swap, fee=d.fee,
                time_msc_broker=d.time_msc, time_utc_ms=d.time_msc - off_ms, position_id=d.position_id,
                magic=d.magic, reason=d.reason, comment=d.comment, external_id=d.external_id, epoch=epoch, seq=seq)
