"""Depth of market on the wire: one ``Book`` per message on ``<prefix>.<account>.book.<symbol>``.

A book is a snapshot (MT5's ``market_book_get``), published when it changed,
at most every ``stream.book_interval`` per symbol. The same rules as the other
stream messages (``mt5d.market``): frozen, new fields only with defaults.
"""

from __future__ import annotations

import msgspec

from mt5d.market import Record

__all__ = ["BookLevel", "Book"]


class BookLevel(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One price level, encoded as ``[price, volume]``; ``volume`` is MT5's ``volume_dbl`` (the exact one)."""

    price: float
    volume: float


class Book(Record, frozen=True, kw_only=True, omit_defaults=True):
    symbol: str  # raw broker symbol
    # The symbol's newest quote when the book was read (the book moves with it):
    time_msc_broker: int  # broker clock, ms (as tick time_msc)
    time_utc_ms: int  # the same instant in true UTC, ms
    bids: tuple[BookLevel, ...]  # buy side, best (highest price) first
    asks: tuple[BookLevel, ...]  # sell side, best (lowest price) first
    # Volume of market orders in the book (BOOK_TYPE_BUY_MARKET / SELL_MARKET: exchange
    # auctions); left out of the message when 0.
    buy_market: float = 0.0
    sell_market: float = 0.0

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a broken book)."""
        return bool(self.bids and self.asks and self.bids[0].price >= self.asks[0].price)
