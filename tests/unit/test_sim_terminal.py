"""SimTerminal against the MetaTrader5 API facts: types, last_error codes, faults, the mt5sim module."""

from __future__ import annotations

import calendar
import pickle
import threading

import numpy as np
import pytest

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim import Fault, SimSymbol, SimTerminal, default_symbols, synthetic_symbols

T0 = calendar.timegm((2026, 3, 10, 12, 0, 20))
H = 3600
OK = (1, "Success")
NO_IPC = (-10004, "No IPC connection")


class ManualClock:
    """A settable clock; ``polled`` is set whenever someone reads it (to see a blocked caller poll)."""

    def __init__(self, t: float) -> None:
        self.t = float(t)
        self.polled = threading.Event()

    def __call__(self) -> float:
        self.polled.set()
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(t: float = T0, init: bool = True, **kw) -> tuple[SimTerminal, ManualClock]:
    clk = ManualClock(t)
    sim = SimTerminal(clock=clk, **kw)
    if init:
        assert sim.initialize()
    return sim, clk


# -- constants and result types -----------------------------------------------------
def test_constants_are_the_packages():
    assert C.TIMEFRAME_H1 == 0x4001 and C.TIMEFRAME_D1 == 0x4018 and C.TIMEFRAME_W1 == 0x8001
    assert C.TIMEFRAME_MN1 == 0xC001 and C.TIMEFRAME_H12 == 0x400C
    assert (C.COPY_TICKS_ALL, C.COPY_TICKS_INFO, C.COPY_TICKS_TRADE) == (-1, 1, 2)
    assert (C.TICK_FLAG_BID, C.TICK_FLAG_ASK, C.TICK_FLAG_LAST, C.TICK_FLAG_VOLUME) == (2, 4, 8, 16)
    assert C.SYMBOL_TRADE_MODE_FULL == 4 and C.SYMBOL_CALC_MODE_CFDINDEX == 3 and C.SYMBOL_CALC_MODE_EXCH_STOCKS == 32
    assert C.ACCOUNT_TRADE_MODE_DEMO == 0 and C.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING == 2
    assert (C.RES_E_NOT_FOUND, C.RES_E_AUTH_FAILED, C.RES_E_INTERNAL_FAIL_TIMEOUT) == (-4, -6, -10005)
    assert C.TRADE_RETCODE_DONE == 10009
    assert list(C.TIMEFRAMES)[:3] == ["M1", "M2", "M3"] and C.TIMEFRAMES["MN1"] == 0xC001
    assert len(C.TIMEFRAMES) == 21
    assert C.TIMEFRAME_SECONDS[C.TIMEFRAME_MN1] is None
    assert C.TIMEFRAME_SECONDS[C.TIMEFRAME_H4] == 4 * H and C.TIMEFRAME_SECONDS[C.TIMEFRAME_M12] == 720


