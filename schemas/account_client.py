"""MT5Client's account methods and streams (a mixin: ``MT5Client`` inherits it).

Replies are the wire structs (attributes with MT5's field names); errors the
same typed ``mt5d.errors`` as every other call.

    positions = await mt5.get_positions(symbol="EURUSD")
    deals = await mt5.get_deals(start_ms, end_ms)
    async with mt5.deals() as stream:
        async for deal in stream:
            ...
"""

from __future__ import annotations

from typing import Iterable

from mt5d.account import AccountSnapshot, Deal, Order, OrderEvent, Position, PositionEvent
from mt5d.rpc import (
    MAX_HISTORY,
    DealsReply,
    DealsRequest,
    HistoryOrdersReply,
    HistoryOrdersRequest,
    OrdersReply,
    OrdersRequest,
    PositionsReply,
    PositionsRequest,
)

__all__ = ["AccountMethods"]

_MAX_PAGES = 10_000


class AccountMethods:
    """Positions, orders, deals, history orders and the account stream (private: operator role)."""

    # -- snapshots ----------------------------------------------------------------
    async def fetch_positions(self, symbol: str | None = None, *, ticket: int | None = None,
                              group: str | None = None) -> PositionsReply:
        """Open positions with the ``epoch``/``seq`` of the state they show (for a mirror)."""
        return await self.call("positions", PositionsRequest(symbol=symbol, ticket=ticket, group=group),
                               PositionsReply)

    async def get_positions(self, symbol: str | None = None, *, ticket: int | None = None,
                            group: str | None = None) -> list[Position]:
        return (await self.fetch_positions(symbol, ticket=ticket, group=group)).positions

    async def fetch_orders(self, symbol: str | None = None, *, ticket: int | None = None,
                           group: str | None = None) -> OrdersReply:
        return await self.call("orders", OrdersRequest(symbol=symbol, ticket=ticket, group=group), OrdersReply)

    async def get_orders(self, symbol: str | None = None, *, ticket: int | None = None,
                         group: str | None = None) -> list[Order]:
        """Pending orders."""
        return (await self.fetch_orders(symbol, ticket=ticket, group=group)).orders

    # -- history (UTC ms, both ends inclusive; follows the daemon's pages) -------------
    async def _history(self, endpoint, req_type, reply_type, field, start, end, count, **filters):
        req = req_type(start=start, end=end, count=min(count, MAX_HISTORY), **filters)
        out: list = []
        for _ in range(_MAX_PAGES):
            reply = await self.call(endpoint, req, reply_type)
            items = getattr(reply, field)
            out.extend(items)
            remaining = count - len(out)
            if not reply.more or not items or remaining <= 0:
                break
            req = req_type(start=reply.next_start, end=end, count=min(remaining, MAX_HISTORY),
                           skip=reply.next_skip, **filters)
        return out

    async def get_deals(self, start: int, end: int, *, symbol: str | None = None, group: str | None = None,
                        position: int | None = None, count: int = MAX_HISTORY) -> list[Deal]:
        """Deals with time_utc_ms in [start, end], oldest first."""
        return await self._history("deals", DealsRequest, DealsReply, "deals", start, end, count,
                                   symbol=symbol, group=group, position=position)

    async def get_history_orders(self, start: int, end: int, *, symbol: str | None = None,
                                 group: str | None = None, position: int | None = None,
                                 count: int = MAX_HISTORY) -> list[Order]:
        """History orders with time_setup_utc_ms in [start, end], oldest first."""
        return await self._history("history_orders", HistoryOrdersRequest, HistoryOrdersReply, "orders", start,
                                   end, count, symbol=symbol, group=group, position=position)

    # -- streams --------------------------------------------------------------------
    def _per_symbol(self, kind: str, symbols, typ):
        from mt5d.client import Stream

        if symbols is None:
            subjects = [getattr(self.subjects, f"all_{kind}s")()]
        else:
            subjects = [getattr(self.subjects, kind)(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        return Stream(self._stream_nc(), subjects, typ, self._queue_size)

    def positions(self, symbols: str | Iterable[str] | None = None):
        """PositionEvents (opened, modified, closed) of ``symbols``, or of all."""
        return self._per_symbol("position", symbols, PositionEvent)

    def orders(self, symbols: str | Iterable[str] | None = None):
        """OrderEvents (placed, modified, partially_filled, filled, cancelled, expired, rejected)."""
        return self._per_symbol("order", symbols, OrderEvent)

    def deals(self, symbols: str | Iterable[str] | None = None):
        """Every new Deal, once (balance operations have symbol "")."""
        return self._per_symbol("deal", symbols, Deal)

    def account_snapshots(self):
        """AccountSnapshots: on a change, and every heartbeat. (``account`` is the account's id on
        the client, so the stream has this name.)"""
        from mt5d.client import Stream

        return Stream(self._stream_nc(), [self.subjects.account_state()], AccountSnapshot, self._queue_size)
