"""The sim's order engine: an account with MT5's trading semantics.

What it does (all times broker clock, like MT5):

* Account modes ``hedging`` (every market order opens its own position, a close
  names the position) and ``netting`` (one position per symbol; an opposite deal
  reduces, closes or reverses it: entry OUT / INOUT).
* Market orders fill at once at the sim's own ask (buy) or bid (sell). Pending
  orders (limit, stop, stop-limit) are triggered by the sim's ticks: a buy limit
  when ask <= price (filled at its price), a buy stop when ask >= price (at the
  market), a stop-limit places its limit at ``stoplimit`` (same ticket, the type
  becomes the limit type); sells mirror on bid. SL/TP close a position when the
  closing price (bid for a buy, ask for a sell) crosses them; that makes an order
  with ORDER_REASON_SL/TP and a deal with DEAL_REASON_SL/TP. Partial closes
  (``volume`` below the position's), close-by (TRADE_ACTION_CLOSE_BY, two
  DEAL_ENTRY_OUT_BY deals, both at the opposite position's open price),
  expiration (ORDER_TIME_DAY at the broker day's end, ORDER_TIME_SPECIFIED /
  SPECIFIED_DAY at ``expiration``), swaps at the broker midnight (triple on the
  symbol's rollover day), commission per lot on every deal.
* ``fill_volume`` > 0 caps what one tick fills of a pending order: a larger order
  fills over several ticks (ORDER_STATE_PARTIAL in between).
* Money: profit = price difference * contract size * volume, converted to the
  deposit currency (USD) at the current rate of the profit currency; margin =
  volume * contract size * price (in USD) / leverage for every calc mode (the
  sim treats CFDs as leverage CFDs); margin of hedged opposite positions is not
  reduced. No stop-out.

Results are the MetaTrader5 package's namedtuples (``TradePosition``,
``TradeOrder``, ``TradeDeal``, ``OrderSendResult``, ``OrderCheckResult``,
``TradeRequest``). A well-formed request the "server" refuses comes back as a
result with its ``TRADE_RETCODE_*``; a malformed one raises ``TradeArgError``
(the terminal turns it into ``None`` + ``(-2, 'Invalid "volume" argument')``).

=======================================  ===========================================
request                                  retcode
=======================================  ===========================================
trading switched off (``trade_allowed``)  10027 CLIENT_DISABLES_AT
unknown symbol, bad action/ticket/type   10013 INVALID / 10035 INVALID_ORDER
symbol without a quote in 10 minutes     10018 MARKET_CLOSED
volume off min/max/step                  10014 INVALID_VOLUME
market order with RETURN/BOC filling     10030 INVALID_FILL
SL/TP on the wrong side of the price     10016 INVALID_STOPS
pending price on the wrong side          10015 INVALID_PRICE
expiration missing or in the past        10022 INVALID_EXPIRATION
not enough free margin                   10019 NO_MONEY
position not (or no longer) there        10036 POSITION_CLOSED
close volume above the position's        10038 INVALID_CLOSE_VOLUME
modify without a change                  10025 NO_CHANGES
pending orders at ``limit_orders``       10033 LIMIT_ORDERS
done / pending placed                    10009 DONE / 10008 PLACED (order_check: 0)
=======================================  ===========================================
"""

from __future__ import annotations

import calendar
import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.groups import group_matcher
from mt5d.daemon.terminal.sim.symbols import SimSymbol

__all__ = ["Trading", "TradeArgError", "ScriptedTrade", "SCRIPT_ACTIONS", "ACCOUNT_MODES", "RETCODE_COMMENTS"]

ACCOUNT_MODES = ("hedging", "netting")
SCRIPT_ACTIONS = ("buy", "sell", "buy_limit", "sell_limit", "buy_stop", "sell_stop", "modify", "close", "cancel")
_SCRIPT_TYPES = {"buy": C.ORDER_TYPE_BUY, "sell": C.ORDER_TYPE_SELL, "buy_limit": C.ORDER_TYPE_BUY_LIMIT,
                 "sell_limit": C.ORDER_TYPE_SELL_LIMIT, "buy_stop": C.ORDER_TYPE_BUY_STOP,
                 "sell_stop": C.ORDER_TYPE_SELL_STOP}

RETCODE_COMMENTS = {
    0: "Done",
    C.TRADE_RETCODE_PLACED: "Request placed",
    C.TRADE_RETCODE_DONE: "Request executed",
    C.TRADE_RETCODE_DONE_PARTIAL: "Request executed partially",
    C.TRADE_RETCODE_INVALID: "Invalid request",
    C.TRADE_RETCODE_INVALID_VOLUME: "Invalid volume",
    C.TRADE_RETCODE_INVALID_PRICE: "Invalid price",
    C.TRADE_RETCODE_INVALID_STOPS: "Invalid stops",
    C.TRADE_RETCODE_MARKET_CLOSED: "Market closed",
    C.TRADE_RETCODE_NO_MONEY: "No money",
    C.TRADE_RETCODE_INVALID_EXPIRATION: "Invalid expiration",
    C.TRADE_RETCODE_NO_CHANGES: "No changes",
    C.TRADE_RETCODE_CLIENT_DISABLES_AT: "AutoTrading disabled by client",
    C.TRADE_RETCODE_INVALID_FILL: "Unsupported filling mode",
    C.TRADE_RETCODE_LIMIT_ORDERS: "Pending orders limit reached",
    C.TRADE_RETCODE_INVALID_ORDER: "Invalid order type",
    C.TRADE_RETCODE_POSITION_CLOSED: "Position already closed",
    C.TRADE_RETCODE_INVALID_CLOSE_VOLUME: "Invalid close volume",
}

