"""The depth-of-market, symbol and terminal parts of the contract, and the daemon's conversions to them."""

from __future__ import annotations

import msgspec
import pytest

from mt5d.codec import Codec
from mt5d.errors import MT5DataError


def test_book_levels_travel_as_pairs_and_sort_best_first():
    from mt5d.actors.books import book_from_entries
    from mt5d.book import Book, BookLevel

    entries = [(1, 1.10012, 3, 3.5), (1, 1.10010, 1, 1.25), (2, 1.10002, 2, 2.0), (2, 1.10004, 7, 7.75),
               (3, 0.0, 5, 5.0)]
    book = book_from_entries("EURUSD", entries, 1_700_000_000_123, 1_699_992_800_123)
    assert [lv.price for lv in book.asks] == [1.10010, 1.10012] and book.sell_market == 5.0
    assert [lv.price for lv in book.bids] == [1.10004, 1.10002] and book.bids[0].volume == 7.75
    for enc in ("json", "msgpack"):
        codec = Codec(enc)
        assert codec.decoder(Book).decode(codec.encode(book)) == book
    raw = msgspec.json.decode(Codec("json").encode(book))
    assert raw["bids"][0] == [1.10004, 7.75] and raw["sell_market"] == 5.0 and "buy_market" not in raw
    assert not book.crossed
    assert Book(symbol="X", time_msc_broker=0, time_utc_ms=0, bids=(BookLevel(2.0, 1.0),),
                asks=(BookLevel(1.0, 1.0),)).crossed


def test_symbol_and_terminal_replies_from_the_terminal_structures():
    import time as _time

    from mt5d.daemon.terminal.sim import SimTerminal
    from mt5d.actors.logic.replies import symbol_info_reply, terminal_info_reply
    from mt5d.rpc import TERMINAL_INFO_HIDDEN, SymbolInfo, TerminalInfo

    sim = SimTerminal(clock=_time.time)
    sim.initialize()
    info = sim.symbol_info("#AAPL")
    reply = symbol_info_reply(info)
    assert SymbolInfo.__struct_fields__ == info._fields
    assert msgspec.structs.asdict(reply) == info._asdict()
    term = sim.terminal_info()
    t = terminal_info_reply(term)
    assert set(TerminalInfo.__struct_fields__) == set(term._fields) - set(TERMINAL_INFO_HIDDEN)
    assert all(getattr(t, f) == getattr(term, f) for f in TerminalInfo.__struct_fields__)
    with pytest.raises(MT5DataError):
        symbol_info_reply({"name": "X"})
