"""Account tracking: what changed in positions, orders, deals and the account, found cheaply.

The poller puts ``AccountTracker.prepare()`` into its terminal hop's plan as
the ``account`` step (``mt5d.daemon.terminal.hop.account``: one hop per cycle
serves ticks, bars, books and the account, one round trip over the rpyc
bridge), then hands the step's result to ``absorb()``, which turns it into
stream messages. No anyio, no NATS: the diffing is tested as tables.

Cheap checks first, on every cycle: ``positions_total``, ``orders_total`` and
``history_deals_total`` from the deal cursor's second. Details only when
something changed (or, while positions or orders are open, every
``interval``, since an SL/TP change shows in no count): ``positions_get``,
``orders_get``, the new deals, the history of orders that went away.
``account_info`` is read at most every ``interval`` (and when something
changed); a snapshot goes out when its figures changed, and every
``heartbeat`` regardless. A quiet account costs three small calls a cycle.

Deals are published once, in (time_msc, ticket) order, from a cursor: the
newest deal published. It survives reconnects (it is ours, not the
terminal's) and restarts (saved in the capture state once NATS confirmed the
deal). The first start ever begins after the newest deal of the last day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mt5d.account import AccountSnapshot, Deal, OrderEvent, PositionEvent
from mt5d.actors.logic.history import deal_from_mt5, order_from_mt5, position_from_mt5
from mt5d.daemon.terminal.hop import namedtuples
from mt5d.daemon.terminal.mt5_constants import (
    DEAL_ENTRY_IN,
    DEAL_ENTRY_INOUT,
    ORDER_STATE_CANCELED,
    ORDER_STATE_PLACED,
    ORDER_TYPE_BUY_LIMIT,
    ORDER_TYPE_BUY_STOP,
    ORDER_TYPE_BUY_STOP_LIMIT,
    ORDER_TYPE_SELL_LIMIT,
    ORDER_TYPE_SELL_STOP,
    ORDER_TYPE_SELL_STOP_LIMIT,
    ORDER_STATE_EXPIRED,
    ORDER_STATE_FILLED,
    ORDER_STATE_PARTIAL,
    ORDER_STATE_REJECTED,
)

__all__ = ["AccountTracker", "AccountRead", "AccountView", "account_read"]

_PENDING_TYPES = frozenset({ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_SELL_LIMIT, ORDER_TYPE_BUY_STOP, ORDER_TYPE_SELL_STOP,
                            ORDER_TYPE_BUY_STOP_LIMIT, ORDER_TYPE_SELL_STOP_LIMIT})
_FINAL_EVENT = {ORDER_STATE_FILLED: "filled", ORDER_STATE_CANCELED: "cancelled", ORDER_STATE_EXPIRED: "expired",
                ORDER_STATE_REJECTED: "rejected", ORDER_STATE_PARTIAL: "cancelled"}


def _pos_key(p) -> tuple:
    """What makes a position "modified" (not its floating profit or price)."""
    return (p.type, p.volume, p.price_open, p.sl, p.tp)


def _order_key(o) -> tuple:
    return (o.type, o.state, o.volume_current, o.price_open, o.sl, o.tp, o.price_stoplimit, o.type_time,
            o.time_expiration)


@dataclass
class AccountRead:
    """What one hop read (terminal namedtuples)."""

    positions_total: int
    orders_total: int
    new_deals: list = field(default_factory=list)  # after the cursor, oldest first
    deals_in_window: int = 0  # history_deals_total from the cursor's second
    window_from: int = 0
    positions: tuple | None = None  # None: not read this hop
    orders: tuple | None = None
    history: dict = field(default_factory=dict)  # order ticket -> TradeOrder (orders that left, deal orders)
    account: Any = None
    first_cursor: tuple[int, int] | None = None  # the first start: where deals begin


@dataclass(frozen=True)
class AccountView:
    """The positions and orders as the streams last described them (for the RPC snapshots)."""

    epoch: int
    seq: int
    positions: tuple  # wire Position, by ticket
    orders: tuple  # wire Order, by ticket
    synced: bool


def account_read(value: dict) -> AccountRead:
    """The hop's account step (``hop.account``: tables) as an AccountRead of namedtuples."""
    listing = namedtuples
    positions, orders, account = value["positions"], value["orders"], value["account"]
    return AccountRead(
        positions_total=value["positions_total"], orders_total=value["orders_total"],
        new_deals=list(listing(value["new_deals"])), deals_in_window=value["deals_in_window"],
        window_from=value["window_from"],
        positions=None if positions is None else listing(positions),
        orders=None if orders is None else listing(orders),
        history={o.ticket: o for o in listing(value["history"])},
        account=None if account is None else listing(account)[0],
        first_cursor=value["first_cursor"])