MARKET_CLOSED_AFTER_MS = 600_000  # a quote older than this: the market is closed
ORDER_TICKET_BASE = 100_000_000  # orders and positions share one counter (position = opening order)
DEAL_TICKET_BASE = 50_000_000
_BUY_TYPES = (C.ORDER_TYPE_BUY, C.ORDER_TYPE_BUY_LIMIT, C.ORDER_TYPE_BUY_STOP, C.ORDER_TYPE_BUY_STOP_LIMIT)
_PENDING = (C.ORDER_TYPE_BUY_LIMIT, C.ORDER_TYPE_SELL_LIMIT, C.ORDER_TYPE_BUY_STOP, C.ORDER_TYPE_SELL_STOP,
            C.ORDER_TYPE_BUY_STOP_LIMIT, C.ORDER_TYPE_SELL_STOP_LIMIT)
_EPS = 1e-9

# name -> (accepted python types, default) of a trade request (MqlTradeRequest).
_REQUEST_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "action": ((int,), 0), "magic": ((int,), 0), "order": ((int,), 0), "symbol": ((str,), ""),
    "volume": ((int, float), 0.0), "price": ((int, float), 0.0), "stoplimit": ((int, float), 0.0),
    "sl": ((int, float), 0.0), "tp": ((int, float), 0.0), "deviation": ((int,), 0), "type": ((int,), 0),
    "type_filling": ((int,), 0), "type_time": ((int,), 0), "expiration": ((int, _dt.datetime), 0),
    "comment": ((str,), ""), "position": ((int,), 0), "position_by": ((int,), 0),
}


class TradeArgError(Exception):
    """A malformed request: the terminal answers None with (-2, message)."""


@dataclass(frozen=True)
class ScriptedTrade:
    """One trade a person makes at the terminal, ``at`` seconds after the sim started.

    ``ticket`` names the position or order to modify/close/cancel: a real ticket,
    or 1..999 for "the order (or the position it opened) of scripted trade #k"
    (1-based), since a config cannot know tickets in advance."""

    at: float
    action: str
    symbol: str = ""
    volume: float = 0.0
    price: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    ticket: int = 0


@dataclass
class _Position:
    ticket: int
    time_msc: int
    time_update_msc: int
    type: int
    magic: int
    reason: int
    volume: float
    price_open: float
    sl: float
    tp: float
    swap: float
    symbol: str
    comment: str


@dataclass
class _Order:
    ticket: int
    time_setup_msc: int
    time_done_msc: int
    time_expiration: int
    type: int
    type_time: int
    type_filling: int
    state: int
    magic: int
    position_id: int
    position_by_id: int
    reason: int
    volume_initial: float
    volume_current: float
    price_open: float
    sl: float
    tp: float
    price_current: float
    price_stoplimit: float
    symbol: str
    comment: str


@dataclass
class _Req:
    action: int = 0
    magic: int = 0
    order: int = 0
    symbol: str = ""
    volume: float = 0.0
    price: float = 0.0
    stoplimit: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    deviation: int = 0
    type: int = 0
    type_filling: int = 0
    type_time: int = 0
    expiration: int = 0
    comment: str = ""
    position: int = 0
    position_by: int = 0

    def as_tuple(self) -> C.TradeRequest:
        return C.TradeRequest(**self.__dict__)


class _Refused(Exception):
    def __init__(self, retcode: int) -> None:
        self.retcode = retcode


@dataclass
class _Outcome:
    deal: int = 0
    order: int = 0
    volume: float = 0.0
    price: float = 0.0


def _side(order_type: int) -> int:
    return C.ORDER_TYPE_BUY if order_type in _BUY_TYPES else C.ORDER_TYPE_SELL


def _seconds(value: Any) -> int:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return math.floor(value.timestamp())
        return calendar.timegm(value.timetuple())
    return int(value)