def test_result_structures_have_the_real_fields_in_order():
    sim, _ = make()
    tick = sim.symbol_info_tick("EURUSD")
    assert type(tick).__name__ == "Tick"
    assert tuple(tick._asdict()) == ("time", "bid", "ask", "last", "volume", "time_msc", "flags", "volume_real")
    acc = sim.account_info()
    assert tuple(acc._asdict())[:12] == ("login", "trade_mode", "leverage", "limit_orders", "margin_so_mode",
                                        "trade_allowed", "trade_expert", "margin_mode", "currency_digits",
                                        "fifo_close", "balance", "credit")
    assert tuple(acc._asdict())[-4:] == ("name", "server", "currency", "company")
    assert len(acc) == 28
    assert acc.login == 10001234 and acc.trade_mode == C.ACCOUNT_TRADE_MODE_DEMO and acc.leverage == 100
    assert acc.balance == 10000.0 and acc.currency == "USD"
    assert acc.equity == pytest.approx(acc.balance + acc.profit) and acc.margin_free == acc.equity
    term = sim.terminal_info()
    assert tuple(term._asdict())[:3] == ("community_account", "community_connection", "connected")
    assert tuple(term._asdict())[-6:] == ("company", "name", "language", "path", "data_path", "commondata_path")
    assert term.connected and term.trade_allowed and term.maxbars == 100000 and term.ping_last > 0
    info = sim.symbol_info("EURUSD")
    fields = tuple(info._asdict())
    assert len(fields) == 96
    assert fields[:4] == ("custom", "chart_mode", "select", "visible")
    assert fields[31:40] == ("bid", "bidhigh", "bidlow", "ask", "askhigh", "asklow", "last", "lasthigh", "lastlow")
    assert fields[-4:] == ("isin", "name", "page", "path")
    assert info.digits == 5 and info.point == 1e-05 and info.trade_mode == C.SYMBOL_TRADE_MODE_FULL
    assert info.currency_base == "EUR" and info.currency_profit == "USD" and info.select and info.visible
    assert info.bidlow <= info.bid <= info.bidhigh and info.ask > info.bid
    assert info.time == tick.time or info.time >= tick.time
    assert isinstance(info.bidhigh, float)
    # results travel through pickle (the rpyc bridge pickles them)
    for obj in (tick, acc, term, info):
        assert pickle.loads(pickle.dumps(obj)) == obj


def test_catalogue():
    syms = {s.name: s for s in default_symbols()}
    assert {"EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "XAGUSD", "US30", "GER40", "EURUSD.m", "#AAPL"} <= set(syms)
    assert syms["EURUSD"].digits == 5 and syms["USDJPY"].digits == 3 and syms["XAUUSD"].digits == 2
    assert syms["US30"].trades and syms["#AAPL"].trades and not syms["EURUSD"].trades
    extra = synthetic_symbols(50)
    assert len(extra) == 50 and len({s.name for s in extra}) == 50
    sim, _ = make(symbols=list(default_symbols()) + list(extra))
    assert sim.symbols_total() == len(syms) + 50
    for name in ("EURUSD.m", "#AAPL", "SYN049"):
        assert sim.symbol_select(name, True)
        assert sim.symbol_info_tick(name).bid > 0
    assert sim.symbol_info("USDJPY").digits == 3
    jpy = sim.symbol_info_tick("USDJPY")
    assert round(jpy.bid, 3) == jpy.bid and 100 < jpy.bid < 250
    names = [s.name for s in sim.symbols_get("*USD*,!EUR*")]
    assert "GBPUSD" in names and "EURUSD" not in names and "EURUSD.m" not in names


# -- last_error -----------------------------------------------------------------------
def test_calls_before_initialize_fail_with_no_ipc():
    sim, _ = make(init=False)
    assert sim.last_error() == OK
    for call in (lambda: sim.symbol_info_tick("EURUSD"), sim.account_info, sim.terminal_info, sim.version,
                 lambda: sim.copy_ticks_from("EURUSD", T0, 10, -1),
                 lambda: sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 0, 10)):
        assert call() is None
        assert sim.last_error() == NO_IPC
    assert sim.symbol_select("EURUSD", True) is False and sim.last_error() == NO_IPC
    assert sim.initialize() is True and sim.last_error() == OK
    assert sim.version() == (500, sim.version()[1], sim.version()[2])
    sim.shutdown()
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == NO_IPC