class AccountTracker:
    def __init__(self, *, interval: float, heartbeat: float, epoch: int,
                 deal_cursor: tuple[int, int] | None = None) -> None:
        self._interval = interval
        self._heartbeat = heartbeat
        self.epoch = epoch
        self.seq = 0
        self.deal_cursor = tuple(deal_cursor) if deal_cursor else None
        self._window_seen = -1  # deals counted from the cursor's second at the last read (-1: unknown)
        self._counts: tuple[int, int] | None = None
        self._positions: dict[int, Any] = {}  # ticket -> TradePosition (the last one read)
        self._orders: dict[int, Any] = {}
        self._finished: set[int] = set()  # orders already reported final (bounded below)
        self._synced = False
        self._details_at = -math.inf
        self._account_at = -math.inf
        self._published_at = -math.inf
        self._fingerprint: tuple | None = None
        self._off_ms = 0
        self.view = AccountView(epoch, 0, (), (), False)

    def prepare(self, now: float, now_broker_s: int) -> tuple:
        """This cycle's account step of the hop plan (``hop.account``; ``now``: the cycle's monotonic time)."""
        open_items = bool(self._positions or self._orders)
        want_details = not self._synced or (open_items and now - self._details_at >= self._interval)
        want_account = (now - self._account_at >= self._interval) or (now - self._published_at >= self._heartbeat)
        return (now_broker_s, self.deal_cursor, self._window_seen, self._counts, tuple(self._orders),
                want_details, want_account)

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def absorb(self, value: dict, now: float, wall_ms: int, off_ms: int) -> list[tuple[str, str, Any]]:
        """The hop's account step as stream messages: (kind, symbol, struct), in publishing order."""
        read = account_read(value)
        out: list[tuple[str, str, Any]] = []
        self._off_ms = off_ms
        if read.first_cursor is not None and self.deal_cursor is None:
            self.deal_cursor = read.first_cursor
        # deals first: position and order events refer to them
        deals: dict[int, list[Deal]] = {}
        for d in read.new_deals:
            wire = deal_from_mt5(d, off_ms, self.epoch, self._next())
            out.append(("deal", d.symbol, wire))
            deals.setdefault(d.position_id, []).append(wire)
            self.deal_cursor = (d.time_msc, d.ticket)
        if read.new_deals:
            # What a later read counts from the new cursor's second (all of it is published by now).
            sec = self.deal_cursor[0] // 1000
            same = sum(1 for d in read.new_deals if d.time_msc // 1000 >= sec)
            self._window_seen = same if sec > read.window_from else read.deals_in_window
        else:
            self._window_seen = read.deals_in_window
        self._counts = (read.positions_total, read.orders_total)
        if read.orders is not None:
            out.extend(self._orders_changed(read, wall_ms))
        if read.positions is not None:
            out.extend(self._positions_changed(read.positions, deals, wall_ms))
            self._details_at = now
            self._synced = True
        if read.account is not None:
            self._account_at = now
            a = read.account
            figures = (a.balance, a.credit, a.profit, a.equity, a.margin, a.margin_free, a.margin_level,
                       a.trade_allowed, a.leverage, read.positions_total, read.orders_total)
            if figures != self._fingerprint or now - self._published_at >= self._heartbeat:
                self._fingerprint = figures
                self._published_at = now
                out.append(("account", "", self._snapshot(read, wall_ms)))
        if read.positions is not None or read.orders is not None:
            self.view = AccountView(
                self.epoch, self.seq,
                tuple(position_from_mt5(p, off_ms) for _, p in sorted(self._positions.items())),
                tuple(order_from_mt5(o, off_ms) for _, o in sorted(self._orders.items())), self._synced)
        elif out:
            self.view = AccountView(self.epoch, self.seq, self.view.positions, self.view.orders, self.view.synced)
        return out

    def _orders_changed(self, read: AccountRead, wall_ms: int):
        current = {o.ticket: o for o in read.orders}
        events = []
        if self._synced:
            for ticket, o in current.items():
                before = self._orders.get(ticket)
                if before is None:
                    kind = "partially_filled" if o.state == ORDER_STATE_PARTIAL else "placed"
                elif _order_key(before) != _order_key(o):
                    kind = "partially_filled" if o.volume_current < before.volume_current else "modified"
                else:
                    continue
                events.append((kind, o))
            for ticket, before in self._orders.items():
                if ticket not in current:
                    final = read.history.get(ticket, before)
                    events.append((_FINAL_EVENT.get(final.state, "cancelled"), final))
                    self._finished.add(ticket)
            for ticket, o in read.history.items():
                if ticket not in self._orders and ticket not in current and ticket not in self._finished:
                    # Placed and done between two looks: a pending order still went through
                    # "placed" (a subscriber sees every order's whole life); a market order did not.
                    if o.type in _PENDING_TYPES:
                        events.append(("placed", o._replace(state=ORDER_STATE_PLACED,
                                                            volume_current=o.volume_initial)))
                    events.append((_FINAL_EVENT.get(o.state, "filled"), o))
                    self._finished.add(ticket)
        if len(self._finished) > 10000:
            self._finished = set(sorted(self._finished)[-5000:])
        self._orders = current
        return [("order", o.symbol, OrderEvent(event=kind, order=order_from_mt5(o, self._off_ms), time_utc_ms=wall_ms,
                                              epoch=self.epoch, seq=self._next())) for kind, o in events]

    def _positions_changed(self, positions: tuple, deals: dict[int, list[Deal]], wall_ms: int):
        current = {p.ticket: p for p in positions}
        events = []
        if self._synced:
            for ticket, p in current.items():
                before = self._positions.get(ticket)
                mine = deals.get(p.identifier or ticket, [])
                if before is None:
                    opening = [d for d in mine if d.entry in (DEAL_ENTRY_IN, DEAL_ENTRY_INOUT)]
                    events.append(("opened", p, (opening or mine or [None])[-1]))
                elif _pos_key(before) != _pos_key(p):
                    events.append(("modified", p, mine[-1] if mine else None))
            for ticket, before in self._positions.items():
                if ticket not in current:
                    mine = deals.get(before.identifier or ticket, [])
                    events.append(("closed", before, mine[-1] if mine else None))
        self._positions = current
        return [("position", p.symbol, PositionEvent(event=kind, position=position_from_mt5(p, self._off_ms),
                                                     deal=deal, time_utc_ms=wall_ms, epoch=self.epoch,
                                                     seq=self._next()))
                for kind, p, deal in events]

    def _snapshot(self, read: AccountRead, wall_ms: int) -> AccountSnapshot:
        a = read.account
        return AccountSnapshot(
            login=a.login, currency=a.currency, leverage=a.leverage, balance=a.balance, credit=a.credit,
            profit=a.profit, equity=a.equity, margin=a.margin, margin_free=a.margin_free,
            margin_level=a.margin_level, trade_allowed=a.trade_allowed, positions=read.positions_total,
            orders=read.orders_total, time_utc_ms=wall_ms, margin_mode=a.margin_mode,
            margin_so_call=a.margin_so_call, margin_so_so=a.margin_so_so, epoch=self.epoch, seq=self._next())