class Trading:
    """The account and its order book; every method runs under the terminal's lock."""

    def __init__(
        self,
        *,
        symbols: Mapping[str, SimSymbol],
        quote: Callable[[str, int], Any],  # (symbol, broker ms) -> the Tick at or before it, or None
        ticks: Callable[[str, int, int], np.ndarray],  # (symbol, from ms, to ms) -> ticks, inclusive
        static_rates: Mapping[str, float],  # currency -> USD when no symbol quotes it
        start_bms: int,
        mode: str = "hedging",
        balance: float = 10000.0,
        leverage: int = 100,
        commission_per_lot: float = 0.0,
        fill_volume: float = 0.0,
        limit_orders: int = 200,
        script: Iterable[tuple[int, ScriptedTrade]] = (),  # (broker ms, trade), any order
    ) -> None:
        if mode not in ACCOUNT_MODES:
            raise ValueError(f"account mode must be one of {ACCOUNT_MODES}")
        self._syms = dict(symbols)
        self._quote = quote
        self._ticks = ticks
        self._static = dict(static_rates)
        self.mode = mode
        self.leverage = int(leverage)
        self.limit_orders = int(limit_orders)
        self._commission = float(commission_per_lot)
        self._fill_volume = float(fill_volume)
        self.balance = 0.0
        self._at = int(start_bms)  # broker ms up to which ticks were looked at
        self._next_order = ORDER_TICKET_BASE
        self._next_deal = DEAL_TICKET_BASE
        self._request_id = 0
        self.positions: dict[int, _Position] = {}
        self.orders: dict[int, _Order] = {}  # active (pending) orders
        self.history_orders: list[_Order] = []
        self.deals: list[C.TradeDeal] = []
        self._script: list[tuple[int, int, ScriptedTrade]] = []  # (broker ms, 1-based list index, trade)
        self._script_i = 0
        self._script_tickets: dict[int, int] = {}  # 1-based script index -> order ticket
        self.trade_allowed = True
        self.schedule(script)
        if balance:
            self._deal(C.DEAL_TYPE_BALANCE, C.DEAL_ENTRY_IN, 0, 0, C.DEAL_REASON_CLIENT, 0.0, 0.0, "",
                       start_bms, profit=round(float(balance), 2), comment="Initial deposit")

    # -- prices and money -------------------------------------------------------
    def _rate(self, ccy: str, bms: int) -> float:
        """USD per unit of ``ccy`` now (from the sim's own quotes where it has them)."""
        if ccy == "USD" or not ccy:
            return 1.0
        for name, invert in ((ccy + "USD", False), ("USD" + ccy, True)):
            if name in self._syms:
                q = self._quote(name, bms)
                if q is not None and q.bid > 0:
                    return 1.0 / q.bid if invert else q.bid
        return self._static.get(ccy, 1.0)

    def margin_of(self, symbol: str, volume: float, price: float, bms: int) -> float:
        s = self._syms[symbol]
        return volume * s.contract_size * price * self._rate(s.currency_profit, bms) / self.leverage

    def profit_of(self, symbol: str, side: int, volume: float, price_open: float, price_close: float,
                  bms: int) -> float:
        s = self._syms[symbol]
        diff = price_close - price_open if side == C.ORDER_TYPE_BUY else price_open - price_close
        return diff * s.contract_size * volume * self._rate(s.currency_profit, bms)

    def _price(self, symbol: str, bms: int):
        q = self._quote(symbol, bms)
        if q is None or not q.time_msc or q.bid <= 0:
            return None
        return q

    def _pos_current(self, p: _Position, bms: int) -> tuple[float, float]:
        q = self._price(p.symbol, bms)
        if q is None:
            return p.price_open, 0.0
        cur = q.bid if p.type == C.POSITION_TYPE_BUY else q.ask
        return cur, round(self.profit_of(p.symbol, p.type, p.volume, p.price_open, cur, bms), 2)

    def figures(self, bms: int) -> dict[str, float]:
        """balance, equity, profit, margin, margin_free, margin_level at ``bms``."""
        profit = margin = 0.0
        for p in self.positions.values():
            cur, pr = self._pos_current(p, bms)
            profit += pr + p.swap
            margin += self.margin_of(p.symbol, p.volume, cur, bms)
        profit, margin = round(profit, 2), round(margin, 2)
        equity = round(self.balance + profit, 2)
        return {"balance": round(self.balance, 2), "equity": equity, "profit": profit, "margin": margin,
                "margin_free": round(equity - margin, 2),
                "margin_level": round(equity / margin * 100.0, 2) if margin else 0.0}

    # -- time -------------------------------------------------------------------
    def advance(self, bms: int) -> None:
        """Everything that happens up to broker ms ``bms``: scripted trades, triggers, expiry, swaps."""
        while self._at < bms:
            stop, kind = bms, ""
            if self._script_i < len(self._script) and self._script[self._script_i][0] <= stop:
                stop, kind = max(self._script[self._script_i][0], self._at), "script"
            midnight = (self._at // 86_400_000 + 1) * 86_400_000
            if midnight <= stop and self.positions:
                stop, kind = midnight, "rollover"
            for o in self.orders.values():
                exp = self._expires_ms(o)
                if exp is not None and exp <= stop:
                    stop, kind = max(exp, self._at), "expire"
            self._triggers(self._at, stop)
            self._at = max(self._at, stop)
            if kind == "script":
                self._run_script(stop)
            elif kind == "rollover":
                self._rollover(stop)
            elif kind == "expire":
                self._expire(stop)
            elif not kind:
                break
        while self._script_i < len(self._script) and self._script[self._script_i][0] <= bms:
            self._run_script(bms)

    @staticmethod
    def _expires_ms(o: _Order) -> int | None:
        if o.type_time == C.ORDER_TIME_GTC:
            return None
        if o.type_time == C.ORDER_TIME_DAY:
            return (o.time_setup_msc // 86_400_000 + 1) * 86_400_000
        if o.type_time == C.ORDER_TIME_SPECIFIED_DAY:
            return (o.time_expiration // 86400 + 1) * 86_400_000
        return o.time_expiration * 1000

    def _expire(self, bms: int) -> None:
        for o in list(self.orders.values()):
            exp = self._expires_ms(o)
            if exp is not None and exp <= bms:
                self._retire(o, C.ORDER_STATE_EXPIRED, bms)

    def _rollover(self, bms: int) -> None:
        day = bms // 86_400_000 - 1  # the night of this broker day
        weekday = (day + 4) % 7  # 1970-01-01 was a Thursday; Sunday = 0
        mult = 3 if weekday == C.DAY_OF_WEEK_WEDNESDAY else 1
        for p in self.positions.values():
            s = self._syms[p.symbol]
            points = s.swap_long if p.type == C.POSITION_TYPE_BUY else s.swap_short
            amount = points * s.point * s.contract_size * p.volume * self._rate(s.currency_profit, bms) * mult
            p.swap = round(p.swap + amount, 2)

    def _triggers(self, a: int, b: int) -> None:
        """Pending orders and SL/TP against every tick in (a, b], in time order."""
        watched = {o.symbol for o in self.orders.values()}
        watched.update(p.symbol for p in self.positions.values() if p.sl or p.tp)
        if not watched or b <= a:
            return
        streams = []
        for symbol in sorted(watched):
            arr = self._ticks(symbol, a + 1, b)
            if arr is not None and len(arr):
                streams.extend((int(m), symbol, float(bid), float(ask))
                               for m, bid, ask in zip(arr["time_msc"], arr["bid"], arr["ask"]))
        streams.sort(key=lambda t: t[0])
        for msc, symbol, bid, ask in streams:
            if bid <= 0 or ask <= 0:
                continue
            self._on_tick(symbol, msc, bid, ask)

    def _on_tick(self, symbol: str, msc: int, bid: float, ask: float) -> None:
        for o in [o for o in self.orders.values() if o.symbol == symbol]:
            if o.ticket not in self.orders:
                continue
            buy = _side(o.type) == C.ORDER_TYPE_BUY
            t = o.type
            if t in (C.ORDER_TYPE_BUY_STOP_LIMIT, C.ORDER_TYPE_SELL_STOP_LIMIT):
                if (ask >= o.price_open) if buy else (bid <= o.price_open):
                    o.type = C.ORDER_TYPE_BUY_LIMIT if buy else C.ORDER_TYPE_SELL_LIMIT
                    o.price_open, o.price_stoplimit = o.price_stoplimit, 0.0
                continue
            if t in (C.ORDER_TYPE_BUY_LIMIT, C.ORDER_TYPE_SELL_LIMIT):
                hit = ask <= o.price_open + _EPS if buy else bid >= o.price_open - _EPS
                price = o.price_open
            else:
                hit = ask >= o.price_open - _EPS if buy else bid <= o.price_open + _EPS
                price = ask if buy else bid
            if hit:
                self._fill_pending(o, price, msc)
        for p in [p for p in self.positions.values() if p.symbol == symbol and (p.sl or p.tp)]:
            close = bid if p.type == C.POSITION_TYPE_BUY else ask
            buy = p.type == C.POSITION_TYPE_BUY
            if p.sl and (close <= p.sl + _EPS if buy else close >= p.sl - _EPS):
                self._stop_out(p, close, msc, C.ORDER_REASON_SL, C.DEAL_REASON_SL, f"[sl {p.sl}]")
            elif p.tp and (close >= p.tp - _EPS if buy else close <= p.tp + _EPS):
                self._stop_out(p, close, msc, C.ORDER_REASON_TP, C.DEAL_REASON_TP, f"[tp {p.tp}]")

    def _stop_out(self, p: _Position, price: float, msc: int, order_reason: int, deal_reason: int,
                  comment: str) -> None:
        o = self._new_order(1 - p.type, p.symbol, p.volume, price, msc, reason=order_reason, magic=p.magic,
                            position_id=p.ticket, comment=comment, filling=C.ORDER_FILLING_FOK)
        self._execute(o, p.volume, price, msc, deal_reason)
        self._retire(o, C.ORDER_STATE_FILLED, msc)

    def _fill_pending(self, o: _Order, price: float, msc: int) -> None:
        volume = o.volume_current
        if self._fill_volume > 0:
            volume = min(volume, self._fill_volume)
        side = _side(o.type)
        if self._opens(o.symbol, side, o.position_id) and \
                self.margin_of(o.symbol, volume, price, msc) > self.figures(msc)["margin_free"]:
            self._retire(o, C.ORDER_STATE_REJECTED, msc)
            return
        self._execute(o, volume, price, msc, o.reason)
        o.volume_current = round(o.volume_current - volume, 8)
        if o.volume_current <= _EPS:
            o.volume_current = 0.0
            self._retire(o, C.ORDER_STATE_FILLED, msc)
        else:
            o.state = C.ORDER_STATE_PARTIAL

    # -- records ----------------------------------------------------------------
    def _new_order(self, otype: int, symbol: str, volume: float, price: float, msc: int, *, reason: int,
                   magic: int = 0, position_id: int = 0, position_by_id: int = 0, comment: str = "",
                   filling: int = C.ORDER_FILLING_FOK, type_time: int = C.ORDER_TIME_GTC, expiration: int = 0,
                   sl: float = 0.0, tp: float = 0.0, stoplimit: float = 0.0) -> _Order:
        self._next_order += 1
        return _Order(ticket=self._next_order, time_setup_msc=msc, time_done_msc=0, time_expiration=expiration,
                      type=otype, type_time=type_time, type_filling=filling, state=C.ORDER_STATE_STARTED,
                      magic=magic, position_id=position_id, position_by_id=position_by_id, reason=reason,
                      volume_initial=volume, volume_current=volume, price_open=price, sl=sl, tp=tp,
                      price_current=price, price_stoplimit=stoplimit, symbol=symbol, comment=comment)

    def _retire(self, o: _Order, state: int, msc: int) -> None:
        o.state, o.time_done_msc = state, msc
        self.orders.pop(o.ticket, None)
        self.history_orders.append(o)

    def _deal(self, dtype: int, entry: int, order: int, position_id: int, reason: int, volume: float,
              price: float, symbol: str, msc: int, *, profit: float = 0.0, commission: float = 0.0,
              swap: float = 0.0, magic: int = 0, comment: str = "") -> int:
        self._next_deal += 1
        self.deals.append(C.TradeDeal(
            ticket=self._next_deal, order=order, time=msc // 1000, time_msc=msc, type=dtype, entry=entry,
            magic=magic, position_id=position_id, reason=reason, volume=volume, price=price,
            commission=commission, swap=swap, profit=profit, fee=0.0, symbol=symbol, comment=comment,
            external_id=""))
        self.balance = round(self.balance + profit + commission + swap, 2)
        return self._next_deal

    def _opens(self, symbol: str, side: int, position_id: int) -> bool:
        """Does a deal of ``side`` add exposure (needs margin)?"""
        if position_id:
            return False
        if self.mode == "netting":
            p = self._netting_position(symbol)
            return p is None or p.type == side
        return True

    def _netting_position(self, symbol: str) -> _Position | None:
        for p in self.positions.values():
            if p.symbol == symbol:
                return p
        return None

    def _execute(self, o: _Order, volume: float, price: float, msc: int, reason: int) -> int:
        """One deal of ``volume`` for order ``o``: opens, adds to, reduces, closes or reverses."""
        side = _side(o.type)
        commission = 0.0 - round(self._commission * volume, 2)
        if self.mode == "netting" and not o.position_id:
            p = self._netting_position(o.symbol)
            o.position_id = p.ticket if p else o.ticket
        else:
            p = self.positions.get(o.position_id)
        if p is None:
            pos_id = o.position_id or o.ticket
            o.position_id = pos_id
            self.positions[pos_id] = _Position(
                ticket=pos_id, time_msc=msc, time_update_msc=msc, type=side, magic=o.magic,
                reason=o.reason if o.reason <= C.ORDER_REASON_EXPERT else C.POSITION_REASON_CLIENT,
                volume=volume, price_open=price, sl=o.sl, tp=o.tp, swap=0.0, symbol=o.symbol, comment=o.comment)
            return self._deal(side, C.DEAL_ENTRY_IN, o.ticket, pos_id, reason, volume, price, o.symbol, msc,
                              commission=commission, magic=o.magic, comment=o.comment)
        p.time_update_msc = msc
        if p.type == side:  # netting: add to the position at the average price
            total = round(p.volume + volume, 8)
            p.price_open = round((p.price_open * p.volume + price * volume) / total, self._syms[p.symbol].digits + 3)
            p.volume = total
            if o.sl or o.tp:
                p.sl, p.tp = o.sl, o.tp
            return self._deal(side, C.DEAL_ENTRY_IN, o.ticket, p.ticket, reason, volume, price, o.symbol, msc,
                              commission=commission, magic=o.magic, comment=o.comment)
        closing = min(volume, p.volume)
        profit = round(self.profit_of(p.symbol, p.type, closing, p.price_open, price, msc), 2)
        swap = 0.0
        if closing >= p.volume - _EPS:
            swap, p.swap = p.swap, 0.0
        rest = round(volume - closing, 8)
        entry = C.DEAL_ENTRY_INOUT if rest > _EPS else C.DEAL_ENTRY_OUT
        ticket = self._deal(side, entry, o.ticket, p.ticket, reason, volume, price, o.symbol, msc,
                            profit=profit, commission=commission, swap=swap, magic=o.magic, comment=o.comment)
        p.volume = round(p.volume - closing, 8)
        if rest > _EPS:  # netting reversal: the position goes on the other way, same identifier
            p.type, p.volume, p.price_open, p.time_msc = side, rest, price, msc
            p.sl, p.tp = o.sl, o.tp
        elif p.volume <= _EPS:
            del self.positions[p.ticket]
        return ticket

    # -- requests -----------------------------------------------------------------
    @staticmethod
    def parse(request: Any) -> _Req:
        if hasattr(request, "_asdict"):
            request = request._asdict()
        if not isinstance(request, Mapping):
            raise TradeArgError("Invalid arguments")
        req = _Req()
        for key, value in request.items():
            spec = _REQUEST_FIELDS.get(key)
            if spec is None:
                continue
            types, _ = spec
            if isinstance(value, bool) or not isinstance(value, types) or \
                    (isinstance(value, float) and not math.isfinite(value)):
                raise TradeArgError(f'Invalid "{key}" argument')
            if key == "expiration":
                value = _seconds(value)
            elif types == (int, float):
                value = float(value)
            setattr(req, key, value)
        return req

    def send(self, request: Any, bms: int, *, reason: int = C.ORDER_REASON_EXPERT) -> C.OrderSendResult:
        req = self.parse(request)
        self._request_id += 1
        q = self._price(req.symbol, bms) if req.symbol in self._syms else None
        bid, ask = (q.bid, q.ask) if q is not None else (0.0, 0.0)
        try:
            out = self._dispatch(req, bms, reason, dry=False)
            retcode = C.TRADE_RETCODE_PLACED if req.action == C.TRADE_ACTION_PENDING else C.TRADE_RETCODE_DONE
        except _Refused as r:
            out, retcode = _Outcome(), r.retcode
        return C.OrderSendResult(retcode=retcode, deal=out.deal, order=out.order, volume=out.volume,
                                 price=out.price, bid=bid, ask=ask, comment=RETCODE_COMMENTS.get(retcode, ""),
                                 request_id=self._request_id, retcode_external=0, request=req.as_tuple())

    def check(self, request: Any, bms: int) -> C.OrderCheckResult:
        req = self.parse(request)
        retcode, margin_add = 0, 0.0
        try:
            self._dispatch(req, bms, C.ORDER_REASON_EXPERT, dry=True)
            if req.action == C.TRADE_ACTION_DEAL and self._opens(req.symbol, _side(req.type), req.position):
                q = self._price(req.symbol, bms)
                margin_add = self.margin_of(req.symbol, req.volume, q.ask if req.type == 0 else q.bid, bms)
        except _Refused as r:
            retcode = r.retcode
        f = self.figures(bms)
        margin = round(f["margin"] + margin_add, 2)
        return C.OrderCheckResult(
            retcode=retcode, balance=f["balance"], equity=f["equity"], profit=f["profit"], margin=margin,
            margin_free=round(f["equity"] - margin, 2),
            margin_level=round(f["equity"] / margin * 100.0, 2) if margin else 0.0,
            comment=RETCODE_COMMENTS.get(retcode, ""), request=req.as_tuple())

    def _dispatch(self, req: _Req, bms: int, reason: int, *, dry: bool) -> _Outcome:
        if not self.trade_allowed:
            raise _Refused(C.TRADE_RETCODE_CLIENT_DISABLES_AT)
        a = req.action
        if a == C.TRADE_ACTION_DEAL:
            return self._market(req, bms, reason, dry)
        if a == C.TRADE_ACTION_PENDING:
            return self._pending(req, bms, reason, dry)
        if a == C.TRADE_ACTION_SLTP:
            return self._sltp(req, bms, dry)
        if a == C.TRADE_ACTION_MODIFY:
            return self._modify(req, bms, dry)
        if a == C.TRADE_ACTION_REMOVE:
            o = self.orders.get(req.order)
            if o is None:
                raise _Refused(C.TRADE_RETCODE_INVALID)
            if not dry:
                self._retire(o, C.ORDER_STATE_CANCELED, bms)
            return _Outcome(order=o.ticket)
        if a == C.TRADE_ACTION_CLOSE_BY:
            return self._close_by(req, bms, reason, dry)
        raise _Refused(C.TRADE_RETCODE_INVALID)

    def _quote_for(self, symbol: str, bms: int):
        if symbol not in self._syms:
            raise _Refused(C.TRADE_RETCODE_INVALID)
        q = self._price(symbol, bms)
        if q is None or bms - q.time_msc > MARKET_CLOSED_AFTER_MS:
            raise _Refused(C.TRADE_RETCODE_MARKET_CLOSED)
        return q

    def _check_volume(self, symbol: str, volume: float) -> None:
        s = self._syms[symbol]
        steps = volume / s.volume_step
        if not (s.volume_min - _EPS <= volume <= s.volume_max + _EPS) or abs(steps - round(steps)) > 1e-6:
            raise _Refused(C.TRADE_RETCODE_INVALID_VOLUME)

    @staticmethod
    def _check_stops(side: int, price: float, sl: float, tp: float) -> None:
        if sl < 0 or tp < 0:
            raise _Refused(C.TRADE_RETCODE_INVALID_STOPS)
        if side == C.ORDER_TYPE_BUY:
            bad = (sl and sl >= price) or (tp and tp <= price)
        else:
            bad = (sl and sl <= price) or (tp and tp >= price)
        if bad:
            raise _Refused(C.TRADE_RETCODE_INVALID_STOPS)

    def _market(self, req: _Req, bms: int, reason: int, dry: bool) -> _Outcome:
        q = self._quote_for(req.symbol, bms)
        if req.type not in (C.ORDER_TYPE_BUY, C.ORDER_TYPE_SELL):
            raise _Refused(C.TRADE_RETCODE_INVALID_ORDER)
        self._check_volume(req.symbol, req.volume)
        if req.type_filling not in (C.ORDER_FILLING_FOK, C.ORDER_FILLING_IOC):
            raise _Refused(C.TRADE_RETCODE_INVALID_FILL)
        side = req.type
        price = q.ask if side == C.ORDER_TYPE_BUY else q.bid
        if req.position:
            p = self.positions.get(req.position)
            if p is None or p.symbol != req.symbol:
                raise _Refused(C.TRADE_RETCODE_POSITION_CLOSED)
            if p.type == side:
                raise _Refused(C.TRADE_RETCODE_INVALID)
            if req.volume > p.volume + _EPS:
                raise _Refused(C.TRADE_RETCODE_INVALID_CLOSE_VOLUME)
        else:
            # SL/TP of what this deal leaves open, checked against the price it closes at.
            self._check_stops(side, q.bid if side == C.ORDER_TYPE_BUY else q.ask, req.sl, req.tp)
            if self._opens(req.symbol, side, 0):
                need = self.margin_of(req.symbol, req.volume, price, bms)
                if need > self.figures(bms)["margin_free"]:
                    raise _Refused(C.TRADE_RETCODE_NO_MONEY)
        if dry:
            return _Outcome(volume=req.volume, price=price)
        o = self._new_order(side, req.symbol, req.volume, price, q.time_msc, reason=reason, magic=req.magic,
                            position_id=req.position, comment=req.comment, filling=req.type_filling,
                            sl=req.sl, tp=req.tp)
        o.time_setup_msc = bms
        deal = self._execute(o, req.volume, price, bms, reason)
        o.volume_current = 0.0
        self._retire(o, C.ORDER_STATE_FILLED, bms)
        return _Outcome(deal=deal, order=o.ticket, volume=req.volume, price=price)

    def _check_pending_price(self, otype: int, price: float, stoplimit: float, bid: float, ask: float) -> None:
        ok = {
            C.ORDER_TYPE_BUY_LIMIT: 0 < price < ask, C.ORDER_TYPE_SELL_LIMIT: price > bid,
            C.ORDER_TYPE_BUY_STOP: price > ask, C.ORDER_TYPE_SELL_STOP: 0 < price < bid,
            C.ORDER_TYPE_BUY_STOP_LIMIT: price > ask and 0 < stoplimit < price,
            C.ORDER_TYPE_SELL_STOP_LIMIT: 0 < price < bid and stoplimit > price,
        }[otype]
        if not ok:
            raise _Refused(C.TRADE_RETCODE_INVALID_PRICE)

    def _check_expiration(self, type_time: int, expiration: int, bms: int) -> None:
        if type_time not in (C.ORDER_TIME_GTC, C.ORDER_TIME_DAY, C.ORDER_TIME_SPECIFIED, C.ORDER_TIME_SPECIFIED_DAY):
            raise _Refused(C.TRADE_RETCODE_INVALID_EXPIRATION)
        if type_time in (C.ORDER_TIME_SPECIFIED, C.ORDER_TIME_SPECIFIED_DAY) and expiration * 1000 <= bms:
            raise _Refused(C.TRADE_RETCODE_INVALID_EXPIRATION)

    def _pending(self, req: _Req, bms: int, reason: int, dry: bool) -> _Outcome:
        q = self._quote_for(req.symbol, bms)
        if req.type not in _PENDING:
            raise _Refused(C.TRADE_RETCODE_INVALID_ORDER)
        self._check_volume(req.symbol, req.volume)
        if req.type_filling not in (C.ORDER_FILLING_FOK, C.ORDER_FILLING_IOC, C.ORDER_FILLING_RETURN):
            raise _Refused(C.TRADE_RETCODE_INVALID_FILL)
        self._check_pending_price(req.type, req.price, req.stoplimit, q.bid, q.ask)
        fill_at = req.stoplimit if req.type in (C.ORDER_TYPE_BUY_STOP_LIMIT, C.ORDER_TYPE_SELL_STOP_LIMIT) else req.price
        self._check_stops(_side(req.type), fill_at, req.sl, req.tp)
        self._check_expiration(req.type_time, req.expiration, bms)
        if len(self.orders) >= self.limit_orders:
            raise _Refused(C.TRADE_RETCODE_LIMIT_ORDERS)
        if dry:
            return _Outcome(volume=req.volume, price=req.price)
        o = self._new_order(req.type, req.symbol, req.volume, req.price, bms, reason=reason, magic=req.magic,
                            comment=req.comment, filling=req.type_filling, type_time=req.type_time,
                            expiration=req.expiration if req.type_time != C.ORDER_TIME_GTC else 0,
                            sl=req.sl, tp=req.tp, stoplimit=req.stoplimit)
        o.state = C.ORDER_STATE_PLACED
        self.orders[o.ticket] = o
        return _Outcome(order=o.ticket, volume=req.volume, price=req.price)

    def _position_for(self, req: _Req) -> _Position:
        if req.position:
            p = self.positions.get(req.position)
        elif self.mode == "netting" and req.symbol:
            p = self._netting_position(req.symbol)
        else:
            p = None
        if p is None:
            raise _Refused(C.TRADE_RETCODE_POSITION_CLOSED)
        return p

    def _sltp(self, req: _Req, bms: int, dry: bool) -> _Outcome:
        p = self._position_for(req)
        q = self._quote_for(p.symbol, bms)
        self._check_stops(p.type, q.bid if p.type == C.POSITION_TYPE_BUY else q.ask, req.sl, req.tp)
        if (req.sl, req.tp) == (p.sl, p.tp):
            raise _Refused(C.TRADE_RETCODE_NO_CHANGES)
        if not dry:
            p.sl, p.tp, p.time_update_msc = req.sl, req.tp, bms
        return _Outcome()

    def _modify(self, req: _Req, bms: int, dry: bool) -> _Outcome:
        o = self.orders.get(req.order)
        if o is None:
            raise _Refused(C.TRADE_RETCODE_INVALID)
        q = self._quote_for(o.symbol, bms)
        price = req.price or o.price_open
        stoplimit = req.stoplimit or o.price_stoplimit
        self._check_pending_price(o.type, price, stoplimit, q.bid, q.ask)
        fill_at = stoplimit if o.type in (C.ORDER_TYPE_BUY_STOP_LIMIT, C.ORDER_TYPE_SELL_STOP_LIMIT) else price
        self._check_stops(_side(o.type), fill_at, req.sl, req.tp)
        self._check_expiration(req.type_time, req.expiration, bms)
        expiration = req.expiration if req.type_time != C.ORDER_TIME_GTC else 0
        new = (price, stoplimit, req.sl, req.tp, req.type_time, expiration)
        if new == (o.price_open, o.price_stoplimit, o.sl, o.tp, o.type_time, o.time_expiration):
            raise _Refused(C.TRADE_RETCODE_NO_CHANGES)
        if not dry:
            o.price_open, o.price_stoplimit, o.sl, o.tp, o.type_time, o.time_expiration = new
        return _Outcome(order=o.ticket)

    def _close_by(self, req: _Req, bms: int, reason: int, dry: bool) -> _Outcome:
        if self.mode != "hedging":
            raise _Refused(C.TRADE_RETCODE_INVALID)
        p, by = self.positions.get(req.position), self.positions.get(req.position_by)
        if p is None or by is None:
            raise _Refused(C.TRADE_RETCODE_POSITION_CLOSED)
        if p.symbol != by.symbol or p.type == by.type:
            raise _Refused(C.TRADE_RETCODE_INVALID)
        self._quote_for(p.symbol, bms)
        volume = min(p.volume, by.volume)
        if dry:
            return _Outcome(volume=volume)
        o = self._new_order(C.ORDER_TYPE_CLOSE_BY, p.symbol, volume, 0.0, bms, reason=reason, magic=req.magic,
                            position_id=p.ticket, position_by_id=by.ticket, comment=req.comment)
        first = 0
        price = by.price_open  # both close at the opposite position's open: the pair nets to one result
        for pos in (p, by):
            profit = round(self.profit_of(pos.symbol, pos.type, volume, pos.price_open, price, bms), 2)
            swap = 0.0
            if pos.volume <= volume + _EPS:
                swap, pos.swap = pos.swap, 0.0
            d = self._deal(1 - pos.type, C.DEAL_ENTRY_OUT_BY, o.ticket, pos.ticket, reason, volume, price,
                           pos.symbol, bms, profit=profit, swap=swap, magic=req.magic, comment=req.comment)
            first = first or d
            pos.volume = round(pos.volume - volume, 8)
            pos.time_update_msc = bms
            if pos.volume <= _EPS:
                del self.positions[pos.ticket]
        o.volume_current = 0.0
        self._retire(o, C.ORDER_STATE_FILLED, bms)
        return _Outcome(deal=first, order=o.ticket, volume=volume)

    # -- scripted trades ----------------------------------------------------------
    def schedule(self, script: Iterable[tuple[int, ScriptedTrade]]) -> None:
        """Add scripted trades (broker ms, trade); ones already due run at the next advance."""
        n = len(self._script)
        added = [(bms, n + i + 1, t) for i, (bms, t) in enumerate(script)]
        done, rest = self._script[:self._script_i], self._script[self._script_i:]
        self._script = done + sorted(rest + added, key=lambda p: (p[0], p[1]))

    def _run_script(self, bms: int) -> None:
        _, index, t = self._script[self._script_i]
        self._script_i += 1
        ticket = self._script_tickets.get(t.ticket, t.ticket) if 0 < t.ticket < 1000 else t.ticket
        req: dict[str, Any] = {"symbol": t.symbol, "volume": float(t.volume), "sl": float(t.sl),
                               "tp": float(t.tp), "comment": f"script #{index}"}
        if t.action in ("buy", "sell"):
            req.update(action=C.TRADE_ACTION_DEAL, type=_SCRIPT_TYPES[t.action])
            if self.mode == "netting" and self._netting_position(t.symbol) is not None:
                req.pop("sl"), req.pop("tp")  # adding to/reducing a netting position keeps its stops
        elif t.action in _SCRIPT_TYPES:
            req.update(action=C.TRADE_ACTION_PENDING, type=_SCRIPT_TYPES[t.action], price=float(t.price),
                       type_filling=C.ORDER_FILLING_RETURN)
        elif t.action == "modify":
            if ticket in self.orders:
                o = self.orders[ticket]
                req = {"action": C.TRADE_ACTION_MODIFY, "order": ticket, "price": float(t.price or o.price_open),
                       "sl": float(t.sl), "tp": float(t.tp), "type_time": o.type_time,
                       "expiration": o.time_expiration}
            else:
                req = {"action": C.TRADE_ACTION_SLTP, "position": ticket, "sl": float(t.sl), "tp": float(t.tp)}
        elif t.action == "close":
            p = self.positions.get(ticket)
            if p is None:
                return
            req = {"action": C.TRADE_ACTION_DEAL, "symbol": p.symbol, "type": 1 - p.type, "position": ticket,
                   "volume": float(t.volume) if t.volume else p.volume, "comment": f"script #{index}"}
        elif t.action == "cancel":
            req = {"action": C.TRADE_ACTION_REMOVE, "order": ticket}
        result = self.send(req, bms, reason=C.ORDER_REASON_CLIENT)
        if result.order:
            self._script_tickets[index] = result.order

    # -- queries (the MetaTrader5 functions' filters) -----------------------------
    def position_tuples(self, bms: int, symbol: Any = None, group: Any = None, ticket: Any = None):
        out = []
        match = group_matcher(group) if group else None
        for p in sorted(self.positions.values(), key=lambda p: p.ticket):
            if (symbol is not None and p.symbol != symbol) or (ticket is not None and p.ticket != ticket) or \
                    (match is not None and not match(p.symbol)):
                continue
            cur, profit = self._pos_current(p, bms)
            out.append(C.TradePosition(
                ticket=p.ticket, time=p.time_msc // 1000, time_msc=p.time_msc, time_update=p.time_update_msc // 1000,
                time_update_msc=p.time_update_msc, type=p.type, magic=p.magic, identifier=p.ticket, reason=p.reason,
                volume=p.volume, price_open=p.price_open, sl=p.sl, tp=p.tp, price_current=cur, swap=p.swap,
                profit=profit, symbol=p.symbol, comment=p.comment, external_id=""))
        return tuple(out)

    def _order_tuple(self, o: _Order, bms: int | None) -> C.TradeOrder:
        cur = o.price_current
        if bms is not None:
            q = self._price(o.symbol, bms)
            if q is not None:
                cur = q.ask if _side(o.type) == C.ORDER_TYPE_BUY else q.bid
        return C.TradeOrder(
            ticket=o.ticket, time_setup=o.time_setup_msc // 1000, time_setup_msc=o.time_setup_msc,
            time_done=o.time_done_msc // 1000, time_done_msc=o.time_done_msc, time_expiration=o.time_expiration,
            type=o.type, type_time=o.type_time, type_filling=o.type_filling, state=o.state, magic=o.magic,
            position_id=o.position_id, position_by_id=o.position_by_id, reason=o.reason,
            volume_initial=o.volume_initial, volume_current=o.volume_current, price_open=o.price_open, sl=o.sl,
            tp=o.tp, price_current=cur, price_stoplimit=o.price_stoplimit, symbol=o.symbol, comment=o.comment,
            external_id="")

    def order_tuples(self, bms: int, symbol: Any = None, group: Any = None, ticket: Any = None):
        match = group_matcher(group) if group else None
        return tuple(self._order_tuple(o, bms) for o in sorted(self.orders.values(), key=lambda o: o.ticket)
                     if (symbol is None or o.symbol == symbol) and (ticket is None or o.ticket == ticket)
                     and (match is None or match(o.symbol)))

    @staticmethod
    def _select(items, time_of, date_from, date_to, group, ticket, position, position_of):
        if ticket is not None:
            return [x for x in items if x.ticket == ticket]
        if position is not None:
            return [x for x in items if position_of(x) == position]
        match = group_matcher(group) if group else None
        return [x for x in items if date_from <= time_of(x) <= date_to and (match is None or match(x.symbol))]

    def history_order_tuples(self, date_from: int, date_to: int, group=None, ticket=None, position=None):
        ordered = sorted(self.history_orders, key=lambda o: (o.time_setup_msc, o.ticket))
        chosen = self._select(ordered, lambda o: o.time_setup_msc // 1000, date_from, date_to, group,
                              ticket, position, lambda o: o.position_id)
        return tuple(self._order_tuple(o, None) for o in chosen)

    def history_deal_tuples(self, date_from: int, date_to: int, group=None, ticket=None, position=None):
        return tuple(self._select(self.deals, lambda d: d.time, date_from, date_to, group, ticket, position,
                                  lambda d: d.position_id))