def test_error_codes_follow_the_package():
    sim, _ = make()
    assert sim.symbol_info("NOPE") is None and sim.last_error() == (-4, "Terminal: Not found")
    assert sim.symbol_info("EURUSD") is not None and sim.last_error() == OK  # success overwrites it
    assert sim.symbol_info_tick("NOPE") is None and sim.last_error() == (-4, "Terminal: Not found")
    assert sim.copy_ticks_from("NOPE", T0, 10, -1) is None and sim.last_error() == (-4, "Terminal: Not found")
    assert sim.copy_rates_from_pos("NOPE", C.TIMEFRAME_M1, 0, 1) is None
    assert sim.last_error() == (-1, "Terminal: Call failed")
    assert sim.symbol_select("NOPE", True) is False and sim.last_error() == (-1, "Terminal: Call failed")
    assert sim.copy_rates_from_pos("EURUSD", 7, 0, 10) is None
    assert sim.last_error() == (-2, "Terminal: Invalid params")
    assert sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 0, 0) is None
    assert sim.last_error() == (-2, "Terminal: Invalid params")
    assert sim.copy_ticks_from("EURUSD", T0, 10, 5) is None and sim.last_error() == (-2, "Terminal: Invalid params")
    assert sim.symbol_info_tick(42) is None and sim.last_error() == (-2, "Invalid arguments")
    assert sim.copy_ticks_from("EURUSD", "yesterday", 10, -1) is None and sim.last_error() == (-2, "Invalid arguments")
    assert sim.order_send("buy") is None and sim.last_error() == (-2, "Invalid arguments")
    assert sim.order_send({"action": 1, "volume": "1"}) is None
    assert sim.last_error() == (-2, 'Invalid "volume" argument')
    assert sim.order_send({"action": 1}).retcode == C.TRADE_RETCODE_INVALID  # well-formed, refused
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == (-1, "Terminal: Call failed")  # not added
    assert sim.orders_total() == 0 and sim.positions_total() == 0
    assert sim.orders_get() == () and sim.positions_get(symbol="EURUSD") == ()
    assert sim.last_error() == OK
    assert sim.copy_ticks_from("EURUSD", 0, 10**9, -1) is None
    assert sim.last_error() == (-3, "Terminal: Out of memory")


def test_market_watch():
    sim, _ = make()
    assert sim.symbol_info("#AAPL").select is False  # known, not in Market Watch
    assert sim.symbol_info_tick("#AAPL") is None and sim.last_error() == (-4, "Terminal: Not found")
    assert sim.copy_ticks_range("#AAPL", T0, T0 + 60, -1) is None
    assert sim.copy_rates_from_pos("#AAPL", C.TIMEFRAME_M1, 0, 5) is None
    assert sim.last_error() == (-1, "Terminal: Call failed")
    assert sim.symbol_select("#AAPL", True) is True and sim.last_error() == OK
    tick = sim.symbol_info_tick("#AAPL")
    assert tick.flags & C.TICK_FLAG_LAST and tick.last > 0 and tick.volume > 0
    assert sim.symbol_info("#AAPL").visible is True
    assert sim.symbol_select("#AAPL", False) is True
    assert sim.symbol_info_tick("#AAPL") is None


def test_credentials():
    sim, _ = make(init=False, password="s3cret", login=555, server="Broker-Live")
    assert sim.initialize(login=555, password="nope", server="Broker-Live") is False
    assert sim.last_error() == (-6, "Terminal: Authorization failed")
    assert sim.initialize(login=556, password="s3cret") is False
    assert sim.initialize(login=555, password="s3cret", server="Other-Server") is False
    assert sim.initialize(login=555, password="s3cret", server="Broker-Live", timeout=5000) is True
    assert sim.account_info().login == 555 and sim.account_info().server == "Broker-Live"
    assert sim.login(555, password="bad") is False and sim.last_error()[0] == -6
    assert sim.login(555, password="s3cret", server="Broker-Live") is True
    assert sim.initialize(login="555") is False and sim.last_error() == (-2, 'Invalid "login" argument')
    anyone, _ = make(init=False)
    assert anyone.initialize(login=10001234, password="whatever") is True  # password=None: any password


# -- faults ---------------------------------------------------------------------------
def test_disconnect():
    sim, clk = make(faults=[Fault("disconnect", 10, 20)])
    assert sim.symbol_info_tick("EURUSD") is not None
    assert sim.symbol_select("#AAPL", True)
    clk.advance(11)
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == (-10002, "IPC recv failed")
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == NO_IPC
    assert sim.terminal_info() is None and sim.last_error() == NO_IPC
    assert sim.initialize() is True  # the terminal process is still there ...
    assert sim.terminal_info().connected is False  # ... but off the trade server
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == (-10001, "IPC send failed")
    assert sim.account_info() is None
    clk.advance(20)  # window over: the session made inside it works
    assert sim.terminal_info().connected is True
    assert sim.symbol_info_tick("#AAPL") is not None  # Market Watch survived


