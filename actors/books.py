"""Depth of market: the poll cycle's book part, and the newest book per symbol for the ``book`` endpoint.

The poll cycle's one terminal hop reads the books (``hop.books``, next to the
terminal: inside the rpyc bridge too), ``book_reads`` checks what came back
and ``Books.absorb`` takes it: a ``Book`` goes out when a symbol's book differs from the one
published last. Each book is read at most every ``interval`` seconds (so a
change goes out within ``interval`` plus one poll, and a quiet book costs one
read per interval, not one per cycle: over the rpyc bridge a read is a round
trip). The subscriptions
themselves (``market_book_add`` at every connect, ``market_book_release`` on
stop) belong to the connection actor, which lists the symbols it opened in
``Connection.books``.

A book's time is its symbol's newest quote when it was read (``symbol_info_tick``
just before ``market_book_get``): the terminal's book has no time of its own,
and it moves with the quotes.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from mt5d.actors.logic.utc import UtcOffset
from mt5d.book import Book, BookLevel
from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.api import checked_book
from mt5d.errors import MT5Error

__all__ = ["Books", "book_reads", "book_from_entries"]

log = logging.getLogger("mt5d.books")


def book_reads(symbols, rows, errors) -> list[tuple[str, object, object]]:
    """The poll hop's books step (``hop.books``) as ``(symbol, time_msc, entries)`` per
    symbol, either item an ``MT5ValidationError`` when the terminal refused that symbol.
    Runs inside the hop: a book that makes no sense fails the whole hop."""
    refused = {i: err for i, _, err in errors}
    out = []
    got = {i: (msc, entries) for i, msc, entries in rows}
    for i, symbol in enumerate(symbols):
        if i in refused:
            out.append((symbol, refused[i], refused[i]))
            continue
        msc, entries = got[i]
        out.append((symbol, msc, checked_book(entries, symbol)))
    return out


class Books:
    """Throttle and change check per symbol, and the newest book per symbol (the RPC's cache)."""

    def __init__(self, symbols: tuple[str, ...], interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.symbols = tuple(symbols)
        self.interval = float(interval)
        self._clock = clock  # for the age of a cached book, like PriceCache
        self._latest: dict[str, tuple[Book, float]] = {}
        self._read_at: dict[str, float] = {}  # poller clock of the last read per symbol
        self._refused: set[str] = set()
        self.published = 0

    def due(self, opened: tuple[str, ...], now: float) -> list[str]:
        """The symbols to read this cycle: opened (market_book_add succeeded), not read within ``interval``."""
        due = [s for s in opened if now - self._read_at.get(s, float("-inf")) >= self.interval]
        for s in due:
            self._read_at[s] = now
        return due

    def absorb(self, reads: list[tuple[str, object, object]], utc: UtcOffset) -> list[Book]:
        """What ``book_reads`` returned, as the books to publish (those that changed)."""
        out: list[Book] = []
        refused = set()
        received = self._clock()
        for symbol, tick, entries in reads:  # tick: the time_msc of the symbol's newest quote
            if isinstance(tick, MT5Error) or isinstance(entries, MT5Error):
                refused.add(symbol)
                if symbol not in self._refused:
                    err = entries if isinstance(entries, MT5Error) else tick
                    log.error("book refused by the terminal; the other books go on",
                              extra={"symbol": symbol, "detail": err.message})
                continue
            if not utc.known:
                continue  # no UTC yet (no tick seen): the book goes out once there is
            msc = int(tick)
            book = book_from_entries(symbol, entries, msc, msc - utc.offset_ms)
            last = self._latest.get(symbol)
            if last is not None and not _changed(last[0], book):
                self._latest[symbol] = (last[0], received)  # still current: younger
                continue
            self._latest[symbol] = (book, received)
            out.append(book)
        served = {s for s, _, _ in reads} - refused
        for symbol in self._refused & served:
            log.info("book served again", extra={"symbol": symbol})
        self._refused = (self._refused - served) | refused
        self.published += len(out)
        return out

    def get(self, symbol: str) -> tuple[Book, float] | None:
        """The newest book of ``symbol`` and when it was last read (the ``clock``'s time)."""
        return self._latest.get(symbol)


def _changed(a: Book, b: Book) -> bool:
    return a.bids != b.bids or a.asks != b.asks


def book_from_entries(symbol: str, entries, time_msc_broker: int, time_utc_ms: int) -> Book:
    """A ``market_book_get`` result (``(type, price, volume, volume_dbl)`` entries, any order) as a Book."""
    bids, asks = [], []
    buy_market = sell_market = 0.0
    for kind, price, _volume, volume_dbl in entries:
        if kind == C.BOOK_TYPE_SELL:
            asks.append(BookLevel(float(price), float(volume_dbl)))
        elif kind == C.BOOK_TYPE_BUY:
            bids.append(BookLevel(float(price), float(volume_dbl)))
        elif kind == C.BOOK_TYPE_SELL_MARKET:
            sell_market += float(volume_dbl)
        else:
            buy_market += float(volume_dbl)
    bids.sort(key=lambda lv: -lv.price)
    asks.sort(key=lambda lv: lv.price)
    # Market-order volumes only when there are any: msgspec leaves out a field still holding its
    # default object (it compares by identity), so a computed 0.0 would be encoded.
    extra = {k: v for k, v in (("buy_market", buy_market), ("sell_market", sell_market)) if v}
    return Book(symbol=symbol, time_msc_broker=time_msc_broker, time_utc_ms=time_utc_ms,
                bids=tuple(bids), asks=tuple(asks), **extra)
