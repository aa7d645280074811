"""The sim's depth of market against the MetaTrader5 API: BookInfo entries, order, errors, sessions, faults."""

from __future__ import annotations

import calendar
import pickle

import pytest

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim import Fault, SimTerminal
from mt5d.daemon.terminal.sim.book import book_for

T0 = calendar.timegm((2026, 3, 10, 12, 0, 20))
FAIL = (-1, "Terminal: Call failed")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t


def make(**kw) -> tuple[SimTerminal, Clock]:
    clk = Clock(T0)
    sim = SimTerminal(clock=clk, ticks_per_second=20.0, **kw)
    assert sim.initialize()
    return sim, clk


def check_book(book, tick, depth: int) -> None:
    """The shape market_book_get has: sells highest first, then buys highest first, touching bid/ask."""
    assert all(type(e).__name__ == "BookInfo" and e._fields == ("type", "price", "volume", "volume_dbl")
               for e in book)
    sells = [e for e in book if e.type == C.BOOK_TYPE_SELL]
    buys = [e for e in book if e.type == C.BOOK_TYPE_BUY]
    assert len(sells) == len(buys) == depth and list(book) == sells + buys
    assert [e.price for e in sells] == sorted((e.price for e in sells), reverse=True)
    assert [e.price for e in buys] == sorted((e.price for e in buys), reverse=True)
    assert sells[-1].price == tick.ask and buys[0].price == tick.bid  # the touch is the quote
    assert buys[0].price < sells[-1].price  # never crossed
    assert all(e.volume_dbl > 0 and e.volume == int(e.volume_dbl) for e in book)


def test_book_follows_every_tick_and_only_the_ticks():
    sim, clk = make()
    assert sim.market_book_add("EURUSD") and sim.last_error() == (1, "Success")
    seen = set()
    for _ in range(300):
        clk.t += 0.1
        book, tick = sim.market_book_get("EURUSD"), sim.symbol_info_tick("EURUSD")
        check_book(book, tick, 10)
        assert book == sim.market_book_get("EURUSD")  # nothing changes without a tick
        assert book == book_for(next(s for s in sim._symbols if s.name == "EURUSD"), sim.seed, tick)
        seen.add((tick.time_msc, tick.bid, tick.ask, book))
    assert len({b for *_, b in seen}) == len({t[:3] for t in seen}) > 50  # a new book per tick
    assert pickle.loads(pickle.dumps(book)) == book  # travels over the rpyc bridge


def test_book_is_a_pure_function_of_seed_symbol_and_time():
    a, ca = make()
    b, cb = make()
    a.market_book_add("XAUUSD")
    b.market_book_add("XAUUSD")
    ca.t = cb.t = T0 + 12.345
    assert a.market_book_get("XAUUSD") == b.market_book_get("XAUUSD")
    c, cc = make(seed=43)
    c.market_book_add("XAUUSD")
    cc.t = ca.t
    assert c.market_book_get("XAUUSD") != a.market_book_get("XAUUSD")


def test_depth_per_symbol_and_symbols_without_depth():
    sim, _ = make()
    assert sim.symbol_info("EURUSD").ticks_bookdepth == 10
    assert sim.symbol_info("EURUSD.m").ticks_bookdepth == 0
    sim.symbol_select("EURUSD.m", True)
    assert sim.market_book_add("EURUSD.m") is True
    assert sim.market_book_get("EURUSD.m") == () and sim.last_error() == (1, "Success")
    # stocks and indices: whole shares / contracts
    sim.symbol_select("#AAPL", True)
    sim.market_book_add("#AAPL")
    aapl = sim.market_book_get("#AAPL")
    check_book(aapl, sim.symbol_info_tick("#AAPL"), 10)
    assert all(e.volume_dbl % 100 == 0 for e in aapl)
    from dataclasses import replace

    from mt5d.daemon.terminal.sim import default_symbols

    syms = [replace(s, book_depth=3) if s.name == "US30" else s for s in default_symbols()]
    sim2, _ = make(symbols=syms)
    sim2.market_book_add("US30")
    check_book(sim2.market_book_get("US30"), sim2.symbol_info_tick("US30"), 3)
    assert sim2.symbol_info("US30").ticks_bookdepth == 3