def test_disconnect_needs_initialize_afterwards():
    sim, clk = make(faults=[Fault("disconnect", 10, 5)])
    clk.advance(30)  # nobody called during the window
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == NO_IPC
    assert sim.initialize() and sim.symbol_info_tick("EURUSD") is not None


def test_ipc_timeout():
    sim, clk = make(faults=[Fault("ipc_timeout", 5, 10)])
    clk.advance(6)
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == (-10005, "IPC timeout")
    assert sim.initialize() is False and sim.last_error() == (-10005, "IPC timeout")
    clk.advance(10)
    assert sim.symbol_info_tick("EURUSD") is not None and sim.last_error() == OK  # session survived


def _call_in_thread(fn):
    out: dict = {}

    def run():
        out["result"] = fn()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def test_hang_blocks_until_the_window_ends():
    sim, clk = make(faults=[Fault("hang", 10, 5)])
    clk.advance(11)
    clk.polled.clear()
    th, out = _call_in_thread(lambda: sim.symbol_info_tick("EURUSD"))
    for _ in range(3):  # the blocked call keeps polling the clock
        assert clk.polled.wait(5)
        clk.polled.clear()
    assert th.is_alive() and "result" not in out
    clk.advance(5)  # the window ends
    th.join(timeout=5)
    assert not th.is_alive()
    assert out["result"] is not None and out["result"].time_msc <= (clk.t + 2 * H) * 1000
    assert sim.last_error() == OK


def test_release_hangs():
    sim, clk = make(faults=[Fault("hang", 1, 1000)])
    clk.advance(2)
    clk.polled.clear()
    th, out = _call_in_thread(sim.account_info)
    assert clk.polled.wait(5)
    sim.release_hangs()
    th.join(timeout=5)
    assert not th.is_alive()
    assert out["result"] is None and sim.last_error() == (-10005, "IPC timeout")
    assert sim.terminal_info() is None  # released: later hung calls fail at once


def test_auth():
    sim, clk = make(init=False, faults=[Fault("auth", 0, 10)])
    assert sim.initialize(login=10001234, password="x") is False
    assert sim.last_error() == (-6, "Terminal: Authorization failed")
    assert sim.initialize() is True  # attaching without credentials works
    assert sim.login(10001234, password="x") is False and sim.last_error()[0] == -6
    assert sim.symbol_info_tick("EURUSD") is not None
    clk.advance(10)
    assert sim.login(10001234, password="x") is True


def test_stall_keeps_the_terminal_connected():
    sim, clk = make(faults=[Fault("stall", 5, 60)])
    before = sim.symbol_info_tick("EURUSD")
    clk.advance(30)
    during = sim.symbol_info_tick("EURUSD")
    assert during is not None and sim.terminal_info().connected
    assert during.time_msc <= (T0 + 5 + 2 * H) * 1000 and during.time_msc >= before.time_msc
    assert len(sim.copy_ticks_from("EURUSD", T0 + 6 + 2 * H, 1000, -1)) == 0
    clk.advance(60)
    assert sim.symbol_info_tick("EURUSD").time_msc >= (T0 + 65 + 2 * H) * 1000


def test_restart():
    sim, clk = make(faults=[Fault("restart", 10, 20)])
    assert sim.symbol_select("#AAPL", True)
    ref = sim.copy_ticks_range("EURUSD", T0 + 2 * H - 60, T0 + 2 * H, -1)
    clk.advance(11)
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == NO_IPC
    assert sim.initialize() is False
    assert sim.last_error() == (-10003, "IPC initialize failed, MetaTrader 5 x64 not found")
    clk.advance(20)
    assert sim.symbol_info_tick("EURUSD") is None and sim.last_error() == NO_IPC
    assert sim.initialize() is True
    assert sim.symbol_info_tick("#AAPL") is None  # fresh Market Watch
    assert sim.symbol_select("#AAPL", True) and sim.symbol_info_tick("#AAPL") is not None
    assert np.array_equal(sim.copy_ticks_range("EURUSD", T0 + 2 * H - 60, T0 + 2 * H, -1), ref)


