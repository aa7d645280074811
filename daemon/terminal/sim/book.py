"""The sim's depth of market: ``market_book_add`` / ``_get`` / ``_release``.

A book is a pure function of (seed, symbol, the symbol's newest tick): the
best sell level is the tick's ask and the best buy level its bid, so the book
agrees with ``symbol_info_tick`` at every tick and is never crossed (the sim's
spread is at least one point). Further levels step away from the touch by a
whole number of points; volumes are hashed from the tick, so the book changes
with every tick and only then. ``SimSymbol.book_depth`` levels per side; a
symbol with depth 0 has an empty book.

Entries come as the package returns them: a tuple of ``BookInfo(type, price,
volume, volume_dbl)``, sell levels first from the highest price down, then buy
levels from the highest down (the order of the official market_book_get
example). ``volume`` is ``volume_dbl`` cut to a whole number (MQL5's
``MqlBookInfo.volume`` beside ``volume_real``).

Subscriptions belong to the IPC session: ``shutdown()``, a broken session
(disconnect) and a terminal restart drop them, so a client must call
``market_book_add`` again after it reconnects.

Errors (choices where no public report says otherwise):

=====================================================  =======  =================================
situation                                              returns  last_error()
=====================================================  =======  =================================
symbol not a str                                       False/None (-2, 'Invalid arguments')
market_book_add(unknown or not in Market Watch)        False    (-1, 'Terminal: Call failed')
market_book_get of a symbol not added (or unknown)     None     (-1, 'Terminal: Call failed')
market_book_release of a symbol not added              False    (-1, 'Terminal: Call failed')
=====================================================  =======  =================================
"""

from __future__ import annotations

import numpy as np

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim._hash import derive, fnv1a, mix, stream, unit53

__all__ = ["book_for", "MAX_DEPTH"]

MAX_DEPTH = 64


def _volume_unit(sym) -> float:
    """What one level holds at least: lots for FX/metals/crypto, shares or contracts for exchange-like CFDs."""
    return float(sym.volume_unit) if sym.trades else 1.0


def book_for(sym, seed: int, tick) -> tuple:
    """The book of ``sym`` (a SimSymbol) while ``tick`` (a Tick) is its newest tick."""
    depth = min(int(sym.book_depth), MAX_DEPTH)
    if depth <= 0 or not tick.time_msc or not (tick.bid > 0 and tick.ask > 0):
        return ()
    scale = 10 ** sym.digits
    bid, ask = round(tick.bid * scale), round(tick.ask * scale)
    step = max(1, sym.spread // 4)  # points between levels
    key = mix(derive(mix(int(seed) ^ fnv1a(sym.name)), 900) ^ (int(tick.time_msc) * 1_000_003 + bid * 7 + ask))
    unit = _volume_unit(sym)
    # Level k of a side holds unit * (1 + 4u) * (1 + k/2): deeper levels hold more. Sells are
    # counters 0..depth-1, buys depth..2*depth-1 (one hashed stream for the whole book).
    k = np.arange(depth, dtype=np.int64)
    u = unit53(stream(key, np.arange(2 * depth, dtype=np.int64)))
    vol = unit * (1.0 + 4.0 * u) * np.concatenate([1.0 + 0.5 * k, 1.0 + 0.5 * k])
    # Shares and contracts: whole units; lots: two decimals.
    vol = np.ceil(vol / unit) * unit if sym.trades else np.round(vol, 2)
    vols = vol.tolist()
    digits, sell, buy, make = sym.digits, C.BOOK_TYPE_SELL, C.BOOK_TYPE_BUY, C.BookInfo
    out = [make(sell, round((ask + j * step) / scale, digits), int(vols[j]), vols[j])
           for j in range(depth - 1, -1, -1)]  # highest price first
    out += [make(buy, round((bid - j * step) / scale, digits), int(vols[depth + j]), vols[depth + j])
            for j in range(depth)]  # the bid first
    return tuple(out)