def test_errors():
    sim, _ = make()
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == FAIL  # not added
    assert sim.market_book_release("EURUSD") is False and sim.last_error() == FAIL
    assert sim.market_book_add("NOPE") is False and sim.last_error() == FAIL
    assert sim.market_book_add("#AAPL") is False and sim.last_error() == FAIL  # not in Market Watch
    assert sim.market_book_add(42) is False and sim.last_error() == (-2, "Invalid arguments")
    assert sim.market_book_get(None) is None and sim.last_error() == (-2, "Invalid arguments")
    assert sim.market_book_add("EURUSD") and sim.market_book_add("EURUSD")  # twice is fine
    assert sim.market_book_release("EURUSD") is True
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == FAIL
    fresh = SimTerminal(clock=Clock(T0))
    assert fresh.market_book_add("EURUSD") is False and fresh.last_error() == (-10004, "No IPC connection")


def test_subscriptions_belong_to_the_ipc_session():
    sim, clk = make(faults=[Fault("disconnect", 10.0, 2.0), Fault("restart", 30.0, 3.0)])
    sim.market_book_add("EURUSD")
    sim.shutdown()
    sim.initialize()
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == FAIL  # shutdown dropped it
    sim.market_book_add("EURUSD")
    clk.t = T0 + 10.5  # the session breaks
    assert sim.market_book_get("EURUSD") is None and sim.last_error()[0] == -10002
    clk.t = T0 + 13
    assert sim.initialize()
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == FAIL
    assert sim.market_book_add("EURUSD") and sim.market_book_get("EURUSD")
    clk.t = T0 + 34  # after a terminal restart
    assert sim.initialize()
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == FAIL


def test_stall_keeps_the_last_book():
    sim, clk = make(faults=[Fault("stall", 5.0, 20.0)])
    sim.market_book_add("GBPUSD")
    clk.t = T0 + 6
    book = sim.market_book_get("GBPUSD")
    clk.t = T0 + 20
    assert sim.market_book_get("GBPUSD") == book and book


def test_symbol_info_terms_follow_the_asset_class():
    sim, _ = make()
    for name in ("EURUSD", "XAUUSD", "US30", "#AAPL", "BTCUSD", "EURUSD.m"):
        info = sim.symbol_info(name)
        assert len(info) == 96 and info.name == name
        assert info.trade_tick_size == info.point and info.volume_min <= info.volume_step * 100
        assert info.filling_mode & 3 and info.order_mode == 127
    eur, gold, dow, aapl = (sim.symbol_info(n) for n in ("EURUSD", "XAUUSD", "US30", "#AAPL"))
    assert eur.trade_calc_mode == C.SYMBOL_CALC_MODE_FOREX and eur.trade_contract_size == 100000.0
    assert eur.swap_rollover3days == C.DAY_OF_WEEK_WEDNESDAY and eur.trade_stops_level == 0
    assert gold.trade_contract_size == 100.0 and gold.trade_stops_level > 0
    assert dow.trade_calc_mode == C.SYMBOL_CALC_MODE_CFDINDEX and dow.swap_rollover3days == C.DAY_OF_WEEK_FRIDAY
    assert dow.volume_min == 0.1 and dow.trade_stops_level > gold.trade_stops_level
    assert aapl.trade_calc_mode == C.SYMBOL_CALC_MODE_CFD and aapl.swap_mode == C.SYMBOL_SWAP_MODE_CURRENCY_SYMBOL
    assert aapl.isin == "US0378331005" and aapl.exchange == "NASDAQ" and aapl.volume_step == 1.0
    # tick value: a point of one lot in the account currency (USD)
    assert eur.trade_tick_value == pytest.approx(1.0) and gold.trade_tick_value == pytest.approx(1.0)