def test_fault_validation():
    with pytest.raises(ValueError):
        Fault("explode", 1, 1)
    with pytest.raises(ValueError):
        Fault("hang", 1, 0)
    sim, _ = make(faults=[("stall", 1, 2), {"kind": "auth", "at": 3, "duration": 4}])
    assert [f.kind for f in sim.faults] == ["stall", "auth"]


def test_calls_from_several_threads():
    sim, clk = make()
    errors: list = []

    def worker(sym):
        try:
            for _ in range(50):
                assert sim.symbol_info_tick(sym) is not None
                assert sim.copy_ticks_from(sym, T0 + 2 * H - 5, 100, -1) is not None
                assert sim.copy_rates_from_pos(sym, C.TIMEFRAME_M1, 0, 5) is not None
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in ("EURUSD", "GBPUSD", "USDJPY", "EURUSD")]
    for th in threads:
        th.start()
    for _ in range(20):
        clk.advance(0.25)
    for th in threads:
        th.join(timeout=30)
    assert not errors


def test_custom_symbols():
    sym = SimSymbol(name="ABCXYZ", digits=4, price=2.5, spread=3, description="test", path="Test\\ABCXYZ",
                    currency_base="ABC", currency_profit="XYZ")
    sim, _ = make(symbols=[sym], ticks_per_second=20)
    assert sim.symbols_total() == 1
    tick = sim.symbol_info_tick("ABCXYZ")
    assert round(tick.bid, 4) == tick.bid and 1.5 < tick.bid < 4.0
    ticks = sim.copy_ticks_from("ABCXYZ", T0 + 2 * H - 10, 10000, -1)
    assert 100 < len(ticks) < 400  # ~20 ticks/s over 10 s
    with pytest.raises(ValueError):
        SimTerminal(symbols=[sym, sym])


# -- the mt5sim module ------------------------------------------------------------------
def test_mt5sim_module_is_a_drop_in(monkeypatch):
    import mt5d.daemon.terminal.mt5sim as mt5

    monkeypatch.setenv("MT5SIM_SEED", "7")
    monkeypatch.setenv("MT5SIM_TPS", "10")
    monkeypatch.setenv("MT5SIM_LOGIN", "777")
    clk = ManualClock(T0)
    sim = mt5.configure(clock=clk)
    try:
        assert sim is mt5.terminal() and sim.seed == 7 and sim.ticks_per_second == 10.0
        # what a script written for MetaTrader5 does
        assert mt5.__author__ and mt5.__version__
        assert mt5.symbol_info_tick("EURUSD") is None and mt5.last_error() == NO_IPC
        assert mt5.initialize()
        assert mt5.account_info().login == 777
        tick = mt5.symbol_info_tick("EURUSD")
        ticks = mt5.copy_ticks_from("EURUSD", tick.time - 10, 1000, mt5.COPY_TICKS_ALL)
        assert len(ticks) > 0 and ticks.dtype == mt5.TICK_DTYPE and tuple(ticks[-1].item()) == tuple(tick)
        rates = mt5.copy_rates_from_pos("EURUSD", mt5.TIMEFRAME_M1, 0, 10)
        assert len(rates) == 10 and rates["time"][-1] == tick.time // 60 * 60
        assert mt5.order_send({}).retcode == mt5.TRADE_RETCODE_INVALID
        assert mt5.positions_total() == 0
        mt5.shutdown()
        assert mt5.account_info() is None
        other = SimTerminal(clock=clk)
        assert mt5.configure(terminal=other) is other and mt5.terminal() is other
    finally:
        mt5.configure(terminal=SimTerminal())  # leave a wall-clock sim behind
